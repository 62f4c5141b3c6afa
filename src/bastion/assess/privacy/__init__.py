"""Privacy attacks of ``bastion assess``: membership inference, extraction, inversion (stable API).

The algorithms are plain functions over arrays, callables and torch modules; the families in
:mod:`bastion.assess.families` adapt them to targets, policies and reports.
"""

from __future__ import annotations

from bastion.assess.privacy.extraction import (
    Answers,
    EquationSolvingResult,
    LinearModel,
    SubstituteResult,
    TorchSubstitute,
    solve_softmax_regression,
    train_substitutes,
)
from bastion.assess.privacy.inversion import (
    InversionQuality,
    MiFaceResult,
    inversion_quality,
    mi_face,
)
from bastion.assess.privacy.membership import (
    MembershipAttack,
    MembershipAttackResult,
    MembershipReport,
    ShadowTrainer,
    SklearnShadowTrainer,
    TorchShadowTrainer,
    lira_scores,
    run_membership,
)
from bastion.assess.privacy.roc import RocCurve, RocSummary, roc_curve, summarize_roc, tpr_at_fpr

__all__ = [
    "Answers",
    "EquationSolvingResult",
    "InversionQuality",
    "LinearModel",
    "MembershipAttack",
    "MembershipAttackResult",
    "MembershipReport",
    "MiFaceResult",
    "RocCurve",
    "RocSummary",
    "ShadowTrainer",
    "SklearnShadowTrainer",
    "SubstituteResult",
    "TorchShadowTrainer",
    "TorchSubstitute",
    "inversion_quality",
    "lira_scores",
    "mi_face",
    "roc_curve",
    "run_membership",
    "solve_softmax_regression",
    "summarize_roc",
    "tpr_at_fpr",
    "train_substitutes",
]
