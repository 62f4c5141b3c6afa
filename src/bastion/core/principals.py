"""Principals, roles and API keys (stable API).

Who may do what is one declarative table, :data:`PERMISSIONS`: a role maps to the set of
:class:`Permission` it holds, nothing is implied, and a role or permission not in the table is
refused (fail closed). The roles follow the classic split of an ML platform, each with the least
privilege its job needs:

==================  ==========================================================================
``data-scientist``  register and evaluate models; never promote, approve, deploy or read secrets
``ml-engineer``     promote to staging and approve a version for production
``sre``             promote to production, archive, operate the gateway (metrics)
``admin``           manage API keys and read the audit log; no model rights
``client``          call inference, nothing else
==================  ==========================================================================

An API key is ``bst_<key id>_<secret>``. Only the SHA-256 of the whole key (under a domain tag)
is stored; it is compared in constant time, and an unknown key id costs the same comparison as
a known one. A key can be limited to some models, can expire, can be revoked, and can be rotated:
the old secret then stays valid for a grace period so that clients can roll over (a second
rotation ends the first one's grace: only the latest previous secret is kept).

:class:`KeyStore` keeps the keys in the workspace database and writes every decision to the
audit log: ``keys.create``, ``keys.revoke``, ``keys.rotate``, and each refusal of one of them
as ``keys.create.refused`` (and so on) with the reason. A key whose creation or rotation cannot
be audited is undone. :class:`KeyTable` is an in-memory snapshot of the keys for the gateway,
which authenticates each request without a database round trip.

Secrets appear in exactly one place: the :class:`CreatedKey` returned by
:meth:`KeyStore.create` and :meth:`KeyStore.rotate` (and not in its ``repr``). Error messages
and audit records never echo anything that looks like a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bastion.core.storage import metadata
from bastion.core.timestamps import format_utc, parse_utc
from bastion.errors import (
    AuditError,
    AuthenticationError,
    AuthorizationError,
    BastionError,
    StorageError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from bastion.core.audit import AuditLog
    from bastion.core.storage import Database

__all__ = [
    "KEY_PREFIX",
    "MODEL_NAME_PATTERN",
    "PERMISSIONS",
    "ApiKey",
    "CreatedKey",
    "KeyStore",
    "KeyTable",
    "Permission",
    "Principal",
    "Role",
    "api_keys",
    "check_model_name",
    "hash_secret",
    "parse_duration",
]

logger = logging.getLogger(__name__)


class Role(StrEnum):
    """The roles a principal can hold."""

    DATA_SCIENTIST = "data-scientist"
    ML_ENGINEER = "ml-engineer"
    SRE = "sre"
    ADMIN = "admin"
    CLIENT = "client"


class Permission(StrEnum):
    """Everything a principal can be allowed to do."""

    MODEL_READ = "model.read"
    """List and show registered models and versions."""
    MODEL_REGISTER = "model.register"
    """Add a model version to the registry."""
    MODEL_EVALUATE = "model.evaluate"
    """Call inference on any registered version, whatever its stage (assessments)."""
    MODEL_PULL = "model.pull"
    """Fetch a registered version's files (verified first)."""
    MODEL_PROMOTE_STAGING = "model.promote.staging"
    """Move a version to staging."""
    MODEL_APPROVE = "model.approve"
    """Approve a version for production (never one's own registration)."""
    MODEL_PROMOTE_PRODUCTION = "model.promote.production"
    """Move an approved version to production."""
    MODEL_ARCHIVE = "model.archive"
    """Retire a version."""
    MODEL_INFER = "model.infer"
    """Call inference on a model's production version."""
    GATEWAY_OPERATE = "gateway.operate"
    """Read the gateway's metrics and operational state."""
    KEYS_MANAGE = "keys.manage"
    """Create, list, rotate and revoke API keys."""
    AUDIT_READ = "audit.read"
    """Read the audit log."""


_P = Permission

