"""FGSM against torchattacks and ART on the same model, data and budget: identical outputs."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import FGSM
from bastion.assess.domain import InputDomain
from bastion.assess.targets.torch_target import TorchTarget

torch = importlib.import_module("torch")


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_identical_to_torchattacks(cnn_module: Any, cnn_target: Any, digits: Any, eps: float):
    torchattacks = importlib.import_module("torchattacks")
    x, y = digits[2][:300], digits[3][:300]
    ours = FGSM().perturb(cnn_target, x, y, eps, rng=np.random.default_rng(0))
    reference = torchattacks.FGSM(cnn_module, eps=eps)(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_array_equal(ours, reference.numpy())
    assert np.abs(ours - x).max() <= eps + 1e-6
    assert not np.array_equal(ours, x)


def test_identical_to_art(mlp_module: Any, mlp_target: Any, digits: Any):
    art_classification = importlib.import_module("art.estimators.classification")
    art_evasion = importlib.import_module("art.attacks.evasion")
    x, y = digits[2][:300], digits[3][:300]
    estimator = art_classification.PyTorchClassifier(
        mlp_module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    reference = art_evasion.FastGradientMethod(estimator, eps=0.1).generate(x, y)
    ours = FGSM().perturb(mlp_target, x, y, 0.1, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(ours, reference)


def test_budget_is_raw_units_through_normalisation(mlp_module: Any, digits: Any):
    """A model on normalised [0, 16] pixels: eps is in raw pixel units, bounds are raw."""
    x, y = digits[2][:100] * 16.0, digits[3][:100]
    # The model expects [0, 1]; (x - 0) / 16 is its preprocessing.
    domain = InputDomain((1, 8, 8), 0.0, 16.0, mean=(0.0,), std=(16.0,))
    target = TorchTarget.from_module(mlp_module, domain)
    adv = FGSM().perturb(target, x, y, 1.6, rng=np.random.default_rng(0))
    assert adv.min() >= 0.0
    assert adv.max() <= 16.0
    assert np.abs(adv - x).max() == pytest.approx(1.6, rel=1e-5)
    # The same attack in [0, 1] units at eps 0.1 gives the same points, scaled.
    unit = TorchTarget.from_module(mlp_module, InputDomain((1, 8, 8), 0.0, 1.0))
    adv_unit = FGSM().perturb(unit, x / 16.0, y, 0.1, rng=np.random.default_rng(0))
    np.testing.assert_allclose(adv / 16.0, adv_unit, atol=1e-5)


def test_counts_one_query_per_point(mlp_target: Any, digits: Any):
    x, y = digits[2][:50], digits[3][:50]
    FGSM().perturb(mlp_target, x, y, 0.1, rng=np.random.default_rng(0))
    assert mlp_target.queries.used == 50
