"""Assessment reports: JSON (with ``schema_version``), one self-contained HTML file, Markdown.

- JSON: :meth:`Assessment.to_json` plus ``schema_version``; its JSON Schema is committed at
  ``bastion/schemas/assess.json`` and tested.
- HTML: one file, no external resource (inline CSS, inline SVG charts from
  :mod:`bastion.assess.plots`), every value escaped: safe to open from an untrusted CI run.
- Markdown: a short summary for a pull-request comment: verdict, rules, headline numbers.

The API is stable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from bastion.assess.plots import render_svg
from bastion.assess.results import Metric
from bastion.assess.runner import Assessment, Verdict
from bastion.errors import AssessmentError

__all__ = ["SCHEMA_VERSION", "to_html", "to_json_document", "to_markdown", "write_reports"]

#: Version of the JSON report; bump on any incompatible change (and update the schema).
SCHEMA_VERSION = "1.0"

_VERDICT_TEXT = {
    Verdict.MET: "policy met",
    Verdict.NOT_MET: "policy NOT met",
    Verdict.NO_POLICY: "no policy checked",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;
color:#222;padding:0 1rem}h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;
padding:.25rem .6rem;text-align:left;font-size:.9rem}th{background:#f4f4f4}.met{color:#176b2c;
font-weight:bold}.fail{color:#b3261e;font-weight:bold}.badge{display:inline-block;padding:.2rem
.7rem;border-radius:1rem;color:#fff}.badge.met{background:#176b2c}.badge.not_met{background:#b3261e}
.badge.no_policy{background:#666}code{font-size:.85rem;word-break:break-all}.charts{display:flex;
flex-wrap:wrap;gap:1rem}.muted{color:#666}
"""


def to_json_document(assessment: Assessment) -> dict[str, Any]:
    """The JSON report: ``schema_version`` first, then the assessment."""
    return {"schema_version": SCHEMA_VERSION, **assessment.to_json()}


def _value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def _at(metric: Metric) -> str:
    return "" if metric.at is None else f"{metric.at:.4g}"


