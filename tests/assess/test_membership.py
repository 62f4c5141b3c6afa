"""Membership inference: the statistics, ART's implementations, and the papers' protocol.

Models are logistic regressions on scikit-learn's digits (fast enough for 32 shadow models in
a second or two). The "overfit" target is trained almost unregularised on 500 of 1,000
candidates; the "no signal" target never saw any candidate, so its members are members in
name only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bastion.assess.parallel import SerialExecutor
from bastion.assess.privacy.membership import (
    MembershipAttack,
    MembershipReport,
    SklearnShadowTrainer,
    TorchShadowTrainer,
    balanced_keep,
    lira_scores,
    logit_confidence,
    logit_confidence_from_logits,
    run_membership,
    shokri_scores,
    threshold_scores,
    train_shadows,
)
from bastion.assess.privacy.roc import roc_curve, summarize_roc
from bastion.errors import AssessmentError

Split = tuple[
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.bool_],
    NDArray[np.float64],
    NDArray[np.int64],
]


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """Two cores shared by everyone: multithreaded BLAS on small fits is 50x slower, not faster."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split() -> Split:
    """1,000 candidates (the first 500 members) and a disjoint population of 797."""
    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0
    y = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cand, pop = order[:1000], order[1000:]
    members = np.zeros(1000, dtype=bool)
    members[:500] = True
    return x[cand], y[cand], members, x[pop], y[pop]


def _recipe() -> LogisticRegression:
    return LogisticRegression(C=100.0, max_iter=3000)


@pytest.fixture(scope="module")
def overfit_target(split: Split) -> LogisticRegression:
    x, y, members, _, _ = split
    return _recipe().fit(x[members], y[members])


@pytest.fixture(scope="module")
def overfit_report(split: Split, overfit_target: LogisticRegression) -> MembershipReport:
    x, y, members, _, _ = split
    return run_membership(
        overfit_target.predict_proba,
        x,
        y,
        members,
        trainer=SklearnShadowTrainer(_recipe()),
        n_shadows=32,
        seed=0,
    )


def test_logit_confidence_is_stable_when_probabilities_saturate() -> None:
    logits = np.array([[40.0, 0.0, -3.0], [0.0, 2.0, 1.0], [-800.0, 0.0, 0.0]])
    labels = np.array([0, 2, 0])
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert probs[0, 0] == 1.0  # 1 - p_y would be 0 and phi infinite
    exact = logit_confidence_from_logits(logits, labels)
    np.testing.assert_allclose(
        exact[:2], [40.0 - np.log1p(np.exp(-3.0)), 1.0 - np.log(1 + np.e**2)]
    )
    np.testing.assert_allclose(logit_confidence(probs, labels)[:2], exact[:2], rtol=1e-12)
    # p_y underflows to 0 in float64: phi stays finite (clipped), and the lowest.
    assert np.isfinite(logit_confidence(probs, labels)).all()
    assert logit_confidence(probs, labels)[2] < -700


def test_loss_attack_ranks_like_the_cross_entropy(split: Split) -> None:
    x, y, members, _, _ = split
    model = LogisticRegression(C=0.05, max_iter=2000).fit(x[members], y[members])
    probs = model.predict_proba(x)
    loss = -np.log(probs[np.arange(len(y)), y])
    ours = summarize_roc(roc_curve(threshold_scores(probs, y), members))
    plain = summarize_roc(roc_curve(-loss, members))
    assert ours.auc == pytest.approx(plain.auc, abs=1e-12)
    assert ours.tpr_at_fpr == pytest.approx(plain.tpr_at_fpr, abs=1e-12)


def _art() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ART's imports warn about optional frameworks
        from art.attacks.inference import membership_inference
        from art.estimators.classification import SklearnClassifier
    return membership_inference, SklearnClassifier


def test_correctness_attack_matches_art_rule_based(
    split: Split, overfit_target: LogisticRegression
) -> None:
    membership_inference, sklearn_classifier = _art()
    x, y, members, _, _ = split
    art = membership_inference.MembershipInferenceBlackBoxRuleBased(
        sklearn_classifier(overfit_target, clip_values=(0.0, 1.0))
    )
    art_tpr = art.infer(x[members], y[members]).mean()
    art_fpr = art.infer(x[~members], y[~members]).mean()
    ours = threshold_scores(overfit_target.predict_proba(x), y, MembershipAttack.CORRECTNESS)
    assert ours[members].mean() == art_tpr
    assert ours[~members].mean() == art_fpr
    curve = roc_curve(ours, members)
    assert summarize_roc(curve).balanced_accuracy == pytest.approx((1 + art_tpr - art_fpr) / 2)


