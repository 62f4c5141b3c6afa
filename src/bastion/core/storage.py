"""The storage layer: one SQLAlchemy Core engine, versioned schema migrations (stable API).

The embedded default is a SQLite file in the workspace, opened in WAL mode with a busy timeout
so that several processes can share it; ``database_url`` points the same code at PostgreSQL
(``postgresql+psycopg://...``) for several gateway replicas. Tables are declared once on
:data:`metadata`; each schema change is a numbered entry of :data:`MIGRATIONS`, applied in order
and recorded in ``schema_migrations``. Migrations only ever add: an applied migration is never
edited, a new number is added instead.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from bastion.errors import StorageError

__all__ = [
    "MIGRATIONS",
    "Database",
    "Migration",
    "metadata",
    "open_database",
    "sqlite_url",
]

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

workspace_meta = sa.Table(
    "workspace_meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: ``apply`` runs inside the transaction that records ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _create(*tables: sa.Table) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)

    return apply


def _audit_tables() -> tuple[sa.Table, ...]:
    # Imported here: the audit module declares its tables on this module's metadata.
    from bastion.core import audit_schema

    return audit_schema.TABLES


def _key_tables() -> tuple[sa.Table, ...]:
    from bastion.core import principals

    return (principals.api_keys,)


def _registry_tables() -> tuple[sa.Table, ...]:
    from bastion.core import registry_schema

    return registry_schema.TABLES


#: Every schema change, in order. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workspace metadata", _create(workspace_meta)),
    Migration(2, "audit log events and checkpoints", lambda c: _create(*_audit_tables())(c)),
    Migration(3, "API keys", lambda c: _create(*_key_tables())(c)),
    Migration(4, "model registry", lambda c: _create(*_registry_tables())(c)),
)


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of a SQLite database file."""
    return f"sqlite+pysqlite:///{path}"


class Database:
    """A migrated database behind one engine. Use :func:`open_database` to get one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def begin(self, *, exclusive: bool = False) -> Iterator[Connection]:
        """A transaction; ``exclusive`` takes the database write lock up front.

        On SQLite ``exclusive`` issues ``BEGIN IMMEDIATE`` so that a read-then-append (the
        audit chain's head) cannot interleave with another process; on PostgreSQL callers
        take row or advisory locks inside the transaction themselves.

        Raises:
            StorageError: the database failed.
        """
        try:
            with self.engine.connect() as conn:
                if exclusive:
                    conn.execution_options(bastion_begin="BEGIN IMMEDIATE")
                conn.begin()
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                else:
                    conn.commit()
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {_first_line(exc)}") from exc

    def schema_version(self) -> int:
        """The highest migration applied, 0 for an empty database."""
        with self.begin() as conn:
            if not sa.inspect(conn).has_table("schema_migrations"):
                return 0
            value = conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar()
            return int(value or 0)

    def migrate(self, *, now: datetime | None = None) -> list[int]:
        """Apply every migration not applied yet, each in its own transaction.

        Returns:
            The versions applied by this call.

        Raises:
            StorageError: a migration failed (it is rolled back), or the database is newer
                than this bastion.
        """
        applied: list[int] = []
        with self.begin(exclusive=True) as conn:
            _lock_migrations(conn)
            schema_migrations.create(conn, checkfirst=True)
        known = max(m.version for m in MIGRATIONS)
        for migration in MIGRATIONS:
            with self.begin(exclusive=True) as conn:
                _lock_migrations(conn)
                done = {row[0] for row in conn.execute(sa.select(schema_migrations.c.version))}
                if max(done, default=0) > known:
                    raise StorageError(
                        f"the database schema (version {max(done)}) is newer than this "
                        f"bastion (version {known}): upgrade bastion"
                    )
                if migration.version in done:
                    continue
                migration.apply(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=migration.version,
                        description=migration.description,
                        applied_at=(now or datetime.now(UTC)).isoformat(),
                    )
                )
                applied.append(migration.version)
                logger.info("applied migration %d: %s", migration.version, migration.description)
        return applied

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


#: Key of the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x62617374696F6E  # "bastion"


def _lock_migrations(conn: Connection) -> None:
    # SQLite's BEGIN IMMEDIATE already serialises migrations; PostgreSQL has no database write
    # lock, so replicas starting together on a fresh database would each create the tables.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The pysqlite driver's own transaction handling is switched off so that BEGIN IMMEDIATE
    # is ours to issue (SQLAlchemy's documented recipe for SQLite locking).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _enable_wal(cursor: Any, *, deadline_seconds: float = 30.0) -> None:
    # WAL is a property of the file: once one connection has switched it, the others find it
    # set. Switching needs the exclusive lock, and SQLite answers "database is locked" at once,
    # without its busy handler, when several connections open a fresh file together (replicas
    # starting on a new workspace), so the switch is retried until the deadline.
    deadline = time.monotonic() + deadline_seconds
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        else:
            return


def _on_sqlite_begin(conn: Connection) -> None:
    # With the driver's own transactions off, SQLAlchemy's BEGIN is emitted here; exclusive
    # transactions ask for BEGIN IMMEDIATE through an execution option.
    conn.exec_driver_sql(conn.get_execution_options().get("bastion_begin", "BEGIN"))


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Open (and by default migrate) the database at ``url``.

    Raises:
        StorageError: the URL is invalid or the database cannot be reached or migrated.
    """
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _on_sqlite_connect)
            sa.event.listen(engine, "begin", _on_sqlite_begin)

        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise StorageError(f"invalid database_url: {_first_line(exc)}") from exc
    database = Database(engine)
    if migrate:
        try:
            database.migrate()
        except BaseException:
            database.dispose()  # or the pooled connection leaks (a newer database, say)
            raise
    return database


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
