"""ROC figures: checked against scikit-learn and against hand-computed curves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from bastion.assess.privacy.roc import roc_curve, summarize_roc, tpr_at_fpr
from bastion.errors import AssessmentError


def _scores(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    members = rng.random(n) < 0.4
    # Rounded: many ties, within and across the two classes.
    scores = np.round(rng.normal(size=n) + 0.7 * members, 2)
    return scores, members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_and_auc_match_sklearn(seed: int) -> None:
    scores, members = _scores(seed)
    curve = roc_curve(scores, members)
    fpr, tpr, thresholds = sk_roc_curve(members, scores, drop_intermediate=False)
    np.testing.assert_array_equal(curve.fpr, fpr)
    np.testing.assert_array_equal(curve.tpr, tpr)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    assert summarize_roc(curve).auc == pytest.approx(roc_auc_score(members, scores), abs=1e-12)


def test_balanced_accuracy_is_the_best_threshold() -> None:
    scores, members = _scores(3, n=400)
    best = max(
        balanced_accuracy_score(members, scores >= t) for t in [*np.unique(scores).tolist(), np.inf]
    )
    summary = summarize_roc(roc_curve(scores, members))
    assert summary.balanced_accuracy == pytest.approx(best, abs=1e-12)
    assert summary.advantage == pytest.approx(2 * best - 1, abs=1e-12)


def test_tpr_at_fpr_interpolates_exactly() -> None:
    # Members 4, 3, 1; non-members 2, 0: points (0,0) (0,1/3) (0,2/3) (1/2,2/3) (1/2,1) (1,1).
    curve = roc_curve([4, 3, 1, 2, 0], [True, True, True, False, False])
    assert tpr_at_fpr(curve, 0.0) == pytest.approx(2 / 3)
    # On the vertical segment at FPR 1/2 the highest TPR counts.
    assert tpr_at_fpr(curve, 0.5) == pytest.approx(1.0)
    assert tpr_at_fpr(curve, 0.25) == pytest.approx(2 / 3)
    # A tie of a member and a non-member is a diagonal segment: interpolated, not rounded down.
    tied = roc_curve([1.0, 1.0], [True, False])
    assert tpr_at_fpr(tied, 0.001) == pytest.approx(0.001, abs=1e-15)
    assert tpr_at_fpr(tied, 0.01) == pytest.approx(0.01, abs=1e-15)


def test_tpr_at_fpr_lies_between_bracketing_points() -> None:
    scores, members = _scores(4)
    curve = roc_curve(scores, members)
    for alpha in (0.001, 0.01, 0.05, 0.3):
        value = tpr_at_fpr(curve, alpha)
        below = curve.tpr[curve.fpr <= alpha].max()
        above = curve.tpr[curve.fpr >= alpha].min()
        assert below - 1e-15 <= value <= above + 1e-15


def test_float64_keeps_scores_that_float32_would_merge() -> None:
    # Members at 1 + 1e-12, non-members at 1.0: in float32 all tie and AUC is 0.5.
    scores = np.array([1.0 + 1e-12] * 5 + [1.0] * 5)
    members = np.array([True] * 5 + [False] * 5)
    summary = summarize_roc(roc_curve(scores, members))
    assert summary.auc == 1.0
    assert summary.tpr_at_fpr[0.001] == 1.0
    assert summary.min_resolvable_fpr == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("scores", "members", "message"),
    [
        ([0.1, 0.2], [True, True], "both members and non-members"),
        ([0.1, np.nan], [True, False], "finite"),
        ([0.1, 0.2, 0.3], [True, False], "3 scores but 2"),
    ],
)
def test_bad_input_is_an_assessment_error(
    scores: list[float], members: list[bool], message: str
) -> None:
    with pytest.raises(AssessmentError, match=message):
        roc_curve(scores, members)


def test_fpr_outside_unit_interval() -> None:
    curve = roc_curve([1, 0], [True, False])
    with pytest.raises(AssessmentError, match="false-positive rate"):
        tpr_at_fpr(curve, 1.5)
