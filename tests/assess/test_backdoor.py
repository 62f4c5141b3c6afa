"""Neural Cleanse: flags the target of a planted 2x2 trigger, and nothing on a clean model."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.integrity.backdoor import anomaly_indices, neural_cleanse
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")

TARGET = 0


def _poisoned_mlp(digits: Any) -> Any:
    """The conftest MLP's recipe, trained with 10% extra images carrying a white 2x2 patch in
    the bottom-right corner and labelled TARGET (BadNets-style data poisoning)."""
    x_train, y_train, _, _ = digits
    rng = np.random.default_rng(0)
    chosen = rng.choice(np.flatnonzero(y_train != TARGET), len(x_train) // 10, replace=False)
    stamped = x_train[chosen].copy()
    stamped[:, :, 6:8, 6:8] = 1.0
    x = torch.from_numpy(np.concatenate([x_train, stamped]))
    y = torch.from_numpy(np.concatenate([y_train, np.full(len(chosen), TARGET)]))
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def test_flags_the_planted_trigger_target(digits: Any) -> None:
    _, _, x_test, y_test = digits
    model = _poisoned_mlp(digits)
    triggered = x_test.copy()
    triggered[:, :, 6:8, 6:8] = 1.0
    with torch.no_grad():
        clean_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
        success = (model(torch.from_numpy(triggered)).argmax(1).numpy() == TARGET).mean()
    assert clean_acc > 0.95  # the backdoor hides behind a good model
    assert success > 0.9

    result = neural_cleanse(model, x_test[:200], 10, (0.0, 1.0), seed=0)
    assert result.flagged == (TARGET,)
    assert result.anomaly_index[TARGET] > 2.0
    assert result.l1_norms[TARGET] == result.l1_norms.min()
    assert result.reached.all()
    assert result.max_anomaly_index == result.anomaly_index[TARGET]
    # The reversed trigger sits where the planted one does.
    mask = result.masks[TARGET]
    assert mask.shape == (8, 8)
    assert mask[6:8, 6:8].sum() > 0.5 * mask.sum()


def test_flags_nothing_on_a_clean_model(mlp_module: Any, digits: Any) -> None:
    _, _, x_test, _ = digits
    result = neural_cleanse(mlp_module, x_test[:200], 10, (0.0, 1.0), seed=0)
    assert result.flagged == ()
    assert result.reached.all()
    assert result.max_anomaly_index < 2.0
    assert result.masks.min() >= 0.0
    assert result.masks.max() <= 1.0
    assert result.patterns.min() >= 0.0
    assert result.patterns.max() <= 1.0


def test_anomaly_index_uses_the_consistency_constant() -> None:
    norms = [10.0, 11.0, 9.0, 12.0, 8.0, 2.0]
    index, median, mad = anomaly_indices(norms)
    assert median == 9.5
    # |x - 9.5| = .5 1.5 .5 2.5 1.5 7.5 -> median 1.5 -> MAD 1.4826 * 1.5
    assert mad == pytest.approx(1.4826 * 1.5)
    assert index[5] == pytest.approx(7.5 / (1.4826 * 1.5))
    flat, _, zero = anomaly_indices([5.0, 5.0, 5.0, 1.0])
    assert zero == 0.0
    assert flat.tolist() == [0.0, 0.0, 0.0, np.inf]
    with pytest.raises(AssessmentError, match="at least 3"):
        anomaly_indices([1.0, 2.0])


def test_flat_inputs_get_one_mask_value_per_feature(mlp_module: Any, digits: Any) -> None:
    _, _, x_test, _ = digits

    class Flat(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return mlp_module(x.reshape(-1, 1, 8, 8))

    seen: list[tuple[int, int]] = []
    result = neural_cleanse(
        Flat(),
        x_test[:64].reshape(64, 64),
        10,
        (0.0, 1.0),
        channel_axis=None,
        epochs=3,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.masks.shape == (10, 64)
    assert result.patterns.shape == (10, 64)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(AssessmentError, match="channel axis"):
        neural_cleanse(Flat(), x_test[:4].reshape(4, 64), 10, (0.0, 1.0), channel_axis=1)
