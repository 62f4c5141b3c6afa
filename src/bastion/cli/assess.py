"""``bastion assess``: attack a model as an adversary would and gate on a policy.

``bastion assess run --target T --data D --policy P`` runs what the policy asks for;
``bastion assess <family>`` (one per entry of ``bastion.assess.families.FAMILIES``) runs one
family, with its own options, and checks a policy only when given one. Exit codes: 0 ran and
the policy is met (or none was given), 1 the policy is not met, 2 could not run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.assess.data import Dataset, load_dataset
from bastion.assess.domain import load_domain
from bastion.assess.families import FAMILIES
from bastion.assess.families.interface import Family
from bastion.assess.policy import Policy, load_policy
from bastion.assess.report import write_reports
from bastion.assess.runner import Assessment, Verdict, record, run_assessment
from bastion.assess.targets import TARGETS, OutputKind, TargetOptions, open_target
from bastion.cli.context import Context, add_format_option
from bastion.errors import AssessmentError, PolicyError, WorkspaceError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "assess",
        help="red-team assessment of a model or endpoint, gated on a policy",
        description="Attack a model as an adversary would (evasion, privacy, extraction, "
        "backdoors) and check the results against a declarative policy. Exit 0: policy met; "
        "1: not met; 2: could not run.",
    )
    commands = parser.add_subparsers(dest="assess_command", metavar="COMMAND")
    commands.required = True
    run_parser = commands.add_parser(
        "run",
        help="run everything a policy file asks for",
        description="Run the families the policy configures or its rules name, check every "
        "rule, and write the reports. An empty policy is an error.",
    )
    _common(run_parser)
    run_parser.add_argument("--policy", type=Path, required=True, help="policy TOML file")
    run_parser.set_defaults(handler=_run_policy)
    for family in FAMILIES:
        sub = commands.add_parser(family.name, help=family.summary, description=family.summary)
        _common(sub)
        sub.add_argument(
            "--policy",
            type=Path,
            help=f"check the policy's rules on {family.name} metrics (exit 1 if not met)",
        )
        for option in family.cli_options:
            kwargs: dict[str, Any] = {"help": option.help, "dest": f"family_{option.field}"}
            if option.switch:
                kwargs["action"] = "store_true"
                kwargs["default"] = None
            else:
                kwargs["metavar"] = option.metavar or option.field.upper()
                if option.choices:
                    kwargs["choices"] = option.choices
                if option.multiple:
                    kwargs["action"] = "append"
            sub.add_argument(option.flag, **kwargs)
        sub.set_defaults(handler=_run_family, family=family)


def _common(parser: argparse.ArgumentParser) -> None:
    kinds = ", ".join(f"{k.name}" for k in TARGETS)
    target = parser.add_argument_group("target")
    target.add_argument(
        "--target",
        required=True,
        help=f"the model: torch:module:factory, torchscript:FILE, sklearn:FILE, onnx:FILE, "
        f"or an http(s)://.../v2/models/NAME endpoint ({kinds})",
    )
    target.add_argument("--weights", type=Path, help="safetensors weights for a torch factory")
    target.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading a pickle-based model (only after 'bastion scan' passes it)",
    )
    target.add_argument("--device", default="cpu", help="torch device (default cpu)")
    target.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the endpoint's API key (never pass keys as arguments)",
    )
    target.add_argument("--api-key-header", default="Authorization", help="header for the API key")
    target.add_argument("--model-name", help="model name at the endpoint, if not in the URL")
    target.add_argument(
        "--output",
        choices=[k.value for k in OutputKind],
        help="what the model returns (default: detected)",
    )
    target.add_argument("--classes", help="class names, comma-separated, in output order")
    target.add_argument("--max-queries", type=int, help="query budget against the target")
    target.add_argument(
        "--target-batch-size", type=int, default=256, help="samples per model call/request"
    )
    data = parser.add_argument_group("data and input domain")
    data.add_argument("--data", type=Path, required=True, help=".npz, .npy or .csv with labels")
    data.add_argument("--labels", type=Path, help="labels for a .npy input file")
    data.add_argument("--x-key", help="inputs' name in a .npz")
    data.add_argument("--y-key", help="labels' name in a .npz")
    data.add_argument("--label-column", help="label column of a CSV (name or 0-based index)")
    data.add_argument(
        "--aux",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another labelled dataset for a family (e.g. members=train.npz)",
    )
    data.add_argument("--domain", type=Path, help="input domain TOML (shape, bounds, mean, std)")
    data.add_argument("--shape", help="input shape per sample, e.g. 1,28,28 (default: the data's)")
    data.add_argument("--bounds", help="raw input bounds LOW,HIGH (default 0,1)")
    data.add_argument("--mean", help="the model's normalisation means, per channel")
    data.add_argument("--std", help="the model's normalisation stds, per channel")
    data.add_argument("--channel-axis", type=int, help="axis of the shape mean/std index")
    run = parser.add_argument_group("run and reports")
    run.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    run.add_argument("--samples", type=int, help="evaluate on at most this many points")
    run.add_argument(
        "--report-dir",
        type=Path,
        help="write report.json, report.html and summary.md here",
    )
    run.add_argument("--json-report", type=Path, help="write the JSON report here")
    run.add_argument("--html", type=Path, help="write the HTML report here")
    run.add_argument("--markdown", type=Path, help="write the Markdown summary here")
    add_format_option(parser)


def _numbers(text: str | None, what: str, kind: type = float) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise AssessmentError(f"--{what} must be comma-separated numbers: {text!r}") from exc


def _prepare(ctx: Context) -> tuple[Any, Dataset, dict[str, Dataset]]:
    args = ctx.args
    label_column: str | int | None = args.label_column
    if isinstance(label_column, str) and label_column.lstrip("-").isdigit():
        label_column = int(label_column)
    raw = load_dataset(
        args.data, labels=args.labels, x_key=args.x_key, y_key=args.y_key, label_column=label_column
    )
    bounds = _numbers(args.bounds, "bounds")
    if bounds is not None and len(bounds) != 2:
        raise AssessmentError("--bounds takes LOW,HIGH")
    domain = load_domain(
        args.domain,
        shape=_numbers(args.shape, "shape", int),
        bounds=(bounds[0], bounds[1]) if bounds else None,
        mean=_numbers(args.mean, "mean"),
        std=_numbers(args.std, "std"),
        channel_axis=args.channel_axis,
        default_shape=raw.x.shape[1:],
    )
    data = raw.conform(domain)
    aux: dict[str, Dataset] = {}
    for item in args.aux:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AssessmentError(f"--aux takes NAME=PATH, not {item!r}")
        aux[name] = load_dataset(Path(path), domain=domain)
    api_key = None
    if args.api_key_env:
        api_key = ctx.environ.get(args.api_key_env)
        if not api_key:
            raise AssessmentError(f"the variable {args.api_key_env} holding the API key is empty")
    options = TargetOptions(
        weights=args.weights,
        allow_pickle=args.allow_pickle,
        device=args.device,
        batch_size=args.target_batch_size,
        max_queries=args.max_queries,
        api_key=api_key,
        api_key_header=args.api_key_header,
        model_name=args.model_name,
        output=OutputKind(args.output) if args.output else None,
        classes=tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    )
    target = open_target(args.target, domain, options)
    return target, data, aux


@contextmanager
def _progress(ctx: Context) -> Iterator[Callable[[str, int, int], None]]:
    if not ctx.show_progress():
        yield lambda _task, _done, _total: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=ctx.stderr),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = bar.add_task(task, total=total)
        bar.update(tasks[task], completed=done, total=total)

    with bar:
        yield update


def _execute(
    ctx: Context,
    configs: Mapping[str, BaseModel],
    policy: Policy | None,
    seed: int | None,
    samples: int | None,
) -> int:
    args = ctx.args
    target, data, aux = _prepare(ctx)
    try:
        with _progress(ctx) as progress:
            assessment = run_assessment(
                target,
                data,
                configs,
                policy=policy,
                seed=seed if seed is not None else (policy.seed if policy else 0),
                samples=samples if samples is not None else (policy.samples if policy else None),
                progress=progress,
                aux=aux,
            )
    finally:
        target.close()
    report_dir: Path | None = args.report_dir
    reports = write_reports(
        assessment,
        json_path=args.json_report or (report_dir / "report.json" if report_dir else None),
        html_path=args.html or (report_dir / "report.html" if report_dir else None),
        markdown_path=args.markdown or (report_dir / "summary.md" if report_dir else None),
    )
    _audit(ctx, assessment, reports)
    payload = {**assessment.to_json(), "reports": reports}
    ctx.emit(payload, lambda console: _text(console, assessment, reports))
    return 1 if assessment.verdict == Verdict.NOT_MET else 0


def _audit(ctx: Context, assessment: Assessment, reports: dict[str, str]) -> None:
    try:
        workspace = ctx.workspace()
    except WorkspaceError:
        return  # no workspace: nothing to record in
    record(workspace.audit(), assessment, reports)


def _run_policy(ctx: Context) -> int:
    policy = load_policy(ctx.args.policy)
    return _execute(ctx, policy.configs, policy, ctx.args.seed, ctx.args.samples)


def _run_family(ctx: Context) -> int:
    args = ctx.args
    family: Family[Any] = args.family
    policy: Policy | None = None
    base: dict[str, Any] = {}
    if args.policy is not None:
        full = load_policy(args.policy)
        rules = tuple(r for r in full.rules if r.family == family.name)
        if not rules:
            raise PolicyError(f"{args.policy} has no rule on {family.name} metrics")
        config = full.configs.get(family.name)
        base = config.model_dump(exclude_unset=True) if config is not None else {}
        policy = Policy(
            rules,
            {family.name: family.config_model.model_validate(base)},
            full.seed,
            full.samples,
            full.source,
            full.digest,
        )
    for option in family.cli_options:
        value = getattr(args, f"family_{option.field}", None)
        if value is None:
            continue
        if option.multiple:
            value = [v.strip() for item in value for v in str(item).split(",") if v.strip()]
        base[option.field] = value
    try:
        config = family.config_model.model_validate(base)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise AssessmentError(f"invalid {family.name} option {where}: {error['msg']}") from exc
    if policy is not None:
        missing = [r.metric for r in policy.rules if r.metric not in family.metric_names(config)]
        if missing:
            raise PolicyError(f"with these options {family.name} does not measure {missing[0]}")
        policy = Policy(
            policy.rules,
            {family.name: config},
            policy.seed,
            policy.samples,
            policy.source,
            policy.digest,
        )
    return _execute(ctx, {family.name: config}, policy, args.seed, args.samples)


def _text(console: Console, assessment: Assessment, reports: dict[str, str]) -> None:
    info = assessment.target.info
    verdict = {
        Verdict.MET: "[green]policy met[/green]",
        Verdict.NOT_MET: "[red]policy NOT met[/red]",
        Verdict.NO_POLICY: "no policy checked",
    }[assessment.verdict]
    console.print(f"bastion assess: {verdict}")
    console.print(f"  model   {info.name} ({info.kind}, {info.access.value})")
    console.print(f"  digest  {info.digest or 'unknown'}")
    console.print(
        f"  data    {assessment.data.source}: {len(assessment.data)} points, "
        f"{assessment.target.queries.used:,} queries, {assessment.seconds:.1f}s"
    )
    if assessment.outcome is not None:
        for outcome in assessment.outcome.rules:
            if outcome.met:
                console.print(f"  [green]met[/green]      {outcome.rule.describe()}")
            else:
                console.print(f"  [red]NOT MET[/red]  {outcome.reason}")
    for result in assessment.results:
        console.print(f"[bold]{result.family}[/bold]")
        for line in result.summary:
            console.print(f"  {line}")
    for kind, path in reports.items():
        console.print(f"  {kind} report: {path}")
