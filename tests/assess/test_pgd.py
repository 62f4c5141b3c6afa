"""PGD against torchattacks and ART on the same model, data, budget and steps: robust
accuracy within one percentage point."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import PGD, Norm
from bastion.assess.attacks.pgd import PgdOptions
from bastion.assess.targets.interface import QueryBudgetError

torch = importlib.import_module("torch")

STEPS = 20


def _robust_accuracy(module: Any, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.mark.parametrize(("norm", "eps"), [(Norm.LINF, 0.1), (Norm.LINF, 0.15), (Norm.L2, 0.8)])
def test_robust_accuracy_matches_torchattacks(
    cnn_module: Any, cnn_target: Any, digits: Any, norm: Norm, eps: float
):
    torchattacks = importlib.import_module("torchattacks")
    x, y = digits[2], digits[3]
    alpha = 2.5 * eps / STEPS
    ours = PGD(norm, steps=STEPS).perturb(cnn_target, x, y, eps, rng=np.random.default_rng(0))
    torch.manual_seed(0)
    if norm is Norm.LINF:
        reference = torchattacks.PGD(cnn_module, eps=eps, alpha=alpha, steps=STEPS)
    else:
        reference = torchattacks.PGDL2(cnn_module, eps=eps, alpha=alpha, steps=STEPS)
    theirs = reference(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ours_acc = _robust_accuracy(cnn_module, ours, y)
    theirs_acc = _robust_accuracy(cnn_module, theirs, y)
    clean = _robust_accuracy(cnn_module, x, y)
    assert ours_acc < clean - 0.2  # the attack does something
    assert abs(ours_acc - theirs_acc) <= 0.01, (ours_acc, theirs_acc)


def test_robust_accuracy_matches_art(mlp_module: Any, mlp_target: Any, digits: Any):
    art_classification = importlib.import_module("art.estimators.classification")
    art_evasion = importlib.import_module("art.attacks.evasion")
    x, y = digits[2], digits[3]
    eps = 0.1
    estimator = art_classification.PyTorchClassifier(
        mlp_module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    attack = art_evasion.ProjectedGradientDescent(
        estimator,
        eps=eps,
        eps_step=2.5 * eps / STEPS,
        max_iter=STEPS,
        batch_size=1024,
        verbose=False,
    )
    np.random.seed(0)
    theirs = attack.generate(x, y)
    ours = PGD(steps=STEPS).perturb(mlp_target, x, y, eps, rng=np.random.default_rng(0))
    ours_acc = _robust_accuracy(mlp_module, ours, y)
    theirs_acc = _robust_accuracy(mlp_module, theirs, y)
    assert abs(ours_acc - theirs_acc) <= 0.01, (ours_acc, theirs_acc)


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_stays_in_budget_and_domain(mlp_target: Any, digits: Any, norm: Norm):
    x, y = digits[2][:200], digits[3][:200]
    eps = 0.2 if norm is Norm.LINF else 1.0
    adv = PGD(norm, steps=5, restarts=2).perturb(
        mlp_target, x, y, eps, rng=np.random.default_rng(1)
    )
    delta = (adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm is Norm.LINF else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert adv.min() >= 0.0
    assert adv.max() <= 1.0


def test_seeded_and_reproducible(mlp_target: Any, digits: Any):
    x, y = digits[2][:100], digits[3][:100]
    first = PGD(steps=3).perturb(mlp_target, x, y, 0.1, rng=np.random.default_rng(7))
    again = PGD(steps=3).perturb(mlp_target, x, y, 0.1, rng=np.random.default_rng(7))
    other = PGD(steps=3).perturb(mlp_target, x, y, 0.1, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_restarts_only_attack_standing_points(mlp_target: Any, digits: Any):
    x, y = digits[2][:100], digits[3][:100]
    PGD(steps=4, restarts=1).perturb(mlp_target, x, y, 0.08, rng=np.random.default_rng(0))
    one = mlp_target.queries.used
    mlp_target.queries.used = 0
    PGD(steps=4, restarts=3).perturb(mlp_target, x, y, 0.08, rng=np.random.default_rng(0))
    # each run: 4 gradient steps plus a final check per point; restarts attack the rest only
    assert one == 100 * 5
    assert one < mlp_target.queries.used < 3 * one


def test_final_iterate_option_and_progress(mlp_target: Any, digits: Any):
    x, y = digits[2][:50], digits[3][:50]
    seen: list[tuple[int, int]] = []
    PGD(steps=3, keep_best=False).perturb(
        mlp_target,
        x,
        y,
        0.1,
        rng=np.random.default_rng(0),
        on_step=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_query_budget_is_enforced(mlp_target: Any, digits: Any):
    mlp_target.queries.limit = 120
    with pytest.raises(QueryBudgetError):
        PGD(steps=10).perturb(
            mlp_target, digits[2][:50], digits[3][:50], 0.1, rng=np.random.default_rng(0)
        )


def test_options_validate_and_build():
    attack = PgdOptions.model_validate({"norm": "l2", "steps": 7}).build()
    assert attack.norm is Norm.L2
    assert attack.step_ratio == pytest.approx(2.5 / 7)
    with pytest.raises(ValueError, match="extra"):
        PgdOptions.model_validate({"stepz": 3})