#: The permission matrix: every right of every role, spelled out. Nothing is inherited.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.DATA_SCIENTIST: frozenset(
            {_P.MODEL_READ, _P.MODEL_REGISTER, _P.MODEL_EVALUATE, _P.MODEL_PULL, _P.MODEL_INFER}
        ),
        Role.ML_ENGINEER: frozenset(
            {
                _P.MODEL_READ,
                _P.MODEL_REGISTER,
                _P.MODEL_EVALUATE,
                _P.MODEL_PULL,
                _P.MODEL_PROMOTE_STAGING,
                _P.MODEL_APPROVE,
                _P.MODEL_INFER,
            }
        ),
        Role.SRE: frozenset(
            {
                _P.MODEL_READ,
                _P.MODEL_PULL,
                _P.MODEL_PROMOTE_STAGING,
                _P.MODEL_PROMOTE_PRODUCTION,
                _P.MODEL_ARCHIVE,
                _P.MODEL_INFER,
                _P.GATEWAY_OPERATE,
            }
        ),
        Role.ADMIN: frozenset({_P.KEYS_MANAGE, _P.AUDIT_READ, _P.MODEL_READ, _P.GATEWAY_OPERATE}),
        Role.CLIENT: frozenset({_P.MODEL_INFER}),
    }
)

