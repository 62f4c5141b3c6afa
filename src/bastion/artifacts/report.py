"""Scan reports as data: the JSON document of ``bastion scan`` and SARIF 2.1.0 (stable API).

:func:`report_to_dict` gives the JSON document (``schema_version`` is added by the command
line; the schema is ``bastion/schemas/scan.json``). :func:`report_to_sarif` gives a SARIF 2.1.0
log for code-scanning tools: one rule per rule id, one result per finding, skipped files as
tool notifications, MITRE ATLAS techniques as rule tags. :func:`result_to_dict` and
:func:`result_from_dict` round-trip one file's result (the scanner's workers use them).
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from bastion import __version__
from bastion.artifacts.findings import Atlas, FileResult, Finding, ScanReport, ScanStatus, Severity

__all__ = [
    "SARIF_SCHEMA_URI",
    "finding_to_dict",
    "report_summary",
    "report_to_dict",
    "report_to_sarif",
    "result_from_dict",
    "result_to_dict",
]

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
_INFORMATION_URI = "https://atlas.mitre.org"
#: SARIF's numeric scale used by code-scanning tools (``security-severity``, 0.0 to 10.0).
_SECURITY_SEVERITY = {
    Severity.INFO: "0.0",
    Severity.LOW: "2.0",
    Severity.MEDIUM: "5.0",
    Severity.HIGH: "8.0",
    Severity.CRITICAL: "9.5",
}


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    """One finding as JSON-ready data."""
    return {
        "rule_id": finding.rule_id,
        "severity": finding.severity.label,
        "message": finding.message,
        "path": finding.path,
        "member": finding.member,
        "offset": finding.offset,
        "opcode": finding.opcode,
        "symbol": finding.symbol,
        "atlas": finding.atlas.value,
        "remediation": finding.remediation,
    }


def _finding_from_dict(data: Mapping[str, Any]) -> Finding:
    return Finding(
        rule_id=str(data["rule_id"]),
        severity=Severity.parse(str(data["severity"])),
        message=str(data["message"]),
        path=str(data["path"]),
        member=str(data["member"]),
        offset=None if data["offset"] is None else int(data["offset"]),
        opcode=None if data["opcode"] is None else str(data["opcode"]),
        symbol=None if data["symbol"] is None else str(data["symbol"]),
        atlas=Atlas(data["atlas"]),
        remediation=str(data["remediation"]),
    )


def result_to_dict(result: FileResult) -> dict[str, Any]:
    """One file's result as JSON-ready data (an entry of the report's ``results``)."""
    worst = result.max_severity
    return {
        "path": result.path,
        "format": result.format,
        "status": result.status.value,
        "max_severity": None if worst is None else worst.label,
        "findings": [finding_to_dict(f) for f in result.findings],
        "skip_reason": result.skip_reason,
        "bytes_scanned": result.bytes_scanned,
        "seconds": result.seconds,
    }


def result_from_dict(data: Mapping[str, Any]) -> FileResult:
    """Inverse of :func:`result_to_dict`."""
    return FileResult(
        path=str(data["path"]),
        format=str(data["format"]),
        status=ScanStatus(data["status"]),
        findings=tuple(_finding_from_dict(f) for f in data["findings"]),
        skip_reason=str(data["skip_reason"]),
        bytes_scanned=int(data["bytes_scanned"]),
        seconds=float(data["seconds"]),
    )


def report_summary(report: ScanReport, *, fail_on: Severity) -> dict[str, Any]:
    """Counts of files by status and of findings by severity."""
    statuses = Counter(r.status for r in report.results)
    severities = Counter(f.severity for r in report.results for f in r.findings)
    return {
        "files": len(report.results),
        "clean": statuses[ScanStatus.CLEAN],
        "unsafe": statuses[ScanStatus.UNSAFE],
        "skipped": statuses[ScanStatus.SKIPPED],
        "findings": sum(severities.values()),
        "by_severity": {s.label: severities[s] for s in sorted(Severity, reverse=True)},
        "fail_on": fail_on.label,
        "bytes_scanned": sum(r.bytes_scanned for r in report.results),
    }


def report_to_dict(
    report: ScanReport, *, fail_on: Severity, seconds: float = 0.0
) -> dict[str, Any]:
    """The JSON document of ``bastion scan`` (without ``schema_version``).

    Args:
        report: the scan's report.
        fail_on: the severity the verdicts were made with.
        seconds: how long the whole scan took (wall clock).
    """
    summary = report_summary(report, fail_on=fail_on)
    summary["seconds"] = round(seconds, 3)
    return {"results": [result_to_dict(r) for r in report.results], "summary": summary}


def _uri(path: str) -> str:
    """A SARIF ``uri-reference`` for a path: relative paths stay relative."""
    pure = PurePath(path)
    if pure.is_absolute():
        return pure.as_uri()
    return urllib.parse.quote(pure.as_posix())


def _level(severity: Severity, fail_on: Severity) -> str:
    if severity >= fail_on:
        return "error"
    if severity >= Severity.MEDIUM:
        return "warning"
    return "note"


def report_to_sarif(report: ScanReport, *, fail_on: Severity) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log (validates against the OASIS schema)."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for file_result in report.results:
        for finding in file_result.findings:
            rule = rules.get(finding.rule_id)
            if rule is None or finding.severity > Severity.parse(rule["properties"]["severity"]):
                rules[finding.rule_id] = _rule(finding)
            results.append(_result(finding, fail_on))
    rule_ids = sorted(rules)
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    for result in results:
        result["ruleIndex"] = index[result["ruleId"]]
    notifications = [
        {
            "level": "warning",
            "message": {"text": f"skipped: {r.skip_reason}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(r.path)}}}],
            "descriptor": {"id": "SCAN-SKIPPED"},
        }
        for r in report.results
        if r.status is ScanStatus.SKIPPED
    ]
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": _INFORMATION_URI,
                        "rules": [rules[rule_id] for rule_id in rule_ids],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "artifacts": [
                    {
                        "location": {"uri": _uri(r.path)},
                        "length": r.bytes_scanned,
                        "properties": {"format": r.format, "status": r.status.value},
                    }
                    for r in report.results
                ],
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def _rule(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.rule_id,
        "name": finding.rule_id.title().replace("-", ""),
        "shortDescription": {"text": finding.rule_id.replace("-", " ").lower()},
        "help": {"text": finding.remediation or "Do not load the file until it scans clean."},
        "properties": {
            "severity": finding.severity.label,
            "security-severity": _SECURITY_SEVERITY[finding.severity],
            "tags": ["security", "ml-model", f"mitre-atlas/{finding.atlas.value}"],
        },
    }


def _result(finding: Finding, fail_on: Severity) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": {"uri": _uri(finding.path)}},
    }
    if finding.member:
        location["logicalLocations"] = [{"fullyQualifiedName": finding.member, "kind": "member"}]
    elif finding.offset is not None:
        location["physicalLocation"]["region"] = {"byteOffset": finding.offset}
    properties: dict[str, Any] = {
        "severity": finding.severity.label,
        "atlas": finding.atlas.value,
        "member": finding.member,
    }
    for key in ("offset", "opcode", "symbol"):
        value = getattr(finding, key)
        if value is not None:
            properties[key] = value
    return {
        "ruleId": finding.rule_id,
        "level": _level(finding.severity, fail_on),
        "message": {"text": finding.message},
        "locations": [location],
        "properties": properties,
    }
