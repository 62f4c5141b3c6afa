"""The evasion family: metrics per attack and budget, access-driven defaults, skipped attacks,
minimum-norm curves, and the projection that keeps a faulty attack honest."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import Norm
from bastion.assess.data import Dataset
from bastion.assess.families import EVASION, FAMILIES, RunContext, family_named
from bastion.assess.families.evasion import EvasionConfig, _project
from bastion.assess.targets.sklearn_target import SklearnTarget
from bastion.errors import AssessmentError

importlib.import_module("torch")


def _data(flat_digits: Dataset, n: int = 60) -> Dataset:
    return flat_digits.take(slice(0, n))


def test_registry():
    assert family_named("evasion") is EVASION
    assert FAMILIES[0] is EVASION
    with pytest.raises(KeyError):
        family_named("nope")


def test_metrics_match_what_it_announces(sklearn_target: Any, flat_digits: Dataset):
    config = EvasionConfig.model_validate(
        {
            "attacks": [
                "fgsm",
                {"name": "pgd", "steps": 5, "id": "pgd5"},
                "pgd_l2",
                {"name": "cw", "steps": 10, "binary_steps": 2},
            ],
            "eps": ["0.05", "1/10"],
        }
    )
    seen: list[tuple[str, int, int]] = []
    context = RunContext(sklearn_target, _data(flat_digits), 0, lambda *a: seen.append(a))
    result = EVASION.run(context, config)
    names = {m.name for m in result.metrics}
    assert names == set(EVASION.metric_names(config))
    assert "evasion.pgd5.success_rate" in names
    assert "evasion.cw_l2.median_norm" in names
    by_key = {(m.name, m.at): m.value for m in result.metrics}
    clean = by_key[("evasion.clean.accuracy", None)]
    for attack in ("fgsm_linf", "pgd5", "pgd_l2", "cw_l2"):
        low = by_key[(f"evasion.{attack}.robust_accuracy", 0.05)]
        high = by_key[(f"evasion.{attack}.robust_accuracy", 0.1)]
        assert clean >= low >= high  # more budget, fewer robust points
        success = by_key[(f"evasion.{attack}.success_rate", 0.1)]
        assert high == pytest.approx(clean * (1 - success))
    assert (
        by_key[("evasion.pgd5.robust_accuracy", 0.1)]
        <= by_key[("evasion.fgsm_linf.robust_accuracy", 0.1)]
    )
    assert result.queries == sklearn_target.queries.used
    assert any(task.startswith("evasion pgd5") and done == total for task, done, total in seen)
    assert [c.title for c in result.charts] == [
        "Robust accuracy vs eps (L-infinity)",
        "Robust accuracy vs eps (L2)",
    ]
    pgd = next(a for a in result.details["attacks"] if a["id"] == "pgd5")
    point = pgd["points"][1]
    assert point["linf"]["max"] <= 0.1 + 1e-6
    assert point["attacked"] == round(clean * 60)


def test_defaults_follow_the_targets_access(logistic_model: Any, flat_digits: Dataset):
    from bastion.assess.domain import InputDomain

    domain = InputDomain((64,), 0.0, 1.0)
    black_box = SklearnTarget(logistic_model, domain, gradients=False)
    config = EvasionConfig.model_validate({"eps": ["0.1"]})
    result = EVASION.run(RunContext(black_box, _data(flat_digits, 20)), config)
    assert [a["id"] for a in result.details["attacks"]] == ["square_linf"]
    # Asked explicitly, a gradient attack on a black box is reported as skipped.
    config = EvasionConfig.model_validate({"attacks": ["pgd", "square"], "eps": ["0.1"]})
    result = EVASION.run(RunContext(black_box, _data(flat_digits, 20)), config)
    skipped = {a["id"]: a["skipped"] for a in result.details["attacks"]}
    assert skipped == {"pgd_linf": "needs gradients; the target gives scores", "square_linf": None}
    assert not any(m.name.startswith("evasion.pgd_linf") for m in result.metrics)
    with pytest.raises(AssessmentError, match="no evasion attack can run"):
        EVASION.run(
            RunContext(black_box, _data(flat_digits, 5)),
            EvasionConfig.model_validate({"attacks": ["fgsm"]}),
        )


def test_default_budgets_scale_with_the_domain(mlp_module: Any, digits: Any):
    from bastion.assess.domain import InputDomain
    from bastion.assess.targets.torch_target import TorchTarget

    domain = InputDomain((1, 8, 8), 0.0, 255.0, mean=(0.0,), std=(255.0,))
    target = TorchTarget.from_module(mlp_module, domain)
    data = Dataset(digits[2][:20] * 255.0, digits[3][:20])
    result = EVASION.run(
        RunContext(target, data), EvasionConfig.model_validate({"attacks": ["fgsm"]})
    )
    budgets = [m.at for m in result.metrics if m.name == "evasion.fgsm_linf.success_rate"]
    assert budgets == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])  # k/255 of a [0, 255] range


def test_projection_keeps_attacks_within_budget():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 4)).astype(np.float32)
    far = x + rng.normal(0, 1, x.shape).astype(np.float32)
    inf = _project(x, far, 0.1, Norm.LINF, 0.0, 1.0)
    assert np.abs(inf - x).max() <= 0.1 + 1e-6
    assert inf.min() >= 0.0
    two = _project(x, far, 0.3, Norm.L2, 0.0, 1.0)
    assert np.linalg.norm(two - x, axis=1).max() <= 0.3 + 1e-5


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        (["pgd_l3"], "norm"),
        (["square_l2"], "norm"),
        (["magic"], "unknown attack"),
        ("fgsm,x", "unknown"),
    ],
)
def test_config_errors(attacks: Any, message: str):
    with pytest.raises(ValueError, match=message):
        EvasionConfig.model_validate({"attacks": attacks})
    with pytest.raises(ValueError, match="budget"):
        EvasionConfig.model_validate({"eps": ["-1"]})
