"""The invariance family: do predictions survive brightness, noise and small shifts?

Runs :mod:`bastion.assess.integrity.invariance` (labels only, any target). Metrics:
``invariance.<transform>.stability`` at each magnitude (domain-span units; pixels for
shifts), the fraction of predictions unchanged; a policy rule without ``at`` must hold at
every magnitude. A transform that does not apply (a shift of flat inputs) reports NaN.
"""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess.families.interface import CliOption, RunContext
from bastion.assess.integrity.invariance import Transform, run_invariance
from bastion.assess.plots import LineChart, Series
from bastion.assess.results import Direction, FamilyResult, Metric

__all__ = ["INVARIANCE", "InvarianceConfig", "InvarianceFamily"]


class InvarianceConfig(BaseModel):
    """``[invariance]``: magnitudes per transform (an empty list skips the transform)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    brightness: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])
    noise: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1])
    shift: list[int] = Field(default_factory=lambda: [1, 2])

    @field_validator("brightness", "noise", "shift", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("brightness", "noise", "shift")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("magnitudes must be >= 0")
        return sorted(set(value))

    def plan(self) -> list[tuple[Transform, list[float]]]:
        return [
            (t, [float(m) for m in getattr(self, t.value)])
            for t in Transform
            if getattr(self, t.value)
        ]


class InvarianceFamily:
    """Invariance tests: prediction stability under natural perturbations."""

    name = "invariance"
    summary = "invariance tests (brightness, noise, small shifts): prediction stability"
    config_model = InvarianceConfig
    cli_options = (
        CliOption("--brightness", "brightness", "brightness offsets (span units)", multiple=True),
        CliOption("--noise", "noise", "noise sigmas (span units)", multiple=True),
        CliOption("--shift", "shift", "shifts in pixels", multiple=True),
    )

    def metric_names(self, config: InvarianceConfig) -> frozenset[str]:
        return frozenset(f"invariance.{t.value}.stability" for t, _ in config.plan())

    def run(self, context: RunContext, config: InvarianceConfig) -> FamilyResult:
        started = time.perf_counter()
        target, data = context.target, context.data
        domain = target.domain
        queries_before = target.queries.used
        report = run_invariance(
            target.predict_labels,
            data.x,
            bounds=(domain.lower, domain.upper),
            transforms=config.plan(),
            channel_axis=domain.channel_axis % len(domain.shape)
            if len(domain.shape) >= 3
            else None,
            y=data.y,
            rng=context.rng("invariance"),
        )
        metrics = [
            Metric(
                f"invariance.{p.transform.value}.stability",
                p.stability,
                p.magnitude,
                Direction.LOWER_IS_WORSE,
                "pixels" if p.transform is Transform.SHIFT else "span",
            )
            for p in report.points
        ]
        skipped = dict(report.skipped)
        for transform, magnitudes in config.plan():
            if transform in skipped:
                metrics.extend(
                    Metric(
                        f"invariance.{transform.value}.stability",
                        math.nan,
                        m,
                        Direction.LOWER_IS_WORSE,
                    )
                    for m in magnitudes
                )
        charts = tuple(
            LineChart(
                f"Invariance: {t.value}",
                "shift (pixels)" if t is Transform.SHIFT else f"{t.value} (fraction of the span)",
                "predictions unchanged",
                (
                    Series(
                        t.value,
                        tuple(p.magnitude for p in report.points if p.transform is t),
                        tuple(p.stability for p in report.points if p.transform is t),
                    ),
                ),
                y_range=(0.0, 1.0),
            )
            for t, _ in config.plan()
            if t not in skipped
        )
        summary = [
            f"{t.value}: at least {report.worst(t):.1%} of predictions unchanged"
            for t, _ in config.plan()
            if t not in skipped
        ]
        summary.extend(f"{t.value}: skipped ({why})" for t, why in report.skipped)
        return FamilyResult(
            family=self.name,
            metrics=tuple(metrics),
            details={
                "samples": len(data),
                "clean_accuracy": report.clean_accuracy,
                "points": [
                    {
                        "transform": p.transform.value,
                        "magnitude": p.magnitude,
                        "stability": p.stability,
                        "accuracy": p.accuracy,
                    }
                    for p in report.points
                ],
                "skipped": [{"transform": t.value, "reason": why} for t, why in report.skipped],
            },
            charts=charts,
            summary=tuple(summary),
            queries=target.queries.used - queries_before,
            seconds=time.perf_counter() - started,
        )


INVARIANCE = InvarianceFamily()