def test_shadow_attack_agrees_with_art_shadow_models(
    split: Split, overfit_target: LogisticRegression
) -> None:
    """Shokri et al. through ART (ShadowModels + MembershipInferenceBlackBox) and through us:
    same target, same shadow recipe and population, same number of shadows; the attack
    models differ (ART: one GB model on [probabilities, label]; ours: one per class), so
    the figures agree within a few points of AUC rather than exactly."""
    membership_inference, sklearn_classifier = _art()
    x, y, members, x_pop, y_pop = split
    template = sklearn_classifier(_recipe().fit(x_pop, y_pop), clip_values=(0.0, 1.0))
    shadows = membership_inference.ShadowModels(template, num_shadow_models=8, random_state=0)
    (mx, my, mp), (nx, ny, npred) = shadows.generate_shadow_dataset(x_pop, np.eye(10)[y_pop])
    attack = membership_inference.MembershipInferenceBlackBox(
        sklearn_classifier(overfit_target, clip_values=(0.0, 1.0)), attack_model_type="gb"
    )
    np.random.seed(0)  # ART's GB attack model draws from numpy's global generator
    attack.fit(mx, my, nx, ny, mp, npred)
    art_scores = np.asarray(attack.infer(x, np.eye(10)[y], probabilities=True))[:, -1]
    art = summarize_roc(roc_curve(art_scores, members))

    ours_shadows = train_shadows(
        SklearnShadowTrainer(_recipe()), x_pop, y_pop, n_classes=10, n_shadows=8, seed=0
    )
    scores = shokri_scores(
        ours_shadows.probs, ours_shadows.keep, y_pop, overfit_target.predict_proba(x), y
    )
    ours = summarize_roc(roc_curve(scores, members))
    assert art.auc > 0.55
    assert ours.auc > 0.55
    assert abs(ours.auc - art.auc) < 0.04
    assert abs(ours.balanced_accuracy - art.balanced_accuracy) < 0.04


def test_lira_recovers_known_gaussians() -> None:
    """Synthetic phi: IN ~ N(2, 1), OUT ~ N(0, 1). The likelihood ratio is then monotone in
    phi, so every variant should come within estimation noise of ranking by the true phi,
    whose AUC is Phi(2 / sqrt 2) = 0.921 up to sampling."""
    rng = np.random.default_rng(0)
    k, n = 64, 4000
    keep = balanced_keep(k, n, rng)
    shadow_phi = np.where(keep, 2.0, 0.0) + rng.normal(size=(k, n))
    members = rng.random(n) < 0.5
    target_phi = np.where(members, 2.0, 0.0) + rng.normal(size=n)
    oracle = summarize_roc(roc_curve(target_phi, members)).auc
    assert oracle == pytest.approx(0.921, abs=0.015)
    for online in (True, False):
        for fixed in (True, False):
            scores = lira_scores(target_phi, shadow_phi, keep, online=online, fixed_variance=fixed)
            auc = summarize_roc(roc_curve(scores, members)).auc
            assert auc == pytest.approx(oracle, abs=0.01), (online, fixed)


def test_lira_online_uses_per_example_in_distributions() -> None:
    """Each example has its own IN mean: online LiRA separates what one global threshold and
    OUT-only offline LiRA cannot (the point of the likelihood ratio)."""
    rng = np.random.default_rng(1)
    k, n = 32, 3000
    keep = balanced_keep(k, n, rng)
    out_mean = rng.normal(scale=3.0, size=n)
    # Half the examples are memorised (IN shifts by +3), half shift *down* when IN.
    shift = np.where(rng.random(n) < 0.5, 3.0, -3.0)
    shadow_phi = out_mean + np.where(keep, shift, 0.0) + 0.3 * rng.normal(size=(k, n))
    members = rng.random(n) < 0.5
    target_phi = out_mean + np.where(members, shift, 0.0) + 0.3 * rng.normal(size=n)
    online = summarize_roc(roc_curve(lira_scores(target_phi, shadow_phi, keep), members))
    offline = summarize_roc(
        roc_curve(lira_scores(target_phi, shadow_phi, keep, online=False), members)
    )
    assert online.auc > 0.99
    assert online.tpr_at_fpr[0.001] > 0.9
    assert offline.auc < 0.8  # one-sided: blind to the downward half


