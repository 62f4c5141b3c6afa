"""The model registry: versions, stages, approvals and verified pulls (stable API).

A model version enters the registry only after its files pass ``bastion scan`` and verify
against their signature, and leaves it (``pull``, ``checkout``) only after its stored files
are re-hashed against the recorded digests and re-verified against the recorded signature.

Stages and who may move a version (the roles are :data:`bastion.core.principals.PERMISSIONS`)::

    registered --promote (model.promote.staging)--> staging
    staging --promote (model.promote.production, >= 1 approval)--> production
    registered | staging | production --promote (model.archive)--> archived

Separation of duties (NIST SP 800-53 AC-5): ``approve`` needs ``model.approve`` and is refused
to the principal who registered the version (same key name *or* same key id); a version goes
to production only with at least one such approval, and not by its registrant. Promoting a
version to production archives the model's previous production version in the same
transaction, so a model has at most one production version. Archived is final.

Every change, and every refusal of one, is appended to the audit log (``registry.add``,
``registry.allow_pickle``, ``registry.approve``, ``registry.promote``, ``registry.archive``,
``registry.pull``, and ``registry.<verb>.refused`` for each refusal) with the acting
principal as actor; a change that cannot be audited is undone and the
:class:`~bastion.errors.AuditError` raised. Read-modify-write transactions hold the database's
write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so several processes may
share one registry.

Limits of what this proves: someone able to rewrite both the database and the store can
register anything whose signature verifies under a key the registry trusts: the workspace key,
or a key given at registration (kept in the store under its key id, which the record names).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bastion.artifacts.loading import detect_format
from bastion.artifacts.verification import (
    default_signature_path,
    read_signature,
    verified_statement,
    verify,
)
from bastion.core.keys import PublicKey, key_id
from bastion.core.principals import Permission, Principal, check_model_name
from bastion.core.registry_schema import registry_approvals, registry_models, registry_versions
from bastion.core.timestamps import format_utc, parse_utc
from bastion.errors import (
    AccessError,
    AuditError,
    AuthorizationError,
    BastionError,
    RegistryError,
    SignatureError,
    VerificationError,
)
from bastion.registry.store import (
    ArtifactStore,
    StoredFile,
    check_digest,
    digest_of_files,
    remove_tree,
    verify_file,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from bastion.core.audit import AuditLog
    from bastion.core.workspace import Workspace

__all__ = [
    "MAX_COMMENT_CHARS",
    "VERSION_PATTERN",
    "Approval",
    "ModelVersion",
    "Registry",
    "Stage",
    "check_version",
]

logger = logging.getLogger(__name__)

#: A version: letters, digits and ``._+-``, starting with a letter or digit, at most 64.
VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
_VERSION_RE = re.compile(VERSION_PATTERN)
#: Names that select a version instead of naming one.
LATEST = "latest"
#: Longest approval comment.
MAX_COMMENT_CHARS = 2000
# Control and bidirectional-override characters (CVE-2021-42574); newlines and tabs are fine.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The actor string of a principal (Principal.actor): "name (key key_id, role)".
_ACTOR_RE = re.compile(r"(?P<name>\S+) \(key (?P<key_id>[0-9a-f]+), (?P<role>[a-z-]+)\)")
# One advisory lock for every registry writer on PostgreSQL (SQLite: BEGIN IMMEDIATE).
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"bastion.registry.write").digest()[:8], "big") >> 1


class Stage(StrEnum):
    """Where a model version is in its life."""

    REGISTERED = "registered"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


#: Legal moves, and the permission each target needs.
_TRANSITIONS: Mapping[Stage, frozenset[Stage]] = {
    Stage.REGISTERED: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset(),
}
_TARGET_PERMISSION: Mapping[Stage, Permission] = {
    Stage.STAGING: Permission.MODEL_PROMOTE_STAGING,
    Stage.PRODUCTION: Permission.MODEL_PROMOTE_PRODUCTION,
    Stage.ARCHIVED: Permission.MODEL_ARCHIVE,
}


def check_version(version: object) -> str:
    """Return ``version`` if it is a valid version string (see :data:`VERSION_PATTERN`).

    Raises:
        RegistryError: it is not, or it contains ``..`` or is the reserved word ``latest``.
    """
    if (
        not isinstance(version, str)
        or not _VERSION_RE.fullmatch(version)
        or ".." in version
        or version == LATEST
    ):
        raise RegistryError(
            f"invalid version {_shown(version)}: use letters, digits, '.', '_', '+' and '-' "
            "(at most 64, starting with a letter or digit; not 'latest')"
        )
    return version


def _check_name(name: object) -> str:
    try:
        return check_model_name(name)  # type: ignore[arg-type]
    except RegistryError:
        raise
    except BastionError as exc:
        raise RegistryError(str(exc)) from exc


def _shown(value: object) -> str:
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    if len(value) > 40:
        return f"{value[:32]!r}... ({len(value)} characters)"
    return repr(value)


def _ts(moment: datetime) -> str:
    try:
        return format_utc(moment)
    except ValueError as exc:
        raise RegistryError("times must be timezone-aware") from exc


def _parse_ts(text: str) -> datetime:
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise VerificationError(f"damaged registry record: bad time {text!r}") from exc


def _identity(actor: str) -> tuple[str, str] | None:
    """The key name and key id in a principal's actor string, None for any other actor."""
    match = _ACTOR_RE.fullmatch(actor)
    return (match["name"], match["key_id"]) if match else None


