"""HopSkipJump against ART's HopSkipJump on the same model and points: adversarials for every
point, and perturbations at least as small for no more queries."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from bastion.assess.attacks import HopSkipJump, Norm, perturbation_norms
from bastion.assess.attacks.hop_skip_jump import HopSkipJumpOptions

torch = importlib.import_module("torch")


class _Float32(torch.nn.Module):
    """ART's HopSkipJump feeds float64 into the model; count its queries and cast."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.module = module
        self.queries = 0

    def forward(self, x: Any) -> Any:
        self.queries += x.shape[0]
        return self.module(x.float())


def _fooled(module: Any, adv: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(adv.astype(np.float32))).argmax(1).numpy() != y


def test_matches_art(cnn_module: Any, cnn_target: Any, digits: Any):
    art_classification = importlib.import_module("art.estimators.classification")
    art_evasion = importlib.import_module("art.attacks.evasion")
    x, y = digits[2][:8], digits[3][:8]
    counted = _Float32(cnn_module)
    estimator = art_classification.PyTorchClassifier(
        counted,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    np.random.seed(0)
    theirs = art_evasion.HopSkipJump(
        estimator, max_iter=6, max_eval=1000, init_eval=50, batch_size=4096, verbose=False
    ).generate(x, y)
    ours = HopSkipJump(iterations=6, init_evals=50, max_evals=1000).perturb(
        cnn_target, x, y, 0.0, rng=np.random.default_rng(0)
    )
    assert _fooled(cnn_module, ours, y).all()
    assert cnn_target.queries.used <= counted.queries * 1.1
    _, ours_l2 = perturbation_norms(x, ours)
    _, theirs_l2 = perturbation_norms(x, theirs.astype(np.float32))
    assert np.median(ours_l2) <= np.median(theirs_l2) * 1.05, (ours_l2, theirs_l2)


def test_linf_and_query_cap(mlp_target: Any, digits: Any):
    x, y = digits[2][:6], digits[3][:6]
    capped = HopSkipJump(Norm.LINF, iterations=50, init_evals=30, max_queries=600)
    adv = capped.perturb(mlp_target, x, y, 0.0, rng=np.random.default_rng(0))
    linf, _ = perturbation_norms(x, adv)
    fooled = mlp_target.predict_labels(adv) != y
    assert fooled.all()
    assert linf.max() < 0.5
    # The cap stops new iterations once a point has used it; one iteration may overshoot.
    assert mlp_target.queries.used < 6 * (600 + 30 * 8 + 200)


def test_seeded(mlp_target: Any, digits: Any):
    x, y = digits[2][:4], digits[3][:4]
    attack = HopSkipJump(iterations=2, init_evals=20)
    a = attack.perturb(mlp_target, x, y, 0.0, rng=np.random.default_rng(5))
    b = attack.perturb(mlp_target, x, y, 0.0, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_options():
    attack = HopSkipJumpOptions.model_validate({"norm": "linf", "iterations": 3}).build()
    assert (attack.norm, attack.iterations, attack.bounded) == (Norm.LINF, 3, False)
