"""Run an assessment: families against one target and data, checked against a policy.

:func:`run_assessment` is what ``bastion assess run`` and ``bastion assess <family>`` call:
align the data's labels with the target's classes, take the seeded subset, run each family
in :data:`~bastion.assess.families.FAMILIES` order, and evaluate the policy. :func:`record`
writes the outcome to the workspace's audit log, linked to the model's digest.
The API is stable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from bastion import __version__
from bastion.assess.data import Dataset
from bastion.assess.families import FAMILIES
from bastion.assess.families.interface import RunContext
from bastion.assess.policy import Policy, PolicyOutcome, evaluate
from bastion.assess.results import FamilyResult, ProgressCallback, no_progress
from bastion.assess.targets.interface import Target
from bastion.errors import AssessmentError

__all__ = ["Assessment", "Verdict", "align_labels", "json_safe", "record", "run_assessment"]

logger = logging.getLogger(__name__)

#: How many metrics the audit event lists (the report has them all).
_AUDIT_METRICS = 200


class Verdict:
    """The values of :attr:`Assessment.verdict`."""

    MET = "met"
    NOT_MET = "not_met"
    NO_POLICY = "no_policy"


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything one assessment measured, ready for reports."""

    target: Target
    data: Dataset
    results: tuple[FamilyResult, ...]
    seed: int
    started: datetime
    seconds: float
    policy: Policy | None = None
    outcome: PolicyOutcome | None = None
    aux: Mapping[str, Dataset] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.outcome is None:
            return Verdict.NO_POLICY
        return Verdict.MET if self.outcome.met else Verdict.NOT_MET

    def to_json(self) -> dict[str, Any]:
        """The report document (without ``schema_version``, which the writer adds)."""
        info = self.target.info
        document = {
            "tool": {"name": "bastion", "version": __version__},
            "created": self.started.isoformat().replace("+00:00", "Z"),
            "seconds": round(self.seconds, 3),
            "seed": self.seed,
            "verdict": self.verdict,
            "target": info.to_json(),
            "domain": self.target.domain.to_json(),
            "data": self.data.to_json(),
            "aux": {name: ds.to_json() for name, ds in sorted(self.aux.items())},
            "queries": {
                "used": self.target.queries.used,
                "requests": self.target.queries.requests,
                "limit": self.target.queries.limit,
            },
            "policy": None
            if self.policy is None
            else {
                **self.policy.to_json(),
                **(self.outcome.to_json() if self.outcome is not None else {}),
            },
            "families": [r.to_json() for r in self.results],
        }
        result: dict[str, Any] = json_safe(document)
        return result


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def align_labels(data: Dataset, classes: tuple[str, ...]) -> Dataset:
    """Labels as indices into ``classes``.

    Labels already in ``0..len(classes)-1`` are indices when the classes are named ``"0"``..
    (or carry other names); otherwise each label is looked up by name (a model trained on
    classes ``[3, 7]`` gets labels 3 and 7 mapped to 0 and 1).

    Raises:
        AssessmentError: a label is neither an index nor a class name.
    """
    count = len(classes)
    if count == 0:
        raise AssessmentError("the target names no classes")
    identity = classes == tuple(str(i) for i in range(count))
    labels = data.y
    if identity or not np.isin(labels.astype(str), np.asarray(classes)).all():
        if labels.size and (labels.min() < 0 or labels.max() >= count):
            raise AssessmentError(
                f"labels in {data.source} range over {labels.min()}..{labels.max()}, but the "
                f"model has {count} classes ({', '.join(classes[:10])})"
            )
        return data
    index = {name: i for i, name in enumerate(classes)}
    mapped = np.asarray([index[str(v)] for v in labels.tolist()], dtype=np.int64)
    return Dataset(data.x, mapped, data.source, data.digest)


def run_assessment(
    target: Target,
    data: Dataset,
    configs: Mapping[str, BaseModel],
    *,
    policy: Policy | None = None,
    seed: int = 0,
    samples: int | None = None,
    progress: ProgressCallback = no_progress,
    aux: Mapping[str, Dataset] | None = None,
    now: datetime | None = None,
) -> Assessment:
    """Run the families named in ``configs`` (name -> config) and check the policy.

    Raises:
        AssessmentError: a family is unknown or cannot run; the data do not fit the target.
    """
    started = now or datetime.now(UTC)
    clock = time.perf_counter()
    known = {f.name for f in FAMILIES}
    unknown = sorted(set(configs) - known)
    if unknown:
        raise AssessmentError(f"unknown assessment family {unknown[0]!r}")
    if not configs:
        raise AssessmentError("nothing to assess: no family was asked for")
    target.domain.check(data.x, f"inputs in {data.source}")
    evaluation = align_labels(data, target.info.classes).subset(samples, seed)
    extra = {name: align_labels(ds, target.info.classes) for name, ds in (aux or {}).items()}
    context = RunContext(target, evaluation, seed, progress, extra)
    results = []
    for family in FAMILIES:
        if family.name not in configs:
            continue
        logger.info("running %s on %d points", family.name, len(evaluation))
        results.append(family.run(context, configs[family.name]))
    outcome = evaluate(policy, results) if policy is not None else None
    return Assessment(
        target=target,
        data=evaluation,
        results=tuple(results),
        seed=seed,
        started=started,
        seconds=time.perf_counter() - clock,
        policy=policy,
        outcome=outcome,
        aux=extra,
    )


class AuditSink(Protocol):
    """What :func:`record` writes to (``Workspace.audit()``)."""

    def append(self, action: str, subject: str, details: Mapping[str, Any] | None = None) -> Any:
        """Append one event."""
        ...


def record(
    audit: AuditSink, assessment: Assessment, reports: Mapping[str, str] | None = None
) -> None:
    """Append the assessment to the audit log, subject = the model's digest.

    The event (``assess.run``) holds the target, data and policy digests, the verdict, each
    rule's outcome and the metrics (the first 200), and the report paths.
    """
    info = assessment.target.info
    metrics = [
        {"name": m.name, "at": m.at, "value": m.value}
        for r in assessment.results
        for m in r.metrics
    ]
    details: dict[str, Any] = {
        "target": {"kind": info.kind, "name": info.name, "digest": info.digest},
        "data": {"source": assessment.data.source, "digest": assessment.data.digest},
        "samples": len(assessment.data),
        "seed": assessment.seed,
        "families": [r.family for r in assessment.results],
        "queries": assessment.target.queries.used,
        "verdict": assessment.verdict,
        "metrics": metrics[:_AUDIT_METRICS],
        "metrics_total": len(metrics),
    }
    if assessment.policy is not None and assessment.outcome is not None:
        details["policy"] = {
            "source": assessment.policy.source,
            "digest": assessment.policy.digest,
            "rules": [
                {"rule": o.rule.describe(), "met": o.met, "reason": o.reason}
                for o in assessment.outcome.rules
            ],
        }
    if reports:
        details["reports"] = dict(reports)
    subject = info.digest or info.name
    audit.append("assess.run", subject, json_safe(details))
