"""The files of a model: a safe walk of a model folder and its model-signing manifest (stable API).

A *model* is a folder (every regular file beneath it) or a single file. :class:`ModelSource`
walks it without ever leaving it:

* the folder is opened once and every file and sub-folder is then opened relative to it, one
  component at a time, with ``O_NOFOLLOW``: no symbolic link is ever followed, and a name that
  came from a signature (see :func:`name_problem`) is never joined onto a path;
* symbolic links inside the folder are refused (model-signing's ``allow_symlinks=False``), and so
  are FIFOs, sockets and devices: they are listed as problems and never opened;
* each file is opened with ``O_NONBLOCK`` and checked to be the very inode that was listed
  (device and inode number), so a file swapped for a link or a FIFO after the listing is
  reported, not read.

The manifest is OpenSSF model-signing's v1.0 serialization: one *resource* per file
(``files``) or per fixed-size shard of a file (``shards``, named ``path:start:end``), sorted as
model-signing sorts them, and a root digest, SHA-256 over the resource digests in that order.
A single-file model has one file named ``.``, as in model-signing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from bastion.core.digests import FileDigest, HashAlgorithm

__all__ = [
    "GIT_PATHS",
    "SINGLE_FILE_NAME",
    "FileEntry",
    "Listing",
    "ModelSource",
    "Resource",
    "Serialization",
    "SerializationMethod",
    "is_ignored",
    "name_problem",
    "resources_of",
    "root_digest",
    "sort_key",
]

logger = logging.getLogger(__name__)

#: What model-signing leaves out of every signature by default; bastion does the same, so that
#: either tool verifies the other's signatures of a model kept in git.
GIT_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

#: The name of the only file of a single-file model (model-signing's convention).
SINGLE_FILE_NAME = "."

#: Longest file name (relative path) accepted, in characters.
MAX_NAME_CHARS = 4096

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class SerializationMethod(StrEnum):
    """How a model becomes resources: one per file, or one per shard of a file."""

    FILES = "files"
    SHARDS = "shards"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be the relative path of a file inside a model, or None if it can.

    Accepted: ``/``-separated components, none empty, ``.`` or ``..``; no leading ``/``, no
    backslash, no NUL or other control character, valid UTF-8, at most 4096 characters. A name
    from a signature is checked with this before any file is looked up by it
    (model-transparency#647).
    """
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if "\x00" in name:
        return "contains a NUL character"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"has a '{part or '(empty)'}' component"
    return None


