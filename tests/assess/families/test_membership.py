"""The membership family on real targets: metrics as declared, fail-closed NaN, recipes."""

from __future__ import annotations

import importlib
import math
import pickle
from typing import Any

import numpy as np
import pytest

from bastion.assess.data import Dataset
from bastion.assess.families.interface import RunContext
from bastion.assess.families.membership import (
    MEMBERSHIP,
    ArchitectureFactory,
    MembershipConfig,
    MlpFactory,
)
from bastion.assess.targets.interface import Access, OutputKind, TargetInfo
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")


def _context(target: Any, digits: Any, n: int = 120) -> RunContext:
    x_train, y_train, x_test, y_test = digits
    return RunContext(
        target=target,
        data=Dataset(x_test[:n], y_test[:n], "test", ""),
        seed=3,
        aux={"members": Dataset(x_train[:400], y_train[:400], "train", "")},
    )


def test_runs_every_attack_with_the_targets_own_architecture(mlp_target: Any, digits: Any) -> None:
    config = MembershipConfig(shadows=4, epochs=3, executor="serial")
    seen: list[tuple[str, int, int]] = []
    context = _context(mlp_target, digits)
    context = RunContext(
        context.target, context.data, context.seed, lambda *a: seen.append(a), context.aux
    )
    result = MEMBERSHIP.run(context, config)
    names = {m.name for m in result.metrics}
    assert names == MEMBERSHIP.metric_names(config)
    assert all(math.isfinite(m.value) for m in result.metrics)
    tpr = {(m.name, m.at): m.value for m in result.metrics if m.name.endswith(".tpr")}
    for fpr in (0.001, 0.01):
        strongest = tpr[("membership.strongest.tpr", fpr)]
        assert strongest == max(v for (n, a), v in tpr.items() if a == fpr)
    assert result.details["members"] == result.details["non_members"] == 120
    assert result.details["shadow_recipe"].startswith("retrained Sequential")
    assert result.details["executor"] == "serial"
    assert result.queries >= 240  # the target answered every candidate
    assert seen[-1] == ("membership shadow models", 4, 4)
    (chart,) = result.charts
    assert chart.log_x
    assert chart.log_y
    assert chart.series
    assert any("TPR" in line for line in result.summary)


def test_without_shadows_the_shadow_metrics_are_nan(mlp_target: Any, digits: Any) -> None:
    config = MembershipConfig(shadow="none")
    result = MEMBERSHIP.run(_context(mlp_target, digits, 60), config)
    values = {(m.name, m.at): m.value for m in result.metrics}
    assert math.isnan(values[("membership.lira_online.tpr", 0.001)])
    assert math.isnan(values[("membership.shadow.auc", None)])
    assert math.isfinite(values[("membership.loss.auc", None)])
    assert {s["attack"] for s in result.details["skipped"]} == {
        "shadow",
        "lira_online",
        "lira_offline",
    }


def test_needs_known_members(mlp_target: Any, digits: Any) -> None:
    context = _context(mlp_target, digits)
    with pytest.raises(AssessmentError, match="--aux members"):
        MEMBERSHIP.run(RunContext(context.target, context.data), MembershipConfig())


def test_config_validation() -> None:
    config = MembershipConfig.model_validate({"attacks": "loss,lira_online", "fpr": "0.01,0.001"})
    assert [a.value for a in config.attacks] == ["loss", "lira_online"]
    assert config.fpr == [0.001, 0.01]
    for bad in ({"fpr": [0.0]}, {"executor": "gpu"}, {"shadows": 1}, {"bogus": 1}):
        with pytest.raises(ValueError, match="validation error"):
            MembershipConfig.model_validate(bad)


def test_shadow_factories_are_fresh_and_picklable(mlp_module: Any) -> None:
    factory = pickle.loads(pickle.dumps(ArchitectureFactory(mlp_module)))
    fresh = factory()
    original = next(mlp_module.parameters())
    copied = next(fresh.parameters())
    assert copied.shape == original.shape
    assert not torch.equal(copied, original)
    assert copied.requires_grad
    assert not original.requires_grad  # the template is untouched
    mlp = pickle.loads(pickle.dumps(MlpFactory(64, 10, 0.0, 16.0)))()
    assert mlp(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert np.isfinite(mlp(torch.full((1, 64), 16.0)).detach().numpy()).all()


class _LabelsOnly:
    """The MLP target behind an API that answers labels only (output hardening)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.info = TargetInfo(
            "remote", "labels", Access.LABELS, OutputKind.LABELS, tuple("0123456789")
        )
        self.domain = inner.domain
        self.queries = inner.queries

    def predict_labels(self, x: Any) -> Any:
        return self.inner.predict_labels(x)

    def predict_proba(self, x: Any) -> Any:
        raise AssertionError("a labels-only target has no probabilities")


def test_labels_only_target_runs_the_gap_attack(mlp_target: Any, digits: Any) -> None:
    context = _context(_LabelsOnly(mlp_target), digits, 80)
    result = MEMBERSHIP.run(context, MembershipConfig())
    values = {(m.name, m.at): m.value for m in result.metrics}
    assert math.isfinite(values[("membership.correctness.balanced_accuracy", None)])
    assert math.isnan(values[("membership.lira_online.auc", None)])
    assert (
        values[("membership.strongest.auc", None)] == values[("membership.correctness.auc", None)]
    )
    reasons = {s["attack"]: s["reason"] for s in result.details["skipped"]}
    assert "labels only" in reasons["loss"]
    with pytest.raises(AssessmentError, match="only 'correctness' can run"):
        MEMBERSHIP.run(context, MembershipConfig(attacks=["loss"]))


def test_shifted_views_for_lira(mlp_target: Any, digits: Any) -> None:
    config = MembershipConfig(
        attacks=["lira_online"],
        shadows=2,
        epochs=1,
        views="shifts",
        fixed_variance=True,
        executor="serial",
    )
    result = MEMBERSHIP.run(_context(mlp_target, digits, 40), config)
    assert result.details["views"] == 5
    assert result.queries == 80 * 5  # every candidate, in each of the five views
    assert math.isfinite(next(m.value for m in result.metrics if m.name.endswith("auc")))
