"""The content-addressed artifact store of the workspace (stable API).

Every file of every registered model version is kept once, under the SHA-256 of its content::

    store/
      sha256/<64 hex>       one blob per distinct content, read-only (0444)
      keys/<key id>.pub     public keys that signatures were verified with, other than the
                            workspace's (named by their key id: SHA-256 of the DER key)
      tmp/                  staging folders, private to one operation

Writes are atomic: a blob is written (or staged) in ``tmp/`` on the same file system, flushed,
made read-only and renamed into place, so a reader never sees half a blob. Reads never trust
the store: :meth:`ArtifactStore.export` re-hashes every blob while it copies it out and writes
nothing where the caller asked until every digest matched; a mismatch raises
:class:`~bastion.errors.VerificationError` naming the file.

Models enter through :meth:`ArtifactStore.stage`: the source is walked without following links
(:class:`~bastion.artifacts.manifest.ModelSource`) and copied into a private staging folder,
hashing as it copies. The registry scans and verifies *that copy* and then commits it, so what
is stored is exactly what was checked, whatever happens to the source meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.artifacts.manifest import SINGLE_FILE_NAME, ModelSource, name_problem
from bastion.core.keys import PublicKey, key_id, load_public_key, public_pem
from bastion.errors import BastionError, RegistryError, VerificationError

__all__ = [
    "DIGEST_PATTERN",
    "MAX_MODEL_FILES",
    "ArtifactStore",
    "StagedModel",
    "StoredFile",
    "check_digest",
    "digest_of_files",
    "remove_tree",
    "verify_file",
]

logger = logging.getLogger(__name__)

#: How a blob's digest is written: ``sha256:`` and 64 lower-case hex digits.
DIGEST_PATTERN = r"sha256:[0-9a-f]{64}"
_DIGEST_RE = re.compile(DIGEST_PATTERN)
_KEY_ID_RE = re.compile(r"[0-9a-f]{64}")
#: Most files one model version may hold.
MAX_MODEL_FILES = 10_000
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a model version, as recorded.

    Attributes:
        path: its relative path inside the model (``/``-separated); for a single-file model,
            the file's name.
        digest: ``sha256:<hex>`` of its content: its blob in the store.
        size: its size in bytes.
    """

    path: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"path": self.path, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class StagedModel:
    """A private copy of a model, hashed while it was copied, not yet in the store.

    Attributes:
        path: the copy: a folder, or the single file of a single-file model.
        folder: the staging folder holding ``path`` (what a loader opens).
        single_file: whether the model is one file.
        files: every file with its digest and size, in path order.
    """

    path: Path
    folder: Path
    single_file: bool
    files: tuple[StoredFile, ...]