def _same_principal(actor: str, principal: Principal) -> bool:
    identity = _identity(actor)
    if identity is None:
        return actor == principal.actor
    return identity[0] == principal.name or identity[1] == principal.key_id


def _same_actor(a: str, b: str) -> bool:
    first, second = _identity(a), _identity(b)
    if first is None or second is None:
        return a == b
    return first[0] == second[0] or first[1] == second[1]


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval of a version for production.

    Attributes:
        approver: the approving principal (its audit-log actor string).
        role: its role when it approved.
        approved_at: when.
        comment: what it said.
    """

    approver: str
    role: str
    approved_at: datetime
    comment: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "approver": self.approver,
            "role": self.role,
            "approved_at": _ts(self.approved_at),
            "comment": self.comment,
        }


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered model version.

    Attributes:
        name: the model's name.
        version: the version string.
        digest: ``sha256:`` over the version's files (see
            :func:`bastion.registry.store.digest_of_files`).
        format: how its weights are stored (:class:`bastion.artifacts.loading.ModelFormat`).
        stage: where it is in its life.
        files: its files in the store.
        registered_by: the registering principal (actor string).
        registered_at: when it was registered.
        signer_key_id: the key its signature verified with.
        approvals: approvals for production, oldest first.
        allow_pickle: the model's opt-in to pickle-based loading.
        stage_changed_at: when the stage last changed (registration for a new version).
        stage_changed_by: who changed it.
    """

    name: str
    version: str
    digest: str
    format: str
    stage: Stage
    files: tuple[StoredFile, ...]
    registered_by: str
    registered_at: datetime
    signer_key_id: str
    approvals: tuple[Approval, ...]
    allow_pickle: bool
    stage_changed_at: datetime
    stage_changed_by: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "format": self.format,
            "stage": str(self.stage),
            "files": [f.to_dict() for f in self.files],
            "bytes": sum(f.size for f in self.files),
            "registered_by": self.registered_by,
            "registered_at": _ts(self.registered_at),
            "signer_key_id": self.signer_key_id,
            "approvals": [a.to_dict() for a in self.approvals],
            "allow_pickle": self.allow_pickle,
            "stage_changed_at": _ts(self.stage_changed_at),
            "stage_changed_by": self.stage_changed_by,
        }


@dataclass(frozen=True, slots=True)
class _Record:
    """A version with what re-verifying it needs."""

    version: ModelVersion
    bundle: bytes


