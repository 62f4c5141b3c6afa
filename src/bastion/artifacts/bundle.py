"""The signature file: a Sigstore bundle holding a DSSE envelope of an in-toto statement.

The format is OpenSSF model-signing's v1.0 key-based signature, byte for byte where it matters,
so that either tool verifies the other's signatures (ECDSA P-256 keys; model-signing 1.1 has no
Ed25519 verifier, but the format is the same)::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<sha256 of the public key PEM, hex>"},
                              "tlogEntries": []},
     "dsseEnvelope": {"payload": "<base64 statement>",
                      "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": "<base64>", "keyid": "<bastion key id>"}]}}

The signature is over DSSE's pre-authentication encoding (PAE) of the payload; the payload is an
in-toto Statement v1 with predicate type ``https://model_signing/signature/v1.0``::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "<model folder name>", "digest": {"sha256": "<root digest>"}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {
       "serialization": {"method": "shards", "hash_type": "sha256", "shard_size": 268435456,
                         "allow_symlinks": false, "ignore_paths": [".git", ...]},
       "resources": [{"name": "weights.bin:0:268435456", "algorithm": "sha256-sharded-268435456",
                      "digest": "<hex>"}, ...],
       "bastion": {"version": 1,
                   "files": [{"name": "weights.bin", "size": 1, "mtime_ns": 1, "ctime_ns": 1}],
                   "provenance": {"signer": {...}, "signed_at": "...", "code_revision": "...",
                                  "training_data": [...], "parameters": {...}}}}}

model-signing's verifier insists on exactly one subject (the model, whose digest is SHA-256 over
the resource digests), so the per-file digests are the predicate's ``resources``, not subjects.
It reads only ``serialization`` and ``resources`` and, as its v1.0 predicate says, ignores other
fields: the ``bastion`` field carries the provenance and the per-file sizes and times that
``--reuse`` needs. Everything is under the signature.

Reading is for hostile input: the file is capped at :data:`MAX_BUNDLE_BYTES`, JSON nesting and
duplicate keys are refused, every object is parsed by a pydantic model (unknown fields refused
except where model-signing's format asks verifiers to ignore them), every count is bounded,
and every name is checked before it is used (see :func:`bastion.artifacts.manifest.name_problem`).
Any failure is a :class:`~bastion.errors.SignatureError`, never a crash. The API is stable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bastion.artifacts.manifest import (
    SINGLE_FILE_NAME,
    Resource,
    Serialization,
    SerializationMethod,
    name_problem,
    root_digest,
    sort_key,
)
from bastion.artifacts.provenance import (
    MAX_DATA_ITEMS,
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    DataDigest,
    Provenance,
    format_time,
    parse_time,
)
from bastion.core.digests import HashAlgorithm
from bastion.core.keys import PrivateKey, PublicKey, key_id, public_pem, sign_bytes, verify_bytes
from bastion.errors import SignatureError

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "MAX_BUNDLE_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Envelope",
    "FileStat",
    "SignedStatement",
    "decode_bundle",
    "decode_statement",
    "encode_bundle",
    "encode_statement",
    "pae",
    "public_key_hint",
    "verify_envelope",
]

logger = logging.getLogger(__name__)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
EXTENSION_VERSION = 1

#: Largest signature file read. A bundle of a million files is about 200 MiB of resources, so
#: 16 MiB is roughly 80,000 files or shards: far beyond real models, far below harm.
MAX_BUNDLE_BYTES = 16 * 2**20

#: Most resources (files or shards) and most files a statement may list.
MAX_RESOURCES = 200_000

_HEX64 = r"^[0-9a-f]{64}$"
_MAX_INT = 2**63 - 1


# -- encoding --------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 <len> <type> <len> <payload>``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def public_key_hint(key: PrivateKey | PublicKey) -> str:
    """model-signing's public key hint: SHA-256 of the SubjectPublicKeyInfo PEM, hex."""
    return hashlib.sha256(public_pem(key)).hexdigest()


@dataclass(frozen=True, slots=True)
class FileStat:
    """Size and times of one signed file, recorded for ``--reuse``."""

    name: str
    size: int
    mtime_ns: int
    ctime_ns: int