def is_ignored(name: str, ignore_paths: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``ignore_paths`` or lies beneath one."""
    return any(name == p or name.startswith(p + "/") for p in ignore_paths)


def sort_key(name: str) -> tuple[str, ...]:
    """The order model-signing sorts resource names in (``PurePosixPath`` order: by component)."""
    return () if name == SINGLE_FILE_NAME else tuple(name.split("/"))


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file of a model, as listed.

    Attributes:
        name: relative path with ``/`` separators (``.`` for a single-file model).
        size: bytes.
        mtime_ns: modification time, nanoseconds.
        ctime_ns: inode change time, nanoseconds (cannot be set back by the file's owner).
        device: ``st_dev``.
        inode: ``st_ino``.
    """

    name: str
    size: int
    mtime_ns: int
    ctime_ns: int
    device: int
    inode: int


@dataclass(frozen=True, slots=True)
class Listing:
    """The regular files of a model and what was refused while walking it."""

    is_file: bool
    entries: tuple[FileEntry, ...]
    problems: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


class ModelSource:
    """An open model (folder or single file) that is walked and read without leaving it.

    Use as a context manager; the folder's descriptor is closed on exit. The path itself may be
    a symbolic link (it is resolved once); nothing inside it may.

    Raises:
        OSError: the path does not exist or cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        info = path.stat()
        self.is_file = stat.S_ISREG(info.st_mode)
        self._root_fd: int | None = None
        self._root_identity = (info.st_dev, info.st_ino)
        if not self.is_file:
            if not stat.S_ISDIR(info.st_mode):
                raise OSError(f"{path} is neither a regular file nor a folder")
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != self._root_identity:
                os.close(fd)
                raise OSError(f"{path} changed while it was opened")
            self._root_fd = fd

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    # -- listing -------------------------------------------------------------------------------

    def list(self, ignore_paths: Sequence[str] = ()) -> Listing:
        """List every regular file, skipping ``ignore_paths`` (and what lies beneath them).

        Symbolic links, special files, unreadable folders and names that
        :func:`name_problem` rejects are returned as problems; nothing is opened but folders.
        """
        if self.is_file:
            info = self.path.stat()
            entry = _entry(SINGLE_FILE_NAME, info)
            if (info.st_dev, info.st_ino) != self._root_identity:
                return Listing(True, (), (f"{self.path} changed while it was listed",))
            return Listing(True, (entry,))
        entries: list[FileEntry] = []
        problems: list[str] = []
        pending: list[str] = [""]
        while pending:
            folder = pending.pop()
            try:
                fd = self._open_dir(folder)
            except OSError as exc:
                problems.append(f"unreadable folder: {folder or '.'} ({_reason(exc)})")
                continue
            try:
                with os.scandir(fd) as scan:
                    children = sorted(scan, key=lambda e: e.name)
                for child in children:
                    name = f"{folder}/{child.name}" if folder else child.name
                    if is_ignored(name, ignore_paths):
                        continue
                    problem = name_problem(name)
                    if problem is not None:
                        problems.append(f"unsupported file name: {name!r} {problem}")
                        continue
                    try:
                        info = child.stat(follow_symlinks=False)
                    except OSError as exc:
                        problems.append(f"unreadable: {name} ({_reason(exc)})")
                        continue
                    if stat.S_ISLNK(info.st_mode):
                        problems.append(f"symlink refused: {name}")
                    elif stat.S_ISDIR(info.st_mode):
                        pending.append(name)
                    elif stat.S_ISREG(info.st_mode):
                        entries.append(_entry(name, info))
                    else:
                        problems.append(f"not a regular file: {name}")
            except OSError as exc:
                problems.append(f"unreadable folder: {folder or '.'} ({_reason(exc)})")
            finally:
                os.close(fd)
        entries.sort(key=lambda e: sort_key(e.name))
        problems.sort()
        return Listing(False, tuple(entries), tuple(problems))

    # -- opening -------------------------------------------------------------------------------

    def _open_dir(self, folder: str) -> int:
        assert self._root_fd is not None
        fd = os.dup(self._root_fd)
        if not folder:
            return fd
        try:
            for part in folder.split("/"):
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_file(self, entry: FileEntry) -> int:
        """Open a listed file read-only and check it is still the inode that was listed.

        Raises:
            OSError: it cannot be opened, is a link or a special file now, or was replaced.
        """
        if self.is_file:
            fd = os.open(self.path, _FILE_FLAGS & ~os.O_NOFOLLOW)
        else:
            problem = name_problem(entry.name)
            if problem is not None:  # listed entries always pass; never open a bad name
                raise OSError(f"refusing to open {entry.name!r}: it {problem}")
            folder, _, base = entry.name.rpartition("/")
            dir_fd = self._open_dir(folder)
            try:
                fd = os.open(base, _FILE_FLAGS, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            entry.device,
            entry.inode,
        ):
            os.close(fd)
            raise OSError(f"{entry.name} was replaced after it was listed")
        return fd

    def opener(self, entry: FileEntry) -> Callable[[], int]:
        """A function that opens ``entry`` (see :meth:`open_file`), for the digest engine."""
        return lambda: self.open_file(entry)


def _entry(name: str, info: os.stat_result) -> FileEntry:
    return FileEntry(
        name=name,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        ctime_ns=info.st_ctime_ns,
        device=info.st_dev,
        inode=info.st_ino,
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass(frozen=True, slots=True)
class Serialization:
    """How the manifest was made: model-signing's ``predicate.serialization``.

    Attributes:
        method: files or shards.
        hash_type: the digest algorithm.
        shard_size: bytes per shard (shards only).
        ignore_paths: relative paths left out of the manifest.
        allow_symlinks: recorded for model-signing; bastion never follows links.
    """

    method: SerializationMethod
    hash_type: HashAlgorithm
    shard_size: int | None = None
    ignore_paths: tuple[str, ...] = field(default=())
    allow_symlinks: bool = False

    def __post_init__(self) -> None:
        if (self.method is SerializationMethod.SHARDS) != (self.shard_size is not None):
            raise ValueError("shard_size is required for shards and only for shards")
        if self.shard_size is not None and self.shard_size <= 0:
            raise ValueError("shard_size must be positive")

    @property
    def resource_algorithm(self) -> str:
        """The ``algorithm`` of each resource, as model-signing names it."""
        if self.method is SerializationMethod.SHARDS:
            return f"{self.hash_type.value}-sharded-{self.shard_size}"
        return self.hash_type.value

    def to_json(self) -> dict[str, object]:
        """model-signing's serialization object (``shard_size`` an integer, not a float)."""
        document: dict[str, object] = {
            "method": self.method.value,
            "hash_type": self.hash_type.value,
            "allow_symlinks": self.allow_symlinks,
        }
        if self.shard_size is not None:
            document["shard_size"] = self.shard_size
        if self.ignore_paths:
            document["ignore_paths"] = list(self.ignore_paths)
        return document


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource of the manifest: a file, or a shard ``[start, end)`` of a file."""

    path: str
    start: int | None
    end: int | None
    algorithm: str
    digest: bytes

    @property
    def name(self) -> str:
        """model-signing's resource name: the path, or ``path:start:end`` for a shard."""
        if self.start is None:
            return self.path
        return f"{self.path}:{self.start}:{self.end}"

    @property
    def order(self) -> tuple[tuple[str, ...], int, int]:
        return (sort_key(self.path), self.start or 0, self.end or 0)


def resources_of(digests: Iterable[FileDigest], serialization: Serialization) -> list[Resource]:
    """The manifest's resources for hashed files (keyed by name), in model-signing's order."""
    algorithm = serialization.resource_algorithm
    resources: list[Resource] = []
    for item in digests:
        if item.error is not None:
            raise ValueError(f"{item.key} was not hashed: {item.error}")
        if serialization.method is SerializationMethod.FILES:
            resources.append(Resource(item.key, None, None, algorithm, item.digest))
        else:
            resources.extend(
                Resource(item.key, p.start, p.end, algorithm, p.digest) for p in item.parts
            )
    resources.sort(key=lambda r: r.order)
    return resources


def root_digest(resources: Iterable[Resource]) -> bytes:
    """SHA-256 over the resource digests in order: the in-toto subject's digest (model-signing)."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(resource.digest)
    return hasher.digest()
