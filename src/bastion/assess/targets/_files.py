"""Helpers the file-based targets share: digests and the scanner gate (internal)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.artifacts import ScanStatus, scan_paths
from bastion.errors import AssessmentError, ScanError

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

    Runs :func:`bastion.artifacts.scan_paths` (``bastion scan``) with default settings. Fails
    closed: an unsafe finding or a skipped file refuses the load.

    Raises:
        AssessmentError: the scan did not pass, or could not run.
    """
    try:
        report = scan_paths([str(p) for p in paths])
    except ScanError as exc:
        raise AssessmentError(f"the model scan could not run: {exc}") from exc
    problems = []
    for result in report.results:
        if result.status is ScanStatus.CLEAN:
            continue
        detail = result.skip_reason
        if result.findings:
            first = result.findings[0]
            detail = f"{first.rule_id}: {first.message}"
        problems.append(f"{result.path}: {result.status.value} ({detail})")
    if not report.results:
        problems.append("nothing was scanned")
    if problems:
        raise AssessmentError("the model scan did not pass: " + "; ".join(problems))
    logger.info("scan passed for %s", ", ".join(str(p) for p in paths))