def _files_from_json(text: str) -> tuple[StoredFile, ...]:
    try:
        items = json.loads(text)
        files = tuple(
            StoredFile(str(i["path"]), check_digest(i["digest"]), int(i["size"])) for i in items
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise VerificationError("damaged registry record: unreadable file list") from exc
    if not files or any(f.size < 0 for f in files):
        raise VerificationError("damaged registry record: bad file list")
    return files


class Registry:
    """The workspace's model registry (see the module docstring).

    Args:
        workspace: the workspace: its database, audit log, store and public key.
    """

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._store = ArtifactStore(workspace.store_path)
        self._audit_log: AuditLog | None = None

    @property
    def store(self) -> ArtifactStore:
        """The content-addressed store the files are kept in."""
        return self._store

    # -- plumbing ------------------------------------------------------------------------

    def _audit(self) -> AuditLog:
        if self._audit_log is None:
            self._audit_log = self._workspace.audit()
        return self._audit_log

    def _log(self, records: Sequence[tuple[str, str, dict[str, Any]]], actor: str) -> None:
        from bastion.core.audit import AuditRecord

        self._audit().append_many(
            [
                AuditRecord(action, subject, details, actor=actor)
                for action, subject, details in records
            ]
        )

    def _log_or_undo(
        self,
        records: Sequence[tuple[str, str, dict[str, Any]]],
        actor: str,
        undo: Callable[[Connection], None],
    ) -> None:
        """Audit a change just committed; a change that cannot be audited is undone."""
        try:
            self._log(records, actor)
        except AuditError:
            try:
                with self._writing() as conn:
                    undo(conn)
            except BastionError:
                logger.exception("could not undo a registry change that was not audited")
            raise

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._workspace.database.begin(exclusive=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn

    @contextmanager
    def _refusals(self, action: str, name: object, version: object, actor: str) -> Iterator[None]:
        """Audit a refusal (``registry.<action>.refused``) of the block, then re-raise it."""
        try:
            yield
        except (RegistryError, VerificationError, AccessError) as exc:
            reason = exc.reason if isinstance(exc, AccessError) else str(exc)
            details: dict[str, Any] = {
                "error": type(exc).__name__,
                "reason": reason[:1000],
            }
            if isinstance(exc, VerificationError) and exc.problems:
                details["problems"] = [p[:300] for p in exc.problems[:50]]
            valid = isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", name)
            subject = f"model:{name}" if valid else "registry"
            if not valid:
                details["name"] = _shown(name)
            if version is not None:
                details["version"] = _shown(version)
            try:
                self._log([(f"registry.{action}.refused", subject, details)], actor)
            except AuditError:
                logger.exception("could not audit a refused registry %s", action)
            raise

    def _public_key_for(self, signer: str) -> PublicKey:
        public = self._workspace.public_key()
        if key_id(public) == signer:
            return public
        return self._store.load_key(signer)

    # -- reading -------------------------------------------------------------------------

    def _query(
        self,
        conn: Connection,
        name: str | None = None,
        version: str | None = None,
        stage: Stage | None = None,
    ) -> builtins.list[_Record]:
        v, m = registry_versions, registry_models
        query = (
            sa.select(v, m.c.allow_pickle)
            .join(m, m.c.name == v.c.model)
            .order_by(v.c.model, v.c.ordinal)
        )
        if name is not None:
            query = query.where(v.c.model == name)
        if version is not None:
            query = query.where(v.c.version == version)
        if stage is not None:
            query = query.where(v.c.stage == stage.value)
        rows = builtins.list(conn.execute(query).mappings())
        approvals: dict[tuple[str, str], builtins.list[Approval]] = {}
        if rows:
            a = registry_approvals
            approval_query = sa.select(a).order_by(a.c.approved_at, a.c.approver)
            if name is not None:
                approval_query = approval_query.where(a.c.model == name)
            for row in conn.execute(approval_query).mappings():
                approvals.setdefault((row["model"], row["version"]), []).append(
                    Approval(
                        approver=row["approver"],
                        role=row["role"],
                        approved_at=_parse_ts(row["approved_at"]),
                        comment=row["comment"],
                    )
                )
        return [self._record(row, approvals) for row in rows]

    @staticmethod
    def _record(
        row: Mapping[Any, Any], approvals: Mapping[tuple[str, str], Sequence[Approval]]
    ) -> _Record:
        try:
            stage = Stage(row["stage"])
        except ValueError as exc:
            raise VerificationError(f"damaged registry record: stage {row['stage']!r}") from exc
        version = ModelVersion(
            name=row["model"],
            version=row["version"],
            digest=row["digest"],
            format=row["format"],
            stage=stage,
            files=_files_from_json(row["files"]),
            registered_by=row["registered_by"],
            registered_at=_parse_ts(row["registered_at"]),
            signer_key_id=row["signer_key_id"],
            approvals=tuple(approvals.get((row["model"], row["version"]), ())),
            allow_pickle=bool(row["allow_pickle"]),
            stage_changed_at=_parse_ts(row["stage_changed_at"]),
            stage_changed_by=row["stage_changed_by"],
        )
        return _Record(version, row["bundle"].encode("utf-8"))

    def _get(self, conn: Connection, name: str, version: str) -> _Record:
        if version == LATEST:
            records = self._query(conn, name)
            if not records:
                raise RegistryError(f"no model named {name!r}")
            return records[-1]
        records = self._query(conn, name, version)
        if not records:
            known = conn.execute(
                sa.select(registry_models.c.name).where(registry_models.c.name == name)
            ).first()
            if known is None:
                raise RegistryError(f"no model named {name!r}")
            raise RegistryError(f"model {name!r} has no version {version!r}")
        return records[0]

    def _lookup(self, name: str, version: str) -> _Record:
        name = _check_name(name)
        if version != LATEST:
            check_version(version)
        with self._workspace.database.begin() as conn:
            return self._get(conn, name, version)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """Every version (of ``name``, when given), by model then registration order.

        Raises:
            RegistryError: ``name`` is invalid or names no model.
        """
        if name is not None:
            name = _check_name(name)
        with self._workspace.database.begin() as conn:
            records = self._query(conn, name)
            if name is not None and not records:
                raise RegistryError(f"no model named {name!r}")
        return [r.version for r in records]

    def show(self, name: str, version: str) -> ModelVersion:
        """One version with its approvals (``latest``: the last one registered).

        Raises:
            RegistryError: invalid or unknown name or version.
        """
        return self._lookup(name, version).version

    def production(self) -> builtins.list[ModelVersion]:
        """The production version of every model (what the gateway serves), by model name."""
        with self._workspace.database.begin() as conn:
            return [r.version for r in self._query(conn, stage=Stage.PRODUCTION)]

    def production_versions(self) -> builtins.list[ModelVersion]:
        """Same as :meth:`production` (the name the gateway plan uses)."""
        return self.production()

    # -- registering ---------------------------------------------------------------------

    def add(
        self,
        name: str,
        path: Path,
        *,
        principal: Principal,
        version: str | None = None,
        bundle: Path | None = None,
        public_key: PublicKey | None = None,
        allow_pickle: bool = False,
        now: datetime | None = None,
    ) -> ModelVersion:
        """Register the model at ``path`` (a file or folder) as a new version of ``name``.

        Order of checks, nothing stored unless all pass: the signature bundle (default: where
        ``bastion sign`` writes it, ``PATH.sig``) must be signed by the workspace key or
        ``public_key``; the model is copied into a private staging folder (hashing as it
        goes); that copy must scan clean (the bar of ``bastion scan`` exiting 0) and match
        the signed statement file by file; then its files move into the store and the
        version is recorded with stage ``registered``.

        Args:
            name: the model's name (see :func:`bastion.core.principals.check_model_name`).
            path: the model file or folder.
            principal: who registers; needs ``model.register`` on ``name``.
            version: the version; the next whole number ("1", "2", ...) by default.
            bundle: the signature file; ``PATH.sig`` by default.
            public_key: the key the signature must verify with; the workspace key by default.
            allow_pickle: also opt the model in to pickle-based loading (needs
                ``model.approve`` too: it is a reviewer's decision; audited and logged).
            now: the registration time.

        Raises:
            AuthorizationError: the principal may not register (or opt in) this model.
            VerificationError: the scan found an unsafe file, or the signature is missing,
                wrong or does not match the files (SignatureError).
            RegistryError: bad name or version, a version that exists, an unreadable model,
                or no model file bastion loads.
            AuditError: the audit log cannot be written (the registration is undone; so is
                every change of this class that cannot be audited).
        """
        with self._refusals("add", name, version, principal.actor):
            return self._add(name, path, principal, version, bundle, public_key, allow_pickle, now)

    def _add(
        self,
        name: str,
        path: Path,
        principal: Principal,
        version: str | None,
        bundle: Path | None,
        public_key: PublicKey | None,
        allow_pickle: bool,
        now: datetime | None,
    ) -> ModelVersion:
        from bastion.artifacts.scan import scan_paths
        from bastion.errors import ScanError

        name = _check_name(name)
        if version is not None:
            check_version(version)
        principal.require(Permission.MODEL_REGISTER, name)
        if allow_pickle:
            principal.require(Permission.MODEL_APPROVE, name)
        path = Path(path)
        if not (path.exists() or path.is_symlink()):
            raise RegistryError(f"{path}: no such file or folder")
        signature = Path(bundle) if bundle is not None else default_signature_path(path)
        key = public_key or self._workspace.public_key()
        try:
            bundle_bytes = read_signature(signature)
        except SignatureError:
            raise
        except BastionError as exc:
            raise SignatureError(
                f"no readable signature for {path} at {signature}: sign it with 'bastion sign' "
                "(or pass the bundle)"
            ) from exc
        statement = verified_statement(bundle_bytes, key)
        if version is not None:
            with self._workspace.database.begin() as conn:
                self._refuse_existing(conn, name, version)
        settings = self._workspace.settings.scan
        with self._store.scratch() as scratch:
            staged = self._store.stage(
                path,
                scratch / "model",
                ignore_paths=statement.serialization.ignore_paths,
                max_file_bytes=settings.max_file_bytes,
            )
            try:
                report = scan_paths([staged.path], settings)
            except ScanError as exc:
                raise RegistryError(f"the scan could not run: {exc}") from exc
            problems = [_scan_problem(r, staged.path, path) for r in report.unsafe]
            if problems or not report.results:
                raise VerificationError(
                    f"{path} did not pass the scan: {len(problems)} unsafe file(s); "
                    "nothing was stored",
                    problems or ["nothing was scanned"],
                )
            signature_copy = scratch / "bundle.sig"
            signature_copy.write_bytes(bundle_bytes)
            verify(staged.path, key, signature_copy)
            model_format = detect_format(staged.folder)
            self._store.commit(staged)
        signer = key_id(key)
        if signer != key_id(self._workspace.public_key()):
            self._store.save_key(key)
        digest = digest_of_files(staged.files)
        moment = _ts(_now(now))
        actor = principal.actor
        files_json = json.dumps([f.to_dict() for f in staged.files], separators=(",", ":"))
        scan_json = json.dumps(
            {
                "files": len(report.results),
                "clean": sum(1 for r in report.results if r.status.value == "clean"),
                "skipped": len(report.skipped),
                "formats": sorted({r.format for r in report.results}),
            },
            separators=(",", ":"),
        )
        with self._writing() as conn:
            model = (
                conn.execute(sa.select(registry_models).where(registry_models.c.name == name))
                .mappings()
                .first()
            )
            if model is None:
                conn.execute(
                    registry_models.insert().values(
                        name=name, created_at=moment, created_by=actor, allow_pickle=allow_pickle
                    )
                )
                opted_in = allow_pickle
            else:
                opted_in = allow_pickle and not model["allow_pickle"]
                if opted_in:
                    conn.execute(
                        registry_models.update()
                        .where(registry_models.c.name == name)
                        .values(allow_pickle=True)
                    )
            existing = {
                row[0]: row[1]
                for row in conn.execute(
                    sa.select(registry_versions.c.version, registry_versions.c.ordinal).where(
                        registry_versions.c.model == name
                    )
                )
            }
            if version is None:
                numbers = [int(v) for v in existing if v.isdigit() and len(v) < 10]
                version = str(max(numbers, default=0) + 1)
            else:
                self._refuse_existing(conn, name, version)
            conn.execute(
                registry_versions.insert().values(
                    model=name,
                    version=version,
                    ordinal=max(existing.values(), default=0) + 1,
                    digest=digest,
                    format=model_format.value,
                    stage=Stage.REGISTERED.value,
                    files=files_json,
                    bundle=bundle_bytes.decode("ascii"),
                    signer_key_id=signer,
                    scan=scan_json,
                    registered_at=moment,
                    registered_by=actor,
                    stage_changed_at=moment,
                    stage_changed_by=actor,
                )
            )
        events: builtins.list[tuple[str, str, dict[str, Any]]] = [
            (
                "registry.add",
                f"model:{name}",
                {
                    "version": version,
                    "digest": digest,
                    "format": model_format.value,
                    "files": len(staged.files),
                    "bytes": sum(f.size for f in staged.files),
                    "signer_key_id": signer,
                    "source": str(path)[:1000],
                },
            )
        ]
        if opted_in:
            logger.warning("model %s opted in to pickle-based loading by %s", name, actor)
            events.append(("registry.allow_pickle", f"model:{name}", {"allowed": True}))
        created = model is None
        added = version

        def undo(conn: Connection) -> None:
            conn.execute(
                registry_versions.delete().where(
                    registry_versions.c.model == name,
                    registry_versions.c.version == added,
                    registry_versions.c.registered_at == moment,
                )
            )
            if created:
                remaining = conn.execute(
                    sa.select(registry_versions.c.version).where(registry_versions.c.model == name)
                ).first()
                if remaining is None:
                    conn.execute(registry_models.delete().where(registry_models.c.name == name))
            elif opted_in:
                conn.execute(
                    registry_models.update()
                    .where(registry_models.c.name == name)
                    .values(allow_pickle=False)
                )

        self._log_or_undo(events, actor, undo)
        return self.show(name, version)

    @staticmethod
    def _refuse_existing(conn: Connection, name: str, version: str) -> None:
        found = conn.execute(
            sa.select(registry_versions.c.version).where(
                registry_versions.c.model == name, registry_versions.c.version == version
            )
        ).first()
        if found is not None:
            raise RegistryError(f"model {name!r} already has a version {version!r}")

    def allow_pickle(self, name: str, *, principal: Principal, allowed: bool = True) -> bool:
        """Opt the model ``name`` in to (or out of) pickle-based loading; return the setting.

        Loading still goes through the scan, the signature and the restricted unpickler; the
        opt-in only lets a pickle-based version be loaded at all. Needs ``model.approve``.

        Raises:
            AuthorizationError: the principal may not decide this for the model.
            RegistryError: no such model.
        """
        with self._refusals("allow_pickle", name, None, principal.actor):
            name = _check_name(name)
            principal.require(Permission.MODEL_APPROVE, name)
            with self._writing() as conn:
                before = conn.execute(
                    sa.select(registry_models.c.allow_pickle).where(registry_models.c.name == name)
                ).first()
                if before is None:
                    raise RegistryError(f"no model named {name!r}")
                conn.execute(
                    registry_models.update()
                    .where(registry_models.c.name == name)
                    .values(allow_pickle=bool(allowed))
                )
        if allowed:
            logger.warning("model %s opted in to pickle-based loading by %s", name, principal.actor)

        def undo(conn: Connection) -> None:
            conn.execute(
                registry_models.update()
                .where(registry_models.c.name == name)
                .values(allow_pickle=bool(before[0]))
            )

        self._log_or_undo(
            [("registry.allow_pickle", f"model:{name}", {"allowed": bool(allowed)})],
            principal.actor,
            undo,
        )
        return bool(allowed)

    # -- approving and promoting ---------------------------------------------------------

    def approve(
        self,
        name: str,
        version: str,
        *,
        principal: Principal,
        comment: str = "",
        now: datetime | None = None,
    ) -> ModelVersion:
        """Approve a version for production.

        Raises:
            AuthorizationError: the principal lacks ``model.approve`` on the model, or it
                registered the version (same key name or key id).
            RegistryError: unknown version, an archived one, a comment that is too long, or
                an approval already given by this principal.
        """
        with self._refusals("approve", name, version, principal.actor):
            name = _check_name(name)
            check_version(version)
            principal.require(Permission.MODEL_APPROVE, name)
            if (
                not isinstance(comment, str)
                or len(comment) > MAX_COMMENT_CHARS
                or _CONTROL_RE.search(comment)
            ):
                raise RegistryError(
                    f"a comment is text of at most {MAX_COMMENT_CHARS} characters, without "
                    "control characters"
                )
            moment = _ts(_now(now))
            with self._writing() as conn:
                record = self._get(conn, name, version).version
                if record.stage is Stage.ARCHIVED:
                    raise RegistryError(f"{name} {version} is archived: it cannot be approved")
                if _same_principal(record.registered_by, principal):
                    raise AuthorizationError(
                        f"{principal.name!r} registered {name} {version}: someone else must "
                        "approve it",
                        reason=f"{principal.actor}: self-approval of {name} {version}",
                    )
                if any(_same_principal(a.approver, principal) for a in record.approvals):
                    raise RegistryError(f"{principal.name!r} already approved {name} {version}")
                conn.execute(
                    registry_approvals.insert().values(
                        model=name,
                        version=version,
                        approver=principal.actor,
                        role=str(principal.role),
                        approved_at=moment,
                        comment=comment,
                    )
                )

        def undo(conn: Connection) -> None:
            conn.execute(
                registry_approvals.delete().where(
                    registry_approvals.c.model == name,
                    registry_approvals.c.version == version,
                    registry_approvals.c.approver == principal.actor,
                    registry_approvals.c.approved_at == moment,
                )
            )

        self._log_or_undo(
            [
                (
                    "registry.approve",
                    f"model:{name}",
                    {"version": version, "role": str(principal.role), "comment": comment},
                )
            ],
            principal.actor,
            undo,
        )
        return self.show(name, version)

    def promote(
        self,
        name: str,
        version: str,
        *,
        to: Stage | str,
        principal: Principal,
        now: datetime | None = None,
    ) -> ModelVersion:
        """Move a version to ``to`` (see the stages in the module docstring).

        Raises:
            AuthorizationError: the principal lacks the target's permission on the model, or
                registered the version and tries to put it in production.
            RegistryError: unknown version or stage, an illegal move, or production without
                an approval by someone other than the registrant.
        """
        with self._refusals("promote", name, version, principal.actor):
            name = _check_name(name)
            check_version(version)
            try:
                target = Stage(to)
            except ValueError:
                raise RegistryError(
                    f"unknown stage {_shown(to)}: choose staging, production or archived"
                ) from None
            permission = _TARGET_PERMISSION.get(target)
            if permission is None:
                raise RegistryError("a version cannot be moved back to registered")
            principal.require(permission, name)
            moment = _ts(_now(now))
            with self._writing() as conn:
                record = self._get(conn, name, version).version
                current = record.stage
                if current is target:
                    raise RegistryError(f"{name} {version} is already in {target}")
                if target not in _TRANSITIONS[current]:
                    hint = " (promote it to staging first)" if target is Stage.PRODUCTION else ""
                    raise RegistryError(
                        f"{name} {version} cannot move from {current} to {target}{hint}"
                    )
                replaced: builtins.list[str] = []
                previous: builtins.list[tuple[str, str, str]] = []
                if target is Stage.PRODUCTION:
                    if _same_principal(record.registered_by, principal):
                        raise AuthorizationError(
                            f"{principal.name!r} registered {name} {version}: someone else "
                            "must put it in production",
                            reason=f"{principal.actor}: self-promotion of {name} {version}",
                        )
                    valid = [
                        a
                        for a in record.approvals
                        if not _same_actor(a.approver, record.registered_by)
                    ]
                    if not valid:
                        raise RegistryError(
                            f"{name} {version} needs an approval by someone other than its "
                            "registrant before production ('bastion registry approve')"
                        )
                    previous = [
                        (row[0], row[1], row[2])
                        for row in conn.execute(
                            sa.select(
                                registry_versions.c.version,
                                registry_versions.c.stage_changed_at,
                                registry_versions.c.stage_changed_by,
                            ).where(
                                registry_versions.c.model == name,
                                registry_versions.c.stage == Stage.PRODUCTION.value,
                            )
                        )
                    ]
                    replaced = [row[0] for row in previous]
                    if replaced:
                        conn.execute(
                            registry_versions.update()
                            .where(
                                registry_versions.c.model == name,
                                registry_versions.c.stage == Stage.PRODUCTION.value,
                            )
                            .values(
                                stage=Stage.ARCHIVED.value,
                                stage_changed_at=moment,
                                stage_changed_by=principal.actor,
                            )
                        )
                done = conn.execute(
                    registry_versions.update()
                    .where(
                        registry_versions.c.model == name,
                        registry_versions.c.version == version,
                        registry_versions.c.stage == current.value,
                    )
                    .values(
                        stage=target.value,
                        stage_changed_at=moment,
                        stage_changed_by=principal.actor,
                    )
                )
                if done.rowcount != 1:  # pragma: no cover - the write lock forbids it
                    raise RegistryError(f"{name} {version} changed meanwhile: try again")
        events: builtins.list[tuple[str, str, dict[str, Any]]] = [
            (
                "registry.promote",
                f"model:{name}",
                {"version": version, "from": str(current), "to": str(target)},
            )
        ]
        events.extend(
            (
                "registry.archive",
                f"model:{name}",
                {"version": old, "from": "production", "replaced_by": version},
            )
            for old in replaced
        )
        before = (current.value, _ts(record.stage_changed_at), record.stage_changed_by)

        def undo(conn: Connection) -> None:
            v = registry_versions
            conn.execute(
                v.update()
                .where(
                    v.c.model == name,
                    v.c.version == version,
                    v.c.stage == target.value,
                    v.c.stage_changed_at == moment,
                )
                .values(stage=before[0], stage_changed_at=before[1], stage_changed_by=before[2])
            )
            for old, changed_at, changed_by in previous:
                conn.execute(
                    v.update()
                    .where(
                        v.c.model == name,
                        v.c.version == old,
                        v.c.stage == Stage.ARCHIVED.value,
                        v.c.stage_changed_at == moment,
                    )
                    .values(
                        stage=Stage.PRODUCTION.value,
                        stage_changed_at=changed_at,
                        stage_changed_by=changed_by,
                    )
                )

        self._log_or_undo(events, principal.actor, undo)
        return self.show(name, version)

    # -- pulling -------------------------------------------------------------------------

    def pull(
        self,
        name: str,
        version: str,
        out_dir: Path,
        *,
        principal: Principal | None = None,
    ) -> Path:
        """Write a version's files under ``out_dir``, verified, with its signature beside.

        The stored files are copied out while being re-hashed against the recorded digests
        and the copy is verified against the recorded signature bundle; only then is it
        renamed into place: ``out_dir/NAME`` (a folder model) or ``out_dir/FILE`` (a
        single-file model), its signature at ``bastion verify``'s default place beside it.

        Args:
            name: the model.
            version: the version, or ``latest``.
            out_dir: the folder to write into (created if missing).
            principal: who pulls (needs ``model.pull``); None for the local operator.

        Returns:
            The model file or folder written.

        Raises:
            VerificationError: a stored file or the recorded signature does not verify (its
                ``problems`` name the files); nothing was written.
            AuthorizationError: the principal may not pull this model.
            RegistryError: unknown model or version, or the target exists.
        """
        actor = principal.actor if principal is not None else self._workspace.actor()
        with self._refusals("pull", name, version, actor):
            if principal is not None:
                principal.require(Permission.MODEL_PULL, _check_name(name))
            record = self._lookup(name, version)
            target, single = self._target(record, Path(out_dir))
            signature = default_signature_path(target)
            for existing in (target, signature):
                if existing.exists() or existing.is_symlink():
                    raise RegistryError(f"{existing} exists: refusing to overwrite it")
            self._materialise(record, target, single, signature)
        mv = record.version
        self._log(
            [
                (
                    "registry.pull",
                    f"model:{mv.name}",
                    {"version": mv.version, "digest": mv.digest, "destination": str(target)},
                )
            ],
            actor,
        )
        return target

    def _statement_single_file(self, record: _Record) -> bool:
        key = self._public_key_for(record.version.signer_key_id)
        return verified_statement(record.bundle, key).is_single_file

    def _target(self, record: _Record, out_dir: Path) -> tuple[Path, bool]:
        single = self._statement_single_file(record)
        mv = record.version
        if single and len(mv.files) != 1:
            raise VerificationError(f"damaged registry record of {mv.name} {mv.version}")
        return (out_dir / (mv.files[0].path if single else mv.name)), single

    def _materialise(
        self, record: _Record, target: Path, single: bool, signature: Path | None
    ) -> None:
        """Export, verify and rename into place (see :meth:`pull`)."""
        mv = record.version
        key = self._public_key_for(mv.signer_key_id)
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create {parent}: {exc.strerror or exc}") from exc
        token = secrets.token_hex(6)
        model_tmp = parent / f".{target.name}.{token}.tmp"
        sig_tmp = parent / f".{target.name}.{token}.sig.tmp"
        try:
            self._store.export_into(mv.files, model_tmp, single_file=single)
            sig_tmp.write_bytes(record.bundle)
            try:
                verify(model_tmp, key, sig_tmp)
            except SignatureError as exc:
                detail = str(exc).replace(str(model_tmp), str(target))
                raise SignatureError(
                    f"{mv.name} {mv.version} does not match its recorded signature "
                    f"(the store or the record was tampered with): {detail}",
                    exc.problems,
                ) from exc
            model_tmp.replace(target)
            if signature is not None:
                sig_tmp.replace(signature)
        except OSError as exc:
            raise RegistryError(f"cannot write {target}: {exc.strerror or exc}") from exc
        finally:
            remove_tree(model_tmp)
            remove_tree(sig_tmp)

    def checkout(self, name: str, version: str) -> Path:
        """A verified folder holding the version's files, for :func:`load_model`.

        Folders are cached under the workspace (``checkouts/<digest>``) and re-verified at
        every call (digests and signature); a cache that fails is rebuilt from the store,
        which is verified in turn.

        Raises:
            VerificationError: the store or the recorded signature does not verify.
            RegistryError: unknown model or version.
        """
        actor = self._workspace.actor()
        with self._refusals("checkout", name, version, actor):
            record = self._lookup(name, version)
            single = self._statement_single_file(record)
            mv = record.version
            root = self._workspace.root / "checkouts"
            folder = root / check_digest(mv.digest).removeprefix("sha256:")
            if folder.is_dir() and not folder.is_symlink():
                try:
                    self._check_cached(record, folder, single)
                except VerificationError as exc:
                    logger.warning("rebuilding the checkout of %s %s: %s", mv.name, mv.version, exc)
                    remove_tree(folder)
                else:
                    return folder
            elif folder.exists() or folder.is_symlink():
                remove_tree(folder)
            try:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"cannot create {root}: {exc.strerror or exc}") from exc
            building = root / f".{folder.name}.{secrets.token_hex(6)}.tmp"
            try:
                building.mkdir(mode=0o700)
                inner = building / mv.files[0].path if single else building
                if single:
                    self._materialise(record, inner, True, None)
                else:
                    building.rmdir()
                    self._materialise(record, building, False, None)
                try:
                    building.replace(folder)
                except OSError:
                    # Another process finished first: use (and check) its folder.
                    self._check_cached(record, folder, single)
            except OSError as exc:
                raise RegistryError(f"cannot write {folder}: {exc.strerror or exc}") from exc
            finally:
                remove_tree(building)
            return folder

    def _check_cached(self, record: _Record, folder: Path, single: bool) -> None:
        mv = record.version
        present = sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()
        )
        if present != sorted(f.path for f in mv.files):
            raise VerificationError(f"the checkout of {mv.name} {mv.version} has other files")
        for item in mv.files:
            verify_file(folder / item.path, item)
        key = self._public_key_for(mv.signer_key_id)
        with self._store.scratch() as scratch:
            signature = scratch / "bundle.sig"
            signature.write_bytes(record.bundle)
            model = folder / mv.files[0].path if single else folder
            verify(model, key, signature)


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def _scan_problem(result: Any, staged: Path, source: Path) -> str:
    shown = result.path.replace(str(staged), str(source), 1)
    if result.findings:
        first = result.findings[0]
        return f"{shown}: {first.rule_id}: {first.message}"[:500]
    return f"{shown}: unsafe"
