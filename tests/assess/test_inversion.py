"""MI-Face: identical to ART's MIFace step for step; reconstructions look like their class."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

from bastion.assess.privacy.inversion import inversion_quality, mi_face
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")


def test_matches_art_mi_face_step_for_step(mlp_module: Any) -> None:
    """ART's MIFace ascends the class probability with a fixed step and clips; ours descends
    1 - p with the same step. Run both for a fixed number of steps (ART's stopping rule cannot
    be matched: with threshold=1.0 and a window longer than the run it never stops) and the
    reconstructions agree to float32 precision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.attacks.inference.model_inversion import MIFace
        from art.estimators.classification import PyTorchClassifier

    probability_model = torch.nn.Sequential(mlp_module, torch.nn.Softmax(dim=1))
    classifier = PyTorchClassifier(
        probability_model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    art = MIFace(
        classifier,
        max_iter=40,
        window_length=100,
        threshold=1.0,
        learning_rate=0.1,
        batch_size=10,
        verbose=False,
    )
    art_images = art.infer(None, np.arange(10))
    ours = mi_face(
        mlp_module,
        range(10),
        (1, 8, 8),
        (0.0, 1.0),
        steps=40,
        learning_rate=0.1,
        patience=None,
        threshold=None,
    )
    assert (ours.steps == 40).all()
    # A last-step reconstruction is the best one here (the cost keeps falling).
    np.testing.assert_allclose(ours.images, art_images, atol=2e-5)


def test_reconstructions_are_identified_and_confident(mlp_module: Any, digits: Any) -> None:
    x_train, y_train, _, _ = digits
    result = mi_face(mlp_module, range(10), (1, 8, 8), (0.0, 1.0))
    assert (result.confidence >= 0.99).all()  # stopped at the threshold (gamma = 0.01)
    assert (result.steps < 1000).all()
    assert result.images.min() >= 0.0
    assert result.images.max() <= 1.0
    quality = inversion_quality(result, x_train, y_train)
    assert quality.identification_rate >= 0.8
    assert np.nanmean(quality.similarity) > 0.3


def test_an_untrained_model_reveals_nothing(digits: Any) -> None:
    x_train, y_train, _, _ = digits
    torch.manual_seed(5)
    untrained = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    result = mi_face(untrained, range(10), (1, 8, 8), (0.0, 1.0), steps=200)
    quality = inversion_quality(result, x_train, y_train)
    assert quality.identification_rate <= 0.3
    assert np.nanmean(quality.similarity) < 0.2


def test_learning_rate_is_in_units_of_the_span(mlp_module: Any) -> None:
    """The same inversion on inputs scaled to [0, 16] gives the same images, times 16."""

    class Scaled(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return mlp_module(x / 16.0)

    unit = mi_face(mlp_module, [3, 7], (1, 8, 8), (0.0, 1.0), steps=30, threshold=None)
    raw = mi_face(Scaled(), [3, 7], (1, 8, 8), (0.0, 16.0), steps=30, threshold=None)
    np.testing.assert_allclose(raw.images / 16.0, unit.images, atol=1e-5)
    np.testing.assert_array_equal(raw.steps, unit.steps)


def test_patience_stops_a_stalled_class() -> None:
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    torch.nn.init.zeros_(constant[1].weight)
    torch.nn.init.zeros_(constant[1].bias)
    result = mi_face(constant, [0, 1], (64,), (0.0, 1.0), steps=500, patience=5)
    # No gradient: the cost never improves and each class stops after patience + 1 steps.
    assert (result.steps == 6).all()
    np.testing.assert_allclose(result.confidence, 1 / 3, rtol=1e-6)


def test_bad_arguments(mlp_module: Any) -> None:
    with pytest.raises(AssessmentError, match="at least one class"):
        mi_face(mlp_module, [], (1, 8, 8), (0.0, 1.0))
    with pytest.raises(AssessmentError, match="upper > lower"):
        mi_face(mlp_module, [1], (1, 8, 8), (1.0, 1.0))