KEY_PREFIX = "bst_"
_KEY_ID_BYTES = 6  # 12 hex characters: unique enough to look up, not a secret
_SECRET_BYTES = 32
_HASH_DOMAIN = b"bastion-api-key-v1\x00"
_KEY_RE = re.compile(r"bst_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_MAX_KEY_CHARS = 128
MODEL_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,99}"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_MAX_MODELS = 100
_KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
# [0-9], not \d: \d also matches other scripts' digits, which int() accepts.
_DURATION_RE = re.compile(r"([0-9]{1,6})([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: A duration longer than this is refused: "never expires" is spelled by giving none.
MAX_DURATION = timedelta(days=3660)
_MAX_ACTOR_CHARS = 200  # the audit log's limit, and the width of created_by / revoked_by
_UNSAFE_TEXT_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Never equal to a hex SHA-256, so nothing compares equal to it; same length, same cost.
_NO_HASH = "-" * 64
# One advisory lock for every writer of api_keys on PostgreSQL (SQLite: BEGIN IMMEDIATE).
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"bastion.api_keys.write").digest()[:8], "big") >> 1

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, index=True),
    sa.Column("role", sa.String(32), nullable=False),
    # JSON list of model names, or the JSON null for every model.
    sa.Column("models", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    # After a rotation: the previous secret's hash and until when it is still accepted.
    sa.Column("previous_hash", sa.String(64), nullable=True),
    sa.Column("previous_valid_until", sa.String(40), nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=True),
    sa.Column("rotated_at", sa.String(40), nullable=True),
    sa.Column("revoked_at", sa.String(40), nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
)


def _shown(value: object) -> str:
    """``value`` as an error message may quote it: short, escaped, never a key's secret."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    if KEY_PREFIX in value:
        return "<an API key, not repeated here>"
    if len(value) > 40:
        return f"{value[:32]!r}... ({len(value)} characters)"
    return repr(value)  # repr escapes control, bidirectional and unpaired surrogate characters


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (lower case, digits, ``._-``; ≤100).

    Raises:
        BastionError: it is not.
    """
    if not isinstance(name, str) or not _MODEL_NAME_RE.fullmatch(name):
        raise BastionError(
            f"invalid model name {_shown(name)}: use lower-case letters, digits, '.', '_' and "
            "'-' (at most 100, starting with a letter or digit)"
        )
    return name


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` (a positive whole number and a unit).

    Raises:
        BastionError: the text is not such a duration, or it is longer than ten years.
    """
    match = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise BastionError(
            f"invalid duration {_shown(text)}: use a positive number and s, m, h, d or w (e.g. 30d)"
        )
    value = timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])
    if value > MAX_DURATION:
        raise BastionError(f"duration {_shown(text)} is longer than ten years")
    return value


def hash_secret(secret: str) -> str:
    """The stored form of an API key: SHA-256 under a domain tag, hex.

    A fast hash is enough: the secret has 256 random bits, so there is nothing to guess.
    """
    return hashlib.sha256(_HASH_DOMAIN + secret.encode("utf-8", "surrogatepass")).hexdigest()


def _aware(moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise BastionError("times must be timezone-aware datetimes (datetime.now(UTC))")
    return moment


def _ts(moment: datetime) -> str:
    return format_utc(_aware(moment))


def _parse_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_utc(text)


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else _aware(now)


def _check_actor(actor: object) -> str:
    if (
        not isinstance(actor, str)
        or not actor
        or len(actor) > _MAX_ACTOR_CHARS
        or _UNSAFE_TEXT_RE.search(actor)
    ):
        raise BastionError(
            f"invalid actor {_shown(actor)}: 1 to {_MAX_ACTOR_CHARS} characters, no control "
            "characters"
        )
    return actor


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the key it used, its role and the models it may touch.

    Attributes:
        key_id: the public id of the key (safe to log).
        name: the key's name, which names the principal in the audit log.
        role: its role.
        models: the models it is limited to; None for every model.
        expires_at: when its key expires, if ever.
    """

    key_id: str
    name: str
    role: Role
    models: frozenset[str] | None = None
    expires_at: datetime | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``name (key key_id, role)``."""
        return f"{self.name} (key {self.key_id}, {self.role})"

    def allows(self, permission: Permission, model: str | None = None) -> bool:
        """Whether the role holds ``permission`` and, for a model, the scope includes it."""
        if permission not in PERMISSIONS.get(self.role, frozenset()):
            return False
        return model is None or self.models is None or model in self.models

    def require(self, permission: Permission, model: str | None = None) -> None:
        """Return if :meth:`allows`; otherwise raise.

        Raises:
            AuthorizationError: naming the role and the permission it lacks.
        """
        if permission not in PERMISSIONS.get(self.role, frozenset()):
            raise AuthorizationError(
                f"role {self.role} does not have permission {permission}",
                reason=f"{self.actor}: role lacks {permission}",
            )
        if model is not None and self.models is not None and model not in self.models:
            raise AuthorizationError(
                f"key {self.name!r} is not allowed to use model {_shown(model)}",
                reason=f"{self.actor}: model {_shown(model)} out of scope",
            )


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key, without its secret."""

    key_id: str
    name: str
    role: Role
    models: tuple[str, ...] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    rotated_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    previous_valid_until: datetime | None

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        moment = _now(now)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and moment >= self.expires_at:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        """The principal this key authenticates."""
        return Principal(
            key_id=self.key_id,
            name=self.name,
            role=self.role,
            models=None if self.models is None else frozenset(self.models),
            expires_at=self.expires_at,
        )

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready view (never the secret or its hash)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else _ts(value)

        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": str(self.role),
            "models": None if self.models is None else list(self.models),
            "status": self.status(now),
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": iso(self.expires_at),
            "rotated_at": iso(self.rotated_at),
            "previous_valid_until": iso(self.previous_valid_until),
            "revoked_at": iso(self.revoked_at),
            "revoked_by": self.revoked_by,
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created or rotated, with its secret: show it once, never store it.

    The secret is left out of ``repr`` so that a log line or a traceback cannot carry it.
    """

    key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    key: ApiKey
    secret_hash: str = field(repr=False)
    previous_hash: str | None = field(repr=False)


def _record(row: Mapping[Any, Any]) -> _KeyRecord:
    """A stored row as a record.

    Raises:
        StorageError: the row is damaged (an unknown role, a bad model list or time).
    """
    try:
        models = json.loads(row["models"])
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise TypeError("models is not a list of names")  # noqa: TRY301 - one handler below
        key = ApiKey(
            key_id=row["key_id"],
            name=row["name"],
            role=Role(row["role"]),
            models=None if models is None else tuple(models),
            created_at=_parse_ts(row["created_at"]) or datetime.min.replace(tzinfo=UTC),
            created_by=row["created_by"],
            expires_at=_parse_ts(row["expires_at"]),
            rotated_at=_parse_ts(row["rotated_at"]),
            revoked_at=_parse_ts(row["revoked_at"]),
            revoked_by=row["revoked_by"],
            previous_valid_until=_parse_ts(row["previous_valid_until"]),
        )
    except (TypeError, ValueError) as exc:
        raise StorageError(f"API key {_shown(row['key_id'])} is stored damaged: {exc}") from exc
    return _KeyRecord(key, row["secret_hash"], row["previous_hash"])


def _readable(rows: Iterable[Mapping[Any, Any]]) -> Iterator[_KeyRecord]:
    """The records of ``rows``, skipping (and logging) damaged ones: they cannot sign in."""
    for row in rows:
        try:
            yield _record(row)
        except StorageError as exc:
            logger.warning("%s; it is refused until repaired", exc)


class KeyTable:
    """An in-memory snapshot of the API keys, for authenticating without a database trip.

    Build one with :meth:`KeyStore.snapshot`; the gateway refreshes it every few seconds, so a
    revocation reaches every replica within that interval. A table never changes once built:
    threads share one freely, and a refresh replaces the object.
    """

    __slots__ = ("_records",)

    def __init__(self, records: Iterable[_KeyRecord]) -> None:
        self._records: Mapping[str, _KeyRecord] = MappingProxyType(
            {r.key.key_id: r for r in records}
        )

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"KeyTable({len(self._records)} keys)"

    def authenticate(self, secret: str | None, *, now: datetime | None = None) -> Principal:
        """Return the principal of ``secret``.

        Raises:
            AuthenticationError: the key is missing, malformed, unknown, revoked or expired.
                The message is the same in every case but a missing key; ``reason`` says
                which, for the audit log (never the secret).
        """
        moment = _now(now)
        if not secret:
            raise AuthenticationError("missing API key", reason="no key given")
        if not isinstance(secret, str):
            raise AuthenticationError("invalid API key", reason="key is not text")
        if len(secret) > _MAX_KEY_CHARS:
            raise AuthenticationError("invalid API key", reason="key too long")
        match = _KEY_RE.fullmatch(secret)
        record = self._records.get(match.group(1)) if match else None
        given = hash_secret(secret)
        # Both comparisons always run, against a value that no secret hashes to when there is
        # nothing to compare with: the time taken says nothing about which matched.
        current = record.secret_hash if record is not None else _NO_HASH
        previous = record.previous_hash if record is not None else None
        is_current = hmac.compare_digest(given, current)
        is_previous = hmac.compare_digest(given, previous or _NO_HASH) and previous is not None
        if record is None or not (is_current or is_previous):
            if match is None:
                reason = "malformed key"
            elif record is None:
                reason = f"unknown key {match.group(1)}"
            else:
                reason = f"wrong secret for key {record.key.key_id}"
            raise AuthenticationError("invalid API key", reason=reason)
        key = record.key
        if key.revoked_at is not None:
            raise AuthenticationError("invalid API key", reason=f"revoked key {key.key_id}")
        if key.expires_at is not None and moment >= key.expires_at:
            raise AuthenticationError("invalid API key", reason=f"expired key {key.key_id}")
        if not is_current and (
            key.previous_valid_until is None or moment >= key.previous_valid_until
        ):
            raise AuthenticationError(
                "invalid API key", reason=f"rotated-out secret of key {key.key_id}"
            )
        return key.principal()


class KeyStore:
    """The workspace's API keys.

    Every method that changes a key takes the key table's write lock for the whole
    read-check-write (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so concurrent
    callers, in this process or in others, see each other's changes: two keys cannot be
    created under one active name, and a revocation cannot be overtaken by a rotation.

    Args:
        database: a migrated database.
        audit: where each decision is recorded; None records nothing (tests of the table).
        token_bytes: the source of randomness (``secrets.token_bytes``).
    """

    def __init__(
        self,
        database: Database,
        audit: AuditLog | None,
        *,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._database = database
        self._audit = audit
        self._token_bytes = token_bytes

    # ------------------------------------------------------------------ helpers

    def _new_secret(self, key_id: str) -> str:
        body = base64.urlsafe_b64encode(self._token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
        return f"{KEY_PREFIX}{key_id}_{body}"

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._database.begin(exclusive=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn

    def _log(self, action: str, subject: str, details: dict[str, Any], actor: str) -> None:
        if self._audit is not None:
            self._audit.append(action, subject, details, actor=actor)

    @contextmanager
    def _refusals(self, operation: str, actor: object, subject: str = "keys") -> Iterator[None]:
        """Record a deliberate refusal (not a storage failure) as ``keys.<op>.refused``."""
        try:
            yield
        except (StorageError, AuditError):
            raise
        except BastionError as exc:
            if self._audit is not None:
                who = actor if isinstance(actor, str) and actor else None
                try:
                    _check_actor(who)
                except BastionError:
                    who = None  # the log's own actor: an invalid one cannot be recorded
                try:
                    self._audit.append(
                        f"keys.{operation}.refused", subject, {"reason": str(exc)}, actor=who
                    )
                except BastionError as audit_exc:
                    # Nothing was changed, so the refusal stands; say that it went unrecorded.
                    logger.warning("could not audit a refused keys.%s: %s", operation, audit_exc)
            raise

    @staticmethod
    def _active_by_name(conn: Connection, name: str, moment: datetime) -> _KeyRecord | None:
        rows = conn.execute(
            sa.select(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.created_at, api_keys.c.key_id)
        ).mappings()
        for record in _readable(rows):
            if record.key.status(moment) == "active":
                return record
        return None

    @classmethod
    def _find_in(cls, conn: Connection, ref: str, moment: datetime) -> _KeyRecord:
        """The key with id ``ref``, else the active key named ``ref``."""
        if not isinstance(ref, str) or not ref:
            raise BastionError("give a key id or a key name")
        if _KEY_RE.fullmatch(ref) or ref.startswith(KEY_PREFIX):
            # Never look a secret up, nor repeat it: it would land in the audit log.
            raise BastionError("give the key's id or name, not the key itself")
        if _KEY_ID_RE.fullmatch(ref):
            found = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == ref)).mappings()
            row = found.first()
            if row is not None:
                return _record(row)
        elif _KEY_NAME_RE.fullmatch(ref):
            record = cls._active_by_name(conn, ref, moment)
            if record is not None:
                return record
        raise BastionError(f"no active key with id or name {_shown(ref)}")

    def _find(self, ref: str, now: datetime | None = None) -> _KeyRecord:
        moment = _now(now)
        with self._database.begin() as conn:
            return self._find_in(conn, ref, moment)

    # ------------------------------------------------------------------ decisions

    def create(
        self,
        name: str,
        role: Role | str,
        *,
        actor: str,
        expires_in: timedelta | None = None,
        models: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> CreatedKey:
        """Create a key and return it with its secret (shown once; only a hash is kept).

        Raises:
            BastionError: the name, role, actor, duration or a model name is invalid, or an
                active key already has that name (each refusal is audited).
            AuditError: the creation could not be audited (the key is then removed again).
        """
        with self._refusals("create", actor):
            return self._create(name, role, actor, expires_in, models, now)

    def _create(
        self,
        name: str,
        role: Role | str,
        actor: str,
        expires_in: timedelta | None,
        models: Iterable[str] | None,
        now: datetime | None,
    ) -> CreatedKey:
        _check_actor(actor)
        if not isinstance(name, str) or not _KEY_NAME_RE.fullmatch(name):
            raise BastionError(
                f"invalid key name {_shown(name)}: letters, digits and '._@-', at most 100, "
                "starting with a letter or digit"
            )
        if _KEY_ID_RE.fullmatch(name) or name.startswith(KEY_PREFIX):
            # A name must never be mistaken for a key id or a key by `revoke`/`rotate`.
            raise BastionError(f"invalid key name {_shown(name)}: it looks like a key id or a key")
        try:
            role = Role(role)
        except ValueError:
            raise BastionError(
                f"unknown role {_shown(role)}: choose from {', '.join(r.value for r in Role)}"
            ) from None
        scope = None if models is None else _scope(models)
        if expires_in is not None and (
            not isinstance(expires_in, timedelta)
            or expires_in <= timedelta(0)
            or expires_in > MAX_DURATION
        ):
            raise BastionError("a key's lifetime must be positive and at most ten years")
        moment = _now(now)
        key_id = self._token_bytes(_KEY_ID_BYTES).hex()
        secret = self._new_secret(key_id)
        secret_hash = hash_secret(secret)
        expires_at = None if expires_in is None else moment + expires_in
        with self._writing() as conn:
            if self._active_by_name(conn, name, moment) is not None:
                raise BastionError(f"an active key is already named {name!r}")
            try:
                conn.execute(
                    api_keys.insert().values(
                        key_id=key_id,
                        name=name,
                        role=role.value,
                        models=json.dumps(None if scope is None else list(scope)),
                        secret_hash=secret_hash,
                        created_at=_ts(moment),
                        created_by=actor,
                        expires_at=None if expires_at is None else _ts(expires_at),
                    )
                )
            except IntegrityError as exc:  # pragma: no cover - a 48-bit id collision
                raise BastionError("key id collision: try again") from exc
        details = {
            "name": name,
            "role": role.value,
            "models": None if scope is None else list(scope),
            "expires_at": None if expires_at is None else _ts(expires_at),
        }
        try:
            self._log("keys.create", f"key:{key_id}", details, actor)
        except BastionError as exc:
            with self._writing() as conn:
                conn.execute(
                    api_keys.delete().where(
                        api_keys.c.key_id == key_id, api_keys.c.secret_hash == secret_hash
                    )
                )
            raise AuditError(f"key {name!r} was not created: {exc}") from exc
        return CreatedKey(self.get(key_id), secret)

    def get(self, ref: str, *, now: datetime | None = None) -> ApiKey:
        """The key with id ``ref``, or the key named ``ref`` that is active at ``now``.

        Raises:
            BastionError: there is none (or ``ref`` is a whole key: give its id).
        """
        return self._find(ref, now).key

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Every key, oldest first; revoked ones only when asked.

        Raises:
            StorageError: the database cannot be read, or a stored key is damaged.
        """
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._database.begin() as conn:
            return [_record(r).key for r in conn.execute(query).mappings()]

    def revoke(self, ref: str, *, actor: str, now: datetime | None = None) -> ApiKey:
        """Revoke a key at once (both its current and any rotated-out secret).

        Raises:
            BastionError: there is no such key, or it is already revoked (each refusal is
                audited).
            AuditError: the revocation could not be audited; the key stays revoked.
        """
        with self._refusals("revoke", actor):
            _check_actor(actor)
            moment = _now(now)
            with self._writing() as conn:
                record = self._find_in(conn, ref, moment)
                key_id = record.key.key_id
                if record.key.revoked_at is not None:
                    raise BastionError(f"key {key_id} is already revoked")
                done = conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=_ts(moment), revoked_by=actor)
                )
                if done.rowcount != 1:  # pragma: no cover - the lock rules it out
                    raise BastionError(f"key {key_id} is already revoked")
        details = {"name": record.key.name, "role": record.key.role.value}
        try:
            self._log("keys.revoke", f"key:{key_id}", details, actor)
        except BastionError as exc:
            # Failing closed: a revoked key stays revoked even when the log cannot say so.
            raise AuditError(f"key {key_id} was revoked but not audited: {exc}") from exc
        return self.get(key_id)

    def rotate(
        self,
        ref: str,
        *,
        actor: str,
        grace: timedelta = timedelta(hours=24),
        now: datetime | None = None,
    ) -> CreatedKey:
        """Give a key a new secret; the old one stays valid for ``grace`` (0: not at all).

        A secret rotated out earlier and still in its grace period stops working at once:
        only the latest previous secret is kept.

        Raises:
            BastionError: there is no such active key, or the grace period is negative or
                longer than ten years (each refusal is audited).
            AuditError: the rotation could not be audited (the old secret is then restored).
        """
        with self._refusals("rotate", actor):
            _check_actor(actor)
            if not isinstance(grace, timedelta) or not timedelta(0) <= grace <= MAX_DURATION:
                raise BastionError("the grace period must be between zero and ten years")
            moment = _now(now)
            with self._writing() as conn:
                record = self._find_in(conn, ref, moment)
                key = record.key
                if key.status(moment) != "active":
                    raise BastionError(f"key {key.key_id} is {key.status(moment)}")
                secret = self._new_secret(key.key_id)
                new_hash = hash_secret(secret)
                kept = grace > timedelta(0)
                valid_until = _ts(moment + grace) if kept else None
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key.key_id)
                    .values(
                        secret_hash=new_hash,
                        previous_hash=record.secret_hash if kept else None,
                        previous_valid_until=valid_until,
                        rotated_at=_ts(moment),
                    )
                )
        details = {
            "name": key.name,
            "grace_seconds": int(grace.total_seconds()),
            "previous_valid_until": valid_until,
        }
        try:
            self._log("keys.rotate", f"key:{key.key_id}", details, actor)
        except BastionError as exc:
            with self._writing() as conn:
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key.key_id, api_keys.c.secret_hash == new_hash)
                    .values(
                        secret_hash=record.secret_hash,
                        previous_hash=record.previous_hash,
                        previous_valid_until=(
                            None
                            if key.previous_valid_until is None
                            else _ts(key.previous_valid_until)
                        ),
                        rotated_at=None if key.rotated_at is None else _ts(key.rotated_at),
                    )
                )
            raise AuditError(f"key {key.key_id} was not rotated: {exc}") from exc
        return CreatedKey(self.get(key.key_id), secret)

    # ------------------------------------------------------------------ authentication

    def snapshot(self) -> KeyTable:
        """Every key as a :class:`KeyTable` (revoked ones included: they must fail).

        A damaged row is left out (so it cannot sign in) and logged, rather than stopping
        every other key from working.

        Raises:
            bastion.errors.StorageError: the database cannot be read.
        """
        with self._database.begin() as conn:
            rows = list(conn.execute(sa.select(api_keys)).mappings())
        return KeyTable(_readable(rows))

    def authenticate(self, secret: str | None, *, now: datetime | None = None) -> Principal:
        """Authenticate ``secret`` against the database (see :meth:`KeyTable.authenticate`).

        Raises:
            AuthenticationError: the key is missing, unknown, revoked or expired.
            StorageError: the database cannot be read.
        """
        match = (
            _KEY_RE.fullmatch(secret)
            if isinstance(secret, str) and 0 < len(secret) <= _MAX_KEY_CHARS
            else None
        )
        if match is None:
            return KeyTable(()).authenticate(secret, now=now)
        with self._database.begin() as conn:
            rows = list(
                conn.execute(
                    sa.select(api_keys).where(api_keys.c.key_id == match.group(1))
                ).mappings()
            )
        return KeyTable(_readable(rows)).authenticate(secret, now=now)


def _scope(models: Iterable[str]) -> tuple[str, ...]:
    """A model list as stored: checked, deduplicated, sorted, not empty, at most 100."""
    if isinstance(models, str | bytes):
        raise BastionError("models must be a list of model names, not one string")
    names: set[str] = set()
    for index, name in enumerate(models):
        if index >= _MAX_MODELS:
            raise BastionError(f"a key can be limited to at most {_MAX_MODELS} models")
        names.add(check_model_name(name))
    if not names:
        raise BastionError("an empty model list would allow no model: omit it for all")
    return tuple(sorted(names))