def encode_statement(
    *,
    model_name: str,
    serialization: Serialization,
    resources: Sequence[Resource],
    files: Sequence[FileStat],
    provenance: Provenance,
) -> bytes:
    """The in-toto statement (the DSSE payload) as compact ASCII JSON."""
    extension: dict[str, Any] = {
        "version": EXTENSION_VERSION,
        "files": [
            {"name": f.name, "size": f.size, "mtime_ns": f.mtime_ns, "ctime_ns": f.ctime_ns}
            for f in files
        ],
        "provenance": _provenance_json(provenance),
    }
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root_digest(resources).hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization.to_json(),
            "resources": [
                {"name": r.name, "algorithm": r.algorithm, "digest": r.digest.hex()}
                for r in resources
            ],
            "bastion": extension,
        },
    }
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _provenance_json(provenance: Provenance) -> dict[str, Any]:
    document: dict[str, Any] = {
        "signer": {
            "key_id": provenance.key_id,
            "algorithm": provenance.algorithm,
            "actor": provenance.actor,
        },
        "signed_at": format_time(provenance.signed_at),
    }
    if provenance.code_revision is not None:
        document["code_revision"] = provenance.code_revision
    document["training_data"] = [
        {
            "path": d.path,
            "kind": d.kind,
            "digest": {d.algorithm.value: d.digest},
            "files": d.files,
            "bytes": d.bytes,
        }
        for d in provenance.training_data
    ]
    document["parameters"] = dict(provenance.parameters)
    return document


def encode_bundle(payload: bytes, key: PrivateKey) -> bytes:
    """Sign ``payload`` (DSSE PAE) and wrap it in a Sigstore bundle, as JSON bytes."""
    signature = sign_bytes(key, pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": public_key_hint(key)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [
                {"sig": base64.b64encode(signature).decode("ascii"), "keyid": key_id(key)}
            ],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode("ascii")


# -- the bundle, as read ---------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


class _PublicKey(_Wire):
    hint: str | None = Field(default=None, max_length=128)
    # Older model-signing releases wrote these; model-signing drops them when reading.
    raw_bytes: str | None = Field(default=None, alias="rawBytes", max_length=4096)
    key_details: str | None = Field(default=None, alias="keyDetails", max_length=128)


class _VerificationMaterial(_Wire):
    public_key: _PublicKey = Field(alias="publicKey")
    # Key-based bundles have no transparency-log entries; bastion cannot check any.
    tlog_entries: list[Any] = Field(default_factory=list, alias="tlogEntries", max_length=0)


class _Signature(_Wire):
    sig: str = Field(max_length=8192)
    keyid: str | None = Field(default=None, max_length=256)


class _Envelope(_Wire):
    payload: str = Field(max_length=MAX_BUNDLE_BYTES)
    payload_type: str = Field(alias="payloadType", max_length=256)
    signatures: list[_Signature] = Field(min_length=1, max_length=16)


class _Bundle(_Wire):
    media_type: str = Field(alias="mediaType", max_length=256)
    verification_material: _VerificationMaterial = Field(alias="verificationMaterial")
    dsse_envelope: _Envelope | None = Field(default=None, alias="dsseEnvelope")
    message_signature: dict[str, Any] | None = Field(default=None, alias="messageSignature")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A bundle's DSSE envelope, decoded but not yet verified."""

    hint: str | None
    keyid: str | None
    payload_type: str
    payload: bytes
    signature: bytes


