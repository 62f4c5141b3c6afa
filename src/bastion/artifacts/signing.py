"""Sign a model file or folder: a model-signing compatible bundle with provenance (stable API).

:func:`sign` lists the model without following links (:class:`~bastion.artifacts.manifest.
ModelSource`), hashes it on every core (:mod:`bastion.core.digests`), builds the in-toto
statement with bastion's provenance (:mod:`bastion.artifacts.bundle`), signs it and writes the
signature atomically: a temporary file beside the target, then a rename.

Hashing defaults: SHA-256 in model-signing's ``shards`` serialization (a large file is hashed by
all cores at once), BLAKE3 in its ``files`` serialization (BLAKE3 is a tree hash and already
parallel within a file). ``reuse`` takes the digests of files whose size, mtime and ctime are
unchanged from a previous signature, after verifying that signature with the same key.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bastion.artifacts.bundle import (
    FileStat,
    SignedStatement,
    encode_bundle,
    encode_statement,
)
from bastion.artifacts.manifest import (
    GIT_PATHS,
    FileEntry,
    Listing,
    ModelSource,
    Resource,
    Serialization,
    SerializationMethod,
    resources_of,
    root_digest,
)
from bastion.artifacts.provenance import Provenance, digest_data
from bastion.artifacts.verification import (
    default_signature_path,
    read_signature,
    verified_statement,
)
from bastion.core.digests import (
    DigestRequest,
    FileDigest,
    HashAlgorithm,
    Part,
    ProgressCallback,
    digest_files,
)
from bastion.core.keys import PrivateKey, algorithm_of, key_id
from bastion.errors import BastionError, SignatureError, SigningError

__all__ = [
    "SignOptions",
    "SignResult",
    "default_signature_path",
    "model_name",
    "sign",
]

logger = logging.getLogger(__name__)

#: Default shard size of the sharded serialization (``signing.shard_bytes``).
DEFAULT_SHARD_BYTES = 256 * 2**20


@dataclass(frozen=True, slots=True)
class SignOptions:
    """How to hash.

    Attributes:
        hash_algorithm: SHA-256 or BLAKE3.
        method: files or shards; None picks shards for SHA-256 and files for BLAKE3.
        shard_bytes: shard size of the shards serialization.
        workers: threads for hashing; 0 for one per core.
        ignore_paths: relative paths left out (and recorded in the signature); the git paths
            model-signing leaves out by default.
    """

    hash_algorithm: HashAlgorithm = HashAlgorithm.SHA256
    method: SerializationMethod | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    workers: int = 0
    ignore_paths: tuple[str, ...] = field(default=GIT_PATHS)

    def serialization(self, extra_ignore: Sequence[str] = ()) -> Serialization:
        method = self.method or (
            SerializationMethod.SHARDS
            if self.hash_algorithm is HashAlgorithm.SHA256
            else SerializationMethod.FILES
        )
        if method is SerializationMethod.SHARDS and self.hash_algorithm is HashAlgorithm.BLAKE3:
            # model-signing turns blake3 shards into whole files (BLAKE3 is already parallel);
            # a sharded BLAKE3 signature would verify nowhere else.
            raise SigningError("BLAKE3 signs whole files: use --serialization files")
        ignore = tuple(dict.fromkeys((*self.ignore_paths, *extra_ignore)))
        return Serialization(
            method=method,
            hash_type=self.hash_algorithm,
            shard_size=self.shard_bytes if method is SerializationMethod.SHARDS else None,
            ignore_paths=ignore,
        )


@dataclass(frozen=True, slots=True)
class SignResult:
    """What :func:`sign` wrote.

    Attributes:
        path: the model.
        signature: the signature file written.
        subject_name: the model's name in the statement.
        subject_digest: the model's root digest, hex.
        serialization: how it was hashed.
        files: number of files signed.
        bytes: their total size.
        hashed_files: files hashed in this run.
        reused_files: files whose digests came from the previous signature.
        provenance: what was recorded about the signing.
    """

    path: Path
    signature: Path
    subject_name: str
    subject_digest: str
    serialization: Serialization
    files: int
    bytes: int
    hashed_files: int
    reused_files: int
    provenance: Provenance


def model_name(path: Path) -> str:
    """The model's name in the statement: its last path component (model-signing's rule)."""
    name = path.name
    if not name or name == "..":
        name = path.resolve().name
    return name


def sign(
    path: Path,
    key: PrivateKey,
    *,
    output: Path | None = None,
    options: SignOptions | None = None,
    actor: str,
    code_revision: str | None = None,
    training_data: Sequence[Path] = (),
    parameters: Sequence[tuple[str, str]] = (),
    reuse: Path | None = None,
    now: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> SignResult:
    """Sign the model at ``path`` with ``key`` and write its signature.

    Args:
        path: a model file or folder.
        key: the signing key.
        output: the signature file; ``PATH.sig`` by default. Inside the folder it is left out
            of the signature (and recorded in ``ignore_paths``).
        options: how to hash.
        actor: who signs, recorded in the provenance.
        code_revision: the training code's revision, recorded if given.
        training_data: files or folders whose digests are recorded.
        parameters: training parameters recorded as ``name: value``.
        reuse: a previous signature of this model by the same key: files whose size, mtime and
            ctime are unchanged keep their digests instead of being hashed again.
        now: the signing time (default: the current time).
        progress: called with numbers of bytes hashed.

    Raises:
        SigningError: the model or data cannot be read, holds symlinks or special files,
            changes while it is hashed, ``reuse`` is unusable, or the signature cannot be
            written.
    """
    options = options or SignOptions()
    output = output or default_signature_path(path)
    try:
        source = ModelSource(path)
    except OSError as exc:
        raise SigningError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with source:
        inside = [] if source.is_file else _relative_inside(output, path)
        serialization = options.serialization(inside)
        listing = source.list(serialization.ignore_paths if not source.is_file else ())
        if listing.problems:
            more = len(listing.problems) - 1
            raise SigningError(
                f"cannot sign {path}: {listing.problems[0]}"
                + (f" (and {more} more)" if more else "")
            )
        previous = _previous_digests(reuse, key, serialization) if reuse else {}
        reused, to_hash = _split_reusable(listing, previous)
        requests = [DigestRequest(e.name, e.size, source.opener(e)) for e in to_hash]
        hashed = digest_files(
            requests,
            serialization.hash_type,
            shard_bytes=serialization.shard_size,
            workers=options.workers,
            progress=progress,
        )
    failed = [d for d in hashed if d.error is not None]
    if failed:
        raise SigningError(f"cannot sign {path}: {failed[0].key}: {failed[0].error}")
    resources = resources_of([*reused, *hashed], serialization)
    signed_at = now or datetime.now(UTC)
    provenance = Provenance(
        key_id=key_id(key),
        algorithm=algorithm_of(key).value,
        actor=actor,
        signed_at=signed_at,
        code_revision=code_revision,
        training_data=digest_data(
            training_data, serialization.hash_type, workers=options.workers, progress=progress
        ),
        parameters=tuple(sorted(parameters)),
    )
    name = model_name(path)
    payload = encode_statement(
        model_name=name,
        serialization=serialization,
        resources=resources,
        files=[FileStat(e.name, e.size, e.mtime_ns, e.ctime_ns) for e in listing.entries],
        provenance=provenance,
    )
    _write_atomic(output, encode_bundle(payload, key))
    logger.info("signed %s (%d files) into %s", path, len(listing.entries), output)
    return SignResult(
        path=path,
        signature=output,
        subject_name=name,
        subject_digest=root_digest(resources).hex(),
        serialization=serialization,
        files=len(listing.entries),
        bytes=listing.total_bytes,
        hashed_files=len(hashed),
        reused_files=len(reused),
        provenance=provenance,
    )


def _relative_inside(output: Path, folder: Path) -> list[str]:
    """``output``'s path relative to ``folder`` if it lies inside, as a one-item list."""
    try:
        relative = output.resolve().relative_to(folder.resolve())
    except ValueError:
        return []
    return [relative.as_posix()]


