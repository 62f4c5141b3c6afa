"""Assessment targets, one module each (stable API); see :mod:`.interface`."""

from __future__ import annotations

from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryBudgetError,
    QueryCounter,
    Target,
    TargetInfo,
)

__all__ = ["Access", "OutputKind", "QueryBudgetError", "QueryCounter", "Target", "TargetInfo"]