def digest_of_files(files: Sequence[StoredFile]) -> str:
    """A model version's identity: ``sha256:`` over its sorted ``digest size path`` lines."""
    lines = "".join(f"{f.digest} {f.size} {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>``.

    Raises:
        VerificationError: it is not (a damaged record).
    """
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise VerificationError(f"malformed digest {str(digest)[:80]!r} in the registry")
    return digest


class ArtifactStore:
    """The blobs of the workspace store (see the module docstring).

    Args:
        root: the store folder (``workspace.store_path``); created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob of ``digest`` is (whether or not it exists).

        Raises:
            VerificationError: ``digest`` is malformed.
        """
        return self.root / "sha256" / check_digest(digest).removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        """Whether a blob of ``digest`` is present (not verified)."""
        return self.blob_path(digest).is_file()

    def _mkdir(self, path: Path) -> Path:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create {path}: {exc.strerror or exc}") from exc
        return path

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh private folder under ``tmp/``, removed afterwards whatever happens."""
        folder = self._mkdir(self.root / "tmp") / secrets.token_hex(8)
        try:
            folder.mkdir(mode=0o700)
        except OSError as exc:
            raise RegistryError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        try:
            yield folder
        finally:
            remove_tree(folder)

    # -- writing -------------------------------------------------------------------------

    def stage(
        self,
        source: Path,
        scratch: Path,
        *,
        ignore_paths: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> StagedModel:
        """Copy the model at ``source`` into ``scratch``, hashing each file as it is copied.

        Args:
            source: a model file or folder.
            scratch: an empty folder from :meth:`scratch`.
            ignore_paths: relative paths left out (those the signature leaves out).
            max_file_bytes: refuse a file larger than this before copying anything.

        Raises:
            RegistryError: the source cannot be read, holds links, special files or badly named
                files, too many files, or a file larger than ``max_file_bytes``.
        """
        try:
            model = ModelSource(source)
        except OSError as exc:
            raise RegistryError(f"cannot read {source}: {exc.strerror or exc}") from exc
        with model:
            listing = model.list(() if model.is_file else ignore_paths)
            if listing.problems:
                more = len(listing.problems) - 1
                raise RegistryError(
                    f"cannot register {source}: {listing.problems[0]}"
                    + (f" (and {more} more)" if more else "")
                )
            if not listing.entries:
                raise RegistryError(f"cannot register {source}: it holds no file")
            if len(listing.entries) > MAX_MODEL_FILES:
                raise RegistryError(f"cannot register {source}: more than {MAX_MODEL_FILES} files")
            for entry in listing.entries:
                if max_file_bytes is not None and entry.size > max_file_bytes:
                    raise RegistryError(
                        f"cannot register {source}: {entry.name} is larger than the scan "
                        f"limit ({max_file_bytes} bytes)"
                    )
            base_name = source.resolve().name or "model"
            target = scratch / base_name
            files: list[StoredFile] = []
            for entry in listing.entries:
                relative = base_name if entry.name == SINGLE_FILE_NAME else entry.name
                destination = target if model.is_file else target / relative
                try:
                    fd = model.open_file(entry)
                except OSError as exc:
                    raise RegistryError(
                        f"cannot read {source}: {entry.name}: {exc.strerror or exc}"
                    ) from exc
                with os.fdopen(fd, "rb") as handle:
                    digest, size = _copy_hashing(handle, destination, entry.size)
                if size != entry.size:
                    raise RegistryError(f"{source}: {entry.name} changed while it was copied")
                files.append(StoredFile(relative, digest, size))
        return StagedModel(
            path=target,
            folder=scratch if model.is_file else target,
            single_file=model.is_file,
            files=tuple(files),
        )

    def commit(self, staged: StagedModel) -> None:
        """Move every staged file into its blob (an existing good blob is kept).

        Raises:
            RegistryError: the store cannot be written.
        """
        self._mkdir(self.root / "sha256")
        for item in staged.files:
            source = staged.path if staged.single_file else staged.path / item.path
            self._put(source, item)

    def _put(self, source: Path, item: StoredFile) -> None:
        blob = self.blob_path(item.digest)
        if blob.is_file() and not blob.is_symlink():
            try:
                _hash_file(blob, item.size, item.digest, item.path)
            except VerificationError:
                logger.warning("replacing the damaged blob %s", blob.name)
            else:
                return
        try:
            source.chmod(0o444)
            source.replace(blob)
        except OSError as exc:
            raise RegistryError(f"cannot write {blob}: {exc.strerror or exc}") from exc
        _fsync_folder(blob.parent)

    def save_key(self, key: PublicKey) -> str:
        """Keep a public key under its key id (for re-verification later); return the id."""
        identifier = key_id(key)
        folder = self._mkdir(self.root / "keys")
        path = folder / f"{identifier}.pub"
        if path.is_file():
            return identifier
        temporary = folder / f".{identifier}.{secrets.token_hex(4)}.tmp"
        try:
            temporary.write_bytes(public_pem(key))
            temporary.chmod(0o444)
            temporary.replace(path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise RegistryError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return identifier

    def load_key(self, identifier: str) -> PublicKey:
        """The public key saved under ``identifier``, checked to have that id.

        Raises:
            VerificationError: there is none, or the file holds another key.
        """
        if not isinstance(identifier, str) or not _KEY_ID_RE.fullmatch(identifier):
            raise VerificationError(f"malformed signer key id {str(identifier)[:80]!r}")
        path = self.root / "keys" / f"{identifier}.pub"
        try:
            key = load_public_key(path)
        except BastionError as exc:
            raise VerificationError(
                f"the signer's public key {identifier[:16]} is missing from the store: {exc}"
            ) from exc
        if key_id(key) != identifier:
            raise VerificationError(f"the stored public key {identifier[:16]} was replaced")
        return key

    # -- reading -------------------------------------------------------------------------

    def verify(self, item: StoredFile) -> None:
        """Re-hash one blob against its record.

        Raises:
            VerificationError: it is missing, of another size or content (naming the file).
        """
        _hash_file(self.blob_path(item.digest), item.size, item.digest, item.path)

    def export_into(self, files: Sequence[StoredFile], target: Path, *, single_file: bool) -> None:
        """Copy blobs out to ``target`` (a new path), re-hashing each against its record.

        ``target`` becomes the folder (or, with ``single_file``, the file); write it where
        nobody looks until this returns (the registry renames it into place afterwards).

        Raises:
            VerificationError: a blob is missing or does not match its record.
            RegistryError: a recorded path is unsafe, or ``target`` cannot be written.
        """
        if single_file and len(files) != 1:
            raise VerificationError("a single-file model must record exactly one file")
        if not single_file:
            self._mkdir(target)
        for item in files:
            if single_file:
                destination = target
            else:
                problem = name_problem(item.path)
                if problem is not None:
                    raise VerificationError(f"recorded file name {item.path[:80]!r} {problem}")
                destination = target / item.path
            blob = self.blob_path(item.digest)
            try:
                handle = blob.open("rb")
            except FileNotFoundError:
                raise VerificationError(
                    f"{item.path}: its blob is missing from the store", [f"missing: {item.path}"]
                ) from None
            except OSError as exc:
                raise VerificationError(
                    f"{item.path}: its blob cannot be read ({exc.strerror or exc})"
                ) from exc
            with handle:
                digest, size = _copy_hashing(handle, destination, item.size + 1)
            if (digest, size) != (item.digest, item.size):
                raise VerificationError(
                    f"the store's copy of {item.path} does not match its recorded digest "
                    "(tampered or damaged)",
                    [f"modified: {item.path}"],
                )


def _copy_hashing(handle: Any, destination: Path, limit: int) -> tuple[str, int]:
    """Copy at most ``limit`` bytes of ``handle`` to a new file; return its digest and size."""
    digest = hashlib.sha256()
    size = 0
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(destination, flags, 0o600)
    except OSError as exc:
        raise RegistryError(f"cannot write {destination}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as out:
        while size < limit:
            block = handle.read(min(_CHUNK, limit - size))
            if not block:
                break
            digest.update(block)
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
        os.fchmod(out.fileno(), 0o444)
    return "sha256:" + digest.hexdigest(), size


def verify_file(path: Path, item: StoredFile) -> None:
    """Re-hash the file at ``path`` against ``item``'s recorded size and digest.

    Raises:
        VerificationError: it is missing, not a regular file, or differs (naming it).
    """
    _hash_file(path, item.size, item.digest, item.path)


def _hash_file(path: Path, size: int, expected: str, shown: str) -> None:
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise VerificationError(f"{shown}: its blob is not a regular file")
        digest = hashlib.sha256()
        read = 0
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
                read += len(block)
    except FileNotFoundError:
        raise VerificationError(
            f"{shown}: its blob is missing from the store", [f"missing: {shown}"]
        ) from None
    except OSError as exc:
        raise VerificationError(f"{shown}: its blob cannot be read ({exc.strerror})") from exc
    if read != size or "sha256:" + digest.hexdigest() != expected:
        raise VerificationError(
            f"the store's copy of {shown} does not match its recorded digest (tampered or damaged)",
            [f"modified: {shown}"],
        )


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("could not fsync %s", folder)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a file or a folder tree (nothing if it is absent; failures are logged).

    Read-only files need no special care: removing a name needs write access to its folder,
    and the store's folders are the owner's (0700).
    """
    try:
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.exists():
            shutil.rmtree(path)
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc.strerror or exc)
