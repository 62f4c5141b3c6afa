"""Policies: parsing fails early and clearly, an empty policy fails, evaluation fails closed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bastion.assess.policy import Rule, evaluate, load_policy, parse_policy
from bastion.assess.results import FamilyResult, Metric
from bastion.errors import PolicyError

PGD = {"metric": "evasion.pgd_linf.success_rate", "at": "8/255", "max": 0.1}


def _policy(**extra: Any) -> dict[str, Any]:
    return {"version": 1, "require": [PGD], **extra}


def test_parses_sections_rules_and_fractions():
    policy = parse_policy(
        _policy(seed=3, samples=50, evasion={"attacks": ["pgd"], "eps": ["8/255"]})
    )
    assert policy.seed == 3
    assert policy.samples == 50
    assert policy.rules == (Rule("evasion.pgd_linf.success_rate", 8 / 255, 0.1, None),)
    assert set(policy.configs) == {"evasion"}


def test_a_rule_alone_runs_its_family_with_defaults():
    policy = parse_policy(_policy())
    assert set(policy.configs) == {"evasion"}


def test_load_policy_records_digest(tmp_path: Path):
    path = tmp_path / "policy.toml"
    path.write_text('[[require]]\nmetric = "evasion.clean.accuracy"\nmin = 0.9\n')
    policy = load_policy(path)
    assert policy.digest.startswith("sha256:")
    assert policy.source == str(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 1}, "empty policy cannot be met"),
        ({"require": []}, "empty policy cannot be met"),
        ({"version": 2, "require": [PGD]}, "version"),
        (_policy(bogus=1), "unknown key 'bogus'"),
        (_policy(evasion={"attackz": []}), "unknown key 'evasion.attackz'"),
        (_policy(evasion={"attacks": ["nope"]}), "unknown attack 'nope'"),
        (
            _policy(evasion={"attacks": [{"name": "pgd", "steps": 0}]}),
            "evasion.attacks.0.pgd.steps",
        ),
        (_policy(evasion=3), "must be a table"),
        ({"require": [{"metric": "evasion.clean.accuracy"}]}, "needs 'max' or 'min'"),
        ({"require": [{"metric": "nothing.at.all", "max": 1}]}, "no family 'nothing'"),
        ({"require": [{"metric": "evasion.pgd_l2.success_rate", "max": 1}]}, "does not measure"),
        ({"require": [{**PGD, "at": "x/y"}]}, "invalid 'at'"),
        ({"require": [{**PGD, "extra": 1}]}, "unknown key 'require.0.extra'"),
        (_policy(evasion={"attacks": ["fgsm"]}), "does not measure"),
    ],
)
def test_invalid_policies(data: dict[str, Any], message: str):
    with pytest.raises(PolicyError, match=message):
        parse_policy(data)


def test_unreadable_or_invalid_toml(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[require]\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)


def _result(*metrics: Metric) -> FamilyResult:
    return FamilyResult("evasion", metrics)


def test_evaluation_at_a_point_and_everywhere():
    policy = parse_policy(
        {
            "require": [
                PGD,
                {"metric": "evasion.pgd_linf.robust_accuracy", "min": 0.5},
            ]
        }
    )
    good = _result(
        Metric("evasion.pgd_linf.success_rate", 0.05, 8 / 255),
        Metric("evasion.pgd_linf.success_rate", 0.9, 16 / 255),  # not the point the rule names
        Metric("evasion.pgd_linf.robust_accuracy", 0.9, 8 / 255),
        Metric("evasion.pgd_linf.robust_accuracy", 0.6, 16 / 255),
    )
    outcome = evaluate(policy, [good])
    assert outcome.met
    assert [len(r.values) for r in outcome.rules] == [1, 2]
    bad = _result(
        Metric("evasion.pgd_linf.success_rate", 0.05, 8 / 255),
        Metric("evasion.pgd_linf.robust_accuracy", 0.9, 8 / 255),
        Metric("evasion.pgd_linf.robust_accuracy", 0.4, 16 / 255),
    )
    outcome = evaluate(policy, [bad])
    assert not outcome.met
    assert outcome.rules[0].met
    assert (
        outcome.rules[1].reason
        == "0.4 at 0.0627451 violates evasion.pgd_linf.robust_accuracy >= 0.5"
    )


def test_evaluation_fails_closed():
    policy = parse_policy(_policy())
    missing = evaluate(policy, [_result(Metric("evasion.pgd_linf.success_rate", 0.0, 4 / 255))])
    assert not missing.met
    assert missing.rules[0].reason.startswith("not measured at 0.03137")
    nan = evaluate(policy, [_result(Metric("evasion.pgd_linf.success_rate", math.nan, 8 / 255))])
    assert not nan.met
    assert "NaN" in nan.rules[0].reason
    assert not evaluate(policy, []).met


def test_rule_description_and_bounds():
    rule = Rule("a.b.c", 0.5, maximum=0.2, minimum=0.1)
    assert rule.describe() == "a.b.c@0.5 >= 0.1 and <= 0.2"
    assert rule.holds(0.15)
    assert not rule.holds(0.05)
    assert not rule.holds(0.25)
