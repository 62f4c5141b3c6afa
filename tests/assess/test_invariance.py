"""Invariance tests: the perturbations are what they claim, stability is counted right."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.integrity.invariance import Transform, perturb, run_invariance
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")


def _labels(model: Any) -> Any:
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    return predict


def test_perturbations() -> None:
    x = np.zeros((1, 1, 3, 3), dtype=np.float32)
    x[0, 0, 1, 1] = 8.0
    bright = perturb(x, Transform.BRIGHTNESS, 0.25, (0.0, 16.0))
    assert [float(c.max()) for c in bright] == [12.0, 4.0]
    assert float(bright[1].min()) == 0.0  # clipped at the lower bound
    shifted = perturb(x, Transform.SHIFT, 1, (0.0, 16.0))
    centres = sorted(tuple(int(i) for i in np.argwhere(c[0, 0] == 8.0)[0]) for c in shifted)
    assert centres == [(0, 1), (1, 0), (1, 2), (2, 1)]
    grey = np.full((1, 1, 100, 100), 8.0, dtype=np.float32)
    noisy = perturb(grey, Transform.NOISE, 0.1, (0.0, 16.0), rng=np.random.default_rng(0))[0]
    assert float(np.std(noisy - grey)) == pytest.approx(1.6, rel=0.05)
    assert perturb(x, Transform.NOISE, 1.0, (0.0, 16.0))[0].min() >= 0.0
    assert perturb(x, Transform.NOISE, 1.0, (0.0, 16.0))[0].max() <= 16.0
    with pytest.raises(AssessmentError, match="whole number of pixels"):
        perturb(x, Transform.SHIFT, 0.5, (0.0, 16.0))


def test_identity_model_is_perfectly_stable_and_stability_falls_with_magnitude(
    mlp_module: Any, digits: Any
) -> None:
    _, _, x_test, y_test = digits
    constant = run_invariance(lambda q: np.zeros(len(q), np.int64), x_test[:50], bounds=(0, 1))
    assert all(p.stability == 1.0 for p in constant.points)

    report = run_invariance(
        _labels(mlp_module),
        x_test[:300],
        bounds=(0.0, 1.0),
        transforms=[
            (Transform.NOISE, [0.0, 0.1, 0.4]),
            (Transform.SHIFT, [1, 3]),
            (Transform.BRIGHTNESS, [0.0, 0.3]),
        ],
        y=y_test[:300],
    )
    noise = [p.stability for p in report.points if p.transform is Transform.NOISE]
    assert noise[0] == 1.0
    assert noise[0] >= noise[1] > noise[2]
    shift = [p.stability for p in report.points if p.transform is Transform.SHIFT]
    assert shift[0] > shift[1]
    assert report.worst(Transform.SHIFT) == shift[1]
    assert report.clean_accuracy is not None
    assert report.clean_accuracy > 0.9
    assert report.skipped == ()


def test_counts_against_the_clean_prediction_not_the_label() -> None:
    x = np.linspace(0, 1, 10, dtype=np.float32).reshape(10, 1)

    def threshold(q: np.ndarray) -> np.ndarray:
        return (q[:, 0] > 0.5).astype(np.int64)

    report = run_invariance(
        threshold,
        x,
        bounds=(0.0, 1.0),
        transforms=[(Transform.BRIGHTNESS, [0.1])],
        channel_axis=None,
    )
    # +0.1 flips 0.444 -> 0.544; -0.1 flips 0.556 -> 0.456: 2 flips in 20 predictions.
    assert report.points[0].stability == pytest.approx(18 / 20)
    assert report.points[0].accuracy is None


def test_shift_is_skipped_for_flat_inputs() -> None:
    report = run_invariance(
        lambda q: np.zeros(len(q), np.int64),
        np.zeros((4, 64), np.float32),
        bounds=(0.0, 1.0),
        channel_axis=None,
    )
    assert [t for t, _ in report.skipped] == [Transform.SHIFT]
    assert np.isnan(report.worst(Transform.SHIFT))
    assert {p.transform for p in report.points} == {Transform.BRIGHTNESS, Transform.NOISE}
