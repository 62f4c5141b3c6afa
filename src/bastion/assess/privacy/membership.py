"""Membership inference: does the model reveal which examples it was trained on? (stable API)

Threat model: black box with the target's probability vector per query, the true label of each
candidate, and (for the shadow-model attacks) the target's training recipe and data from the
same distribution. The candidates are known members (training examples) and known non-members
(held out); every attack gives each candidate a score, higher meaning "member", and is judged
by TPR at 0.1% and 1% FPR first, then AUC and balanced accuracy (:mod:`bastion.assess.privacy.roc`),
all in float64.

Attacks:

- **Threshold** (Yeom et al. 2018, "Privacy Risk in Machine Learning", arXiv:1709.01604): the
  score is the negative cross-entropy loss ``log p_y``; members have lower loss. Two variants:
  ``confidence`` (the top probability, no label needed) and ``correctness`` (1 if the model
  is right; the "gap attack", ART's ``MembershipInferenceBlackBoxRuleBased``).
- **Shadow models** (Shokri et al. 2017, "Membership Inference Attacks against Machine Learning
  Models", arXiv:1610.05820): shadow models trained like the target, whose IN/OUT examples are
  known, teach one attack classifier per class to tell members' prediction vectors apart.
- **LiRA** (Carlini et al. 2022, "Membership Inference Attacks From First Principles",
  arXiv:2112.03570): for each candidate, Gaussians fitted to the logit-scaled confidence
  ``phi = log(p_y / (1 - p_y))`` over shadow models that did (IN) and did not (OUT) train on
  it. *Online*: the likelihood ratio of the target's ``phi`` under IN versus OUT. *Offline*:
  OUT only, one-sided: ``log Pr[Z <= phi]`` for ``Z ~ N(mu_out, sigma_out^2)``. With few shadow
  models the per-example variances are noisy; the *fixed-variance* variant pools one variance
  over all examples (the paper's advice below 64 shadows; the default here below 32 per side).

Shadow models share one design (Carlini et al.'s): each of ``k`` shadow models trains on a
random half of the candidate pool, chosen so that every candidate is IN for exactly half of
them. The same shadows serve the Shokri attack and both LiRA variants, so their figures are
comparable (offline never looks at the IN halves). Training fans out through an
:class:`~bastion.assess.parallel.Executor` (serial, process pool or Ray).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.assess.parallel import Executor, Progress, SerialExecutor
from bastion.assess.privacy.roc import DEFAULT_FPRS, RocCurve, RocSummary, roc_curve, summarize_roc
from bastion.errors import AssessmentError

__all__ = [
    "MembershipAttack",
    "MembershipAttackResult",
    "MembershipReport",
    "ShadowOutputs",
    "ShadowTrainer",
    "SklearnShadowTrainer",
    "TorchShadowTrainer",
    "balanced_keep",
    "lira_scores",
    "logit_confidence",
    "logit_confidence_from_logits",
    "run_membership",
    "shokri_scores",
    "threshold_scores",
    "train_shadows",
]

logger = logging.getLogger(__name__)

_TINY = float(np.finfo(np.float64).tiny)
#: Floor of a fitted standard deviation on the logit scale: a shadow set whose phi never
#: varies would otherwise make every log-likelihood infinite.
_MIN_STD = 1e-6
#: Below this many shadow models per side, LiRA pools one variance over all examples.
FIXED_VARIANCE_BELOW = 32


class MembershipAttack(StrEnum):
    """The membership-inference attacks, by the name reports and policies use."""

    LOSS = "loss"
    CONFIDENCE = "confidence"
    CORRECTNESS = "correctness"
    SHADOW = "shadow"
    LIRA_ONLINE = "lira_online"
    LIRA_OFFLINE = "lira_offline"

    @property
    def needs_shadows(self) -> bool:
        """Whether the attack trains shadow models."""
        return self in (MembershipAttack.SHADOW, self.LIRA_ONLINE, self.LIRA_OFFLINE)


# ---------------------------------------------------------------------------------------------
# Signals


def _as_probs(probs: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.intp).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise AssessmentError(
            f"expected one probability row per label, got {p.shape} and {y.size} labels"
        )
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise AssessmentError(f"labels must lie in [0, {p.shape[1]})")
    return p, y


def logit_confidence(probs: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """``phi = log p_y - log sum_{j != y} p_j``, the LiRA statistic, from probabilities.

    The complement is summed from the other classes rather than taken as ``1 - p_y``, which
    cancels to zero once ``p_y`` rounds to one; clipping at the smallest positive float64
    keeps ``phi`` finite for saturated outputs.
    """
    p, y = _as_probs(probs, labels)
    rows = np.arange(y.size)
    p_y = p[rows, y]
    others = p.copy()
    others[rows, y] = 0.0
    rest = others.sum(axis=1)
    result: NDArray[np.float64] = np.log(np.maximum(p_y, _TINY)) - np.log(np.maximum(rest, _TINY))
    return result


def logit_confidence_from_logits(logits: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """``phi = z_y - logsumexp(z_{j != y})``: the same statistic from logits, exactly."""
    z, y = _as_probs(logits, labels)
    rows = np.arange(y.size)
    z_y = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    lse = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    result: NDArray[np.float64] = z_y - lse
    return result


def threshold_scores(
    probs: ArrayLike, labels: ArrayLike, attack: MembershipAttack = MembershipAttack.LOSS
) -> NDArray[np.float64]:
    """Scores of the threshold attacks (Yeom et al. 2018): higher means "member".

    ``loss``: the loss ``-log p_y``, negated. ``confidence``: the top probability
    ``max_j p_j``. ``correctness``: 1.0 where the top class is the label, else 0.0.

    The first two are returned on the logit scale (``log p - log(1 - p)``, the complement
    summed from the other classes), a strictly increasing function of ``p``: the ROC is the
    one of the loss in exact arithmetic, but members and non-members whose ``p`` both round
    to 1.0 in floating point stay apart instead of tying (which drags an overfit model's
    AUC towards 0.5).
    """
    p, y = _as_probs(probs, labels)
    if attack is MembershipAttack.LOSS:
        return logit_confidence(p, y)
    if attack is MembershipAttack.CONFIDENCE:
        return logit_confidence(p, p.argmax(axis=1))
    if attack is MembershipAttack.CORRECTNESS:
        correct: NDArray[np.float64] = (p.argmax(axis=1) == y).astype(np.float64)
        return correct
    raise AssessmentError(f"{attack} is not a threshold attack")


# ---------------------------------------------------------------------------------------------
# Shadow models


class ShadowTrainer(Protocol):
    """Trains one shadow model the way the target was trained and answers queries with it.

    Implementations must be picklable (they travel to worker processes and Ray nodes) and
    deterministic given ``seed``.
    """

    def fit_predict(
        self,
        x: NDArray[Any],
        y: NDArray[np.int64],
        x_query: NDArray[Any],
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        """Train on ``(x, y)`` and return class probabilities ``[len(x_query), n_classes]``."""
        ...


@dataclass(frozen=True, slots=True)
class SklearnShadowTrainer:
    """Shadow models as fresh clones of a scikit-learn classifier with ``predict_proba``.

    Attributes:
        estimator: an unfitted (or fitted: it is cloned) estimator configured like the target.
    """

    estimator: Any

    def fit_predict(
        self,
        x: NDArray[Any],
        y: NDArray[np.int64],
        x_query: NDArray[Any],
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        from sklearn.base import clone

        model = clone(self.estimator)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        flat = x.reshape(len(x), -1)
        model.fit(flat, y)
        proba = np.asarray(model.predict_proba(x_query.reshape(len(x_query), -1)), np.float64)
        # A class missing from this shadow's half has no column; put it back as probability 0.
        full = np.zeros((len(x_query), n_classes), dtype=np.float64)
        full[:, np.asarray(model.classes_, dtype=np.intp)] = proba
        return full


@dataclass(frozen=True, slots=True)
class TorchShadowTrainer:
    """Shadow models built by a module factory and trained with Adam on cross-entropy.

    Attributes:
        factory: a picklable zero-argument callable returning a fresh ``torch.nn.Module`` that
            maps a batch of raw inputs to logits (a module-level function or class).
        epochs: passes over the shadow's training half.
        batch_size: minibatch size.
        learning_rate: Adam's step size.
        weight_decay: L2 penalty (Adam's ``weight_decay``).
    """

    factory: Callable[[], Any]
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0

    def fit_predict(
        self,
        x: NDArray[Any],
        y: NDArray[np.int64],
        x_query: NDArray[Any],
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        import torch

        from bastion.assess._training import predict_logits, train_classifier

        torch.manual_seed(seed)
        model = self.factory()
        train_classifier(
            model,
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.int64),
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            seed=seed,
        )
        logits = predict_logits(model, torch.as_tensor(x_query, dtype=torch.float32))
        if logits.shape[1] != n_classes:
            raise AssessmentError(
                f"the shadow model has {logits.shape[1]} outputs, not {n_classes}"
            )
        probs: NDArray[np.float64] = torch.softmax(logits.double(), dim=1).numpy()
        return probs


def balanced_keep(n_models: int, n_examples: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """IN/OUT masks ``[n_models, n_examples]``: each example IN for exactly ``n_models // 2``.

    Carlini et al.'s design: each shadow trains on about half of the pool, and every example
    has the same number of IN and OUT models, so no example lacks either Gaussian.
    """
    if n_models < 2:
        raise AssessmentError("shadow-model attacks need at least 2 shadow models")
    order = rng.random((n_models, n_examples)).argsort(axis=0)
    keep: NDArray[np.bool_] = order < n_models // 2
    return keep


@dataclass(frozen=True, slots=True)
class _ShadowJob:
    trainer: ShadowTrainer
    x: NDArray[Any]
    y: NDArray[np.int64]
    n_classes: int
    extra: NDArray[Any] | None = None


def _train_one_shadow(job: _ShadowJob, item: tuple[int, NDArray[np.bool_]]) -> NDArray[np.float64]:
    seed, keep = item
    query = job.x if job.extra is None else np.concatenate([job.x, job.extra])
    return job.trainer.fit_predict(job.x[keep], job.y[keep], query, job.n_classes, seed)


@dataclass(frozen=True, slots=True)
class ShadowOutputs:
    """What the shadow models answered on every candidate.

    Attributes:
        keep: ``[n_models, n_examples]``, True where the candidate was in that shadow's data.
        probs: ``[n_models, n_examples, n_classes]`` float64 probabilities.
        executor: which executor trained them (for the report).
        extra_probs: ``[n_models, n_extra, n_classes]``: answers on the extra queries (views
            of the candidates), or None.
    """

    keep: NDArray[np.bool_]
    probs: NDArray[np.float64]
    executor: str
    extra_probs: NDArray[np.float64] | None = None


def train_shadows(
    trainer: ShadowTrainer,
    x: NDArray[Any],
    y: ArrayLike,
    *,
    n_classes: int,
    n_shadows: int,
    seed: int = 0,
    executor: Executor | None = None,
    progress: Progress | None = None,
    extra_queries: NDArray[Any] | None = None,
) -> ShadowOutputs:
    """Train ``n_shadows`` shadow models on balanced random halves of ``(x, y)``.

    Each shadow answers on all of ``x`` and on ``extra_queries`` (never trained on).

    Each shadow has its own seed from ``numpy.random.SeedSequence(seed)``, so the outputs do
    not depend on the executor or on the order tasks finish in.
    """
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != labels.size:
        raise AssessmentError(f"{len(x)} inputs but {labels.size} labels")
    sequence = np.random.SeedSequence(seed)
    keep_seed, *model_seeds = sequence.spawn(n_shadows + 1)
    keep = balanced_keep(n_shadows, labels.size, np.random.default_rng(keep_seed))
    items = [(int(s.generate_state(1)[0] & 0x7FFFFFFF), keep[i]) for i, s in enumerate(model_seeds)]
    runner = executor or SerialExecutor()
    logger.info("training %d shadow models on %s", n_shadows, runner.name)
    job = _ShadowJob(
        trainer=trainer,
        x=np.asarray(x),
        y=labels,
        n_classes=n_classes,
        extra=None if extra_queries is None else np.asarray(extra_queries),
    )
    outputs = np.stack(runner.map(_train_one_shadow, job, items, progress))
    return ShadowOutputs(
        keep=keep,
        probs=outputs[:, : labels.size],
        executor=runner.name,
        extra_probs=None if extra_queries is None else outputs[:, labels.size :],
    )


# ---------------------------------------------------------------------------------------------
# LiRA


def _masked_gaussian(
    phi: NDArray[np.float64], mask: NDArray[np.bool_], fixed_variance: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-example mean and standard deviation of ``phi[:, i]`` over rows where ``mask``.

    ``phi`` is ``[n_models, n_examples, n_queries]``; the statistics pool the query axis.
    """
    weights = mask[:, :, None].astype(np.float64) * np.ones_like(phi)
    count = weights.sum(axis=(0, 2))
    if np.any(count == 0):
        raise AssessmentError("an example has no shadow model on one side (need >= 2 shadows)")
    mean = (phi * weights).sum(axis=(0, 2)) / count
    squares = ((phi - mean[None, :, None]) ** 2 * weights).sum(axis=(0, 2))
    if fixed_variance:
        # One variance for all examples: the pooled within-example variance.
        std = np.full_like(mean, math.sqrt(float(squares.sum() / count.sum())))
    else:
        std = np.sqrt(squares / count)
    return mean, np.maximum(std, _MIN_STD)


def _norm_logpdf(
    x: NDArray[np.float64], mean: NDArray[np.float64], std: NDArray[np.float64]
) -> NDArray[np.float64]:
    z = (x - mean) / std
    result: NDArray[np.float64] = -0.5 * z * z - np.log(std) - 0.5 * math.log(2.0 * math.pi)
    return result


def _norm_logcdf(z: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import log_ndtr  # type: ignore[import-untyped]

    result: NDArray[np.float64] = np.asarray(log_ndtr(z), dtype=np.float64)
    return result


def lira_scores(
    target_phi: ArrayLike,
    shadow_phi: ArrayLike,
    keep: ArrayLike,
    *,
    online: bool = True,
    fixed_variance: bool | None = None,
) -> NDArray[np.float64]:
    """LiRA membership scores (Carlini et al. 2022, Algorithm 1), higher meaning "member".

    Args:
        target_phi: the target's ``phi`` per candidate, ``[n]`` or ``[n, q]`` for ``q``
            queries per candidate (augmentations); per-query scores are averaged.
        shadow_phi: the shadows' ``phi``, ``[k, n]`` or ``[k, n, q]``.
        keep: ``[k, n]`` IN/OUT masks of the shadows.
        online: the likelihood ratio IN versus OUT; False for the offline one-sided test
            against OUT only.
        fixed_variance: pool one variance over all examples; None chooses it when fewer than
            :data:`FIXED_VARIANCE_BELOW` shadows lie on a side.
    """
    t = np.asarray(target_phi, dtype=np.float64)
    s = np.asarray(shadow_phi, dtype=np.float64)
    k = np.asarray(keep, dtype=bool)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 2:
        s = s[:, :, None]
    if s.shape[1:] != t.shape or k.shape != s.shape[:2]:
        raise AssessmentError(
            f"LiRA shapes disagree: target {t.shape}, shadows {s.shape}, keep {k.shape}"
        )
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))):
        raise AssessmentError("LiRA needs finite logit-scaled confidences")
    if fixed_variance is None:
        per_side = min(int(k.sum(axis=0).min()), int((~k).sum(axis=0).min()))
        fixed_variance = per_side < FIXED_VARIANCE_BELOW
    mean_out, std_out = _masked_gaussian(s, ~k, fixed_variance)
    if online:
        mean_in, std_in = _masked_gaussian(s, k, fixed_variance)
        ratio = _norm_logpdf(t, mean_in[:, None], std_in[:, None]) - _norm_logpdf(
            t, mean_out[:, None], std_out[:, None]
        )
        scores: NDArray[np.float64] = ratio.mean(axis=1)
        return scores
    z = (t - mean_out[:, None]) / std_out[:, None]
    offline: NDArray[np.float64] = _norm_logcdf(z).mean(axis=1)
    return offline


