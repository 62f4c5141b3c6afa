"""Integrity checks of ``bastion assess``: backdoors and invariance (stable API).

The algorithms are plain functions over arrays, callables and torch modules; the families in
:mod:`bastion.assess.families` adapt them to targets, policies and reports.
"""

from __future__ import annotations

from bastion.assess.integrity.backdoor import NeuralCleanseResult, anomaly_indices, neural_cleanse
from bastion.assess.integrity.invariance import (
    InvariancePoint,
    InvarianceReport,
    Transform,
    perturb,
    run_invariance,
)

__all__ = [
    "InvariancePoint",
    "InvarianceReport",
    "NeuralCleanseResult",
    "Transform",
    "anomaly_indices",
    "neural_cleanse",
    "perturb",
    "run_invariance",
]
