"""Verify a model against its signature, naming every file that differs (stable API).

:func:`verify` never returns a verdict: it returns what was verified or raises
:class:`~bastion.errors.SignatureError`, whose ``problems`` hold one line per file
(``modified: ...``, ``added: ...``, ``removed: ...``, ``renamed: a -> b``, ``symlink refused:
...``). Order of work, so that nothing from the signature reaches the file system unchecked:

1. read at most :data:`~bastion.artifacts.bundle.MAX_BUNDLE_BYTES` of the signature file;
2. parse the bundle and check its signature under the given key;
3. parse the signed statement and check every name in it
   (:func:`~bastion.artifacts.manifest.name_problem`);
4. walk the model folder itself, without following links, and compare the two sets of names;
5. hash every file the walk found (always all of them: verification never reuses digests) and
   compare digests.

Signatures made by model-signing's elliptic-key signer verify here too (its ``files`` and
``shards`` serializations with SHA-256 or BLAKE3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bastion.artifacts.bundle import (
    MAX_BUNDLE_BYTES,
    SignedStatement,
    decode_bundle,
    decode_statement,
    verify_envelope,
)
from bastion.artifacts.manifest import (
    SINGLE_FILE_NAME,
    FileEntry,
    Listing,
    ModelSource,
    Resource,
    SerializationMethod,
    sort_key,
)
from bastion.core.digests import DigestRequest, FileDigest, ProgressCallback, digest_files
from bastion.core.keys import PublicKey, key_id
from bastion.errors import BastionError, SignatureError

__all__ = [
    "VerifiedModel",
    "default_signature_path",
    "read_signature",
    "verified_statement",
    "verify",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    """A model that matched its signature.

    Attributes:
        path: the model.
        signature: the signature file.
        key_id: id of the key it verified with.
        statement: what the signature says (serialization, resources, provenance).
        files: number of files checked.
        bytes: their total size.
    """

    path: Path
    signature: Path
    key_id: str
    statement: SignedStatement
    files: int
    bytes: int


def default_signature_path(path: Path) -> Path:
    """``PATH.sig`` beside the model (``model/`` gives ``model.sig``)."""
    return path.with_name(path.name + ".sig") if path.name else Path(str(path) + ".sig")


def read_signature(path: Path) -> bytes:
    """Read a signature file, refusing one larger than the cap before reading it all.

    Raises:
        BastionError: the file cannot be read (exit 2: nothing was verified).
        SignatureError: it is larger than :data:`~bastion.artifacts.bundle.MAX_BUNDLE_BYTES`.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise BastionError(f"cannot read signature {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BUNDLE_BYTES:
        raise SignatureError(
            f"signature {path} is larger than {MAX_BUNDLE_BYTES} bytes: refusing to parse it"
        )
    return data


def verified_statement(data: bytes, key: PublicKey) -> SignedStatement:
    """Parse a bundle, check its signature under ``key`` and return its checked statement.

    Raises:
        SignatureError: the bundle is malformed, signed by another key, altered, or its
            statement is malformed or inconsistent.
    """
    envelope = decode_bundle(data)
    verify_envelope(envelope, key)
    statement = decode_statement(envelope.payload)
    if statement.provenance is not None and statement.provenance.key_id != key_id(key):
        raise SignatureError(
            f"statement names signer key {statement.provenance.key_id[:16]} but was signed "
            f"by key {key_id(key)[:16]}"
        )
    return statement


def verify(
    path: Path,
    key: PublicKey,
    signature: Path | None = None,
    *,
    workers: int = 0,
    progress: ProgressCallback | None = None,
) -> VerifiedModel:
    """Verify the model at ``path`` against ``signature`` (default ``PATH.sig``) under ``key``.

    Raises:
        SignatureError: the signature or key is wrong, the bundle is malformed or hostile, or
            files were modified, added, removed, renamed or replaced by links; ``problems`` has
            one line per file.
        BastionError: the model or the signature file cannot be read at all.
    """
    signature = signature or default_signature_path(path)
    statement = verified_statement(read_signature(signature), key)
    try:
        source = ModelSource(path)
    except OSError as exc:
        raise BastionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with source:
        if source.is_file != statement.is_single_file:
            signed = "a single file" if statement.is_single_file else "a folder"
            found = "a file" if source.is_file else "a folder"
            raise SignatureError(f"the signature is for {signed} but {path} is {found}")
        listing = source.list(statement.serialization.ignore_paths if not source.is_file else ())
        problems = _compare(source, listing, statement, workers, progress)
    if problems:
        count = len(problems)
        raise SignatureError(
            f"{path} does not match its signature: {count} problem{'s' * (count != 1)}",
            problems,
        )
    logger.info("verified %s against %s", path, signature)
    return VerifiedModel(
        path=path,
        signature=signature,
        key_id=key_id(key),
        statement=statement,
        files=len(listing.entries),
        bytes=listing.total_bytes,
    )


@dataclass(frozen=True, slots=True)
class _Expected:
    size: int | None  # None: not recorded (model-signing files serialization)
    parts: tuple[tuple[int, int, bytes], ...]  # (start, end, digest); files: end is -1


def _expected(statement: SignedStatement) -> dict[str, _Expected]:
    by_path: dict[str, list[Resource]] = {}
    for resource in statement.resources:
        by_path.setdefault(resource.path, []).append(resource)
    shards = statement.serialization.method is SerializationMethod.SHARDS
    sizes: dict[str, int | None] = {}
    if statement.files is not None:
        sizes = {f.name: f.size for f in statement.files}
    else:
        for name, items in by_path.items():
            sizes[name] = max(r.end or 0 for r in items) if shards else None
    expected: dict[str, _Expected] = {}
    for name, size in sizes.items():
        items = sorted(by_path.get(name, []), key=lambda r: r.start or 0)
        expected[name] = _Expected(
            size, tuple((r.start or 0, r.end if r.end is not None else -1, r.digest) for r in items)
        )
    return expected


def _actual_parts(item: FileDigest, shards: bool) -> tuple[tuple[int, int, bytes], ...]:
    if shards:
        return tuple((p.start, p.end, p.digest) for p in item.parts)
    return tuple((0, -1, p.digest) for p in item.parts)


def _compare(
    source: ModelSource,
    listing: Listing,
    statement: SignedStatement,
    workers: int,
    progress: ProgressCallback | None,
) -> list[str]:
    serialization = statement.serialization
    shards = serialization.method is SerializationMethod.SHARDS
    expected = _expected(statement)
    actual = {e.name: e for e in listing.entries}
    problems: list[tuple[tuple[str, ...], str]] = [((), p) for p in listing.problems]
    removed = sorted(set(expected) - set(actual), key=sort_key)
    added = sorted(set(actual) - set(expected), key=sort_key)
    to_hash: list[FileEntry] = []
    for name in sorted(set(expected) & set(actual), key=sort_key):
        want, entry = expected[name], actual[name]
        if want.size is not None and want.size != entry.size:
            problems.append(
                (
                    sort_key(name),
                    f"modified: {_show(name)} ({entry.size} bytes, signed {want.size})",
                )
            )
        else:
            to_hash.append(entry)
    # Added files are hashed too, to recognise a rename.
    hashed = digest_files(
        [
            DigestRequest(e.name, e.size, source.opener(e))
            for e in [*to_hash, *(actual[n] for n in added)]
        ],
        serialization.hash_type,
        shard_bytes=serialization.shard_size,
        workers=workers,
        progress=progress,
    )
    digests = {d.key: d for d in hashed}
    for entry in to_hash:
        item = digests[entry.name]
        if item.error is not None:
            problems.append(
                (sort_key(entry.name), f"unreadable: {_show(entry.name)} ({item.error})")
            )
        elif _actual_parts(item, shards) != expected[entry.name].parts:
            problems.append((sort_key(entry.name), f"modified: {_show(entry.name)}"))
    renamed: set[str] = set()
    for old in removed:
        for new in added:
            item = digests[new]
            if (
                new not in renamed
                and item.error is None
                and expected[old].parts
                and _actual_parts(item, shards) == expected[old].parts
            ):
                renamed.add(new)
                problems.append((sort_key(old), f"renamed: {_show(old)} -> {_show(new)}"))
                break
        else:
            problems.append((sort_key(old), f"removed: {_show(old)}"))
    for new in added:
        if new in renamed:
            continue
        note = ""
        if shards and statement.files is None and actual[new].size == 0:
            note = " (empty: model-signing's shard serialization does not record empty files)"
        problems.append((sort_key(new), f"added: {_show(new)}{note}"))
    problems.sort(key=lambda p: (p[0], p[1]))
    return [text for _, text in problems]


def _show(name: str) -> str:
    return "(the file)" if name == SINGLE_FILE_NAME else name
