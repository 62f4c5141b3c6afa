"""``bastion demo``: the model supply chain end to end on a bundled example."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from bastion.cli.context import Context, add_format_option
from bastion.demo import DemoStep, run_demo
from bastion.demo_gateway import report_path

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="the whole lifecycle on the bundled example model",
        description="Train a small model, scan, sign and verify it, catch a tampered copy "
        "and a malicious pickle, register and promote it under separation of duties, serve it "
        "behind the gateway, call and attack it, assess it through the gateway, and verify the "
        "audit log. Needs no server or download.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="an empty or new folder for the demo (default: a fresh temporary folder)",
    )
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(ctx: Context) -> int:
    workdir: Path = ctx.args.workdir or Path(tempfile.mkdtemp(prefix="bastion-demo-"))
    steps: list[DemoStep] = []
    console = ctx.console

    def on_step(step: DemoStep) -> None:
        steps.append(step)
        if ctx.format == "json":
            return
        mark = "[green]ok[/green]" if step.ok else "[red]FAILED[/red]"
        console.print(f"\n[bold]{len(steps)}. {escape(step.title)}[/bold]  {mark}")
        for line in step.details:
            console.print(f"   {escape(line)}")
        console.print(f"   [dim]proved:[/dim] {escape(step.proved)}")

    if ctx.format == "text":
        console.print(f"bastion demo in {workdir}")
    ok = run_demo(workdir, on_step=on_step, environ=ctx.environ)
    html = report_path(workdir)
    report = str(html) if html.is_file() else None
    payload = {
        "workdir": str(workdir),
        "ok": ok,
        "report": report,
        "steps": [
            {"title": s.title, "proved": s.proved, "ok": s.ok, "details": list(s.details)}
            for s in steps
        ],
    }

    def text(out: Any) -> None:
        verdict = "every step held" if ok else "a step did not hold"
        out.print(f"\nDemo finished: {verdict}. Files are in {workdir}")
        if report is not None:
            out.print(f"Assessment report (HTML): {escape(report)}")

    ctx.emit(payload, text)
    return 0 if ok else 1