# ---------------------------------------------------------------------------------------------
# Shokri et al.'s attack models


def _attack_features(probs: NDArray[np.float64]) -> NDArray[np.float64]:
    # Log-probabilities, clipped: members differ from non-members in the tails, which a linear
    # scale crushes against zero and one.
    feats: NDArray[np.float64] = np.log(np.clip(probs, 1e-12, 1.0))
    return feats


def shokri_scores(
    shadow_probs: ArrayLike,
    keep: ArrayLike,
    shadow_labels: ArrayLike,
    target_probs: ArrayLike,
    target_labels: ArrayLike,
    *,
    seed: int = 0,
    min_per_class: int = 20,
) -> NDArray[np.float64]:
    """Shokri et al.'s attack: one classifier per true class on shadow prediction vectors.

    Each attack model (gradient-boosted trees on the log-probability vector) learns IN versus
    OUT from the shadows' answers on the shadow pool's examples of its class, then scores the
    target's answers on the candidates of that class. A class with fewer than
    ``min_per_class`` IN or OUT shadow rows shares one attack model trained on all classes,
    with the label as a one-hot feature.

    Args:
        shadow_probs: ``[k, n_pool, classes]`` the shadows' answers on their pool.
        keep: ``[k, n_pool]`` IN/OUT masks of the shadows.
        shadow_labels: ``[n_pool]`` labels of the pool.
        target_probs: ``[n, classes]`` the target's answers on the candidates.
        target_labels: ``[n]`` labels of the candidates.
        seed: seeds the attack models.
        min_per_class: the fewest IN (and OUT) rows for a class of its own.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # Small attack models: OpenMP threads only add contention (and spin-waits on a busy host).
    with threadpool_limits(1):
        return _shokri_scores(
            shadow_probs,
            keep,
            shadow_labels,
            target_probs,
            target_labels,
            seed=seed,
            min_per_class=min_per_class,
        )


def _shokri_scores(
    shadow_probs: ArrayLike,
    keep: ArrayLike,
    shadow_labels: ArrayLike,
    target_probs: ArrayLike,
    target_labels: ArrayLike,
    *,
    seed: int,
    min_per_class: int,
) -> NDArray[np.float64]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    sp = np.asarray(shadow_probs, dtype=np.float64)
    k = np.asarray(keep, dtype=bool)
    pool_y = np.asarray(shadow_labels).astype(np.intp).reshape(-1)
    tp, y = _as_probs(target_probs, target_labels)
    if sp.ndim != 3 or sp.shape[2] != tp.shape[1] or k.shape != sp.shape[:2]:
        raise AssessmentError(
            f"shadow shapes disagree: shadows {sp.shape}, target {tp.shape}, keep {k.shape}"
        )
    if pool_y.size != sp.shape[1]:
        raise AssessmentError(f"{pool_y.size} pool labels for {sp.shape[1]} pool examples")
    n_models, n_pool, n_classes = sp.shape
    train_x = _attack_features(sp.reshape(n_models * n_pool, n_classes))
    train_m = k.reshape(-1)
    train_y = np.tile(pool_y, n_models)
    target_x = _attack_features(tp)
    scores = np.zeros(y.size)

    def make() -> Any:
        return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)

    shared_classes: list[int] = []
    for c in range(n_classes):
        rows = train_y == c
        targets = y == c
        if not targets.any():
            continue
        n_in = int(train_m[rows].sum())
        if n_in < min_per_class or int(rows.sum()) - n_in < min_per_class:
            shared_classes.append(c)
            continue
        model = make().fit(train_x[rows], train_m[rows])
        scores[targets] = _member_probability(model, target_x[targets])
    if shared_classes:
        onehot = np.eye(n_classes)
        model = make().fit(np.hstack([train_x, onehot[train_y]]), train_m)
        targets = np.isin(y, shared_classes)
        scores[targets] = _member_probability(
            model, np.hstack([target_x[targets], onehot[y[targets]]])
        )
    return scores


def _member_probability(model: Any, features: NDArray[np.float64]) -> NDArray[np.float64]:
    proba = np.asarray(model.predict_proba(features), dtype=np.float64)
    classes = list(model.classes_)
    if True not in classes:  # the shadows never saw a member of this class
        return np.zeros(len(features))
    result: NDArray[np.float64] = proba[:, classes.index(True)]
    return result


# ---------------------------------------------------------------------------------------------
# The assessment


@dataclass(frozen=True, slots=True)
class MembershipAttackResult:
    """One attack's figures.

    Attributes:
        attack: which attack.
        summary: TPR at low FPR, AUC, balanced accuracy.
        curve: the full ROC curve (for the log-log plot).
    """

    attack: MembershipAttack
    summary: RocSummary
    curve: RocCurve


@dataclass(frozen=True, slots=True)
class MembershipReport:
    """Every attack's figures on one candidate set, strongest at low FPR first.

    Attributes:
        results: one per attack run, sorted by TPR at the lowest reported FPR, descending.
        members: candidates that were in the target's training data.
        non_members: candidates that were not.
        n_shadows: shadow models trained (0 when no attack needed them).
        executor: where the shadows were trained.
        fixed_variance: whether LiRA pooled one variance.
        skipped: attacks not run, with the reason.
        target_accuracy: the target's accuracy on ``(members, non-members)``.
        shadow_accuracy: the shadows' mean accuracy on their ``(IN, OUT)`` candidates, or
            None without shadows. Far from ``target_accuracy``, the shadows were not trained
            like the target and the shadow-based figures understate (or distort) the leak.
    """

    results: tuple[MembershipAttackResult, ...]
    members: int
    non_members: int
    n_shadows: int
    executor: str
    fixed_variance: bool | None
    skipped: tuple[tuple[MembershipAttack, str], ...] = field(default=())
    target_accuracy: tuple[float, float] = (math.nan, math.nan)
    shadow_accuracy: tuple[float, float] | None = None

    def result(self, attack: MembershipAttack) -> MembershipAttackResult:
        """The figures of one attack.

        Raises:
            AssessmentError: the attack was not run.
        """
        for item in self.results:
            if item.attack is attack:
                return item
        raise AssessmentError(f"membership attack {attack} was not run")

    @property
    def worst(self) -> MembershipAttackResult:
        """The attack with the highest TPR at the lowest reported FPR."""
        return self.results[0]


def run_membership(
    predict_proba: Callable[[NDArray[Any]], ArrayLike],
    x: NDArray[Any],
    y: ArrayLike,
    is_member: ArrayLike,
    *,
    attacks: Sequence[MembershipAttack] = tuple(MembershipAttack),
    trainer: ShadowTrainer | None = None,
    n_shadows: int = 16,
    fixed_variance: bool | None = None,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    seed: int = 0,
    executor: Executor | None = None,
    progress: Progress | None = None,
    n_classes: int | None = None,
    population: tuple[NDArray[Any], ArrayLike] | None = None,
    views: Sequence[NDArray[Any]] = (),
) -> MembershipReport:
    """Run membership-inference attacks against a target on known members and non-members.

    Args:
        predict_proba: the target: a batch of raw inputs to class probabilities.
        x: the candidates, members and non-members together.
        y: their true labels.
        is_member: True for the candidates in the target's training data.
        attacks: which attacks to run.
        trainer: how to train a shadow model like the target; without it the shadow-model
            attacks are skipped (and reported as skipped).
        n_shadows: shadow models (each candidate IN for half of them).
        fixed_variance: LiRA's pooled variance; None picks it for few shadows.
        fprs: the FPRs whose TPR is reported.
        seed: seeds the shadow splits and models.
        executor: where shadows train (serial by default).
        progress: ``(done, total)`` after each shadow model.
        n_classes: classes of the target; by default the width of its probability vectors.
        population: more labelled data from the same distribution, neither candidates nor
            known to be members: the shadows train on balanced halves of the candidates and
            this population together (more data per shadow, closer to the target's recipe).
        views: further versions of the candidates (same shape as ``x``: shifted or flipped
            copies, say). LiRA then queries the target and every shadow on each view and
            averages the per-view likelihood ratios (Carlini et al. 2022, section VI-A:
            augmented queries raise the TPR at low FPR when they are the augmentations the
            model was trained with; other views only add noise). The other attacks use
            ``x`` only.

    Raises:
        AssessmentError: inconsistent inputs, or a shadow model could not be trained.
    """
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    members = np.asarray(is_member, dtype=bool).reshape(-1)
    if not (len(x) == labels.size == members.size):
        raise AssessmentError(
            f"{len(x)} inputs, {labels.size} labels and {members.size} membership flags"
        )
    target = np.asarray(predict_proba(x), dtype=np.float64)
    classes = n_classes if n_classes is not None else int(target.shape[1])
    if target.shape != (labels.size, classes):
        raise AssessmentError(
            f"the target answered {target.shape}, expected {(labels.size, classes)}"
        )
    for view in views:
        if np.shape(view) != np.shape(x):
            raise AssessmentError(
                f"a view has shape {np.shape(view)}, not the inputs' {np.shape(x)}"
            )
    wanted = list(dict.fromkeys(MembershipAttack(a) for a in attacks))
    if not wanted:
        raise AssessmentError("no membership attack was requested")
    scored: list[tuple[MembershipAttack, NDArray[np.float64]]] = [
        (attack, threshold_scores(target, labels, attack))
        for attack in wanted
        if not attack.needs_shadows
    ]
    skipped: list[tuple[MembershipAttack, str]] = []
    shadow_attacks = [a for a in wanted if a.needs_shadows]
    shadows: ShadowOutputs | None = None
    used_fixed: bool | None = None
    if shadow_attacks and trainer is None:
        skipped.extend(
            (a, "no shadow trainer (the target's training recipe) was given")
            for a in shadow_attacks
        )
    elif shadow_attacks and trainer is not None:
        pool_x: NDArray[Any] = np.asarray(x)
        pool_y = labels
        if population is not None:
            pool_x = np.concatenate([pool_x, np.asarray(population[0])])
            pool_y = np.concatenate([labels, np.asarray(population[1]).astype(np.int64)])
        shadows = train_shadows(
            trainer,
            pool_x,
            pool_y,
            n_classes=classes,
            n_shadows=n_shadows,
            seed=seed,
            executor=executor,
            progress=progress,
            extra_queries=np.concatenate([np.asarray(v) for v in views]) if views else None,
        )
        n = labels.size
        target_views = [target] + [
            np.asarray(predict_proba(np.asarray(v)), dtype=np.float64) for v in views
        ]
        target_phi = np.stack([logit_confidence(p, labels) for p in target_views], axis=1)
        shadow_views = [shadows.probs[:, :n]]
        if shadows.extra_probs is not None:
            shadow_views += np.split(shadows.extra_probs, len(views), axis=1)
        shadow_phi = np.stack(
            [np.stack([logit_confidence(p, labels) for p in view]) for view in shadow_views],
            axis=2,
        )
        per_side = n_shadows // 2
        used_fixed = per_side < FIXED_VARIANCE_BELOW if fixed_variance is None else fixed_variance
        for attack in shadow_attacks:
            if attack is MembershipAttack.SHADOW:
                scores = shokri_scores(
                    shadows.probs, shadows.keep, pool_y, target, labels, seed=seed
                )
            else:
                scores = lira_scores(
                    target_phi,
                    shadow_phi,
                    shadows.keep[:, :n],
                    online=attack is MembershipAttack.LIRA_ONLINE,
                    fixed_variance=used_fixed,
                )
            scored.append((attack, scores))
    results = []
    for attack, scores in scored:
        curve = roc_curve(scores, members)
        results.append(MembershipAttackResult(attack, summarize_roc(curve, fprs), curve))
    correct = target.argmax(axis=1) == labels
    shadow_accuracy = None
    if shadows is not None:
        n = labels.size
        right = shadows.probs[:, :n].argmax(axis=2) == labels[None, :]
        keep = shadows.keep[:, :n]
        shadow_accuracy = (float(right[keep].mean()), float(right[~keep].mean()))
    lowest = min(fprs)
    results.sort(key=lambda r: (-r.summary.tpr_at_fpr[lowest], -r.summary.auc))
    return MembershipReport(
        results=tuple(results),
        members=int(members.sum()),
        non_members=int((~members).sum()),
        n_shadows=n_shadows if shadows is not None else 0,
        executor=shadows.executor if shadows is not None else "none",
        fixed_variance=used_fixed,
        skipped=tuple(skipped),
        target_accuracy=(float(correct[members].mean()), float(correct[~members].mean())),
        shadow_accuracy=shadow_accuracy,
    )
