"""Privacy attacks of ``bastion assess``: membership inference, extraction, inversion (stable API).

The algorithms are plain functions over arrays, callables and torch modules; the families in
:mod:`bastion.assess.families` adapt them to targets, policies and reports.
"""

from __future__ import annotations

from bastion.assess.privacy.membership import (
    MembershipAttack,
    MembershipAttackResult,
    MembershipReport,
    ShadowTrainer,
    SklearnShadowTrainer,
    TorchShadowTrainer,
    run_membership,
)
from bastion.assess.privacy.roc import RocCurve, RocSummary, roc_curve, summarize_roc, tpr_at_fpr

__all__ = [
    "MembershipAttack",
    "MembershipAttackResult",
    "MembershipReport",
    "RocCurve",
    "RocSummary",
    "ShadowTrainer",
    "SklearnShadowTrainer",
    "TorchShadowTrainer",
    "roc_curve",
    "run_membership",
    "summarize_roc",
    "tpr_at_fpr",
]
