"""Helpers the file-based targets share: digests and the scanner gate (internal)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.errors import AssessmentError

logger = logging.getLogger(__name__)

#: A scanner gate: returns when every file scanned clean, raises AssessmentError otherwise.
ScanGate = Callable[[Sequence[Path]], None]


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, streamed."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise AssessmentError(f"cannot read model file {path}: {exc.strerror}") from exc
    return f"sha256:{digest.hexdigest()}"


def combined_digest(files: Sequence[tuple[str, str]]) -> str:
    """The model digest: a single file's, or sha256 over ``digest  name`` lines when several."""
    if len(files) == 1:
        return files[0][1]
    lines = "".join(f"{d}  {Path(p).name}\n" for p, d in sorted(files, key=lambda f: f[1]))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def require_clean_scan(paths: Sequence[Path]) -> None:
    """Refuse to load a model file that bastion's scanner does not pass.

    Fails closed: an unsafe finding, a skipped file, or no scanner at all refuses the load.

    Raises:
        AssessmentError: the scan did not pass, or could not run.
    """
    # INTEGRATION POINT (issue 3 -> issue 5): bind bastion's scanner library API here.
    # Expected: a function that scans paths and returns bastion.artifacts.findings.ScanReport.
    try:
        from bastion.artifacts import scan_paths  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise AssessmentError(
            "bastion's model scanner is not available, so a pickle-based model cannot be "
            "loaded safely"
        ) from exc
    report = scan_paths(list(paths))
    problems = [
        f"{r.path}: {r.status.value}"
        + (f" ({r.findings[0].rule_id}: {r.findings[0].message})" if r.findings else "")
        + (f" ({r.skip_reason})" if r.skip_reason else "")
        for r in report.results
        if r.status.value != "clean"
    ]
    if problems:
        raise AssessmentError("the model scan did not pass: " + "; ".join(problems))
    logger.info("scan passed for %s", ", ".join(str(p) for p in paths))
