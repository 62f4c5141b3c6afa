"""Provenance that rides in a bastion signature: signer, time, code, training data, parameters.

These values are carried, signed, in the ``bastion`` field of the model-signing predicate (see
:mod:`bastion.artifacts.bundle`); model-signing ignores the field, as its v1.0 predicate
requires of verifiers. The API is stable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bastion.artifacts.manifest import ModelSource
from bastion.core.digests import (
    DigestRequest,
    HashAlgorithm,
    ProgressCallback,
    digest_bytes,
    digest_files,
)
from bastion.errors import SigningError

__all__ = [
    "DataDigest",
    "Provenance",
    "digest_data",
    "format_time",
    "git_head",
    "parse_parameters",
    "parse_time",
]

logger = logging.getLogger(__name__)

#: Limits on what a signature may carry (also enforced when reading one).
MAX_PARAMETERS = 1000
MAX_PARAMETER_CHARS = 4096
MAX_DATA_ITEMS = 1000

_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/:]{1,200}$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


@dataclass(frozen=True, slots=True)
class DataDigest:
    """The digest of one training-data input (a file, or a folder of files).

    A folder's digest is the digest of its ``sha256sum``-style listing: one line
    ``<hex digest>  <relative name>\\n`` per file, files in byte order of their names, each line
    with the digest of that file; a file's digest is its plain digest.
    """

    path: str
    kind: str  # "file" or "folder"
    algorithm: HashAlgorithm
    digest: str
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who signed, when, and from what.

    Attributes:
        key_id: the signer's key id (:func:`bastion.core.keys.key_id`).
        algorithm: the signer's key algorithm.
        actor: who ran ``bastion sign`` (``$BASTION_ACTOR`` or ``user@host``).
        signed_at: when, UTC.
        code_revision: the training code's revision (a git commit), if known.
        training_data: digests of the training data.
        parameters: training parameters, ``(name, value)`` sorted by name.
    """

    key_id: str
    algorithm: str
    actor: str
    signed_at: datetime
    code_revision: str | None = None
    training_data: tuple[DataDigest, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, to the microsecond when it has one."""
    if moment.tzinfo is None:
        raise ValueError("signing time must be timezone-aware")
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def parse_time(text: str) -> datetime:
    """Read a time written by :func:`format_time` (fractions beyond microseconds dropped)."""
    if not _TIME_RE.match(text):
        raise ValueError(f"not an RFC 3339 UTC time: {text[:40]!r}")
    main, _, fraction = text[:-1].partition(".")
    moment = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment


def parse_parameters(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse ``k=v`` strings into sorted pairs.

    Raises:
        SigningError: an item has no ``=``, a bad or repeated name, or is too long.
    """
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SigningError(f"parameter {item!r} is not of the form name=value")
        if not _KEY_RE.match(name):
            raise SigningError(f"parameter name {name!r} must be 1-200 of A-Z a-z 0-9 _ . - / :")
        if name in pairs:
            raise SigningError(f"parameter {name!r} is given twice")
        if len(value) > MAX_PARAMETER_CHARS:
            raise SigningError(f"parameter {name!r} is longer than {MAX_PARAMETER_CHARS}")
        pairs[name] = value
    if len(pairs) > MAX_PARAMETERS:
        raise SigningError(f"at most {MAX_PARAMETERS} parameters")
    return tuple(sorted(pairs.items()))


def git_head(folder: Path) -> str | None:
    """The commit checked out in the git work tree containing ``folder``, or None.

    None when git is not installed, ``folder`` is not in a work tree, or it has no commit yet.
    """
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, git found on PATH above
            [git, "-C", str(folder), "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git rev-parse failed: %s", exc)
        return None
    revision = done.stdout.strip()
    if done.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", revision):
        return None
    return revision


def digest_data(
    paths: Sequence[Path],
    algorithm: HashAlgorithm,
    *,
    workers: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[DataDigest, ...]:
    """Hash training-data files and folders (see :class:`DataDigest`).

    Raises:
        SigningError: a path is missing or unreadable, or a folder holds symlinks or special
            files.
    """
    if len(paths) > MAX_DATA_ITEMS:
        raise SigningError(f"at most {MAX_DATA_ITEMS} --data paths")
    results: list[DataDigest] = []
    for path in paths:
        try:
            source = ModelSource(path)
        except OSError as exc:
            raise SigningError(f"cannot read data {path}: {exc.strerror or exc}") from exc
        with source:
            listing = source.list()
            if listing.problems:
                raise SigningError(f"data {path}: {listing.problems[0]}")
            requests = [DigestRequest(e.name, e.size, source.opener(e)) for e in listing.entries]
            digests = digest_files(requests, algorithm, workers=workers, progress=progress)
        for item in digests:
            if item.error is not None:
                raise SigningError(f"data {path}: cannot hash {item.key}: {item.error}")
        if listing.is_file:
            digest = digests[0].digest.hex()
        else:
            lines = sorted(
                (item.key.encode("utf-8"), f"{item.digest.hex()}  {item.key}\n".encode())
                for item in digests
            )
            digest = digest_bytes(b"".join(line for _, line in lines), algorithm).hex()
        results.append(
            DataDigest(
                path=str(path),
                kind="file" if listing.is_file else "folder",
                algorithm=algorithm,
                digest=digest,
                files=len(listing.entries),
                bytes=listing.total_bytes,
            )
        )
    return tuple(results)