def test_balanced_keep_gives_every_example_half_the_models() -> None:
    keep = balanced_keep(6, 500, np.random.default_rng(0))
    assert (keep.sum(axis=0) == 3).all()
    with pytest.raises(AssessmentError, match="at least 2"):
        balanced_keep(1, 10, np.random.default_rng(0))


def test_overfit_model_leaks_and_lira_leads(overfit_report: MembershipReport) -> None:
    """Carlini et al.'s protocol on an overfit model: LiRA's TPR at 0.1% FPR is far above
    chance (0.001) and above the loss attack's; offline is no stronger than online."""
    online = overfit_report.result(MembershipAttack.LIRA_ONLINE).summary
    offline = overfit_report.result(MembershipAttack.LIRA_OFFLINE).summary
    loss = overfit_report.result(MembershipAttack.LOSS).summary
    assert online.auc > 0.6
    assert online.tpr_at_fpr[0.001] > 0.01
    assert online.tpr_at_fpr[0.01] > 0.05
    assert online.tpr_at_fpr[0.001] > 5 * max(loss.tpr_at_fpr[0.001], 0.001)
    assert offline.tpr_at_fpr[0.001] <= online.tpr_at_fpr[0.001]
    assert offline.tpr_at_fpr[0.01] <= online.tpr_at_fpr[0.01]
    assert loss.auc > 0.53
    assert overfit_report.fixed_variance is True  # 16 per side: pooled variance
    assert overfit_report.n_shadows == 32
    assert overfit_report.members == overfit_report.non_members == 500
    assert overfit_report.target_accuracy[0] == 1.0  # trained almost unregularised
    assert overfit_report.target_accuracy[1] < 0.98
    assert overfit_report.shadow_accuracy is not None
    shadow_in, shadow_out = overfit_report.shadow_accuracy
    assert shadow_in == 1.0  # the shadows follow the same recipe
    assert abs(shadow_out - overfit_report.target_accuracy[1]) < 0.03
    # Sorted strongest at 0.1% FPR first.
    tprs = [r.summary.tpr_at_fpr[0.001] for r in overfit_report.results]
    assert tprs == sorted(tprs, reverse=True)


def test_no_membership_signal_gives_chance(split: Split) -> None:
    """The target trained on the population only: the 'members' are not in its data, so every
    attack, shadow-based or not, should be at chance."""
    x, y, members, x_pop, y_pop = split
    target = _recipe().fit(x_pop, y_pop)
    report = run_membership(
        target.predict_proba,
        x,
        y,
        members,
        trainer=SklearnShadowTrainer(_recipe()),
        n_shadows=16,
        seed=1,
    )
    assert len(report.results) == len(MembershipAttack)
    for result in report.results:
        assert abs(result.summary.auc - 0.5) < 0.05, result.attack
        assert result.summary.tpr_at_fpr[0.01] < 0.04, result.attack


def test_without_a_trainer_shadow_attacks_are_skipped(split: Split) -> None:
    x, y, members, _, _ = split
    target = _recipe().fit(x[members], y[members])
    report = run_membership(target.predict_proba, x, y, members)
    assert {r.attack for r in report.results} == {
        MembershipAttack.LOSS,
        MembershipAttack.CONFIDENCE,
        MembershipAttack.CORRECTNESS,
    }
    assert {a for a, _ in report.skipped} == {
        MembershipAttack.SHADOW,
        MembershipAttack.LIRA_ONLINE,
        MembershipAttack.LIRA_OFFLINE,
    }
    assert report.n_shadows == 0
    with pytest.raises(AssessmentError, match="was not run"):
        report.result(MembershipAttack.LIRA_ONLINE)


def test_population_extends_the_shadow_pool(
    split: Split, overfit_target: LogisticRegression
) -> None:
    x, y, members, x_pop, y_pop = split
    report = run_membership(
        overfit_target.predict_proba,
        x,
        y,
        members,
        attacks=[MembershipAttack.LIRA_ONLINE],
        trainer=SklearnShadowTrainer(_recipe()),
        n_shadows=8,
        population=(x_pop, y_pop),
        executor=SerialExecutor(),
    )
    assert report.result(MembershipAttack.LIRA_ONLINE).summary.auc > 0.55