@dataclass(frozen=True, slots=True)
class _Previous:
    stat: FileStat
    parts: tuple[Part, ...]


def _previous_digests(
    reuse: Path, key: PrivateKey, serialization: Serialization
) -> dict[str, _Previous]:
    try:
        statement = verified_statement(read_signature(reuse), key.public_key())
    except SignatureError as exc:
        raise SigningError(f"refusing to reuse {reuse}: {exc}") from exc
    except BastionError as exc:
        raise SigningError(f"cannot reuse {reuse}: {exc}") from exc
    return _reusable(statement, serialization, reuse)


def _reusable(
    statement: SignedStatement, serialization: Serialization, reuse: Path
) -> dict[str, _Previous]:
    before = statement.serialization
    if (before.method, before.hash_type, before.shard_size) != (
        serialization.method,
        serialization.hash_type,
        serialization.shard_size,
    ):
        raise SigningError(
            f"cannot reuse {reuse}: it was hashed as {before.method.value}/"
            f"{before.hash_type.value}, this signature uses {serialization.method.value}/"
            f"{serialization.hash_type.value}"
            + (f" with {serialization.shard_size}-byte shards" if serialization.shard_size else "")
        )
    if statement.files is None:
        raise SigningError(f"cannot reuse {reuse}: it records no file sizes and times")
    parts: dict[str, list[Part]] = {}
    for resource in statement.resources:
        parts.setdefault(resource.path, []).append(_part(resource, statement))
    return {
        stat.name: _Previous(stat, tuple(sorted(parts.get(stat.name, []), key=lambda p: p.start)))
        for stat in statement.files
    }


def _part(resource: Resource, statement: SignedStatement) -> Part:
    if resource.start is None or resource.end is None:
        size = next((f.size for f in statement.files or () if f.name == resource.path), 0)
        return Part(0, size, resource.digest)
    return Part(resource.start, resource.end, resource.digest)


def _split_reusable(
    listing: Listing, previous: dict[str, _Previous]
) -> tuple[list[FileDigest], list[FileEntry]]:
    reused: list[FileDigest] = []
    to_hash: list[FileEntry] = []
    for entry in listing.entries:
        before = previous.get(entry.name)
        if before is not None and (
            before.stat.size,
            before.stat.mtime_ns,
            before.stat.ctime_ns,
        ) == (entry.size, entry.mtime_ns, entry.ctime_ns):
            reused.append(FileDigest(entry.name, entry.size, before.parts))
        else:
            to_hash.append(entry)
    return reused, to_hash


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, flush it, then rename it over."""
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise SigningError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o644)
        Path(temporary).replace(target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise SigningError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        logger.debug("could not fsync %s", target.parent)
    finally:
        os.close(directory)
