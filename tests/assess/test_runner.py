"""The runner: label alignment, families run in order, the audit record."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from bastion.assess.data import Dataset
from bastion.assess.families.evasion import EvasionConfig
from bastion.assess.policy import parse_policy
from bastion.assess.runner import align_labels, json_safe, record, run_assessment
from bastion.core.workspace import Workspace
from bastion.errors import AssessmentError

importlib.import_module("torch")


def test_align_labels():
    data = Dataset(np.zeros((3, 2), np.float32), np.array([0, 2, 1]))
    assert align_labels(data, ("0", "1", "2")) is data
    named = Dataset(np.zeros((3, 2), np.float32), np.array([3, 7, 3]))
    np.testing.assert_array_equal(align_labels(named, ("3", "7")).y, [0, 1, 0])
    with pytest.raises(AssessmentError, match=r"range over 0\.\.2, but the model has 2 classes"):
        align_labels(data, ("0", "1"))
    with pytest.raises(AssessmentError, match="no classes"):
        align_labels(data, ())


def test_json_safe():
    assert json_safe({"a": [np.float32(1.5), float("nan"), float("inf")], 2: np.int64(3)}) == {
        "a": [1.5, None, None],
        "2": 3,
    }


def _run(target: Any, data: Dataset, **kwargs: Any) -> Any:
    config = EvasionConfig.model_validate({"attacks": ["fgsm"], "eps": ["0.1"]})
    return run_assessment(target, data, {"evasion": config}, samples=60, seed=1, **kwargs)


def test_run_and_policy(sklearn_target: Any, flat_digits: Dataset):
    policy = parse_policy({"require": [{"metric": "evasion.clean.accuracy", "min": 0.5}]})
    when = datetime(2026, 1, 2, tzinfo=UTC)
    assessment = _run(sklearn_target, flat_digits, policy=policy, now=when)
    assert assessment.verdict == "met"
    assert len(assessment.data) == 60
    assert assessment.to_json()["created"] == "2026-01-02T00:00:00Z"
    again = _run(sklearn_target, flat_digits, policy=policy)
    assert again.results[0].metrics == assessment.results[0].metrics  # seeded: same numbers
    with pytest.raises(AssessmentError, match="unknown assessment family"):
        run_assessment(sklearn_target, flat_digits, {"bogus": EvasionConfig()})
    with pytest.raises(AssessmentError, match="nothing to assess"):
        run_assessment(sklearn_target, flat_digits, {})


def test_record_in_the_workspace_audit_log(
    sklearn_target: Any, flat_digits: Dataset, workspace: Workspace
):
    assessment = _run(sklearn_target, flat_digits)
    record(workspace.audit(), assessment, {"html": "report.html"})
    (event,) = workspace.audit().events(action="assess.run")
    assert event.subject == sklearn_target.info.name  # an in-memory model has no digest
    assert event.details["verdict"] == "no_policy"
    assert event.details["reports"] == {"html": "report.html"}
    names = {m["name"] for m in event.details["metrics"]}
    assert "evasion.fgsm_linf.success_rate" in names
    assert workspace.audit().verify() is not None
