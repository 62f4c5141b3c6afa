"""The seam between the scan driver and the per-format scanners (stable API for scanner authors).

A :class:`Scanner` recognises its format from the bytes, never from a file name, and walks them
with its own bounded reader. Scanners never import, unpickle or load what they read: pickles go
to :func:`bastion.artifacts.pickle_scan.analyze_pickle`, a static analyser, and everything else
is parsed by hand (zip directories, protobuf wire format, JSON headers).

Every scanner reports through the :class:`ScanContext` it is given. The context carries the
file's limits (time, archive depth, member count, expanded bytes, memory for one buffer), the
path of the member being scanned (outermost first), and the way back into format detection for
nested content (:meth:`ScanContext.nested`), so an archive scanner never needs to know which
formats exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from bastion.artifacts.findings import Atlas, Finding, Severity
from bastion.artifacts.pickle_scan import PickleAnalysis, PickleLimits, analyze_pickle
from bastion.config import ScanSettings

__all__ = [
    "INCOMPLETE_SUFFIX",
    "BudgetExceeded",
    "NeedsIsolation",
    "PickleRole",
    "ScanContext",
    "Scanner",
]

#: Appended to every message of a finding that stands for content bastion could not examine.
INCOMPLETE_SUFFIX = "could not be fully analysed: treated as unsafe"

#: Output below this many bytes never counts as a decompression bomb, whatever its ratio: a
#: few megabytes of zeros legitimately compress a thousandfold and cost nothing to examine.
RATIO_FLOOR_BYTES = 4 * 2**20

#: Findings kept per file; a hostile file could otherwise produce millions.
MAX_FINDINGS = 1000


class Scanner(Protocol):
    """One model-file format.

    Attributes:
        name: the format's label in reports (``zip``, ``pickle``, ``safetensors``, ...).
        strong: whether a match is near-certain (a long magic number, a checksum). Formats
            without one (protobuf, headerless pickle, zlib) also match bytes that are not
            theirs: where such content was only sniffed inside an archive, a failure to parse
            it is noted instead of failing the file (see :meth:`ScanContext.incomplete`).
    """

    name: str
    strong: bool

    def matches(self, data: memoryview) -> bool:
        """Whether ``data`` is (also) in this format, judged from its bytes alone; cheap."""
        ...

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        """Examine ``data``, report through ``ctx``, and return the refined format label."""
        ...


class PickleRole(StrEnum):
    """How a pickle-looking stream is reached, which decides how a parse failure counts."""

    #: A loader unpickles this stream (``data.pkl`` in a checkpoint, an object array, a raw
    #: pickle file): whatever bastion could not parse fails closed.
    LOADED = "loaded"
    #: Found by content sniffing only (a tensor record that happens to start like a pickle, a
    #: polyglot's other reading). Dangerous opcodes still count in full; bytes that are simply
    #: not a valid pickle are noted, since no loader can run a pickle past its first error.
    SNIFFED = "sniffed"


class BudgetExceeded(Exception):  # noqa: N818 - a control-flow signal, not an error for users
    """Raised inside a scan when the file's time budget is spent; ends that file's scan."""


class NeedsIsolation(Exception):  # noqa: N818 - a control-flow signal, not an error for users
    """Raised by a scanner that must call a native parser while the scan runs in-process.

    Native code (the HDF5 library) can hang or crash on hostile input where no deadline check
    reaches it; the driver then scans the file again in a worker process it can kill.
    """


@dataclass
class _Frame:
    name: str
    role: PickleRole
    weak: str = ""  # the weakly matched format being scanned in a sniffed frame, if any


class ScanContext:
    """What a scanner needs while it examines one file; collects its findings.

    Args:
        path: the file as reported.
        settings: the limits.
        scanners: every scanner, in detection order (used for nested content).
        disk_path: the file on disk, for checks relative to its folder (ONNX external data);
            None for content that is not a file (bytes handed in by a caller).
        deadline: ``time.monotonic()`` value after which the scan stops, or None.
        native: whether scanners may call native parsers (False: they raise
            :class:`NeedsIsolation`).
    """

    def __init__(
        self,
        path: str,
        settings: ScanSettings,
        scanners: tuple[Scanner, ...],
        *,
        disk_path: Path | None = None,
        deadline: float | None = None,
        native: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.settings = settings
        self.scanners = scanners
        self.disk_path = disk_path
        self.deadline = deadline
        #: whether native parsers (h5py) may run: False in-process, see NeedsIsolation.
        self.native = native
        self._clock = clock
        self.findings: list[Finding] = []
        self.dropped_findings = 0
        self._frames: list[_Frame] = []
        self._top = _Frame("", PickleRole.LOADED)
        self.members_seen = 0
        self.expanded_bytes = 0
        self._limits_reported: set[str] = set()
        self.exhausted = False
        #: the largest single buffer a scanner may materialise (half the memory budget).
        self.buffer_cap = settings.memory_mb * 2**20 // 2

    # -- where we are -------------------------------------------------------------------

    @property
    def member(self) -> str:
        """The member path inside archives, outermost first, joined by ``!``."""
        return "!".join(frame.name for frame in self._frames)

    @property
    def depth(self) -> int:
        """How many archive or compression layers deep the current content lies."""
        return len(self._frames)

    @property
    def at_file_level(self) -> bool:
        """True while the content being scanned is the file on disk itself."""
        return not self._frames

    @property
    def _frame(self) -> _Frame:
        return self._frames[-1] if self._frames else self._top

    @property
    def weakly_matched(self) -> bool:
        """True while a weakly recognised format is scanned in content that was only sniffed."""
        return bool(self._frame.weak)

    @property
    def pickle_role(self) -> PickleRole:
        """The role a pickle found in the current content plays (see :class:`PickleRole`)."""
        return self._frame.role

    # -- reporting ------------------------------------------------------------------------

    def add(
        self,
        rule_id: str,
        severity: Severity,
        message: str,
        *,
        offset: int | None = None,
        opcode: str | None = None,
        symbol: str | None = None,
        atlas: Atlas = Atlas.UNSAFE_ARTIFACT,
        remediation: str = "",
    ) -> None:
        """Record a finding at the current member."""
        self.add_finding(
            Finding(
                rule_id=rule_id,
                severity=severity,
                message=message,
                path=self.path,
                member=self.member,
                offset=offset,
                opcode=opcode,
                symbol=symbol,
                atlas=atlas,
                remediation=remediation,
            )
        )

    def add_finding(self, finding: Finding) -> None:
        """Record a finding made elsewhere (the pickle analyser's), within the per-file cap."""
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped_findings += 1
            return
        self.findings.append(finding)

    def incomplete(
        self,
        what: str,
        *,
        rule_id: str = "SCAN-MALFORMED",
        offset: int | None = None,
        atlas: Atlas = Atlas.SUPPLY_CHAIN_MODEL,
    ) -> None:
        """Record that content of a known format could not be parsed: fails closed (HIGH).

        Except where a weakly recognised format (:attr:`Scanner.strong` False) was only
        sniffed inside an archive: then the bytes are most likely not that format at all, and
        the failure is an INFO note.
        """
        weak = self._frame.weak
        if weak:
            self.add(
                "SCAN-UNCONFIRMED-FORMAT",
                Severity.INFO,
                f"content that looked like {weak} is not valid {weak} ({what}); no loader is "
                "known to read it as such",
                offset=offset,
                atlas=atlas,
            )
            return
        self.add(
            rule_id,
            Severity.HIGH,
            f"{what}: {INCOMPLETE_SUFFIX}",
            offset=offset,
            atlas=atlas,
            remediation="Obtain the file again from a trusted source; do not load it until it "
            "scans clean.",
        )

    def limit(self, kind: str, what: str) -> None:
        """Record that a resource limit was hit (HIGH, once per kind and member)."""
        key = f"{kind}\0{self.member}"
        if key in self._limits_reported:
            return
        self._limits_reported.add(key)
        self.add(
            f"SCAN-LIMIT-{kind.upper()}",
            Severity.HIGH,
            f"{what}: {INCOMPLETE_SUFFIX}",
            atlas=Atlas.DENIAL_OF_SERVICE,
            remediation="Raise the [scan] limit in bastion.toml only if the file comes from a "
            "trusted source; otherwise treat it as hostile.",
        )

    # -- budgets --------------------------------------------------------------------------

    def check_deadline(self) -> None:
        """Raise :class:`BudgetExceeded` once the time budget is spent."""
        if self.deadline is not None and self._clock() > self.deadline:
            raise BudgetExceeded

    def count_member(self) -> bool:
        """Count one archive member; False (and a finding) once the limit is reached."""
        if self.members_seen >= self.settings.max_archive_members:
            self.exhausted = True
            self.limit(
                "members",
                f"more than {self.settings.max_archive_members} archive members",
            )
            return False
        self.members_seen += 1
        return True

    def count_expanded(self, n: int) -> bool:
        """Count ``n`` decompressed bytes; False (and a finding) past the total limit."""
        self.expanded_bytes += n
        if self.expanded_bytes > self.settings.max_archive_total_bytes:
            self.exhausted = True
            self.limit(
                "expanded",
                f"archive content expands past {self.settings.max_archive_total_bytes} bytes",
            )
            return False
        return True

    def ratio_exceeded(self, produced: int, consumed: int) -> bool:
        """Whether ``produced`` bytes out of ``consumed`` compressed ones look like a bomb."""
        return (
            produced > RATIO_FLOOR_BYTES
            and produced > self.settings.max_compression_ratio * max(consumed, 1)
        )

    # -- nested content -------------------------------------------------------------------

    def detect(self, data: memoryview) -> list[Scanner]:
        """Every scanner whose format ``data`` matches, in detection order."""
        found = []
        for scanner in self.scanners:
            try:
                if scanner.matches(data):
                    found.append(scanner)
            except (ValueError, IndexError, OverflowError):
                continue  # a matcher that cannot read the bytes does not match them
        return found

    def scan_content(self, data: memoryview) -> list[str]:
        """Scan ``data`` as every format it matches; return their labels (empty: unknown).

        When more than one format matches, every reading is scanned and the polyglot itself
        is reported: different loaders would read different things out of the same bytes.
        """
        self.check_deadline()
        scanners = self.detect(data)
        if len(scanners) > 1:
            self.add(
                "POLYGLOT",
                Severity.MEDIUM,
                "content is valid as several formats ("
                + ", ".join(s.name for s in scanners)
                + "): different loaders read different things; each reading was scanned",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Model files have one format; re-export this one with the tool "
                "that made it.",
            )
            self._frame.role = PickleRole.SNIFFED
        frame = self._frame
        labels = []
        try:
            for scanner in scanners:
                sniffed = frame.role is PickleRole.SNIFFED
                frame.weak = scanner.name if sniffed and not scanner.strong else ""
                labels.append(scanner.scan(data, self))
        finally:
            frame.weak = ""
        return labels

    def nested(
        self, data: memoryview, name: str, *, role: PickleRole = PickleRole.SNIFFED
    ) -> list[str]:
        """Scan archive member ``name`` (already counted) one level deeper.

        Returns:
            The labels of the formats the member matched; empty when none matched or a limit
            stopped the scan (the limit is then a finding).
        """
        if self.exhausted:
            return []
        if self.depth >= self.settings.max_archive_depth:
            self._frames.append(_Frame(name, role))
            try:
                if self.detect(data):
                    self.limit(
                        "depth",
                        f"archives nested deeper than {self.settings.max_archive_depth} levels",
                    )
            finally:
                self._frames.pop()
            return []
        self._frames.append(_Frame(name, role))
        try:
            return self.scan_content(data)
        finally:
            self._frames.pop()

    @contextmanager
    def member_frame(self, name: str, role: PickleRole = PickleRole.SNIFFED) -> Iterator[None]:
        """Report findings under member ``name`` without running format detection on it."""
        self._frames.append(_Frame(name, role))
        try:
            yield
        finally:
            self._frames.pop()

    # -- pickles --------------------------------------------------------------------------

    def analyze_pickle(
        self,
        data: memoryview,
        *,
        start: int = 0,
        allow_trailing: bool = True,
        role: PickleRole | None = None,
    ) -> PickleAnalysis:
        """Run the static pickle analyser over ``data[start:]`` and record its findings.

        For a :attr:`PickleRole.SNIFFED` stream that is not a well-formed pickle, findings
        about what the analyser could not follow (:data:`UNCERTAIN_RULES`) become notes;
        everything else is kept as the analyser made it.
        """
        self.check_deadline()
        limits = PickleLimits(
            max_opcodes=self.settings.max_pickle_opcodes,
            max_memo=_PICKLE_DEFAULTS.max_memo,
            max_stack=_PICKLE_DEFAULTS.max_stack,
            deadline=self.deadline,
        )
        analysis = analyze_pickle(
            data,
            path=self.path,
            member=self.member,
            start=start,
            limits=limits,
            allow_trailing=allow_trailing,
        )
        effective = self.pickle_role if role is None else role
        # Bytes that were only sniffed and turn out not to be a well-formed pickle filling
        # the member are most likely not one at all (tensor data that starts with 0x80 0x02,
        # or even with a 5-byte pickle by chance): the analyser's uncertainty there is a
        # note. What it saw the stream import or call still counts: a loader runs a pickle up
        # to its first error.
        lenient = effective is PickleRole.SNIFFED and (
            not analysis.complete or analysis.end < len(data)
        )
        for finding in analysis.findings:
            if lenient and finding.rule_id in UNCERTAIN_RULES:
                finding = _as_note(finding)
            self.add_finding(finding)
        self.check_deadline()
        return analysis


_PICKLE_DEFAULTS = PickleLimits()


#: Rule ids of the pickle analyser that report what it could not follow, not what the stream
#: does (see :meth:`ScanContext.analyze_pickle`).
UNCERTAIN_RULES = frozenset(
    {
        "PICKLE-MALFORMED",
        "PICKLE-TRUNCATED",
        "PICKLE-TRAILING-DATA",
        "PICKLE-LIMIT",
        "PICKLE-COMPUTED-CALL",
        "PICKLE-UNRESOLVED-GLOBAL",
        "PICKLE-JOBLIB-ARRAY",
        "PICKLE-NESTED",
        "PICKLE-SUSPICIOUS-NAME",
    }
)


def _as_note(finding: Finding) -> Finding:
    return Finding(
        rule_id="PICKLE-NOT-A-PICKLE",
        severity=Severity.INFO,
        message="bytes that start like a pickle are not a valid one, and no loader is known "
        f"to unpickle this member ({finding.rule_id}: {finding.message})",
        path=finding.path,
        member=finding.member,
        offset=finding.offset,
        opcode=finding.opcode,
        symbol=finding.symbol,
        atlas=finding.atlas,
        remediation="",
    )
