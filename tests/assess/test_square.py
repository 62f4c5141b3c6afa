"""Square attack against ART's SquareAttack on the same model, points and eps: as low a robust
accuracy with at most half of ART's queries per point."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import SquareAttack
from bastion.assess.attacks.square import p_schedule
from bastion.assess.domain import InputDomain
from bastion.assess.targets.sklearn_target import SklearnTarget
from bastion.assess.targets.torch_target import TorchTarget
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")


class _Counted(torch.nn.Module):
    def __init__(self, module: Any) -> None:
        super().__init__()
        self.module = module
        self.queries = 0

    def forward(self, x: Any) -> Any:
        self.queries += x.shape[0]
        return self.module(x)


def _accuracy(module: Any, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_half_of_arts_queries(cnn_module: Any, digits: Any):
    art_classification = importlib.import_module("art.estimators.classification")
    art_evasion = importlib.import_module("art.attacks.evasion")
    x, y = digits[2][:200], digits[3][:200]
    eps = 0.1
    counted = _Counted(cnn_module)
    estimator = art_classification.PyTorchClassifier(
        counted,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    np.random.seed(0)
    theirs = art_evasion.SquareAttack(
        estimator, norm=np.inf, eps=eps, max_iter=60, batch_size=1000, verbose=False
    ).generate(x, y)
    art_queries = counted.queries / len(x)
    art_accuracy = _accuracy(cnn_module, theirs, y)
    target = TorchTarget.from_module(cnn_module, InputDomain((1, 8, 8), 0.0, 1.0))
    budget = int(art_queries / 2)
    ours = SquareAttack(max_queries=budget).perturb(target, x, y, eps, rng=np.random.default_rng(0))
    assert target.queries.used / len(x) <= art_queries / 2
    assert _accuracy(cnn_module, ours, y) <= art_accuracy, (art_accuracy, art_queries)
    assert np.abs(ours - x).max() <= eps + 1e-6


def test_stops_querying_broken_points(cnn_target: Any, digits: Any):
    x, y = digits[2][:50], digits[3][:50]
    attack = SquareAttack(max_queries=200)
    adv = attack.perturb(cnn_target, x, y, 0.3, rng=np.random.default_rng(0))
    broken = cnn_target.predict_labels(adv) != y
    assert broken.mean() > 0.9
    assert attack.last_queries.max() <= 200
    assert attack.last_queries[broken].mean() < 50  # large eps: broken within few queries
    assert cnn_target.queries.used == attack.last_queries.sum() + 50


def test_flat_inputs_and_probability_outputs(logistic_model: Any, digits: Any):
    target = SklearnTarget(logistic_model, InputDomain((64,), 0.0, 1.0), gradients=False)
    x, y = digits[2][:40].reshape(40, 64), digits[3][:40]
    adv = SquareAttack(max_queries=150).perturb(target, x, y, 0.15, rng=np.random.default_rng(1))
    assert (target.predict_labels(adv) == y).mean() < (target.predict_labels(x) == y).mean() - 0.2
    assert np.abs(adv - x).max() <= 0.15 + 1e-6


class _DecisionOnly:
    """A classifier that gives decisions and nothing else."""

    classes_ = np.array([0, 1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x.mean(axis=1) > 0.5).astype(np.int64)


def test_labels_only_target_is_refused():
    target = SklearnTarget(_DecisionOnly(), InputDomain((64,), 0.0, 1.0))
    with pytest.raises(AssessmentError, match="needs scores"):
        SquareAttack().perturb(
            target,
            np.zeros((1, 64), np.float32),
            np.zeros(1, np.int64),
            0.1,
            rng=np.random.default_rng(0),
        )


def test_schedule_halves_p():
    assert p_schedule(0.8, 0, 10_000) == 0.8
    assert p_schedule(0.8, 11, 10_000) == 0.4
    assert p_schedule(0.8, 9_000, 10_000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 1, 100) == 0.8 / 4  # rescaled to a 100-query budget: 100 -> 10,000
