"""Model inversion: what does the model remember a class looks like? (stable API)

MI-Face (Fredrikson, Jha and Ristenpart 2015, "Model Inversion Attacks that Exploit Confidence
Information and Basic Countermeasures", CCS, Algorithm 1). Threat model: white box (gradients
of the class probabilities with respect to the input), no training data. For each class it
descends the cost ``c(x) = 1 - p_class(x)`` from a blank input, projecting onto the input
domain after every step, and stops after ``steps`` iterations, when the cost has not improved
on the last ``patience`` costs, or when it falls to ``threshold``; the best input seen is the
reconstruction.

Quality per class (what a reviewer reads): the target's confidence in the reconstruction, its
Pearson correlation with the mean training image of the class (Fredrikson et al. judge by
whether people identify the person; correlation with the class mean is the automatic
stand-in), and whether the reconstruction correlates best with its own class's mean
(*identified*). A model whose reconstructions are identified for most classes leaks what its
classes look like.

The learning rate is in units of the domain's span (the input scaled to [0, 1]), so one
setting serves inputs in [0, 1] and in [0, 255] alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import AssessmentError

__all__ = ["InversionQuality", "MiFaceResult", "inversion_quality", "mi_face"]


@dataclass(frozen=True, slots=True)
class MiFaceResult:
    """The reconstructions.

    Attributes:
        classes: the classes inverted.
        images: ``[len(classes), *shape]`` float32, raw units, inside the domain.
        confidence: the target's probability of each class on its reconstruction.
        steps: gradient steps each reconstruction took.
    """

    classes: tuple[int, ...]
    images: NDArray[np.float32]
    confidence: NDArray[np.float64]
    steps: NDArray[np.int64]


def mi_face(
    model: Any,
    classes: Sequence[int],
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    *,
    steps: int = 1000,
    learning_rate: float = 0.1,
    patience: int | None = 100,
    threshold: float | None = 0.01,
    start: ArrayLike | None = None,
) -> MiFaceResult:
    """Invert ``model`` for each of ``classes`` (all in one batch).

    Args:
        model: a ``torch.nn.Module`` from raw inputs ``[n, *shape]`` to logits.
        classes: the classes to reconstruct.
        shape: one input's shape.
        bounds: the raw input bounds.
        steps: the most gradient steps (Fredrikson et al.'s alpha).
        learning_rate: the step size in units of the domain's span (lambda).
        patience: stop a class when its cost is no lower than the highest of its last
            ``patience`` costs (beta); None never stops early this way.
        threshold: stop a class when its cost ``1 - p`` is at most this (gamma); None never.
        start: the starting input (default: the lower bound everywhere, a blank image).
    """
    import torch

    if not classes:
        raise AssessmentError("model inversion needs at least one class")
    lower, upper = bounds
    span = upper - lower
    if span <= 0:
        raise AssessmentError("model inversion needs an input domain with upper > lower")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = len(classes)
    labels = torch.as_tensor(list(classes), dtype=torch.int64, device=device)
    if start is None:
        x = torch.full((n, *shape), float(lower), dtype=torch.float32, device=device)
    else:
        x = torch.as_tensor(np.broadcast_to(np.asarray(start), (n, *shape)).copy()).float()
        x = x.to(device)
    # Gradient in raw units is 1/span of the gradient in [0, 1] units; a step of lr in [0, 1]
    # units is lr * span raw units: hence lr * span^2 on the raw gradient.
    step_size = learning_rate * span * span
    rows = torch.arange(n, device=device)

    def cost_and_grad(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = inputs.detach().requires_grad_(True)
        probs = torch.softmax(model(inputs).double(), dim=1)[rows, labels]
        (grad,) = torch.autograd.grad(probs.sum(), inputs)
        return (1.0 - probs).detach(), -grad

    cost, grad = cost_and_grad(x)
    best_x, best_cost = x.clone(), cost.clone()
    active = torch.ones(n, dtype=torch.bool, device=device)
    taken = torch.zeros(n, dtype=torch.int64, device=device)
    history: list[torch.Tensor] = []
    for _ in range(steps):
        if not bool(active.any()):
            break
        mask = active.view(n, *([1] * len(shape)))
        x = torch.where(mask, (x - step_size * grad).clamp(lower, upper), x)
        taken += active.long()
        new_cost, grad = cost_and_grad(x)
        better = active & (new_cost < best_cost)
        best_cost = torch.where(better, new_cost, best_cost)
        best_x[better] = x[better]
        stop = torch.zeros_like(active)
        if patience is not None and len(history) >= patience:
            window = torch.stack(history[-patience:]).amax(dim=0)
            stop |= new_cost >= window
        if threshold is not None:
            stop |= new_cost <= threshold
        history.append(torch.where(active, new_cost, torch.full_like(new_cost, np.inf)))
        active &= ~stop
        cost = torch.where(active | stop, new_cost, cost)
    return MiFaceResult(
        classes=tuple(int(c) for c in classes),
        images=best_x.detach().cpu().numpy().astype(np.float32),
        confidence=(1.0 - best_cost).cpu().numpy().astype(np.float64),
        steps=taken.cpu().numpy().astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class InversionQuality:
    """How much each reconstruction reveals.

    Attributes:
        similarity: Pearson correlation of each reconstruction with its class's mean input
            (NaN for a class without examples).
        identified: whether the reconstruction correlates best with its own class's mean
            among all class means.
        identification_rate: the fraction of classes identified.
    """

    similarity: NDArray[np.float64]
    identified: NDArray[np.bool_]
    identification_rate: float


def _pearson(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Correlations between every row of ``a`` and every row of ``b``."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        result: NDArray[np.float64] = (a @ b.T) / (na * nb.T)
    return np.nan_to_num(result, nan=0.0)


def inversion_quality(result: MiFaceResult, x: ArrayLike, y: ArrayLike) -> InversionQuality:
    """Compare reconstructions with the class means of labelled data ``(x, y)``."""
    data = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y).reshape(-1)
    if len(data) != labels.size or labels.size == 0:
        raise AssessmentError("inversion quality needs labelled data")
    present = np.unique(labels)
    means = np.stack([data[labels == c].reshape(-1, *data.shape[1:]).mean(axis=0) for c in present])
    recon = result.images.reshape(len(result.classes), -1).astype(np.float64)
    corr = _pearson(recon, means.reshape(len(present), -1))
    similarity = np.full(len(result.classes), np.nan)
    identified = np.zeros(len(result.classes), dtype=bool)
    index = {int(c): i for i, c in enumerate(present)}
    for row, c in enumerate(result.classes):
        if c in index:
            similarity[row] = corr[row, index[c]]
            identified[row] = int(present[int(np.argmax(corr[row]))]) == c
    return InversionQuality(
        similarity=similarity,
        identified=identified,
        identification_rate=float(identified.mean()),
    )
