"""Carlini-Wagner L2 against torchattacks' CW on the same model and points: at least as many
adversarials, with smaller median perturbations."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from bastion.assess.attacks import CarliniWagnerL2, perturbation_norms
from bastion.assess.attacks.carlini_wagner import CwOptions
from bastion.assess.domain import InputDomain
from bastion.assess.targets.torch_target import TorchTarget

torch = importlib.import_module("torch")


def _found(module: Any, x: np.ndarray, adv: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        fooled = module(torch.from_numpy(adv)).argmax(1).numpy() != y
    _, l2 = perturbation_norms(x, adv)
    return float(fooled.mean()), float(np.median(np.where(fooled, l2, np.inf)))


def test_stronger_than_torchattacks(cnn_module: Any, cnn_target: Any, digits: Any):
    torchattacks = importlib.import_module("torchattacks")
    x, y = digits[2][:60], digits[3][:60]
    with torch.no_grad():
        correct = cnn_module(torch.from_numpy(x)).argmax(1).numpy() == y
    x, y = x[correct], y[correct]
    ours = CarliniWagnerL2(steps=50, binary_steps=4).perturb(
        cnn_target, x, y, 0.0, rng=np.random.default_rng(0)
    )
    # torchattacks runs one constant; c=10, 200 steps at lr 0.05 was its best setting here.
    reference = torchattacks.CW(cnn_module, c=10, steps=200, lr=0.05)
    theirs = reference(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ours_rate, ours_median = _found(cnn_module, x, ours, y)
    theirs_rate, theirs_median = _found(cnn_module, x, theirs, y)
    assert ours_rate >= theirs_rate
    assert ours_median <= theirs_median, (ours_median, theirs_median)
    assert ours.min() >= 0.0
    assert ours.max() <= 1.0


def test_unfound_points_are_returned_unchanged(mlp_target: Any, digits: Any):
    x, y = digits[2][:10], digits[3][:10]
    weak = CarliniWagnerL2(steps=2, binary_steps=1, initial_const=1e-6)
    adv = weak.perturb(mlp_target, x, y, 0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(adv, x)


def test_domain_units(mlp_module: Any, digits: Any):
    """The same attack in [0, 255] raw units finds the same points, 255 times larger."""
    x, y = digits[2][:15], digits[3][:15]
    unit = TorchTarget.from_module(mlp_module, InputDomain((1, 8, 8), 0.0, 1.0))
    wide = TorchTarget.from_module(
        mlp_module, InputDomain((1, 8, 8), 0.0, 255.0, mean=(0.0,), std=(255.0,))
    )
    attack = CarliniWagnerL2(steps=20, binary_steps=2)
    a = attack.perturb(unit, x, y, 0.0, rng=np.random.default_rng(0))
    b = attack.perturb(wide, x * 255.0, y, 0.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(b / 255.0, a, atol=2e-3)


def test_options():
    attack = CwOptions.model_validate({"steps": 7, "kappa": 1.5}).build()
    assert (attack.steps, attack.kappa, attack.bounded) == (7, 1.5, False)
