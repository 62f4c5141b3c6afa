"""ROC figures for membership inference, in float64 (stable API).

Membership inference is judged by the true-positive rate at a *low* false-positive rate
(Carlini et al. 2022, "Membership Inference Attacks From First Principles", arXiv:2112.03570,
section III): an attack that identifies a few members with near certainty is a privacy breach
even when its AUC is unremarkable. This module computes the full-resolution ROC curve (every
distinct score is a threshold, no points dropped), its AUC, the best balanced accuracy over
thresholds, and the TPR at a given FPR by exact linear interpolation between the two ROC
points that bracket it (the operating point a randomised threshold rule achieves), never by
reading the nearest coarser point.

Scores follow one convention everywhere: a *higher* score means "more likely a member".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import AssessmentError

__all__ = [
    "RocCurve",
    "RocSummary",
    "roc_curve",
    "summarize_roc",
    "tpr_at_fpr",
]

#: The false-positive rates whose TPR is reported first, as in Carlini et al. 2022.
DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01)


@dataclass(frozen=True, slots=True)
class RocCurve:
    """A full-resolution ROC curve, from (0, 0) to (1, 1).

    Attributes:
        fpr: false-positive rates, non-decreasing, float64.
        tpr: true-positive rates, non-decreasing, float64.
        thresholds: the score threshold of each point (predict member iff score >= threshold);
            the first is ``+inf``.
        positives: how many members were scored.
        negatives: how many non-members were scored.
    """

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    positives: int
    negatives: int


@dataclass(frozen=True, slots=True)
class RocSummary:
    """The numbers that matter for one attack, most important first.

    Attributes:
        tpr_at_fpr: TPR at each requested FPR (``{0.001: ..., 0.01: ...}``).
        auc: area under the ROC curve (ties count one half, as in the Mann-Whitney U).
        balanced_accuracy: the best ``(TPR + TNR) / 2`` over all thresholds. This is what an
            attacker who knows the best threshold achieves, an upper bound for a real one.
        advantage: the membership advantage ``max(TPR - FPR)`` of Yeom et al. 2018
            (arXiv:1709.01604), equal to ``2 * balanced_accuracy - 1``.
        positives: members scored.
        negatives: non-members scored.
        min_resolvable_fpr: ``1 / negatives``: an FPR below it is interpolated from the ROC's
            first step; a reader should know that TPR at 0.1% FPR from 500 non-members rests
            on half a non-member.
    """

    tpr_at_fpr: dict[float, float]
    auc: float
    balanced_accuracy: float
    advantage: float
    positives: int
    negatives: int
    min_resolvable_fpr: float


def _validate(
    scores: ArrayLike, is_member: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).reshape(-1)
    if s.shape != m.shape:
        raise AssessmentError(f"{s.size} scores but {m.size} membership labels")
    if not np.all(np.isfinite(s)):
        raise AssessmentError("membership scores must be finite (got NaN or infinity)")
    labels = m.astype(bool)
    if labels.all() or not labels.any():
        raise AssessmentError("an ROC curve needs both members and non-members")
    return s, labels


def roc_curve(scores: ArrayLike, is_member: ArrayLike) -> RocCurve:
    """The ROC curve of a membership score, every distinct score a threshold.

    The same points as ``sklearn.metrics.roc_curve(is_member, scores, drop_intermediate=False)``,
    whose first threshold is ``+inf`` too.

    Args:
        scores: one score per example; higher means "member".
        is_member: the truth, one boolean per example.

    Raises:
        AssessmentError: shapes differ, a score is not finite, or one class is missing.
    """
    s, labels = _validate(scores, is_member)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = labels[order]
    # The last index of each run of equal scores is where the threshold takes effect.
    distinct = np.flatnonzero(np.diff(s_sorted)) if s_sorted.size > 1 else np.empty(0, np.int64)
    ends = np.concatenate([distinct, [s_sorted.size - 1]])
    tps = np.cumsum(y_sorted, dtype=np.float64)[ends]
    fps = (ends + 1).astype(np.float64) - tps
    positives = int(labels.sum())
    negatives = int(labels.size - positives)
    tpr = np.concatenate([[0.0], tps / positives])
    fpr = np.concatenate([[0.0], fps / negatives])
    thresholds = np.concatenate([[np.inf], s_sorted[ends]])
    return RocCurve(
        fpr=fpr, tpr=tpr, thresholds=thresholds, positives=positives, negatives=negatives
    )


def tpr_at_fpr(curve: RocCurve, fpr: float) -> float:
    """The TPR at false-positive rate ``fpr``, interpolated exactly between ROC points.

    Where several points share an FPR (a vertical segment), the highest TPR among them is the
    one reached at that FPR. Between two points, a randomised rule that uses the stricter
    threshold with probability ``1 - w`` and the looser one with probability ``w`` reaches
    every point on the segment, so the linear interpolation is an achievable operating point.

    Raises:
        AssessmentError: ``fpr`` is outside [0, 1].
    """
    if not 0.0 <= fpr <= 1.0:
        raise AssessmentError(f"a false-positive rate must lie in [0, 1], got {fpr}")
    # fpr is non-decreasing, so the last index with curve.fpr <= fpr has the highest TPR there.
    k = int(np.searchsorted(curve.fpr, fpr, side="right")) - 1
    if curve.fpr[k] == fpr or k == curve.fpr.size - 1:
        return float(curve.tpr[k])
    f0, f1 = curve.fpr[k], curve.fpr[k + 1]
    t0, t1 = curve.tpr[k], curve.tpr[k + 1]
    return float(t0 + (fpr - f0) * (t1 - t0) / (f1 - f0))


def summarize_roc(curve: RocCurve, fprs: tuple[float, ...] = DEFAULT_FPRS) -> RocSummary:
    """AUC, best balanced accuracy, advantage and TPR at each of ``fprs``."""
    auc = float(np.trapezoid(curve.tpr, curve.fpr))
    advantage = float(np.max(curve.tpr - curve.fpr))
    return RocSummary(
        tpr_at_fpr={f: tpr_at_fpr(curve, f) for f in fprs},
        auc=auc,
        balanced_accuracy=0.5 * (1.0 + advantage),
        advantage=advantage,
        positives=curve.positives,
        negatives=curve.negatives,
        min_resolvable_fpr=1.0 / curve.negatives,
    )
