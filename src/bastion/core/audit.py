"""The tamper-evident audit log: a hash chain with signed checkpoints (stable API).

Every state-changing operation appends an :class:`AuditEvent` (time, actor, action, subject,
details). Each record carries the hash of the one before it, so editing, deleting, inserting or
reordering a record breaks the chain at that record; every ``checkpoint_interval`` events (and
on demand) the workspace key signs the head, so rewriting the whole chain behind a checkpoint,
or truncating it, breaks a signature instead. :meth:`AuditLog.verify` checks all of it and
raises :class:`~bastion.errors.AuditChainError` naming the first bad record; it never returns a
bool.

Formats (version 1; a change means a new domain string, never an edit of this one):

* Canonical JSON, :func:`canonical_json`: RFC 8785 (JCS). Object keys sorted by UTF-16 code
  units, no whitespace, strings escaped minimally as JSON requires, numbers written as
  ECMAScript writes them (``1e+21``, ``0.000001``, ``4.5``; ``2.0`` is ``2``). Integers must lie
  within +/-(2**53 - 1), floats must be finite, strings must be valid Unicode: anything else is
  refused rather than rounded.
* Event hash, :func:`event_hash`: hex SHA-256 of ``b"bastion-audit-event-v1\\n"`` followed by
  the canonical JSON of ``{"action", "actor", "details", "prev_hash", "seq", "subject", "ts"}``.
  ``seq`` counts from 1 without gaps; ``ts`` is UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``;
  ``prev_hash`` of record 1 is :data:`GENESIS_HASH` (64 zeros). The ``details`` column stores
  the canonical JSON text of the details object, exactly as hashed.
* Checkpoint signature, :func:`checkpoint_message`: the workspace key signs
  ``b"bastion-audit-checkpoint-v1\\n"`` followed by the canonical JSON of
  ``{"head_hash", "key_id", "seq", "ts"}`` (Ed25519, or ECDSA P-256 over SHA-256, see
  :func:`bastion.core.keys.sign_bytes`); the signature is stored base64-encoded. The domain
  prefix keeps these signatures from being mistaken for signatures over anything else.
* Head anchor (``audit.head`` in the workspace): the latest checkpoint as a JSON object
  ``{"format": "bastion-audit-head-v1", "seq", "head_hash", "ts", "key_id", "signature"}``,
  rewritten (atomically, under the log's write lock) at every checkpoint.

What verification proves, and its limits:

* A record edited, deleted, inserted or reordered anywhere is found (its hash or its link to
  the record before it no longer matches). An attacker who also recomputes every later hash is
  found at the next checkpoint, whose signature covers the old head.
* A log truncated behind a checkpoint (the checkpoint names a record the chain no longer
  reaches) is found, and so is a checkpoint whose signature or key was altered or forged.
* A checkpoint is signed only over a chain that extends the previous checkpoint and the
  anchor (the records since are re-checked first): a rewritten or rolled-back history is never
  laundered into a fresh, valid signature. An automatic checkpoint that refuses leaves a
  warning in the log output; the events themselves are still recorded.
* Events after the latest checkpoint are protected by the chain only: someone able to write the
  database can drop them, or append new well-formed events (the hash is not keyed: anyone can
  compute it). Lower ``audit.checkpoint_interval`` or call :meth:`AuditLog.checkpoint` after
  events that matter.
* An attacker who truncates the log *and* deletes the checkpoints behind it leaves a chain that
  is consistent on its own. ``audit.head`` catches that (its signed checkpoint names a record
  the chain no longer reaches, or a checkpoint the table no longer holds) unless the attacker
  deletes or rolls back that file too, which anyone who can write the workspace folder can do.
  Against that attacker, keep a copy of ``audit.head`` where they cannot write (another host,
  a ticket, a transparency log) and pass it to :meth:`AuditLog.verify` as ``anchor``
  (``bastion log verify --anchor FILE``).

The log stores what callers give it and redacts nothing: never put secrets (passwords, keys,
tokens, personal data) in ``subject`` or ``details``; log a key id or a digest instead. Keys
that plainly name a secret (``password``, ``token``, ``private_key``, ...) are refused.

Writers serialise on the database: ``BEGIN IMMEDIATE`` on SQLite, ``pg_advisory_xact_lock`` on
PostgreSQL, both inside one transaction that reads the head and inserts the next record; the
primary key on ``seq`` is the last line of defense (a conflicting insert is retried).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bastion.core.audit_schema import audit_checkpoints, audit_events
from bastion.core.keys import (
    PrivateKey,
    PublicKey,
    key_id,
    sign_bytes,
    verify_bytes,
)
from bastion.core.storage import Database
from bastion.core.timestamps import TIMESTAMP_PATTERN, format_utc, parse_utc
from bastion.errors import (
    AuditChainError,
    AuditError,
    BastionError,
    SignatureError,
    StorageError,
)

__all__ = [
    "AUDIT_HEAD_NAME",
    "CHECKPOINT_DOMAIN",
    "EVENT_DOMAIN",
    "GENESIS_HASH",
    "JSON",
    "AuditEvent",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "Checkpoint",
    "canonical_json",
    "checkpoint_message",
    "event_hash",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: A JSON value as bastion accepts it in event details.
JSON: TypeAlias = "bool | int | float | str | Sequence[JSON] | Mapping[str, JSON] | None"

GENESIS_HASH = "0" * 64
EVENT_DOMAIN = b"bastion-audit-event-v1\n"
CHECKPOINT_DOMAIN = b"bastion-audit-checkpoint-v1\n"
HEAD_FORMAT = "bastion-audit-head-v1"
#: Name of the head anchor file in the workspace folder.
AUDIT_HEAD_NAME = "audit.head"

MAX_ACTION_CHARS = 64
MAX_ACTOR_CHARS = 200
MAX_SUBJECT_CHARS = 4096
MAX_DETAILS_BYTES = 64 * 1024
MAX_DETAILS_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
#: Problems listed in an AuditChainError beyond the first; the rest are counted.
MAX_PROBLEMS = 50
_MAX_HEAD_FILE_BYTES = 64 * 1024
_APPEND_ATTEMPTS = 5
_MAX_TRUSTED = 100_000
_VERIFY_BATCH = 2000

_ACTION_RE = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")
# C0/C1 controls, DEL, line/paragraph separators and bidirectional overrides: they let a
# subject rewrite what a terminal shows (CVE-2021-42574, "Trojan Source").
_UNSAFE_TEXT_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_TS_RE = re.compile(TIMESTAMP_PATTERN)
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_LONG_DIGITS_RE = re.compile(r"\d{16}")
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "client_secret",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "refresh_token",
        "secret",
        "secret_key",
        "token",
    }
)
_SCALARS = frozenset({str, int, float, bool, type(None)})
# One advisory lock key for every writer of the log on a PostgreSQL database.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"bastion.audit.append").digest()[:8], "big") >> 1


# --------------------------------------------------------------------------- canonical JSON


def canonical_json(value: JSON) -> bytes:
    """Return the RFC 8785 canonical JSON encoding of ``value`` as UTF-8 bytes.

    Raises:
        AuditError: ``value`` is not JSON (a set, bytes, a non-string key, NaN, an integer
            beyond 2**53, a lone surrogate) or is nested deeper than ``MAX_DETAILS_DEPTH``.
    """
    return _canonical(value)[0]


def _canonical(value: JSON) -> tuple[bytes, bool]:
    """:func:`canonical_json`, and whether the fast path wrote it.

    The fast path covers what the log mostly holds (ASCII keys, strings, small integers, floats
    below 1e15) with the C string encoder; anything else, and every error, takes the checking
    path, which writes the same bytes (a property test holds the two together). What the fast
    path writes holds no float written out as a long integer (1e20 is
    "100000000000000000000"), so plain ``json.loads`` reads it back exactly.
    """
    parts: list[str] = []
    try:
        _encode_fast(value, parts, 0)
        return "".join(parts).encode("utf-8"), True
    except (_NotFastError, UnicodeEncodeError):
        pass
    return _canonical_checked(value), False


def _canonical_checked(value: JSON) -> bytes:
    """:func:`canonical_json` by the path that checks everything and names what is wrong."""
    parts: list[str] = []
    _encode(value, parts, "$", 0)
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # pragma: no cover - strings are checked in _encode
        raise AuditError("details are not valid Unicode") from exc


class _NotFastError(Exception):
    """A value the fast encoder leaves to the checking one."""


# The C encoder of json.dumps(..., ensure_ascii=False) for one string: it escapes exactly what
# RFC 8785 section 3.2.2.2 escapes (", \, and controls as \b \t \n \f \r or \u00xx).
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def _encode_fast(value: object, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.append(_encode_string(value))  # type: ignore[arg-type]
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            raise _NotFastError
        out.append(int.__repr__(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif depth >= MAX_DETAILS_DEPTH:
        raise _NotFastError
    elif kind is dict or kind is MappingProxyType:
        mapping: Mapping[Any, Any] = value  # type: ignore[assignment]
        keys = list(mapping)
        for key in keys:
            # ASCII keys sort the same by code point as by UTF-16 code unit.
            if type(key) is not str or not key.isascii():
                raise _NotFastError
        keys.sort()
        out.append("{")
        first = True
        for key in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key))
            out.append(":")
            # Strings and small integers inline: most values of a record are one or the other,
            # and a call per value was most of the encoder's time on the gateway's entries.
            item = mapping[key]
            kind = type(item)
            if kind is str:
                out.append(_encode_string(item))
            elif kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                out.append(int.__repr__(item))
            else:
                _encode_fast(item, out, depth + 1)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        first = True
        for item in value:  # type: ignore[attr-defined]
            if not first:
                out.append(",")
            first = False
            _encode_fast(item, out, depth + 1)
        out.append("]")
    elif kind is float and -1e15 < value < 1e15:  # type: ignore[operator]
        out.append(_ecmascript_number(value, "$"))  # type: ignore[arg-type]
    else:
        raise _NotFastError


def _encode(value: object, out: list[str], path: str, depth: int) -> None:
    if depth > MAX_DETAILS_DEPTH:
        raise AuditError(f"details are nested deeper than {MAX_DETAILS_DEPTH} levels at {path}")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        number = int(value)
        if abs(number) > MAX_SAFE_INTEGER:
            raise AuditError(
                f"details value at {path} is an integer beyond 2**53, which JSON cannot carry "
                "exactly: pass it as a string"
            )
        out.append(str(number))
    elif isinstance(value, float):
        out.append(_ecmascript_number(float(value), path))
    elif isinstance(value, str):
        _require_unicode(value, path)
        out.append(_encode_string(value))
    elif isinstance(value, Mapping):
        keys = list(value.keys())
        for key in keys:
            if not isinstance(key, str):
                raise AuditError(f"details key {key!r} at {path} is not a string")
            _require_unicode(key, path)
        out.append("{")
        for index, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be"))):
            if index:
                out.append(",")
            out.append(_encode_string(key))
            out.append(":")
            _encode(value[key], out, f"{path}.{key}", depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out, f"{path}[{index}]", depth + 1)
        out.append("]")
    else:
        raise AuditError(f"details are not JSON-serialisable: {path} is a {type(value).__name__}")


def _require_unicode(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AuditError(f"details text at {path} is not valid Unicode") from exc


def _ecmascript_number(value: float, path: str) -> str:
    """Write a float as ECMAScript's Number.prototype.toString does (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        raise AuditError(f"details value at {path} is not a finite number")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    scale = int(exponent or 0) - len(fraction)  # value = int(digits) * 10**scale
    stripped = digits.rstrip("0")
    scale += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + scale  # value = 0.d1d2...dk * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mark = "+" if e >= 0 else "-"
        head = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{head}e{mark}{abs(e)}"
    return sign + text