def test_shadow_training_is_seeded(split: Split) -> None:
    x, y, _, _, _ = split
    first = train_shadows(
        SklearnShadowTrainer(_recipe()), x[:300], y[:300], n_classes=10, n_shadows=3, seed=5
    )
    again = train_shadows(
        SklearnShadowTrainer(_recipe()), x[:300], y[:300], n_classes=10, n_shadows=3, seed=5
    )
    other = train_shadows(
        SklearnShadowTrainer(_recipe()), x[:300], y[:300], n_classes=10, n_shadows=3, seed=6
    )
    np.testing.assert_array_equal(first.keep, again.keep)
    np.testing.assert_array_equal(first.probs, again.probs)
    assert not np.array_equal(first.keep, other.keep)
    assert first.probs.shape == (3, 300, 10)
    assert first.probs.dtype == np.float64


def make_small_mlp() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def test_torch_shadow_trainer(split: Split) -> None:
    x, y, _, _, _ = split
    trainer = TorchShadowTrainer(make_small_mlp, epochs=10, batch_size=64, learning_rate=1e-2)
    probs = trainer.fit_predict(x[:200], y[:200], x[:50], 10, seed=3)
    again = trainer.fit_predict(x[:200], y[:200], x[:50], 10, seed=3)
    assert probs.shape == (50, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(probs, again)
    assert (probs.argmax(axis=1) == y[:50]).mean() > 0.7
    with pytest.raises(AssessmentError, match="outputs, not 12"):
        trainer.fit_predict(x[:200], y[:200], x[:50], 12, seed=3)


def test_inconsistent_inputs_are_rejected(split: Split, overfit_target: LogisticRegression) -> None:
    x, y, members, _, _ = split
    with pytest.raises(AssessmentError, match="membership flags"):
        run_membership(overfit_target.predict_proba, x, y, members[:-1])
    with pytest.raises(AssessmentError, match="no membership attack"):
        run_membership(overfit_target.predict_proba, x, y, members, attacks=[])
    with pytest.raises(AssessmentError, match="labels must lie"):
        threshold_scores(np.full((2, 3), 1 / 3), [0, 3])
    with pytest.raises(AssessmentError, match="shapes disagree"):
        lira_scores(np.zeros(5), np.zeros((4, 6)), np.zeros((4, 6), bool))


def test_lira_views_average_per_view_ratios(
    split: Split, overfit_target: LogisticRegression, overfit_report: MembershipReport
) -> None:
    """Views that equal the inputs change nothing; real views (pixel shifts) are queried on
    the target and on every shadow. This model never trained on shifted digits, so the
    shifted views add noise rather than signal (views help when they are the training
    augmentations, as in Carlini et al.): the attack still runs and stays above chance."""
    x, y, members, _, _ = split
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return overfit_target.predict_proba(batch)

    kwargs: dict[str, Any] = {
        "attacks": [MembershipAttack.LIRA_ONLINE, MembershipAttack.LIRA_OFFLINE],
        "trainer": SklearnShadowTrainer(_recipe()),
        "n_shadows": 32,
        "seed": 0,
    }
    same = run_membership(counted, x, y, members, views=[x.copy()], **kwargs)
    assert calls == [1000, 1000]
    for attack in (MembershipAttack.LIRA_ONLINE, MembershipAttack.LIRA_OFFLINE):
        ours = same.result(attack).summary
        plain = overfit_report.result(attack).summary
        assert ours.auc == pytest.approx(plain.auc, abs=1e-12)
        assert ours.tpr_at_fpr == pytest.approx(plain.tpr_at_fpr, abs=1e-12)

    images = x.reshape(-1, 8, 8)
    shifted = [np.roll(images, s, axis=a).reshape(len(x), -1) for a in (1, 2) for s in (1, -1)]
    calls.clear()
    report = run_membership(counted, x, y, members, views=shifted, **kwargs)
    assert calls == [1000] * 5
    assert report.result(MembershipAttack.LIRA_ONLINE).summary.auc > 0.52
    with pytest.raises(AssessmentError, match="a view has shape"):
        run_membership(overfit_target.predict_proba, x, y, members, views=[x[:5]], **kwargs)
