"""Red-team assessment of a model or endpoint, gated on a policy (stable API).

``bastion assess`` attacks a model as an adversary would: evasion (FGSM, PGD, Carlini-Wagner,
Square, HopSkipJump), membership inference, extraction, inversion, backdoors and invariance,
through one :class:`~bastion.assess.targets.interface.Target` interface (PyTorch,
scikit-learn, ONNX, or a remote Open Inference Protocol endpoint). Budgets are in the raw
input space declared once by an :class:`InputDomain`. Results are checked against a
declarative :class:`Policy` and written as JSON, HTML and Markdown reports.

Typical use::

    domain = InputDomain(shape=(1, 28, 28), lower=0.0, upper=1.0)
    target = open_target("onnx:model.onnx", domain)
    data = load_dataset(Path("test.npz"), domain=domain)
    policy = load_policy(Path("policy.toml"))
    assessment = run_assessment(target, data, policy.configs, policy=policy, seed=policy.seed)
    write_reports(assessment, html_path=Path("report.html"))
"""

from __future__ import annotations

from bastion.assess.data import Dataset, load_dataset
from bastion.assess.domain import InputDomain, load_domain, parse_budget
from bastion.assess.families import FAMILIES, CliOption, Family, RunContext, family_named
from bastion.assess.plots import ImageGrid, LineChart, Series, render_svg
from bastion.assess.policy import (
    Policy,
    PolicyOutcome,
    Rule,
    RuleOutcome,
    evaluate,
    load_policy,
    parse_policy,
)
from bastion.assess.report import to_html, to_json_document, to_markdown, write_reports
from bastion.assess.results import Direction, FamilyResult, Metric, ProgressCallback
from bastion.assess.runner import Assessment, Verdict, align_labels, record, run_assessment
from bastion.assess.targets import (
    TARGETS,
    Access,
    OutputKind,
    QueryBudgetError,
    QueryCounter,
    Target,
    TargetInfo,
    TargetOptions,
    open_target,
)

__all__ = [
    "FAMILIES",
    "TARGETS",
    "Access",
    "Assessment",
    "CliOption",
    "Dataset",
    "Direction",
    "Family",
    "FamilyResult",
    "ImageGrid",
    "InputDomain",
    "LineChart",
    "Metric",
    "OutputKind",
    "Policy",
    "PolicyOutcome",
    "ProgressCallback",
    "QueryBudgetError",
    "QueryCounter",
    "Rule",
    "RuleOutcome",
    "RunContext",
    "Series",
    "Target",
    "TargetInfo",
    "TargetOptions",
    "Verdict",
    "align_labels",
    "evaluate",
    "family_named",
    "load_dataset",
    "load_domain",
    "load_policy",
    "open_target",
    "parse_budget",
    "parse_policy",
    "record",
    "render_svg",
    "run_assessment",
    "to_html",
    "to_json_document",
    "to_markdown",
    "write_reports",
]
