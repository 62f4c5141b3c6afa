"""The inversion family: what does the model reveal about what its classes look like?

Runs MI-Face (:mod:`bastion.assess.privacy.inversion`, Fredrikson et al. 2015) on a white-box
target and judges each reconstruction against the class means of the ``--aux members=PATH``
data when given (the training data is what inversion reveals), else of the evaluation data.

Metrics:

- ``inversion.mi_face.identification_rate``: the fraction of classes whose reconstruction
  correlates best with its own class mean;
- ``inversion.mi_face.similarity``: the mean Pearson correlation of a reconstruction with its
  class mean;
- ``inversion.mi_face.confidence``: the target's mean confidence in the reconstructions.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.plots import ImageGrid
from bastion.assess.privacy.inversion import inversion_quality, mi_face
from bastion.assess.results import FamilyResult, Metric
from bastion.assess.targets.interface import Access
from bastion.errors import AssessmentError

__all__ = ["INVERSION", "InversionConfig", "InversionFamily"]


class InversionConfig(BaseModel):
    """``[inversion]``: MI-Face's parameters (Fredrikson et al.'s alpha, beta, gamma, lambda)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[int] | None = Field(default=None, description="classes (default: all)")
    steps: int = Field(default=1000, ge=1, le=1_000_000, description="most gradient steps")
    learning_rate: float = Field(default=0.1, gt=0, description="step, in domain-span units")
    patience: int | None = Field(default=100, ge=1, description="stop when no better than this")
    threshold: float | None = Field(default=0.01, ge=0, le=1, description="stop at cost 1 - p")


def _image(x: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Something the image grid can draw: (H, W), (C, H, W); flat inputs become a square."""
    if len(shape) >= 2:
        return x.reshape(shape)
    side = math.isqrt(int(np.prod(shape)))
    if side * side == int(np.prod(shape)):
        return x.reshape(side, side)
    return x.reshape(1, -1)


class InversionFamily:
    """MI-Face class reconstruction with a quality metric per class."""

    name = "inversion"
    summary = "model inversion (MI-Face class reconstruction, white box)"
    config_model = InversionConfig
    cli_options = (
        CliOption("--class", "classes", "class to invert (repeatable)", multiple=True),
        CliOption("--steps", "steps", "most gradient steps per class (default 1000)"),
    )

    def metric_names(self, config: InversionConfig) -> frozenset[str]:
        return frozenset(
            f"inversion.mi_face.{q}" for q in ("identification_rate", "similarity", "confidence")
        )

    def run(self, context: RunContext, config: InversionConfig) -> FamilyResult:
        started = time.perf_counter()
        target = context.target
        if target.info.access is not Access.GRADIENTS:
            raise AssessmentError(
                f"MI-Face needs gradients; the {target.info.kind} target gives "
                f"{target.info.access.value} only"
            )
        domain = target.domain
        classes = config.classes or list(range(target.info.num_classes))
        bad = [c for c in classes if not 0 <= c < target.info.num_classes]
        if bad:
            raise AssessmentError(f"classes {bad} are outside 0..{target.info.num_classes - 1}")
        queries_before = target.queries.used
        result = mi_face(
            target.torch_model(),
            classes,
            domain.shape,
            (domain.lower, domain.upper),
            steps=config.steps,
            learning_rate=config.learning_rate,
            patience=config.patience,
            threshold=config.threshold,
        )
        reference = context.aux.get("members", context.data)
        quality = inversion_quality(result, reference.x, reference.y)
        names = target.info.classes
        per_class = [
            {
                "class": names[c],
                "confidence": float(result.confidence[i]),
                "similarity": None
                if math.isnan(quality.similarity[i])
                else float(quality.similarity[i]),
                "identified": bool(quality.identified[i]),
                "steps": int(result.steps[i]),
            }
            for i, c in enumerate(result.classes)
        ]
        images = tuple(
            (
                f"{names[c]}: p={result.confidence[i]:.2f} r={quality.similarity[i]:.2f}",
                _image(result.images[i], domain.shape),
            )
            for i, c in enumerate(result.classes)
        )
        means = tuple(
            (
                f"mean of {names[c]}",
                _image(reference.x[reference.y == c].mean(axis=0), domain.shape),
            )
            for c in result.classes
            if np.any(reference.y == c)
        )
        similarity = (
            float(np.nanmean(quality.similarity))
            if np.isfinite(quality.similarity).any()
            else math.nan
        )
        metrics = (
            Metric("inversion.mi_face.identification_rate", quality.identification_rate),
            Metric("inversion.mi_face.similarity", similarity),
            Metric("inversion.mi_face.confidence", float(result.confidence.mean())),
        )
        return FamilyResult(
            family=self.name,
            metrics=metrics,
            details={
                "reference": reference.source,
                "classes": per_class,
                "parameters": config.model_dump(mode="json"),
            },
            charts=(
                ImageGrid("MI-Face reconstructions", images, (domain.lower, domain.upper)),
                ImageGrid("Class means of the reference data", means, (domain.lower, domain.upper)),
            ),
            summary=(
                f"MI-Face: {int(quality.identified.sum())}/{len(classes)} classes identified, "
                f"mean similarity {similarity:.2f}, mean confidence "
                f"{float(result.confidence.mean()):.2f}",
            ),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )


INVERSION = InversionFamily()
