"""``bastion scan PATH...``: static scan of model files; nothing is ever deserialized.

Exit codes: 0 when no file is unsafe (with ``--strict``: and none was skipped); 1 when one is;
2 when the scan could not run (a missing path, bad settings).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from bastion.artifacts.findings import FileResult, ScanReport, ScanStatus, Severity
from bastion.artifacts.report import report_summary, report_to_dict, report_to_sarif
from bastion.artifacts.scan import collect_targets, scan_targets
from bastion.cli.context import Context, add_format_option
from bastion.config import ScanSettings, load_settings
from bastion.core.workspace import Workspace
from bastion.errors import ConfigError

__all__ = ["register", "run"]

_STYLE = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
#: Paths named in the audit event, at most (the summary always counts them all).
_AUDIT_PATHS = 100


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "scan",
        help="static scan of model files; never deserializes them",
        description="Scan model files and folders for code that loading them would run, "
        "and for malformed or hostile structure. Formats are recognised by content: pickle, "
        "PyTorch (zip, legacy, TorchScript), joblib, NumPy, safetensors, ONNX, Keras, HDF5, "
        "and zip/tar/gzip/bz2/xz archives of them. Nothing is imported or unpickled.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to scan")
    add_format_option(parser, ("text", "json", "sarif"))
    parser.add_argument(
        "--fail-on",
        choices=[s.label for s in sorted(Severity, reverse=True)],
        default=Severity.HIGH.label,
        help="lowest severity that makes a file unsafe (default: high)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also exit 1 when a file was skipped (not recognised or not readable)",
    )
    parser.add_argument(
        "--workers", type=int, help="scanner processes (default: scan.workers; 0: one per core)"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds per file (default: scan.timeout_seconds)"
    )
    parser.add_argument(
        "--memory-mb", type=int, help="memory per file in MiB (default: scan.memory_mb)"
    )
    parser.set_defaults(handler=run)


def _settings(ctx: Context, workspace: Workspace | None) -> ScanSettings:
    base = workspace.settings.scan if workspace else load_settings(None, ctx.environ).scan
    overrides = {
        key: value
        for key, value in (
            ("workers", ctx.args.workers),
            ("timeout_seconds", ctx.args.timeout),
            ("memory_mb", ctx.args.memory_mb),
        )
        if value is not None
    }
    if not overrides:
        return base
    try:
        return ScanSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        error = exc.errors()[0]
        option = {"timeout_seconds": "timeout", "memory_mb": "memory-mb"}.get(
            str(error["loc"][0]), str(error["loc"][0])
        )
        raise ConfigError(f"invalid --{option}: {error['msg']}") from exc


def run(ctx: Context) -> int:
    fail_on = Severity.parse(ctx.args.fail_on)
    workspace = ctx.optional_workspace()
    settings = _settings(ctx, workspace)
    targets = collect_targets(ctx.args.paths)
    started = time.monotonic()
    with ctx.progress("Scanning", len(targets)) as advance:
        report = scan_targets(targets, settings, fail_on=fail_on, progress=lambda _r: advance(1))
    elapsed = time.monotonic() - started
    summary = report_summary(report, fail_on=fail_on)
    if workspace is not None:
        unsafe = [r.path for r in report.unsafe]
        workspace.audit().append(
            "scan",
            ", ".join(ctx.args.paths)[:1000],
            {
                **summary,
                "seconds": round(elapsed, 3),
                "unsafe_paths": unsafe[:_AUDIT_PATHS],
            },
        )
    failed = bool(report.unsafe) or (ctx.args.strict and bool(report.skipped))
    if ctx.format == "sarif":
        ctx.stdout.write(json.dumps(report_to_sarif(report, fail_on=fail_on), indent=2) + "\n")
    else:
        payload = report_to_dict(report, fail_on=fail_on, seconds=elapsed)
        ctx.emit(payload, lambda console: _render(console, report, fail_on, elapsed))
    return 1 if failed else 0


def _render(console: Console, report: ScanReport, fail_on: Severity, elapsed: float) -> None:
    for result in report.unsafe:
        _render_unsafe(console, result)
    for result in report.skipped:
        console.print(Text.assemble(("SKIPPED ", "yellow"), result.path, f": {result.skip_reason}"))
    lower = sum(1 for r in report.results if r.status is ScanStatus.CLEAN and r.findings)
    if lower:
        console.print(
            f"{lower} clean file(s) have findings below {fail_on.label} (--format json lists them)."
        )
    summary = report_summary(report, fail_on=fail_on)
    line = Text.assemble(
        f"Scanned {summary['files']} file(s) in {elapsed:.2f} s: ",
        (f"{summary['unsafe']} unsafe", "bold red" if summary["unsafe"] else ""),
        f", {summary['clean']} clean, {summary['skipped']} skipped ",
        f"(unsafe from {fail_on.label} up).",
    )
    console.print(line)


def _render_unsafe(console: Console, result: FileResult) -> None:
    console.print(
        Text.assemble(("UNSAFE ", "bold red"), (result.path, "bold"), f"  ({result.format})")
    )
    notes = sum(1 for f in result.findings if f.severity is Severity.INFO)
    for finding in result.findings:
        if finding.severity is Severity.INFO:
            continue  # notes are in --format json
        where = finding.member or ""
        if finding.offset is not None:
            where = f"{where} @ {finding.offset}" if where else f"@ {finding.offset}"
        detail = " ".join(x for x in (finding.opcode, finding.symbol) if x)
        console.print(
            Text.assemble(
                "  ",
                (f"{finding.severity.label.upper():<8}", _STYLE[finding.severity]),
                " ",
                (finding.rule_id, "bold"),
                f"  {where}" if where else "",
                f"  {detail}" if detail else "",
            )
        )
        console.print(Text(f"      {finding.message}"))
        if finding.remediation:
            console.print(Text(f"      fix: {finding.remediation}", style="dim"))
        console.print(Text(f"      MITRE ATLAS {finding.atlas.value}", style="dim"))
    if notes:
        console.print(Text(f"  ({notes} informational note(s): --format json)", style="dim"))