def decode_bundle(data: bytes) -> Envelope:
    """Parse a signature file's bytes (already capped by the caller).

    Raises:
        SignatureError: too large, not JSON, not a key-based DSSE Sigstore bundle of the
            expected media type, bad base64, or anything else out of shape.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise SignatureError(f"signature file is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        bundle = _Bundle.model_validate_json(data)
    except ValidationError as exc:
        raise SignatureError(f"signature file is not a valid bundle: {_describe(exc)}") from exc
    if bundle.media_type != BUNDLE_MEDIA_TYPE:
        raise SignatureError(
            f"unsupported bundle media type {bundle.media_type[:80]!r}: "
            f"expected {BUNDLE_MEDIA_TYPE}"
        )
    if bundle.message_signature is not None or bundle.dsse_envelope is None:
        raise SignatureError("bundle has no DSSE envelope (messageSignature is not supported)")
    envelope = bundle.dsse_envelope
    if len(envelope.signatures) != 1:
        raise SignatureError(
            f"DSSE envelope has {len(envelope.signatures)} signatures: expected exactly one"
        )
    payload = _b64(envelope.payload, "payload")
    signature = _b64(envelope.signatures[0].sig, "signature")
    return Envelope(
        hint=bundle.verification_material.public_key.hint or None,
        keyid=envelope.signatures[0].keyid or None,
        payload_type=envelope.payload_type,
        payload=payload,
        signature=signature,
    )


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise SignatureError(f"bundle {what} is not valid base64") from exc


def verify_envelope(envelope: Envelope, key: PublicKey) -> None:
    """Check the envelope's signature and payload type under ``key``.

    Raises:
        SignatureError: the bundle names another key, the signature does not verify, or the
            payload is not an in-toto statement.
    """
    expected_hint = public_key_hint(key)
    if envelope.hint is not None and envelope.hint != expected_hint:
        raise SignatureError(
            f"signed by a different key (bundle key hint {envelope.hint[:16]}..., "
            f"given key {expected_hint[:16]}..., id {key_id(key)[:16]})"
        )
    try:
        verify_bytes(key, pae(envelope.payload_type, envelope.payload), envelope.signature)
    except SignatureError as exc:
        raise SignatureError(
            f"signature does not verify with key {key_id(key)[:16]} "
            "(wrong key, or the bundle was altered)"
        ) from exc
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureError(
            f"unsupported DSSE payload type {envelope.payload_type[:80]!r}: expected {PAYLOAD_TYPE}"
        )


# -- the statement, as read ------------------------------------------------------------------


def _integral(value: Any) -> Any:
    # model-signing writes its payload through protobuf's Struct, which turns every number into
    # a double: its shard_size reads back as 4.0. Accept integral floats, nothing else.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_Int = Annotated[int, BeforeValidator(_integral), Field(ge=0, le=_MAX_INT)]
_Hex = Annotated[str, Field(pattern=_HEX64)]
_Name = Annotated[str, Field(min_length=1, max_length=4096)]


class _Digest(_Wire):
    sha256: _Hex


class _Subject(_Wire):
    name: str = Field(max_length=4096)
    digest: _Digest


class _Serialization(_Wire):
    method: Literal["files", "shards"]
    hash_type: str = Field(max_length=64)
    allow_symlinks: bool
    shard_size: _Int | None = None
    ignore_paths: list[_Name] = Field(default_factory=list, max_length=1024)


class _Resource(_Wire):
    name: _Name
    algorithm: str = Field(max_length=128)
    digest: _Hex


class _FileStat(_Wire):
    name: _Name
    size: _Int
    mtime_ns: int = Field(ge=-_MAX_INT, le=_MAX_INT)
    ctime_ns: int = Field(ge=-_MAX_INT, le=_MAX_INT)


class _Signer(_Wire):
    key_id: _Hex
    algorithm: Literal["ed25519", "ecdsa-p256"]
    actor: str = Field(max_length=256)


class _Data(_Wire):
    path: str = Field(max_length=4096)
    kind: Literal["file", "folder"]
    digest: dict[Literal["sha256", "blake3"], _Hex] = Field(min_length=1, max_length=1)
    files: _Int
    bytes: _Int


class _Provenance(_Wire):
    signer: _Signer
    signed_at: str = Field(max_length=40)
    code_revision: str | None = Field(default=None, max_length=256)
    training_data: list[_Data] = Field(default_factory=list, max_length=MAX_DATA_ITEMS)
    parameters: dict[
        Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=MAX_PARAMETER_CHARS)]
    ] = Field(default_factory=dict, max_length=MAX_PARAMETERS)


class _Extension(_Wire):
    version: Literal[1]
    files: list[_FileStat] = Field(max_length=MAX_RESOURCES)
    provenance: _Provenance


class _Predicate(_Wire):
    # model-signing's v1.0 predicate: "Any other field should be ignored by verifiers".
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    serialization: _Serialization
    resources: list[_Resource] = Field(max_length=MAX_RESOURCES)
    bastion: _Extension | None = None


class _Statement(_Wire):
    type: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[_Subject] = Field(min_length=1, max_length=MAX_RESOURCES)
    predicate_type: str = Field(alias="predicateType", max_length=256)
    predicate: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """What a verified signature says about the model.

    Attributes:
        subject_name: the model's name when it was signed (informative only).
        subject_digest: SHA-256 over the resource digests.
        serialization: how the model was hashed.
        resources: the signed files or shards, names already checked.
        files: every signed file with size and times (bastion signatures only; None for
            model-signing's, which list files only through their resources).
        provenance: bastion's provenance, or None.
    """

    subject_name: str
    subject_digest: bytes
    serialization: Serialization
    resources: tuple[Resource, ...]
    files: tuple[FileStat, ...] | None
    provenance: Provenance | None

    @property
    def is_single_file(self) -> bool:
        names = {r.path for r in self.resources}
        if self.files is not None:
            names |= {f.name for f in self.files}
        return names == {SINGLE_FILE_NAME}


def decode_statement(payload: bytes) -> SignedStatement:
    """Parse and check a verified payload.

    Raises:
        SignatureError: malformed JSON (nested too deep for the parser's recursion limit, or
            with a repeated key), a statement that is not model-signing v1.0, or resources that are
            inconsistent: bad or repeated names, shards that do not tile a file, an algorithm
            other than the serialization's, or a root digest that does not match.
    """
    document = _load_json(payload)
    try:
        statement = _Statement.model_validate(document)
    except ValidationError as exc:
        raise SignatureError(f"signed statement is malformed: {_describe(exc)}") from exc
    if statement.predicate_type != PREDICATE_TYPE:
        raise SignatureError(
            f"unsupported predicate type {statement.predicate_type[:80]!r}: "
            f"expected {PREDICATE_TYPE}"
        )
    if len(statement.subject) != 1:
        raise SignatureError(
            f"statement has {len(statement.subject)} subjects: expected one (the model)"
        )
    try:
        predicate = _Predicate.model_validate(statement.predicate)
    except ValidationError as exc:
        raise SignatureError(f"signed predicate is malformed: {_describe(exc)}") from exc
    serialization = _serialization(predicate.serialization)
    resources = _resources(predicate.resources, serialization)
    subject = statement.subject[0]
    if root_digest(resources).hex() != subject.digest.sha256:
        raise SignatureError("statement is inconsistent: resources do not hash to the subject")
    files: tuple[FileStat, ...] | None = None
    provenance: Provenance | None = None
    if predicate.bastion is not None:
        files = _files(predicate.bastion.files, resources, serialization)
        provenance = _provenance(predicate.bastion.provenance)
    return SignedStatement(
        subject_name=subject.name,
        subject_digest=bytes.fromhex(subject.digest.sha256),
        serialization=serialization,
        resources=tuple(resources),
        files=files,
        provenance=provenance,
    )


def _load_json(payload: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = Counter(k for k, _ in pairs)
        repeated = [k for k, n in counts.items() if n > 1]
        if repeated:
            raise SignatureError(f"signed statement repeats the key {repeated[0][:80]!r}")
        return dict(pairs)

    try:
        return json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SignatureError(f"signed statement is not valid JSON: {exc}"[:200]) from exc


def _serialization(wire: _Serialization) -> Serialization:
    try:
        hash_type = HashAlgorithm(wire.hash_type)
    except ValueError as exc:
        raise SignatureError(
            f"unsupported hash {wire.hash_type[:40]!r}: bastion verifies sha256 and blake3"
        ) from exc
    method = SerializationMethod(wire.method)
    if (method is SerializationMethod.SHARDS) != (wire.shard_size is not None):
        raise SignatureError("serialization is inconsistent: shard_size goes with shards only")
    if wire.shard_size is not None and wire.shard_size <= 0:
        raise SignatureError("serialization shard_size must be positive")
    for path in wire.ignore_paths:
        problem = name_problem(path)
        if problem is not None:
            raise SignatureError(f"serialization ignore path {path[:80]!r} {problem}")
    return Serialization(
        method=method,
        hash_type=hash_type,
        shard_size=wire.shard_size,
        ignore_paths=tuple(wire.ignore_paths),
        allow_symlinks=wire.allow_symlinks,
    )


def _path_problem(path: str) -> str | None:
    return None if path == SINGLE_FILE_NAME else name_problem(path)


def _resources(wires: list[_Resource], serialization: Serialization) -> list[Resource]:
    problems: list[str] = []
    resources: list[Resource] = []
    seen: set[str] = set()
    algorithm = serialization.resource_algorithm
    for wire in wires:
        shown = repr(wire.name[:200])
        if wire.name in seen:
            problems.append(f"resource {shown} is listed twice")
            continue
        seen.add(wire.name)
        if wire.algorithm != algorithm:
            problems.append(f"resource {shown} has algorithm {wire.algorithm[:40]!r}")
            continue
        start: int | None = None
        end: int | None = None
        path = wire.name
        if serialization.method is SerializationMethod.SHARDS:
            path, start_text, end_text = _split_shard(wire.name)
            if not (_is_decimal(start_text) and _is_decimal(end_text)):
                problems.append(f"resource {shown} is not of the form path:start:end")
                continue
            start, end = int(start_text), int(end_text)
        problem = _path_problem(path)
        if problem is not None:
            problems.append(f"resource {shown} {problem}: refusing a path outside the model")
            continue
        resources.append(Resource(path, start, end, wire.algorithm, bytes.fromhex(wire.digest)))
    if serialization.method is SerializationMethod.SHARDS and not problems:
        problems.extend(_shard_problems(resources, serialization.shard_size or 1))
    paths = {r.path for r in resources}
    if SINGLE_FILE_NAME in paths and len(paths) > 1:
        problems.append("a single-file signature lists other files")
    if problems:
        raise SignatureError("signed statement lists invalid resources", problems[:100])
    return resources


def _split_shard(name: str) -> tuple[str, str, str]:
    # rpartition, not split: a file name may itself contain ':'.
    head, _, end = name.rpartition(":")
    path, _, start = head.rpartition(":")
    return path, start, end


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()


def _shard_problems(resources: list[Resource], shard_size: int) -> list[str]:
    by_path: dict[str, list[Resource]] = {}
    for resource in resources:
        by_path.setdefault(resource.path, []).append(resource)
    problems: list[str] = []
    for path, shards in sorted(by_path.items(), key=lambda kv: sort_key(kv[0])):
        shards.sort(key=lambda r: r.start or 0)
        expected = 0
        for shard in shards:
            start, end = shard.start or 0, shard.end or 0
            if start != expected or not 0 < end - start <= shard_size:
                problems.append(f"resource {path!r}: shards do not tile the file")
                break
            if end - start < shard_size and shard is not shards[-1]:
                problems.append(f"resource {path!r}: a short shard is not the last")
                break
            expected = end
    return problems


def _files(
    wires: list[_FileStat], resources: list[Resource], serialization: Serialization
) -> tuple[FileStat, ...]:
    files: list[FileStat] = []
    problems: list[str] = []
    names: set[str] = set()
    for wire in wires:
        problem = _path_problem(wire.name)
        if problem is not None:
            problems.append(
                f"file {wire.name[:200]!r} {problem}: refusing a path outside the model"
            )
        elif wire.name in names:
            problems.append(f"file {wire.name[:200]!r} is listed twice")
        else:
            names.add(wire.name)
            files.append(FileStat(wire.name, wire.size, wire.mtime_ns, wire.ctime_ns))
    sizes: dict[str, int] = {}
    for resource in resources:
        if serialization.method is SerializationMethod.SHARDS:
            sizes[resource.path] = max(sizes.get(resource.path, 0), resource.end or 0)
        else:
            sizes.setdefault(resource.path, -1)
    for item in files:
        signed = sizes.pop(item.name, None)
        if signed is None and (serialization.method is SerializationMethod.FILES or item.size):
            problems.append(f"file {item.name!r} has no resource")
        elif signed is not None and signed >= 0 and signed != item.size:
            problems.append(f"file {item.name!r}: size disagrees with its shards")
    problems.extend(f"resource {name!r} is not among the files" for name in sorted(sizes))
    if problems:
        raise SignatureError("signed statement lists inconsistent files", problems[:100])
    return tuple(files)


def _provenance(wire: _Provenance) -> Provenance:
    try:
        signed_at = parse_time(wire.signed_at)
    except ValueError as exc:
        raise SignatureError(f"signed statement has a bad signing time: {exc}") from exc
    data = tuple(
        DataDigest(
            path=d.path,
            kind=d.kind,
            algorithm=HashAlgorithm(next(iter(d.digest))),
            digest=next(iter(d.digest.values())),
            files=d.files,
            bytes=d.bytes,
        )
        for d in wire.training_data
    )
    return Provenance(
        key_id=wire.signer.key_id,
        algorithm=wire.signer.algorithm,
        actor=wire.signer.actor,
        signed_at=signed_at,
        code_revision=wire.code_revision,
        training_data=data,
        parameters=tuple(sorted(wire.parameters.items())),
    )


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}"[:300] + more
