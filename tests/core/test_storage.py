"""The storage layer: migrations, schema version, SQLite WAL and locking, PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.core import storage
from bastion.core.storage import (
    MIGRATIONS,
    Database,
    Migration,
    open_database,
    sqlite_url,
)
from bastion.errors import StorageError

AUDIT_TABLES = {"audit_events", "audit_checkpoints"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "test.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def unmigrated(database_url: str) -> Iterator[Database]:
    db = open_database(database_url, migrate=False)
    yield db
    db.dispose()


def _applied(db: Database) -> list[tuple[int, str, str]]:
    with db.begin() as conn:
        rows = conn.execute(
            sa.select(
                storage.schema_migrations.c.version,
                storage.schema_migrations.c.description,
                storage.schema_migrations.c.applied_at,
            ).order_by(storage.schema_migrations.c.version)
        )
        return [(int(v), str(d), str(a)) for v, d, a in rows]


def _tables(db: Database) -> set[str]:
    with db.begin() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_migrations_are_numbered_in_order_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.description for m in MIGRATIONS)


def test_migrations_apply_in_order(unmigrated: Database) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert unmigrated.schema_version() == 0
    assert unmigrated.migrate(now=now) == [m.version for m in MIGRATIONS]
    assert unmigrated.schema_version() == MIGRATIONS[-1].version
    assert _applied(unmigrated) == [(m.version, m.description, now.isoformat()) for m in MIGRATIONS]
    assert {"schema_migrations", "workspace_meta", *AUDIT_TABLES} <= _tables(unmigrated)


def test_migrate_is_idempotent(unmigrated: Database, database_url: str) -> None:
    unmigrated.migrate()
    before = (_applied(unmigrated), _tables(unmigrated))
    assert unmigrated.migrate() == []
    again = open_database(database_url)  # opening migrates: nothing left to do
    try:
        assert again.migrate() == []
        assert (_applied(again), _tables(again)) == before
    finally:
        again.dispose()


def test_migrations_resume_where_they_stopped(
    unmigrated: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "MIGRATIONS", MIGRATIONS[:1])
    assert unmigrated.migrate() == [1]
    assert AUDIT_TABLES.isdisjoint(_tables(unmigrated))
    monkeypatch.setattr(storage, "MIGRATIONS", MIGRATIONS)
    assert unmigrated.migrate() == [m.version for m in MIGRATIONS[1:]]
    assert _tables(unmigrated) >= AUDIT_TABLES


def test_a_failed_migration_is_rolled_back(
    unmigrated: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    unmigrated.migrate()
    leftover = sa.Table("half_done", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))

    def broken(conn: sa.Connection) -> None:
        leftover.create(conn)
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    bad = Migration(len(MIGRATIONS) + 1, "broken", broken)
    monkeypatch.setattr(storage, "MIGRATIONS", (*MIGRATIONS, bad))
    with pytest.raises(StorageError, match="no_such_table"):
        unmigrated.migrate()
    assert unmigrated.schema_version() == len(MIGRATIONS)
    assert "half_done" not in _tables(unmigrated)


def test_a_database_newer_than_the_code_is_refused(unmigrated: Database, database_url: str) -> None:
    unmigrated.migrate()
    future = len(MIGRATIONS) + 5
    with unmigrated.begin() as conn:
        conn.execute(
            storage.schema_migrations.insert().values(
                version=future, description="from the future", applied_at="2099-01-01"
            )
        )
    with pytest.raises(StorageError, match=rf"version {future}\) is newer than this bastion"):
        open_database(database_url)
    assert unmigrated.schema_version() == future


def test_transactions_roll_back_on_error(unmigrated: Database) -> None:
    unmigrated.migrate()
    meta = storage.workspace_meta

    def write_then_fail() -> None:
        with unmigrated.begin() as conn:
            conn.execute(meta.insert().values(key="k", value="v"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with unmigrated.begin() as conn:
        assert conn.execute(sa.select(meta)).all() == []


def test_database_errors_become_one_line_storage_errors(unmigrated: Database) -> None:
    with pytest.raises(StorageError) as info, unmigrated.begin() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert str(info.value).startswith("database error: ")
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)


def test_dialect_names_the_backend(unmigrated: Database, database_url: str) -> None:
    assert unmigrated.dialect == database_url.split("+")[0]


def _open_together(url: str, replicas: int) -> list[BaseException]:
    """Open (and migrate) the database at ``url`` from ``replicas`` threads at once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(replicas)

    def start() -> None:
        try:
            barrier.wait(timeout=10)
            open_database(url).dispose()
        except BaseException as exc:  # reported by the callers' assertions
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_concurrent_first_migrations_do_not_collide(database_url: str) -> None:
    # Several gateway replicas starting together on a fresh database.
    assert _open_together(database_url, 4) == []
    db = open_database(database_url)
    try:
        assert [v for v, _, _ in _applied(db)] == [m.version for m in MIGRATIONS]
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "nonsense://x",
        "sqlite+pysqlite:////nonexistent-dir/x/y.db",
        "postgresql+psycopg://u@127.0.0.1:1/x",
    ],
)
def test_unusable_urls_are_storage_errors(url: str) -> None:
    with pytest.raises(StorageError):
        open_database(url)


# ------------------------------------------------------------------------------ SQLite specifics


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = open_database(sqlite_url(path))
    try:
        with db.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()
    # WAL is a property of the file: any other client sees it too.
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_exclusive_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    db = open_database(sqlite_url(path))
    try:
        with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            with db.begin(exclusive=True):
                # BEGIN IMMEDIATE holds the write lock before the first statement.
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                assert other.execute("SELECT count(*) FROM schema_migrations").fetchone()
            with db.begin():
                # A deferred transaction takes no lock until it writes.
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
    finally:
        db.dispose()


def test_waiting_writers_get_the_lock_when_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "wait.db"
    db = open_database(sqlite_url(path))
    meta = storage.workspace_meta
    try:
        with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as other:
            other.execute("BEGIN IMMEDIATE")
            timer = threading.Timer(0.3, other.execute, args=("COMMIT",))
            timer.start()
            with db.begin(exclusive=True) as conn:  # waits on busy_timeout, then proceeds
                conn.execute(meta.insert().values(key="after", value="commit"))
            timer.join()
        with db.begin() as conn:
            assert conn.execute(sa.select(meta.c.key)).scalars().all() == ["after"]
    finally:
        db.dispose()


def test_fresh_sqlite_files_opened_together_all_switch_to_wal(tmp_path: Path) -> None:
    # Switching a new file to WAL takes SQLite's exclusive lock and fails at once ("database is
    # locked", no busy handler) when another connection holds the file; before the retry this
    # test failed about one run in two.
    for round_ in range(30):
        path = tmp_path / f"fresh-{round_}.db"
        assert _open_together(sqlite_url(path), 6) == []
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