def to_markdown(assessment: Assessment) -> str:
    """A pull-request comment: verdict, rules, and each family's summary lines."""
    info = assessment.target.info
    icon = {"met": "✅", "not_met": "❌", "no_policy": "\N{LARGE BLUE CIRCLE}"}[assessment.verdict]
    lines = [
        f"### {icon} bastion assess: {_VERDICT_TEXT[assessment.verdict]}",
        "",
        f"**Model** `{info.name}` ({info.kind}, {info.access.value})  ",
        f"**Digest** `{info.digest or 'unknown'}`  ",
        f"**Data** {len(assessment.data)} points, `{assessment.data.digest or 'in memory'}`  ",
        f"**Queries** {assessment.target.queries.used:,}, seed {assessment.seed}",
        "",
    ]
    if assessment.outcome is not None:
        lines += ["| rule | measured | result |", "|---|---|---|"]
        for outcome in assessment.outcome.rules:
            shown = ", ".join(
                f"{_value(m.value)}" + (f" @{m.at:.4g}" if m.at is not None else "")
                for m in outcome.values[:4]
            )
            mark = "met" if outcome.met else f"**not met**: {outcome.reason}"
            rule = outcome.rule.describe().replace("|", "\\|")
            lines.append(f"| `{rule}` | {shown or 'n/a'} | {mark} |")
        lines.append("")
    for result in assessment.results:
        lines.append(f"**{result.family}** ({result.seconds:.1f}s, {result.queries:,} queries)")
        lines += [f"- {line}" for line in result.summary]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_html(assessment: Assessment) -> str:
    """One self-contained HTML page."""
    info = assessment.target.info
    verdict = assessment.verdict
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>bastion assess: {escape(info.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>bastion assess <span class='badge {verdict}'>"
        f"{escape(_VERDICT_TEXT[verdict])}</span></h1>",
        "<table>",
        _row("model", f"<code>{escape(info.name)}</code> ({escape(info.kind)})"),
        _row("access", escape(f"{info.access.value}, output {info.output.value}")),
        _row("digest", f"<code>{escape(info.digest or 'unknown')}</code>"),
        _row(
            "classes",
            escape(", ".join(info.classes[:20]) + (" ..." if info.num_classes > 20 else "")),
        ),
        _row("input domain", escape(json.dumps(assessment.target.domain.to_json()))),
        _row(
            "data",
            escape(f"{assessment.data.source}: {len(assessment.data)} points")
            + f" <code>{escape(assessment.data.digest or '')}</code>",
        ),
        _row(
            "queries",
            escape(
                f"{assessment.target.queries.used:,} in "
                f"{assessment.target.queries.requests:,} requests"
            ),
        ),
        _row(
            "seed / time",
            escape(
                f"{assessment.seed} / {assessment.seconds:.1f}s, {assessment.started.isoformat()}"
            ),
        ),
        "</table>",
    ]
    if assessment.policy is not None and assessment.outcome is not None:
        parts.append(
            f"<h2>Policy</h2><p class='muted'>{escape(assessment.policy.source)} "
            f"<code>{escape(assessment.policy.digest)}</code></p>"
            "<table><tr><th>rule</th><th>measured</th><th>result</th><th>why</th></tr>"
        )
        for outcome in assessment.outcome.rules:
            shown = ", ".join(
                _value(m.value) + (f" @{m.at:.4g}" if m.at is not None else "")
                for m in outcome.values
            )
            css = "met" if outcome.met else "fail"
            parts.append(
                f"<tr><td><code>{escape(outcome.rule.describe())}</code></td>"
                f"<td>{escape(shown or 'n/a')}</td><td class='{css}'>"
                f"{'met' if outcome.met else escape('not met: ' + outcome.reason)}</td>"
                f"<td>{escape(outcome.rule.why)}</td></tr>"
            )
        parts.append("</table>")
    for result in assessment.results:
        parts.append(
            f"<h2>{escape(result.family)}</h2><p class='muted'>{result.seconds:.1f}s, "
            f"{result.queries:,} queries</p><ul>"
        )
        parts += [f"<li>{escape(line)}</li>" for line in result.summary]
        parts.append("</ul>")
        if result.charts:
            parts.append("<div class='charts'>")
            parts += [f"<figure>{render_svg(chart)}</figure>" for chart in result.charts]
            parts.append("</div>")
        parts.append("<table><tr><th>metric</th><th>at</th><th>value</th></tr>")
        parts += [
            f"<tr><td><code>{escape(m.name)}</code></td><td>{escape(_at(m))}</td>"
            f"<td>{escape(_value(m.value))}</td></tr>"
            for m in result.metrics
        ]
        parts.append("</table>")
    parts.append(
        f"<p class='muted'>bastion {escape(str(assessment.to_json()['tool']['version']))}</p>"
        "</body></html>"
    )
    return "\n".join(parts)


def _row(name: str, html_value: str) -> str:
    return f"<tr><th>{escape(name)}</th><td>{html_value}</td></tr>"


def write_reports(
    assessment: Assessment,
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    markdown_path: Path | None = None,
) -> dict[str, str]:
    """Write the requested reports; returns ``{"json": path, ...}`` for those written.

    Raises:
        AssessmentError: a report cannot be written.
    """
    written: dict[str, str] = {}
    outputs: tuple[tuple[str, Path | None, Callable[[Assessment], str]], ...] = (
        ("json", json_path, lambda a: json.dumps(to_json_document(a), indent=2) + "\n"),
        ("html", html_path, to_html),
        ("markdown", markdown_path, to_markdown),
    )
    for kind, path, render in outputs:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(assessment), encoding="utf-8")
        except OSError as exc:
            raise AssessmentError(f"cannot write the {kind} report {path}: {exc.strerror}") from exc
        written[kind] = str(path)
    return written