def _parse_int(text: str) -> int | float:
    # Integers beyond 2**53 are written only for large floats (1e20 is "100000000000000000000")
    # and are read back as the float they came from.
    number = int(text)
    return number if abs(number) <= MAX_SAFE_INTEGER else float(text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_details(text: str) -> dict[str, Any]:
    """Parse a stored details column; it must be canonical JSON of an object.

    Raises:
        AuditError: it is not.
    """
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise AuditError("details are not valid JSON") from exc
    if not isinstance(value, dict):
        raise AuditError("details are not a JSON object")
    if canonical_json(value) != text.encode("utf-8"):
        raise AuditError("details are not in canonical form")
    return value


def _encode_details(details: Mapping[str, JSON] | None) -> tuple[str, Any]:
    """The canonical text of ``details`` and the same value as parsed back from it."""
    if details is None:
        details = {}
    if not isinstance(details, Mapping):
        raise AuditError(f"details must be a mapping, not a {type(details).__name__}")
    _refuse_secret_keys(details, "$")
    encoded, fast = _canonical(details)
    if len(encoded) > MAX_DETAILS_BYTES:
        raise AuditError(
            f"details are {len(encoded)} bytes of JSON, more than the {MAX_DETAILS_BYTES} allowed"
        )
    text = encoded.decode("utf-8")
    # Only a run of 16+ digits can be an integer beyond 2**53 (a large float written out),
    # and the fast path never writes one: without one, no Python callback per number.
    if fast or not _LONG_DIGITS_RE.search(text):
        return text, json.loads(text)
    return text, json.loads(text, parse_int=_parse_int)


def _refuse_secret_keys(value: object, path: str, depth: int = 0) -> None:
    if depth > MAX_DETAILS_DEPTH:
        return  # canonical_json reports the depth
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in _SECRET_KEYS:
                raise AuditError(
                    f"details key '{path}.{key}' names a secret: the audit log never stores "
                    "secrets (log a key id or a digest instead)"
                )
            if type(item) not in _SCALARS:
                _refuse_secret_keys(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if type(item) not in _SCALARS:
                _refuse_secret_keys(item, f"{path}[{index}]", depth + 1)


# --------------------------------------------------------------------------- formats


def _format_ts(moment: datetime) -> str:
    try:
        return format_utc(moment)
    except ValueError as exc:
        raise AuditError("timestamps must be timezone-aware (use datetime.now(UTC))") from exc


_parse_ts = parse_utc


def event_hash(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, JSON],
    prev_hash: str,
) -> str:
    """Return the hex SHA-256 hash of one record (see the module docstring for the format)."""
    record: dict[str, JSON] = {
        "action": action,
        "actor": actor,
        "details": details,
        "prev_hash": prev_hash,
        "seq": seq,
        "subject": subject,
        "ts": ts,
    }
    return hashlib.sha256(EVENT_DOMAIN + canonical_json(record)).hexdigest()


def _event_hash_of_text(
    seq: int, ts: str, actor: str, action: str, subject: str, details_text: str, prev_hash: str
) -> str:
    """:func:`event_hash` from the details' canonical JSON text, without re-encoding them.

    The record's members are written in their canonical (sorted) order around the text, which
    must already be canonical (``_encode_details`` output, or a stored column that
    ``_parse_details`` accepted). Equal to :func:`event_hash` (a property test holds them
    together); falls back to it for text that is not valid Unicode or a sequence beyond 2**53,
    so the error is the same.
    """
    enc = _encode_string
    text = (
        f'{{"action":{enc(action)},"actor":{enc(actor)},"details":{details_text},'
        f'"prev_hash":{enc(prev_hash)},"seq":{int(seq)},"subject":{enc(subject)},'
        f'"ts":{enc(ts)}}}'
    )
    if abs(int(seq)) <= MAX_SAFE_INTEGER:
        with contextlib.suppress(UnicodeEncodeError):
            return hashlib.sha256(EVENT_DOMAIN + text.encode("utf-8")).hexdigest()
    details = json.loads(details_text, parse_int=_parse_int)
    return event_hash(seq, ts, actor, action, subject, details, prev_hash)


def checkpoint_message(seq: int, head_hash: str, ts: str, signer_key_id: str) -> bytes:
    """Return the exact bytes the workspace key signs for a checkpoint."""
    body: dict[str, JSON] = {
        "head_hash": head_hash,
        "key_id": signer_key_id,
        "seq": seq,
        "ts": ts,
    }
    return CHECKPOINT_DOMAIN + canonical_json(body)


def _check_action(action: object, what: str = "action") -> str:
    if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
        raise AuditError(
            f"{what} {action!r} is not a dotted identifier of lower-case words "
            "(like 'registry.promote')"
        )
    if len(action) > MAX_ACTION_CHARS:
        raise AuditError(f"{what} is longer than {MAX_ACTION_CHARS} characters")
    return action


def _check_text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise AuditError(f"{what} must be a string, not a {type(value).__name__}")
    if not value:
        raise AuditError(f"{what} must not be empty")
    if len(value) > limit:
        raise AuditError(f"{what} is longer than {limit} characters")
    if _UNSAFE_TEXT_RE.search(value):
        raise AuditError(f"{what} contains control or bidirectional-override characters")
    _require_unicode(value, what)
    return value


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The end of the chain: the last record's ``seq`` and ``hash`` (0 and genesis if empty)."""

    seq: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One record of the audit log, as stored.

    Attributes:
        seq: position in the chain, from 1.
        ts: when it was appended (UTC).
        actor: who acted (``$BASTION_ACTOR`` or ``user@host`` by default).
        action: a dotted identifier such as ``workspace.init``.
        subject: what was acted on (a path, a model name, a key id).
        details: a read-only JSON object with anything else worth keeping.
        prev_hash: the hash of record ``seq - 1``.
        hash: this record's hash (:func:`event_hash`).
    """

    seq: int
    ts: datetime
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ts`` in the canonical text form)."""
        return {
            "seq": self.seq,
            "ts": _format_ts(self.ts),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": json.loads(json.dumps(dict(self.details))),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement by the workspace key: the chain's record ``seq`` has ``head_hash``."""

    seq: int
    head_hash: str
    ts: datetime
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        """The bytes that :attr:`signature` signs (:func:`checkpoint_message`)."""
        return checkpoint_message(self.seq, self.head_hash, _format_ts(self.ts), self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "ts": _format_ts(self.ts),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What :meth:`AuditLog.verify` checked, when everything verified.

    Attributes:
        events: records in the chain (up to the head read at the start).
        checkpoints: signed checkpoints verified.
        head: the last record.
        last_checkpoint: ``seq`` of the latest checkpoint, None when there is none.
        anchors: the anchor files checked (``audit.head`` and any ``anchor`` given).
    """

    events: int
    checkpoints: int
    head: AuditHead
    last_checkpoint: int | None
    anchors: tuple[str, ...]

    @property
    def unanchored(self) -> int:
        """Records after the latest checkpoint: protected by the chain alone."""
        return self.head.seq - (self.last_checkpoint or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "checkpoints": self.checkpoints,
            "head": self.head.to_dict(),
            "last_checkpoint": self.last_checkpoint,
            "unanchored": self.unanchored,
            "anchors": list(self.anchors),
        }


@dataclass(frozen=True, slots=True)
class _RawCheckpoint:
    """A checkpoint as read from the table or an anchor file, before any check."""

    seq: int
    head_hash: str
    ts: str
    key_id: str
    signature: str
    source: str  # "checkpoint", or the anchor file's path

    @property
    def label(self) -> str:
        return "checkpoint" if self.source == "checkpoint" else f"anchor {self.source}"

    def same_as(self, other: _RawCheckpoint) -> bool:
        return (self.seq, self.head_hash, self.ts, self.key_id, self.signature) == (
            other.seq,
            other.head_hash,
            other.ts,
            other.key_id,
            other.signature,
        )


# --------------------------------------------------------------------------- the log


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event to append with :meth:`AuditLog.append_many` (arguments as for ``append``)."""

    action: str
    subject: str
    details: Mapping[str, JSON] | None = None
    actor: str | None = None
    now: datetime | None = None


class AuditLog:
    """The append-only, hash-chained audit log in a database.

    Get the workspace's from :meth:`bastion.core.workspace.Workspace.audit`.

    Args:
        database: a migrated database.
        actor: the default actor of :meth:`append`.
        signing_key: returns the private key that signs checkpoints; called only when a
            checkpoint is made, at most once (an encrypted key needs its passphrase only then).
            None: no checkpoints are made automatically and :meth:`checkpoint` refuses.
        public_key: returns the public key that checkpoints are verified with.
        checkpoint_interval: sign the head once this many events follow the last checkpoint;
            None: only on demand.
        head_path: the anchor file rewritten at each checkpoint and checked by :meth:`verify`;
            None: no anchor file.
    """

    def __init__(
        self,
        database: Database,
        *,
        actor: str,
        signing_key: Callable[[], PrivateKey] | None = None,
        public_key: Callable[[], PublicKey] | None = None,
        checkpoint_interval: int | None = 100,
        head_path: Path | None = None,
    ) -> None:
        if database.dialect not in ("sqlite", "postgresql"):
            raise AuditError(f"the audit log needs SQLite or PostgreSQL, not {database.dialect}")
        if checkpoint_interval is not None and checkpoint_interval < 1:
            raise AuditError("checkpoint_interval must be at least 1")
        self._database = database
        self._actor = actor
        self._signing_key_loader = signing_key
        self._public_key_loader = public_key
        self._signing_key: PrivateKey | None = None
        self._checkpoint_interval = checkpoint_interval
        self._head_path = head_path
        # seq -> hash of the records this instance wrote since its last checkpoint (see
        # _walk_chain's ``trusted``): a checkpoint need not re-hash what it just hashed.
        self._written: dict[int, str] = {}

    @property
    def head_path(self) -> Path | None:
        """The anchor file, if this log keeps one."""
        return self._head_path

    # ------------------------------------------------------------------ writing

    def append(
        self,
        action: str,
        subject: str,
        details: Mapping[str, JSON] | None = None,
        *,
        actor: str | None = None,
        now: datetime | None = None,
    ) -> AuditEvent:
        """Append one event and return it as stored.

        Never pass secrets: the log is kept forever and shown to anyone who reads it.

        Args:
            action: a dotted identifier of lower-case words, e.g. ``registry.promote``.
            subject: what was acted on; at most ``MAX_SUBJECT_CHARS``, no control characters.
            details: a JSON object, at most ``MAX_DETAILS_BYTES`` once encoded.
            actor: who acted; the log's default actor when None.
            now: the event's time (timezone-aware); the current time when None.

        Raises:
            AuditError: an argument is invalid, or the database cannot be written.
        """
        record = AuditRecord(action, subject, details, actor=actor, now=now)
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[AuditRecord]) -> list[AuditEvent]:
        """Append several events in one transaction, in order, and return them as stored.

        This is how a busy writer (the gateway's audit of requests) keeps one commit per batch
        instead of one per event. Every record is checked before anything is written: one
        invalid record appends none.

        Raises:
            AuditError: a record is invalid, or the database cannot be written.
        """
        prepared = []
        for record in records:
            _check_action(record.action)
            _check_text("subject", record.subject, MAX_SUBJECT_CHARS)
            who = _check_text(
                "actor", self._actor if record.actor is None else record.actor, MAX_ACTOR_CHARS
            )
            details_text, parsed = _encode_details(record.details)
            fixed_ts = None if record.now is None else _format_ts(record.now)
            prepared.append((record, who, details_text, fixed_ts, parsed))
        if not prepared:
            return []

        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            events: list[AuditEvent] = []
            try:
                with self._database.begin(exclusive=True) as conn:
                    self._lock(conn)
                    head = self._read_head(conn)
                    rows = []
                    for record, who, details_text, fixed_ts, parsed in prepared:
                        seq = head.seq + 1
                        ts = fixed_ts or _format_ts(datetime.now(UTC))
                        digest = _event_hash_of_text(
                            seq, ts, who, record.action, record.subject, details_text, head.hash
                        )
                        rows.append(
                            {
                                "seq": seq,
                                "ts": ts,
                                "actor": who,
                                "action": record.action,
                                "subject": record.subject,
                                "details": details_text,
                                "prev_hash": head.hash,
                                "hash": digest,
                            }
                        )
                        events.append(
                            AuditEvent(
                                seq=seq,
                                ts=_parse_ts(ts),
                                actor=who,
                                action=record.action,
                                subject=record.subject,
                                details=MappingProxyType(parsed),
                                prev_hash=head.hash,
                                hash=digest,
                            )
                        )
                        head = AuditHead(seq, digest)
                    conn.execute(audit_events.insert(), rows)
                    if len(self._written) > _MAX_TRUSTED:
                        self._written.clear()
                    self._written.update((e.seq, e.hash) for e in events)
                    last_checkpoint = conn.execute(
                        sa.select(sa.func.max(audit_checkpoints.c.seq))
                    ).scalar()
                break
            except StorageError as exc:
                if isinstance(exc.__cause__, IntegrityError) and attempt < _APPEND_ATTEMPTS:
                    # Only when something bypassed the lock: the key on seq refused a fork.
                    logger.warning("audit append conflicted (attempt %d); retrying", attempt)
                    continue
                raise AuditError(f"cannot append to the audit log: {exc}") from exc
        else:  # pragma: no cover - the loop either breaks or raises
            raise AuditError("cannot append to the audit log")

        interval = self._checkpoint_interval
        if (
            interval is not None
            and self._signing_key_loader is not None
            and head.seq - int(last_checkpoint or 0) >= interval
        ):
            self._automatic_checkpoint()
        return events

    def _automatic_checkpoint(self) -> None:
        # The event is already committed: a checkpoint that cannot be made now must not undo
        # it. The next append tries again; the warning says how to make one by hand.
        try:
            self.checkpoint()
        except BastionError as exc:
            logger.warning(
                "audit checkpoint due but not made (%s); run 'bastion log checkpoint'", exc
            )

    def checkpoint(self, *, now: datetime | None = None) -> Checkpoint:
        """Sign the current head with the workspace key and record the checkpoint.

        Checkpointing a head that already has a checkpoint returns that one unchanged.

        Raises:
            AuditError: the log is empty, no signing key was configured, or the database
                cannot be written.
            KeyMaterialError: the workspace key cannot be loaded (an encrypted key without
                ``BASTION_KEY_PASSPHRASE``, say).
        """
        fixed_ts = None if now is None else _format_ts(now)
        key = self._load_signing_key()
        signer = key_id(key)
        backup: _FileBackup | None = None
        try:
            with self._database.begin(exclusive=True) as conn:
                self._lock(conn)
                head = self._read_head(conn)
                if head.seq == 0:
                    raise AuditError(  # noqa: TRY301 - rolls the transaction back on the way out
                        "the audit log is empty: there is nothing to checkpoint"
                    )
                row = conn.execute(
                    sa.select(audit_checkpoints).where(audit_checkpoints.c.seq == head.seq)
                ).first()
                if row is not None:
                    return _checkpoint_from_row(row._mapping)
                # Never sign a head that does not extend what was signed before: that would
                # launder a rewritten or rolled-back history into a valid checkpoint.
                problems = self._tail_problems(conn, head, key)
                if problems:
                    raise _chain_error(  # noqa: TRY301 - rolls the transaction back
                        problems, "refusing to checkpoint: the log does not extend the last one"
                    )
                ts = fixed_ts or _format_ts(datetime.now(UTC))
                signature = sign_bytes(key, checkpoint_message(head.seq, head.hash, ts, signer))
                conn.execute(
                    audit_checkpoints.insert().values(
                        seq=head.seq,
                        head_hash=head.hash,
                        ts=ts,
                        key_id=signer,
                        signature=base64.b64encode(signature).decode("ascii"),
                    )
                )
                checkpoint = Checkpoint(head.seq, head.hash, _parse_ts(ts), signer, signature)
                # Written under the write lock, so anchors never go backwards; restored below
                # if the transaction does not commit.
                backup = self._write_anchor(checkpoint)
        except BaseException as exc:
            if backup is not None:
                backup.restore()
            if isinstance(exc, StorageError):
                raise AuditError(f"cannot checkpoint the audit log: {exc}") from exc
            raise
        logger.info("audit checkpoint at sequence %d", checkpoint.seq)
        # The next checkpoint starts from this one: older records are not walked again.
        self._written = {q: h for q, h in self._written.items() if q >= checkpoint.seq}
        return checkpoint

    def _tail_problems(
        self, conn: Connection, head: AuditHead, key: PrivateKey
    ) -> list[tuple[int, str]]:
        """Check the chain from the newest checkpoint and the anchor up to ``head``.

        Raises:
            AuditChainError: the anchor file is damaged.
        """
        problems: list[tuple[int, str]] = []
        references: list[_RawCheckpoint] = []
        newest = conn.execute(
            sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)
        ).first()
        if newest is not None:
            parsed = _raw_checkpoint(newest._mapping, problems)
            if parsed is not None:
                references.append(parsed)
        if self._head_path is not None:
            anchor = _read_anchor(self._head_path, required=False)
            if anchor is not None:
                references.append(anchor)
        if not references:
            return problems
        start = min(r.seq for r in references)
        walk = _walk_chain(
            conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.seq >= start, audit_events.c.seq <= head.seq)
                .order_by(audit_events.c.seq)
            ),
            {r.seq for r in references},
            problems,
            start=start,
            head_seq=head.seq,
            trusted=self._written,
        )
        public = key.public_key()
        for reference in references:
            self._check_checkpoint(reference, public, key_id(public), walk, problems)
        return problems

    def _load_signing_key(self) -> PrivateKey:
        if self._signing_key is None:
            if self._signing_key_loader is None:
                raise AuditError("this audit log has no signing key: cannot checkpoint")
            self._signing_key = self._signing_key_loader()
        return self._signing_key

    def _write_anchor(self, checkpoint: Checkpoint) -> _FileBackup | None:
        path = self._head_path
        if path is None:
            return None
        try:
            previous = path.read_bytes()
        except FileNotFoundError:
            previous = None
        except OSError as exc:
            raise AuditError(f"cannot read {path}: {exc.strerror}") from exc
        if previous is not None:
            try:
                current = _parse_anchor(previous, str(path))
            except AuditChainError:
                current = None  # damaged: replaced by a good one
            if current is not None and current.seq >= checkpoint.seq:
                return None
        document = {"format": HEAD_FORMAT, **checkpoint.to_dict()}
        _atomic_write(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        return _FileBackup(path, previous)

    @staticmethod
    def _lock(conn: Connection) -> None:
        # SQLite: the transaction began with BEGIN IMMEDIATE, which already holds the lock.
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})

    @staticmethod
    def _read_head(conn: Connection) -> AuditHead:
        row = conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.hash)
            .order_by(audit_events.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            return AuditHead(0, GENESIS_HASH)
        return AuditHead(int(row.seq), str(row.hash))

    # ------------------------------------------------------------------ reading

    def head(self) -> AuditHead:
        """The last record's sequence number and hash (read, not verified)."""
        return self._read(self._read_head)

    def events(
        self,
        *,
        since: datetime | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Events in chain order, as stored (read, not verified: see :meth:`verify`).

        Args:
            since: only events at or after this time (timezone-aware).
            action: only this action; ``prefix.*`` selects every action under ``prefix``.
            limit: only the newest ``limit`` of the selected events (still oldest first).

        Raises:
            AuditError: a filter is invalid, or a stored record is malformed.
        """
        query = sa.select(audit_events)
        if since is not None:
            query = query.where(audit_events.c.ts >= _format_ts(since))
        if action is not None:
            if isinstance(action, str) and action.endswith(".*"):
                prefix = _check_action(action[:-2], "action filter") + "."
                query = query.where(audit_events.c.action.startswith(prefix, autoescape=True))
            else:
                query = query.where(audit_events.c.action == _check_action(action, "action"))
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise AuditError("limit must be a positive integer")
            query = query.order_by(audit_events.c.seq.desc()).limit(limit)
        else:
            query = query.order_by(audit_events.c.seq)
        rows = self._read(lambda conn: list(conn.execute(query)))
        events = [_event_from_row(row._mapping) for row in rows]
        if limit is not None:
            events.reverse()
        return events

    def _read(self, fn: Callable[[Connection], _T]) -> _T:
        try:
            with self._database.begin() as conn:
                return fn(conn)
        except StorageError as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from exc

    # ------------------------------------------------------------------ verifying

    def verify(self, *, anchor: Path | None = None) -> AuditVerification:
        """Check the whole chain, every checkpoint and the anchor files.

        Args:
            anchor: a copy of ``audit.head`` kept outside the workspace; the chain must reach
                the checkpoint it names.

        Returns:
            What was verified.

        Raises:
            AuditChainError: a record was edited, deleted, inserted or reordered, the log was
                truncated behind a checkpoint, or a checkpoint or anchor does not verify. Its
                ``sequence`` names the first bad record; ``problems`` lists them all.
            AuditError: the log or an anchor file cannot be read, or there is no public key to
                verify checkpoints with.
        """
        anchor_files: list[tuple[Path, bool]] = []
        if anchor is not None:
            anchor_files.append((anchor, True))
        if self._head_path is not None:
            anchor_files.append((self._head_path, False))

        # One consistent snapshot of the anchors, the checkpoints and the head, taken under the
        # writers' lock (anchors are written under it); the records up to that head are then
        # read without holding it, since a well-behaved writer never changes them.
        def snapshot(conn: Connection) -> tuple[list[_RawCheckpoint], list[Any], AuditHead]:
            self._lock(conn)
            anchors = [a for a in (_read_anchor(p, required) for p, required in anchor_files) if a]
            rows = list(conn.execute(sa.select(audit_checkpoints)))
            return anchors, rows, self._read_head(conn)

        try:
            with self._database.begin(exclusive=True) as conn:
                anchors, checkpoint_rows, head = snapshot(conn)
        except StorageError as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from exc

        problems: list[tuple[int, str]] = []
        parsed_rows = [_raw_checkpoint(row._mapping, problems) for row in checkpoint_rows]
        checkpoints = sorted((c for c in parsed_rows if c is not None), key=lambda c: c.seq)
        wanted = {c.seq for c in checkpoints} | {a.seq for a in anchors}

        try:
            with self._database.begin() as conn:
                walk = _walk_chain(
                    conn.execute(
                        sa.select(audit_events)
                        .where(audit_events.c.seq <= head.seq)
                        .order_by(audit_events.c.seq)
                        # Streamed (a server-side cursor on PostgreSQL): memory stays flat.
                        .execution_options(yield_per=_VERIFY_BATCH)
                    ),
                    wanted,
                    problems,
                )
        except StorageError as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from exc

        if checkpoints or anchors:
            public = self._load_public_key()
            expected_id = key_id(public)
            for item in [*checkpoints, *anchors]:
                self._check_checkpoint(item, public, expected_id, walk, problems)
            by_seq = {c.seq: c for c in checkpoints}
            for item in anchors:
                stored = by_seq.get(item.seq)
                if stored is None:
                    problems.append(
                        (
                            item.seq,
                            f"{item.label} names the checkpoint at sequence {item.seq}, which "
                            "the database no longer holds (checkpoints were deleted)",
                        )
                    )
                elif not stored.same_as(item):
                    problems.append(
                        (
                            item.seq,
                            f"{item.label} and the database disagree about the checkpoint at "
                            f"sequence {item.seq}",
                        )
                    )

        if problems:
            raise _chain_error(problems)
        return AuditVerification(
            events=walk.count,
            checkpoints=len(checkpoints),
            head=AuditHead(walk.last_seq, walk.last_hash),
            last_checkpoint=checkpoints[-1].seq if checkpoints else None,
            anchors=tuple(a.source for a in anchors),
        )

    def _load_public_key(self) -> PublicKey:
        if self._public_key_loader is None:
            raise AuditError("this audit log has no public key to verify its checkpoints with")
        return self._public_key_loader()

    @staticmethod
    def _check_checkpoint(
        item: _RawCheckpoint,
        public: PublicKey,
        expected_id: str,
        walk: _Walk,
        problems: list[tuple[int, str]],
    ) -> None:
        label = f"{item.label} at sequence {item.seq}"
        if item.key_id != expected_id:
            problems.append(
                (
                    item.seq,
                    f"{label} was signed by key {item.key_id[:16]}, not by the workspace key "
                    f"{expected_id[:16]}",
                )
            )
        else:
            try:
                signature = base64.b64decode(item.signature, validate=True)
                verify_bytes(
                    public,
                    checkpoint_message(item.seq, item.head_hash, item.ts, item.key_id),
                    signature,
                )
            except (SignatureError, binascii.Error, ValueError):
                problems.append(
                    (item.seq, f"{label}: the signature does not verify (forged or altered)")
                )
        if item.seq > walk.last_seq:
            problems.append(
                (
                    walk.last_seq + 1,
                    f"the log was truncated: {label} names record {item.seq}, but the chain "
                    f"ends at record {walk.last_seq}",
                )
            )
        else:
            reached = walk.hashes.get(item.seq)
            if reached is not None and reached != item.head_hash:
                problems.append(
                    (
                        item.seq,
                        f"{label} does not match record {item.seq}: the history up to it was "
                        "rewritten",
                    )
                )
            # A missing record at item.seq is already reported as a gap by the walk.


@dataclass
class _Walk:
    count: int
    last_seq: int
    last_hash: str
    hashes: dict[int, str]


def _walk_chain(
    rows: Iterator[Any] | Any,
    wanted: set[int],
    problems: list[tuple[int, str]],
    *,
    start: int = 1,
    head_seq: int = 0,
    trusted: Mapping[int, str] | None = None,
) -> _Walk:
    """Check every record's hash and link; collect the hashes at ``wanted`` sequences.

    ``start`` > 1 checks a tail of the chain: the first record's link is then not checked.
    ``trusted`` maps sequences to the hashes this process computed from the contents it wrote
    itself: a record whose stored hash is still that one is not re-hashed (its link is still
    checked). Editing its contents without its hash is caught by every later verification;
    editing both changes the hash, and then the record is checked in full.
    """
    expected = start
    prev: str | None = GENESIS_HASH if start == 1 else None
    count = 0
    last_seq = min(start - 1, head_seq) if start > 1 else 0
    hashes: dict[int, str] = {}
    for row in rows:
        r = row._mapping
        count += 1
        seq = r["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            problems.append((expected, f"a record after {expected - 1} has a malformed sequence"))
            continue
        linked = True
        if seq > expected:
            missing = (
                f"record {expected}" if seq == expected + 1 else f"records {expected}-{seq - 1}"
            )
            problems.append((expected, f"{missing} missing from the chain (deleted)"))
            linked = False
        elif seq < expected:
            problems.append((seq, f"record {seq} appears more than once or out of order"))
            linked = False
        stored_hash = r["hash"]
        if linked and prev is not None and r["prev_hash"] != prev:
            problems.append(
                (
                    seq,
                    f"record {seq} does not link to record {seq - 1} (its prev_hash differs): "
                    "one of them was altered, or a record was inserted or removed",
                )
            )
        if trusted is None or trusted.get(seq) != stored_hash:
            problem = _record_problem(r)
            if problem is not None:
                problems.append((seq, f"record {seq} {problem}"))
        if seq in wanted and isinstance(stored_hash, str):
            hashes[seq] = stored_hash
        prev = stored_hash if isinstance(stored_hash, str) else ""
        expected = max(expected, seq + 1)
        last_seq = max(last_seq, seq)
    return _Walk(count, last_seq, prev if count and prev is not None else GENESIS_HASH, hashes)


def _record_problem(r: Mapping[Any, Any]) -> str | None:
    """Why a stored record does not match its own hash, or None when it does."""
    fields = ("ts", "actor", "action", "subject", "details", "prev_hash", "hash")
    if not all(isinstance(r[name], str) for name in fields):
        return "has a malformed field"
    if not _TS_RE.fullmatch(r["ts"]):
        return "has a malformed timestamp"
    try:
        _parse_details(r["details"])  # valid, and canonical: the text itself can be hashed
    except AuditError as exc:
        return f"was altered: {exc}"
    recomputed = _event_hash_of_text(
        r["seq"], r["ts"], r["actor"], r["action"], r["subject"], r["details"], r["prev_hash"]
    )
    if recomputed != r["hash"]:
        return "was altered: its hash does not match its contents"
    return None


def _raw_checkpoint(r: Mapping[Any, Any], problems: list[tuple[int, str]]) -> _RawCheckpoint | None:
    seq = r["seq"]
    fields = ("head_hash", "ts", "key_id", "signature")
    if (
        isinstance(seq, bool)
        or not isinstance(seq, int)
        or not all(isinstance(r[name], str) for name in fields)
    ):
        problems.append((seq if isinstance(seq, int) else 0, "a checkpoint row is malformed"))
        return None
    return _RawCheckpoint(seq, r["head_hash"], r["ts"], r["key_id"], r["signature"], "checkpoint")


def _chain_error(
    problems: list[tuple[int, str]], summary: str = "audit log does not verify"
) -> AuditChainError:
    ordered = sorted(problems, key=lambda p: p[0])
    first_seq, first = ordered[0]
    lines = [text for _, text in ordered[:MAX_PROBLEMS]]
    if len(ordered) > MAX_PROBLEMS:
        lines.append(f"... and {len(ordered) - MAX_PROBLEMS} more")
    return AuditChainError(
        f"{summary}: first bad record at sequence={first_seq}: {first}",
        lines,
        sequence=first_seq,
    )


def _event_from_row(r: Mapping[Any, Any]) -> AuditEvent:
    seq = r["seq"]
    try:
        details = _parse_details(r["details"])
        ts = _parse_ts(r["ts"])
    except (AuditError, ValueError, TypeError) as exc:
        raise AuditError(
            f"audit record {seq} is malformed ({exc}): run 'bastion log verify'"
        ) from exc
    return AuditEvent(
        seq=int(seq),
        ts=ts,
        actor=str(r["actor"]),
        action=str(r["action"]),
        subject=str(r["subject"]),
        details=MappingProxyType(details),
        prev_hash=str(r["prev_hash"]),
        hash=str(r["hash"]),
    )


def _checkpoint_from_row(r: Mapping[Any, Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(r["seq"]),
        head_hash=str(r["head_hash"]),
        ts=_parse_ts(str(r["ts"])),
        key_id=str(r["key_id"]),
        signature=base64.b64decode(str(r["signature"])),
    )


# --------------------------------------------------------------------------- anchor files


def _read_anchor(path: Path, required: bool) -> _RawCheckpoint | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_HEAD_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        if required:
            raise AuditError(f"cannot read anchor {path}: no such file") from exc
        return None
    except OSError as exc:
        raise AuditError(f"cannot read anchor {path}: {exc.strerror}") from exc
    return _parse_anchor(data, str(path))


def _parse_anchor(data: bytes, source: str) -> _RawCheckpoint:
    """Parse an anchor file. A damaged one is a verification failure, not a read error."""
    document: Any = None
    if len(data) <= _MAX_HEAD_FILE_BYTES:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            document = None
    fields = ("head_hash", "ts", "key_id", "signature")
    if (
        not isinstance(document, dict)
        or document.get("format") != HEAD_FORMAT
        or isinstance(document.get("seq"), bool)
        or not isinstance(document.get("seq"), int)
        or document["seq"] < 1
        or not all(isinstance(document.get(name), str) for name in fields)
        or not _HASH_RE.fullmatch(document["head_hash"])
    ):
        raise AuditChainError(
            f"audit log does not verify: the anchor {source} is damaged",
            [f"{source} is not a valid audit head file"],
        )
    return _RawCheckpoint(
        document["seq"],
        document["head_hash"],
        document["ts"],
        document["key_id"],
        document["signature"],
        source,
    )


@dataclass(frozen=True, slots=True)
class _FileBackup:
    path: Path
    previous: bytes | None

    def restore(self) -> None:
        try:
            if self.previous is None:
                self.path.unlink(missing_ok=True)
            else:
                _atomic_write(self.path, self.previous)
        except (OSError, AuditError):
            logger.warning("could not restore %s after a failed checkpoint", self.path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AuditError(f"cannot write {path}: {exc.strerror}") from exc
