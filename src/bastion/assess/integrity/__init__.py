"""Integrity checks of ``bastion assess``: backdoors and invariance (stable API).

The algorithms are plain functions over arrays, callables and torch modules; the families in
:mod:`bastion.assess.families` adapt them to targets, policies and reports.
"""

from __future__ import annotations

from bastion.assess.integrity.backdoor import NeuralCleanseResult, anomaly_indices, neural_cleanse

__all__ = ["NeuralCleanseResult", "anomaly_indices", "neural_cleanse"]
