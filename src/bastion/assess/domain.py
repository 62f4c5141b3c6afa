"""The input domain of a model, declared once (stable API).

Every budget in ``bastion.assess`` is measured in the *raw* input space: the space the data
files hold and the space a real adversary perturbs (pixel values in [0, 255] or [0, 1], sensor
readings, ...). The model's preprocessing (per-channel ``(x - mean) / std``) belongs to the
domain and is applied inside the target, after the attack, so nobody has to remember that an
attack library wants inputs in [0, 1] while the model wants them normalised (the recurring
confusion of torchattacks issues #23, #97 and others).

Example: CIFAR-style images stored as floats in [0, 1] for a model trained on normalised
inputs::

    InputDomain(shape=(3, 32, 32), lower=0.0, upper=1.0,
                mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261))

An eps of 8/255 then means 8/255 in [0, 1] pixel units, whatever the normalisation.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import AssessmentError

__all__ = ["InputDomain", "load_domain", "parse_budget"]


@dataclass(frozen=True, slots=True)
class InputDomain:
    """Shape, raw bounds and preprocessing of a model's input.

    Attributes:
        shape: the shape of one sample, without the batch axis (``(64,)``, ``(1, 28, 28)``).
        lower: the smallest raw value a feature may take.
        upper: the largest raw value a feature may take.
        mean: per-channel means subtracted by the model's preprocessing (empty: none).
        std: per-channel standard deviations divided by the preprocessing (empty: none).
        channel_axis: the axis of ``shape`` that ``mean``/``std`` index.
    """

    shape: tuple[int, ...]
    lower: float = 0.0
    upper: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    channel_axis: int = 0

    def __post_init__(self) -> None:
        if not self.shape or any(d <= 0 for d in self.shape):
            raise AssessmentError(f"input shape {self.shape} must have positive dimensions")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise AssessmentError("input bounds must be finite")
        if self.lower >= self.upper:
            raise AssessmentError(f"input bounds [{self.lower}, {self.upper}] are empty")
        if len(self.mean) != len(self.std):
            raise AssessmentError("mean and std must have the same length")
        if any(s <= 0 or not math.isfinite(s) for s in self.std):
            raise AssessmentError("std values must be positive")
        if self.mean:
            if not -len(self.shape) <= self.channel_axis < len(self.shape):
                raise AssessmentError(f"channel axis {self.channel_axis} is outside {self.shape}")
            channels = self.shape[self.channel_axis]
            if len(self.mean) not in (1, channels):
                raise AssessmentError(
                    f"{len(self.mean)} normalisation values for {channels} channels"
                )

    @property
    def span(self) -> float:
        """``upper - lower``: the width of the raw range."""
        return self.upper - self.lower

    @property
    def size(self) -> int:
        """Number of features of one sample."""
        return math.prod(self.shape)

    @property
    def normalised(self) -> bool:
        """Whether the model's preprocessing normalises its input."""
        return bool(self.mean)

    def stats_shape(self) -> tuple[int, ...]:
        """The shape that broadcasts ``mean``/``std`` against a batch ``(n, *shape)``."""
        dims = [1] * (len(self.shape) + 1)
        if self.mean:
            axis = self.channel_axis % len(self.shape)
            dims[axis + 1] = len(self.mean)
        return tuple(dims)

    def preprocess(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Map raw inputs to what the model takes (``(x - mean) / std``, or unchanged)."""
        out = np.asarray(x, dtype=np.float32)
        if not self.mean:
            return out
        mean = np.asarray(self.mean, dtype=np.float32).reshape(self.stats_shape())
        std = np.asarray(self.std, dtype=np.float32).reshape(self.stats_shape())
        return np.asarray((out - mean) / std, dtype=np.float32)

    def clip(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Clip raw inputs to ``[lower, upper]``."""
        return np.clip(np.asarray(x, dtype=np.float32), self.lower, self.upper)

    def check(self, x: NDArray[Any], what: str = "inputs") -> None:
        """Check a raw batch against the domain.

        Raises:
            AssessmentError: wrong shape, non-finite values, or values outside the bounds.
        """
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise AssessmentError(
                f"{what} have shape {tuple(x.shape[1:])} per sample, the input domain "
                f"declares {self.shape}"
            )
        if x.size and not np.isfinite(x).all():
            raise AssessmentError(f"{what} contain NaN or infinite values")
        if x.size:
            low, high = float(x.min()), float(x.max())
            tolerance = 1e-6 * max(1.0, abs(self.lower), abs(self.upper))
            if low < self.lower - tolerance or high > self.upper + tolerance:
                raise AssessmentError(
                    f"{what} range over [{low:g}, {high:g}], outside the declared bounds "
                    f"[{self.lower:g}, {self.upper:g}] (declare the raw range with --bounds)"
                )

    def to_json(self) -> dict[str, Any]:
        """The domain as a JSON-ready mapping (for reports)."""
        return {
            "shape": list(self.shape),
            "bounds": [self.lower, self.upper],
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_axis": self.channel_axis,
        }


def parse_budget(value: str | float | int) -> float:
    """Parse a budget: a number or a fraction such as ``"8/255"``.

    Raises:
        AssessmentError: not a finite, non-negative number.
    """
    if isinstance(value, bool):
        raise AssessmentError(f"invalid budget {value!r}")
    try:
        number = float(Fraction(value.strip())) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise AssessmentError(f"invalid budget {value!r}: use a number or a fraction") from exc
    if not math.isfinite(number) or number < 0:
        raise AssessmentError(f"invalid budget {value!r}: must be finite and non-negative")
    return number


class _DomainFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: list[int] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)
    channel_axis: int = 0

    @model_validator(mode="after")
    def _stats(self) -> _DomainFile:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        return self


def load_domain(
    path: Path | None,
    *,
    shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_axis: int | None = None,
    default_shape: Sequence[int] | None = None,
) -> InputDomain:
    """Build the input domain from a TOML file and/or explicit values (explicit ones win).

    The file holds ``shape = [1, 28, 28]``, ``bounds = [0.0, 1.0]``, ``mean = [...]``,
    ``std = [...]`` and ``channel_axis = 0``; every key is optional. ``default_shape`` (the
    shape of the data) is used when neither gives one.

    Raises:
        AssessmentError: the file is unreadable or invalid, or no shape is known.
    """
    declared = _DomainFile()
    if path is not None:
        try:
            declared = _DomainFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise AssessmentError(f"cannot read domain file {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise AssessmentError(f"domain file {path} is not valid TOML: {exc}") from exc
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(p) for p in error["loc"]) or "domain"
            raise AssessmentError(f"invalid domain file {path}: {key}: {error['msg']}") from exc
    final_shape = shape or declared.shape or default_shape
    if not final_shape:
        raise AssessmentError("the input shape is unknown: declare it with --shape")
    return InputDomain(
        shape=tuple(int(d) for d in final_shape),
        lower=float((bounds or declared.bounds)[0]),
        upper=float((bounds or declared.bounds)[1]),
        mean=tuple(float(v) for v in (mean if mean is not None else declared.mean)),
        std=tuple(float(v) for v in (std if std is not None else declared.std)),
        channel_axis=declared.channel_axis if channel_axis is None else channel_axis,
    )
