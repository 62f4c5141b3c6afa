"""Invariance tests: does the prediction survive changes that should not matter? (stable API)

Threat model: none in particular, black box with labels only: these are the natural
perturbations a deployed model meets (lighting, sensor noise, framing). For each transform and
magnitude, the *stability* is the fraction of inputs whose predicted label is the same as on
the untouched input (a label that flips under a one-pixel shift is a fragile model, whatever
its accuracy). Magnitudes are in units of the input domain's span, or pixels for shifts:

- ``brightness`` ``m``: ``x + m * span`` and ``x - m * span``, clipped to the domain (both
  directions count);
- ``noise`` ``m``: ``x + N(0, (m * span)^2)`` per value, clipped, one seeded draw;
- ``shift`` ``m``: the image moved ``m`` pixels up, down, left and right, the uncovered border
  filled with the domain's lower bound (all four count). Needs at least two spatial axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import AssessmentError

__all__ = ["InvariancePoint", "InvarianceReport", "Transform", "perturb", "run_invariance"]


class Transform(StrEnum):
    """The natural perturbations."""

    BRIGHTNESS = "brightness"
    NOISE = "noise"
    SHIFT = "shift"


#: Magnitudes used when none are given.
DEFAULT_MAGNITUDES: dict[Transform, tuple[float, ...]] = {
    Transform.BRIGHTNESS: (0.05, 0.1, 0.2),
    Transform.NOISE: (0.02, 0.05, 0.1),
    Transform.SHIFT: (1.0, 2.0),
}


def _spatial_axes(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, int]:
    spatial = [i for i in range(len(shape)) if i != channel_axis]
    if len(spatial) < 2:
        raise AssessmentError(f"a shift needs two spatial axes; inputs have shape {shape}")
    return spatial[-2] + 1, spatial[-1] + 1  # +1: the batch axis


def _shift(x: NDArray[np.float32], axis: int, by: int, fill: float) -> NDArray[np.float32]:
    out = np.full_like(x, fill)
    size = x.shape[axis]
    if abs(by) >= size:
        return out
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    if by > 0:
        src[axis], dst[axis] = slice(0, size - by), slice(by, size)
    else:
        src[axis], dst[axis] = slice(-by, size), slice(0, size + by)
    out[tuple(dst)] = x[tuple(src)]
    return out


def perturb(
    x: NDArray[Any],
    transform: Transform,
    magnitude: float,
    bounds: tuple[float, float],
    *,
    channel_axis: int | None = 0,
    rng: np.random.Generator | None = None,
) -> list[NDArray[np.float32]]:
    """The perturbed copies of ``x`` for one transform and magnitude (one per direction)."""
    batch = np.asarray(x, dtype=np.float32)
    lower, upper = bounds
    span = upper - lower
    if magnitude < 0:
        raise AssessmentError(f"a {transform} magnitude must be >= 0, got {magnitude}")
    if transform is Transform.BRIGHTNESS:
        delta = np.float32(magnitude * span)
        return [np.clip(batch + d, lower, upper).astype(np.float32) for d in (delta, -delta)]
    if transform is Transform.NOISE:
        generator = rng if rng is not None else np.random.default_rng(0)
        noise = generator.normal(0.0, magnitude * span, size=batch.shape).astype(np.float32)
        return [np.clip(batch + noise, lower, upper).astype(np.float32)]
    pixels = round(magnitude)
    if pixels != magnitude:
        raise AssessmentError(f"a shift is a whole number of pixels, got {magnitude}")
    rows, cols = _spatial_axes(tuple(batch.shape[1:]), channel_axis)
    return [_shift(batch, axis, by, lower) for axis in (rows, cols) for by in (pixels, -pixels)]


@dataclass(frozen=True, slots=True)
class InvariancePoint:
    """Stability under one transform at one magnitude.

    Attributes:
        transform: which transform.
        magnitude: its size (domain-span units, or pixels).
        stability: the fraction of predictions unchanged (over all directions).
        accuracy: the accuracy on the perturbed inputs (None without labels).
    """

    transform: Transform
    magnitude: float
    stability: float
    accuracy: float | None


@dataclass(frozen=True, slots=True)
class InvarianceReport:
    """Every point measured, and the transforms that could not be applied.

    Attributes:
        points: one per transform and magnitude.
        clean_accuracy: accuracy on the untouched inputs (None without labels).
        skipped: ``(transform, reason)`` for transforms that do not apply to these inputs.
    """

    points: tuple[InvariancePoint, ...]
    clean_accuracy: float | None
    skipped: tuple[tuple[Transform, str], ...]

    def worst(self, transform: Transform) -> float:
        """The lowest stability of one transform (NaN when it was not measured)."""
        values = [p.stability for p in self.points if p.transform is transform]
        return min(values) if values else float("nan")


def run_invariance(
    predict_labels: Callable[[NDArray[np.float32]], ArrayLike],
    x: NDArray[Any],
    *,
    bounds: tuple[float, float],
    transforms: Sequence[tuple[Transform, Sequence[float]]] | None = None,
    channel_axis: int | None = 0,
    y: ArrayLike | None = None,
    rng: np.random.Generator | None = None,
) -> InvarianceReport:
    """Measure stability for each transform and magnitude.

    Args:
        predict_labels: the target: raw inputs to labels (charged per input).
        x: raw inputs ``[n, *shape]``.
        bounds: the raw input bounds.
        transforms: ``(transform, magnitudes)`` pairs; default: every transform at
            :data:`DEFAULT_MAGNITUDES`.
        channel_axis: the channel axis of one input (shifts move the other two).
        y: true labels, for accuracy under each transform.
        rng: draws the noise.
    """
    batch = np.asarray(x, dtype=np.float32)
    if len(batch) == 0:
        raise AssessmentError("invariance tests need inputs")
    plan = (
        [(t, DEFAULT_MAGNITUDES[t]) for t in Transform]
        if transforms is None
        else [(Transform(t), tuple(m)) for t, m in transforms]
    )
    generator = rng if rng is not None else np.random.default_rng(0)
    base = np.asarray(predict_labels(batch)).reshape(-1)
    truth = None if y is None else np.asarray(y).reshape(-1)
    points: list[InvariancePoint] = []
    skipped: list[tuple[Transform, str]] = []
    for transform, magnitudes in plan:
        if transform is Transform.SHIFT:
            try:
                _spatial_axes(tuple(batch.shape[1:]), channel_axis)
            except AssessmentError as exc:
                skipped.append((transform, str(exc)))
                continue
        for magnitude in magnitudes:
            copies = perturb(
                batch, transform, float(magnitude), bounds, channel_axis=channel_axis, rng=generator
            )
            labels = np.concatenate([np.asarray(predict_labels(c)).reshape(-1) for c in copies])
            reference = np.tile(base, len(copies))
            points.append(
                InvariancePoint(
                    transform=transform,
                    magnitude=float(magnitude),
                    stability=float(np.mean(labels == reference)),
                    accuracy=None
                    if truth is None
                    else float(np.mean(labels == np.tile(truth, len(copies)))),
                )
            )
    return InvarianceReport(
        points=tuple(points),
        clean_accuracy=None if truth is None else float(np.mean(base == truth)),
        skipped=tuple(skipped),
    )
