"""Values of a scan: severities, findings, per-file results and the report (stable API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

__all__ = [
    "Atlas",
    "FileResult",
    "Finding",
    "ScanReport",
    "ScanStatus",
    "Severity",
]


class Severity(IntEnum):
    """Ordered severity of a finding; compare with ``<``/``>=``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lower-case name, as written in reports."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity named ``text`` (any case)."""
        return cls[text.upper()]


class Atlas(StrEnum):
    """MITRE ATLAS techniques a finding can serve (https://atlas.mitre.org)."""

    #: User Execution: Unsafe ML Artifacts: loading the file runs the attacker's code.
    UNSAFE_ARTIFACT = "AML.T0011.000"
    #: ML Supply Chain Compromise: Model: a tampered or malformed model artifact.
    SUPPLY_CHAIN_MODEL = "AML.T0010.003"
    #: Denial of ML Service: resource exhaustion in whoever parses or loads the file.
    DENIAL_OF_SERVICE = "AML.T0029"


class ScanStatus(StrEnum):
    """Verdict on one file."""

    CLEAN = "clean"
    UNSAFE = "unsafe"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a file.

    Attributes:
        rule_id: stable identifier of the rule, e.g. ``PICKLE-DANGEROUS-GLOBAL``.
        severity: how bad it is.
        message: one sentence for people.
        path: the file on disk that was scanned.
        member: the path inside archives, outermost first, joined by ``!``; empty when none.
        offset: byte offset in the innermost stream (the pickle, the member), when known.
        opcode: the pickle opcode involved, when there is one.
        symbol: the full dotted global, or the callable a call reaches, when there is one.
        atlas: the MITRE ATLAS technique the problem serves.
        remediation: what the user should do.
    """

    rule_id: str
    severity: Severity
    message: str
    path: str
    member: str = ""
    offset: int | None = None
    opcode: str | None = None
    symbol: str | None = None
    atlas: Atlas = Atlas.UNSAFE_ARTIFACT
    remediation: str = ""


@dataclass(frozen=True, slots=True)
class FileResult:
    """Verdict on one scanned file.

    Attributes:
        path: the file.
        format: the format recognised from its content (``pickle``, ``pytorch-zip``, ...),
            ``unknown`` when none was.
        status: ``unsafe`` when a finding reaches the failing severity, ``skipped`` when the
            file was not examined (``skip_reason`` says why), else ``clean``.
        findings: every finding, most severe first.
        skip_reason: why a skipped file was not examined.
        bytes_scanned: bytes read from the file.
        seconds: time spent on it.
    """

    path: str
    format: str
    status: ScanStatus
    findings: tuple[Finding, ...] = ()
    skip_reason: str = ""
    bytes_scanned: int = 0
    seconds: float = 0.0

    @property
    def max_severity(self) -> Severity | None:
        """The highest severity among the findings, None when there are none."""
        return max((f.severity for f in self.findings), default=None)


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The result of scanning one or more paths."""

    results: tuple[FileResult, ...] = field(default_factory=tuple)

    @property
    def unsafe(self) -> tuple[FileResult, ...]:
        return tuple(r for r in self.results if r.status is ScanStatus.UNSAFE)

    @property
    def skipped(self) -> tuple[FileResult, ...]:
        return tuple(r for r in self.results if r.status is ScanStatus.SKIPPED)
