"""The demo's example model: a softmax classifier on scikit-learn's digits, in safetensors.

The model is a multinomial logistic regression (64 pixel inputs, 10 classes) trained on the
8x8 digits that scikit-learn ships, so the demo needs no download. It is written as a model
folder: ``model.safetensors`` (``weight`` [10, 64] and ``bias`` [10], float32) and
``config.json`` (architecture, input domain, classes, accuracy). Later stages (registry,
gateway, assessment) load it with :func:`load_model_folder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bastion.errors import BastionError

__all__ = ["DemoModel", "load_model_folder", "train_demo_model", "write_model_folder"]

ARCHITECTURE = "softmax-linear"


@dataclass(frozen=True, slots=True)
class DemoModel:
    """A trained softmax-linear classifier over raw pixel values in [0, 16]."""

    weight: NDArray[np.float32]
    bias: NDArray[np.float32]
    test_accuracy: float

    def logits(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        """Class scores for a batch of flattened 8x8 images."""
        return np.asarray(x, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.int64]:
        """Predicted digits for a batch of flattened 8x8 images."""
        predicted: NDArray[np.int64] = np.argmax(self.logits(x), axis=1).astype(np.int64)
        return predicted


def train_demo_model(seed: int = 0) -> tuple[DemoModel, NDArray[np.float64], NDArray[np.int64]]:
    """Train on 75% of the digits and measure on the rest.

    Returns:
        The model, and the held-out inputs and labels it was measured on.
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    classifier = LogisticRegression(max_iter=2000, C=0.1, random_state=seed)
    classifier.fit(x_train / 16.0, y_train)
    # Folding the 1/16 input scaling into the weights keeps the model on raw pixel values.
    weight = (classifier.coef_ / 16.0).astype(np.float32)
    bias = classifier.intercept_.astype(np.float32)
    model = DemoModel(weight=weight, bias=bias, test_accuracy=0.0)
    accuracy = float(np.mean(model.predict(x_test) == y_test))
    return DemoModel(weight, bias, accuracy), x_test, y_test


def write_model_folder(model: DemoModel, folder: Path) -> Path:
    """Write the model as ``folder/model.safetensors`` and ``folder/config.json``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": np.ascontiguousarray(model.weight), "bias": np.ascontiguousarray(model.bias)},
        str(folder / "model.safetensors"),
        metadata={"architecture": ARCHITECTURE},
    )
    config = {
        "architecture": ARCHITECTURE,
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}],
        "input_range": [0.0, 16.0],
        "classes": [str(c) for c in range(10)],
        "test_accuracy": round(model.test_accuracy, 4),
        "training_data": "sklearn.datasets.load_digits (75% split, seed 0)",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def load_model_folder(folder: Path) -> DemoModel:
    """Load a model folder written by :func:`write_model_folder` (safetensors only)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("architecture") != ARCHITECTURE:
        raise BastionError(f"unsupported architecture {config.get('architecture')!r} in {folder}")
    tensors = load_file(str(folder / "model.safetensors"))
    return DemoModel(
        weight=tensors["weight"],
        bias=tensors["bias"],
        test_accuracy=float(config.get("test_accuracy", 0.0)),
    )
