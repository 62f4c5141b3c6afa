"""Values every assessment family returns (stable API).

A family (evasion, membership, ...) returns one :class:`FamilyResult`: flat, named
:class:`Metric` values that policy rules check, JSON-ready ``details`` for the report, charts
for the HTML report (:mod:`bastion.assess.plots`) and a few summary lines for Markdown.

Metric names are ``<family>.<method>.<quantity>`` (``evasion.pgd_linf.success_rate``,
``membership.lira_offline.tpr``); ``at`` is the operating point when there are several (the
budget eps, the false-positive rate, the number of queries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bastion.assess.plots import Chart

__all__ = ["Direction", "FamilyResult", "Metric", "ProgressCallback", "no_progress"]

#: Progress observer: ``(task, done, total)``; the CLI turns it into progress bars.
ProgressCallback = Callable[[str, int, int], None]


def no_progress(task: str, done: int, total: int) -> None:
    """The progress observer that ignores everything."""


class Direction(StrEnum):
    """Which way a metric gets worse for the defender."""

    HIGHER_IS_WORSE = "higher_is_worse"  #: attack success, TPR, fidelity, anomaly index
    LOWER_IS_WORSE = "lower_is_worse"  #: robust accuracy, invariance


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured number.

    Attributes:
        name: ``<family>.<method>.<quantity>``.
        value: the number (NaN when it could not be measured: a rule on it is not met).
        at: the operating point (budget, FPR, queries), or None.
        direction: which way is worse for the defender.
        unit: a short unit for people (``""``, ``"queries"``, ``"L2"``).
    """

    name: str
    value: float
    at: float | None = None
    direction: Direction = Direction.HIGHER_IS_WORSE
    unit: str = ""

    def matches(self, name: str, at: float | None) -> bool:
        """Whether this is metric ``name`` at operating point ``at`` (None: any single one)."""
        if self.name != name:
            return False
        if at is None:
            return True
        return self.at is not None and math.isclose(self.at, at, rel_tol=1e-6, abs_tol=1e-12)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if math.isnan(self.value) else self.value,
            "at": self.at,
            "direction": self.direction.value,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class FamilyResult:
    """What one assessment family measured.

    Attributes:
        family: the family's name (``evasion``).
        metrics: the numbers policy rules can check.
        details: JSON-ready specifics for the report (per-attack tables, parameters).
        charts: charts for the HTML report.
        summary: short lines for the Markdown and text summaries.
        queries: queries this family made to the target.
        seconds: wall time.
    """

    family: str
    metrics: tuple[Metric, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    charts: tuple[Chart, ...] = ()
    summary: tuple[str, ...] = ()
    queries: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "metrics": [m.to_json() for m in self.metrics],
            "details": dict(self.details),
            "summary": list(self.summary),
            "queries": self.queries,
            "seconds": round(self.seconds, 3),
        }
