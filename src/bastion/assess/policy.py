"""Assessment policies: declarative TOML saying what to run and what must hold (stable API).

A policy is data, read by this small interpreter (style rule 7)::

    version = 1
    seed = 0            # every attack's randomness derives from it
    samples = 500       # evaluate on a seeded random subset of at most this many points

    [evasion]           # a family's section: its config (see ``bastion assess evasion``)
    eps = ["2/255", "4/255", "8/255"]
    attacks = ["fgsm", "pgd"]

    [[require]]         # a rule: a metric, optionally at an operating point, and a bound
    metric = "evasion.pgd_linf.success_rate"
    at = "8/255"
    max = 0.10

    [[require]]
    metric = "backdoor.neural_cleanse.anomaly_index"
    max = 2.0

A rule without ``at`` must hold at every operating point measured. A rule whose metric was
not measured, or measured as NaN, is *not met* (fail closed). The families that run are those
with a section plus those a rule names (with default settings).

**An empty policy is an error:** a policy without any ``[[require]]`` rule raises
:class:`~bastion.errors.PolicyError` (the CLI exits 2) rather than passing vacuously, like
sigstore's ``AnyOf([])``. Unknown keys, unknown families and rules naming metrics that no
configured family produces are errors too, reported before anything runs.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.assess.domain import parse_budget
from bastion.assess.families import FAMILIES
from bastion.assess.families.interface import Family
from bastion.assess.results import FamilyResult, Metric
from bastion.errors import AssessmentError, PolicyError

__all__ = [
    "Policy",
    "PolicyOutcome",
    "Rule",
    "RuleOutcome",
    "evaluate",
    "load_policy",
    "parse_policy",
]

_TOP_LEVEL = frozenset({"version", "seed", "samples", "require"})


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=3)
    at: float | str | None = None
    max: float | None = None
    min: float | None = None
    why: str = ""

    @model_validator(mode="after")
    def _bounded(self) -> _RuleModel:
        if self.max is None and self.min is None:
            raise ValueError("a rule needs 'max' or 'min'")
        return self


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    seed: int = Field(default=0, ge=0)
    samples: int | None = Field(default=None, ge=1)
    require: list[_RuleModel] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rule:
    """One requirement: ``metric`` (at ``at``) must lie within ``[minimum, maximum]``."""

    metric: str
    at: float | None = None
    maximum: float | None = None
    minimum: float | None = None
    why: str = ""

    @property
    def family(self) -> str:
        return self.metric.split(".", 1)[0]

    def describe(self) -> str:
        """``evasion.pgd_linf.success_rate@0.03137 <= 0.1``."""
        where = "" if self.at is None else f"@{self.at:g}"
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return f"{self.metric}{where} {' and '.join(bounds)}"

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return not (self.minimum is not None and value < self.minimum)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "at": self.at,
            "max": self.maximum,
            "min": self.minimum,
            "why": self.why,
        }


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy.

    Attributes:
        rules: the requirements (never empty).
        configs: family name -> its validated config, for every family to run.
        seed: the assessment seed.
        samples: the most evaluation points, or None for all.
        source: the file it came from.
        digest: ``sha256:<hex>`` of the file's bytes.
    """

    rules: tuple[Rule, ...]
    configs: Mapping[str, BaseModel]
    seed: int = 0
    samples: int | None = None
    source: str = ""
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "seed": self.seed,
            "samples": self.samples,
            "families": sorted(self.configs),
        }


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """How one rule fared: the values checked, and why it is (not) met."""

    rule: Rule
    met: bool
    values: tuple[Metric, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            **self.rule.to_json(),
            "met": self.met,
            "values": [m.to_json() for m in self.values],
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """The verdict: met only if every rule is."""

    met: bool
    rules: tuple[RuleOutcome, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"met": self.met, "rules": [r.to_json() for r in self.rules]}


def load_policy(path: Path, families: Sequence[Family[Any]] = FAMILIES) -> Policy:
    """Read and validate a policy file.

    Raises:
        PolicyError: unreadable, not TOML, unknown keys or families, invalid values, rules on
            metrics nothing measures, or no rule at all.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy {path} is not valid TOML: {exc}") from exc
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return parse_policy(data, source=str(path), digest=digest, families=families)


def parse_policy(
    data: Mapping[str, Any],
    *,
    source: str = "policy",
    digest: str = "",
    families: Sequence[Family[Any]] = FAMILIES,
) -> Policy:
    """Validate a policy already parsed from TOML (see :func:`load_policy`)."""
    by_name = {f.name: f for f in families}
    header_data = {k: v for k, v in data.items() if k in _TOP_LEVEL}
    try:
        header = _Header.model_validate(header_data)
    except ValidationError as exc:
        raise PolicyError(_describe(exc, source)) from exc
    configs: dict[str, BaseModel] = {}
    for key, value in data.items():
        if key in _TOP_LEVEL:
            continue
        family = by_name.get(key)
        if family is None:
            known = ", ".join(sorted([*_TOP_LEVEL, *by_name]))
            raise PolicyError(f"unknown key '{key}' in {source} (known: {known})")
        if not isinstance(value, dict):
            raise PolicyError(f"'{key}' in {source} must be a table ([{key}])")
        try:
            configs[key] = family.config_model.model_validate(value)
        except ValidationError as exc:
            raise PolicyError(_describe(exc, source, prefix=key)) from exc
        except AssessmentError as exc:
            raise PolicyError(f"invalid [{key}] in {source}: {exc}") from exc
    if not header.require:
        raise PolicyError(
            f"{source} has no [[require]] rule: an empty policy cannot be met "
            "(say what must hold, e.g. metric = 'evasion.pgd_linf.success_rate', max = 0.1)"
        )
    rules = []
    for index, model in enumerate(header.require, start=1):
        try:
            at = None if model.at is None else parse_budget(model.at)
        except AssessmentError as exc:
            raise PolicyError(f"rule {index} in {source}: invalid 'at': {exc}") from exc
        rule = Rule(model.metric, at, model.max, model.min, model.why)
        family = by_name.get(rule.family)
        if family is None:
            raise PolicyError(
                f"rule {index} in {source} names '{rule.metric}', but there is no family "
                f"'{rule.family}' (known: {', '.join(sorted(by_name))})"
            )
        if rule.family not in configs:
            configs[rule.family] = family.config_model()
        produced = family.metric_names(configs[rule.family])
        if rule.metric not in produced:
            raise PolicyError(
                f"rule {index} in {source} names '{rule.metric}', which [{rule.family}] as "
                f"configured does not measure (it measures: {', '.join(sorted(produced))})"
            )
        rules.append(rule)
    return Policy(
        rules=tuple(rules),
        configs=configs,
        seed=header.seed,
        samples=header.samples,
        source=source,
        digest=digest,
    )


def evaluate(policy: Policy, results: Sequence[FamilyResult]) -> PolicyOutcome:
    """Check every rule against the measured metrics (missing or NaN: not met)."""
    metrics = [m for r in results for m in r.metrics]
    outcomes = []
    for rule in policy.rules:
        values = tuple(m for m in metrics if m.matches(rule.metric, rule.at))
        if not values:
            where = "" if rule.at is None else f" at {rule.at:g}"
            outcomes.append(RuleOutcome(rule, False, (), f"not measured{where}"))
            continue
        failing = [m for m in values if not rule.holds(m.value)]
        if failing:
            first = failing[0]
            where = "" if first.at is None else f" at {first.at:g}"
            shown = "NaN" if math.isnan(first.value) else f"{first.value:.4g}"
            reason = f"{shown}{where} violates {rule.describe()}"
        else:
            reason = "met"
        outcomes.append(RuleOutcome(rule, not failing, values, reason))
    return PolicyOutcome(all(o.met for o in outcomes), tuple(outcomes))


def _describe(exc: ValidationError, source: str, prefix: str = "") -> str:
    error = exc.errors()[0]
    parts = [prefix, *(str(p) for p in error["loc"])]
    key = ".".join(p for p in parts if p)
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' in {source}"
    return f"invalid '{key}' in {source}: {error['msg']}"
