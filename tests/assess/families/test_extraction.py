"""The extraction family: equation solving copies a logistic regression exactly."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest

from bastion.assess.families.extraction import EXTRACTION, ExtractionConfig
from bastion.assess.families.interface import RunContext
from bastion.assess.targets.interface import Access, OutputKind, TargetInfo

importlib.import_module("torch")


def test_copies_a_logistic_regression(sklearn_target: Any, flat_digits: Any) -> None:
    config = ExtractionConfig(
        budgets=[20, 200, 10_000], answers=["probabilities", "label"], steps=150
    )
    result = EXTRACTION.run(RunContext(sklearn_target, flat_digits, seed=0), config)
    assert {m.name for m in result.metrics} == EXTRACTION.metric_names(config)
    values = {(m.name, m.at): m.value for m in result.metrics}
    assert values[("extraction.equation_solving.fidelity", 65.0)] == 1.0
    # The target answers in float32: the recovered log-ratios are exact to that precision.
    assert values[("extraction.equation_solving.residual", None)] < 1e-3
    probs = values[("extraction.substitute_probabilities.fidelity", 200.0)]
    assert probs > values[("extraction.substitute_probabilities.fidelity", 20.0)]
    assert probs > 0.8
    # More queries than the attacker has inputs: not measured, so a rule on it fails closed.
    assert math.isnan(values[("extraction.substitute_label.fidelity", 10_000.0)])
    assert result.details["equation_solving"]["exact"] is True
    assert result.queries > 200
    assert result.charts


def test_uniform_queries_and_config(sklearn_target: Any, flat_digits: Any) -> None:
    config = ExtractionConfig.model_validate(
        {
            "budgets": "30",
            "answers": "top2",
            "query_source": "uniform",
            "steps": 50,
            "equation_solving": False,
        }
    )
    assert config.answers == ["top2"]
    result = EXTRACTION.run(RunContext(sklearn_target, flat_digits, seed=0), config)
    assert {m.name for m in result.metrics} == {
        "extraction.substitute_top2.fidelity",
        "extraction.substitute_top2.accuracy",
    }
    assert result.details["attacker_inputs"] == 30
    with pytest.raises(ValueError, match="unknown answers"):
        ExtractionConfig.model_validate({"answers": ["everything"]})


class _LabelsOnly:
    """The logistic regression behind an API hardened to answer labels only."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.info = TargetInfo(
            "remote", "labels", Access.LABELS, OutputKind.LABELS, tuple("0123456789")
        )
        self.domain = inner.domain
        self.queries = inner.queries

    def predict_labels(self, x: Any) -> Any:
        return self.inner.predict_labels(x)


def test_hardened_labels_only_api(sklearn_target: Any, flat_digits: Any) -> None:
    config = ExtractionConfig(budgets=[100], answers=["probabilities", "label"], steps=100)
    result = EXTRACTION.run(RunContext(_LabelsOnly(sklearn_target), flat_digits, seed=0), config)  # type: ignore[arg-type]
    values = {(m.name, m.at): m.value for m in result.metrics}
    assert math.isnan(values[("extraction.substitute_probabilities.fidelity", 100.0)])
    assert values[("extraction.substitute_label.fidelity", 100.0)] > 0.5
    assert math.isnan(values[("extraction.equation_solving.fidelity", 65.0)])
    assert result.details["equation_solving"] == {"skipped": "the target gives labels only"}
    assert any("not measured: probabilities" in line for line in result.summary)
