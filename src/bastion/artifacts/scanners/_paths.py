"""Judging a path that a model file points at (ONNX external data, HDF5 external files).

The path is resolved against the model's folder with :func:`os.path.realpath`, which follows
symlinks by reading them: nothing is opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bastion.artifacts.findings import Severity
from bastion.artifacts.scanners.interface import ScanContext

__all__ = ["external_path_problem"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def external_path_problem(location: str, ctx: ScanContext) -> tuple[Severity, str] | None:
    """What is wrong with a file reference, if anything.

    Returns:
        HIGH with a reason for an empty path, a NUL byte, an absolute path, a ``..``
        component, or (for a file on disk) a symlink that resolves outside the model's
        folder; LOW when the file does not exist; None when the path stays inside the folder
        (or cannot be resolved because the model lies inside an archive).
    """
    if not location or "\0" in location:
        return Severity.HIGH, "the path is empty or holds a NUL byte"
    normal = location.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(location):
        return Severity.HIGH, "an absolute path, outside the model folder"
    if ".." in normal.split("/"):
        return Severity.HIGH, "the path climbs out of the model folder with '..'"
    if not ctx.at_file_level or ctx.disk_path is None:
        return None  # inside an archive: no folder to resolve against
    base = os.path.realpath(ctx.disk_path.parent)
    target = os.path.realpath(Path(base, normal))
    if os.path.commonpath([base, target]) != base:
        return Severity.HIGH, f"a symlink resolves it to {target}, outside the model folder"
    if not os.path.lexists(target):
        return Severity.LOW, "the file does not exist"
    return None
