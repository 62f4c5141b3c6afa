"""Principals, roles and API keys: the permission matrix entry by entry, the key lifecycle,
hostile keys, snapshots, storage of hashes only, concurrency, and one run on PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.core.audit import AuditEvent, AuditLog
from bastion.core.principals import (
    MAX_DURATION,
    PERMISSIONS,
    ApiKey,
    CreatedKey,
    KeyStore,
    KeyTable,
    Permission,
    Principal,
    Role,
    api_keys,
    check_model_name,
    hash_secret,
    parse_duration,
)
from bastion.core.storage import Database, open_database, sqlite_url
from bastion.errors import (
    AuditError,
    AuthenticationError,
    AuthorizationError,
    BastionError,
    StorageError,
)

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- the matrix

#: The permission matrix as the issue and the README state it, written out by hand (not
#: derived from PERMISSIONS): a change to either must be a deliberate change to both.
ROLES = ("data-scientist", "ml-engineer", "sre", "admin", "client")
# fmt: off
EXPECTED_MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    #                          data-scientist  ml-engineer  sre  admin  client
    "model.read":               (1,             1,           1,   1,     0),
    "model.register":           (1,             1,           0,   0,     0),
    "model.evaluate":           (1,             1,           0,   0,     0),
    "model.pull":               (1,             1,           1,   0,     0),
    "model.promote.staging":    (0,             1,           1,   0,     0),
    "model.approve":            (0,             1,           0,   0,     0),
    "model.promote.production": (0,             0,           1,   0,     0),
    "model.archive":            (0,             0,           1,   0,     0),
    "model.infer":              (1,             1,           1,   0,     1),
    "gateway.operate":          (0,             0,           1,   1,     0),
    "keys.manage":              (0,             0,           0,   1,     0),
    "audit.read":               (0,             0,           0,   1,     0),
}
# fmt: on
MATRIX_CASES = [
    (role, permission, bool(row[i]))
    for permission, row in EXPECTED_MATRIX.items()
    for i, role in enumerate(ROLES)
]


def render_matrix() -> str:
    """The README's table, rendered from EXPECTED_MATRIX."""
    lines = [
        "| permission | " + " | ".join(f"`{r}`" for r in ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
    ]
    for permission, row in EXPECTED_MATRIX.items():
        marks = " | ".join("✓" if allowed else "—" for allowed in row)
        lines.append(f"| `{permission}` | {marks} |")
    return "\n".join(lines)


def test_the_expected_table_names_every_role_and_permission() -> None:
    assert set(ROLES) == {r.value for r in Role}
    assert set(EXPECTED_MATRIX) == {p.value for p in Permission}
    assert set(PERMISSIONS) == set(Role)
    assert len(MATRIX_CASES) == len(Role) * len(Permission)


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    MATRIX_CASES,
    ids=[f"{r}-{p}" for r, p, _ in MATRIX_CASES],
)
def test_permission_matrix_entry(role: str, permission: str, allowed: bool) -> None:
    assert (Permission(permission) in PERMISSIONS[Role(role)]) is allowed
    principal = Principal(key_id="0123456789ab", name="someone", role=Role(role))
    assert principal.allows(Permission(permission)) is allowed
    assert principal.allows(Permission(permission), "any-model") is allowed
    if allowed:
        principal.require(Permission(permission))
        principal.require(Permission(permission), "any-model")
    else:
        with pytest.raises(AuthorizationError, match=f"role {role} does not have permission"):
            principal.require(Permission(permission))


def test_the_matrix_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        PERMISSIONS[Role.CLIENT] = frozenset(Permission)  # type: ignore[index]
    with pytest.raises(AttributeError):
        PERMISSIONS[Role.CLIENT].add(Permission.KEYS_MANAGE)  # type: ignore[attr-defined]


def test_readme_shows_the_expected_matrix() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert render_matrix() in readme


def test_model_scope_limits_model_permissions_only() -> None:
    scoped = Principal("0123456789ab", "svc", Role.CLIENT, models=frozenset({"digits"}))
    assert scoped.allows(Permission.MODEL_INFER, "digits")
    assert not scoped.allows(Permission.MODEL_INFER, "other")
    assert scoped.allows(Permission.MODEL_INFER)  # no model named: the role decides
    assert not scoped.allows(Permission.KEYS_MANAGE, "digits")  # scope never adds rights
    scoped.require(Permission.MODEL_INFER, "digits")
    with pytest.raises(AuthorizationError, match="not allowed to use model 'other'") as info:
        scoped.require(Permission.MODEL_INFER, "other")
    assert info.value.reason == "svc (key 0123456789ab, client): model 'other' out of scope"
    with pytest.raises(AuthorizationError) as role_info:
        scoped.require(Permission.MODEL_PULL, "digits")
    assert role_info.value.reason == "svc (key 0123456789ab, client): role lacks model.pull"


def test_actor_names_the_key() -> None:
    assert Principal("0123456789ab", "ci-bot", Role.SRE).actor == "ci-bot (key 0123456789ab, sre)"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = open_database(sqlite_url(tmp_path / "keys.db"))
    yield db
    db.dispose()


@pytest.fixture
def audit(database: Database) -> AuditLog:
    return AuditLog(database, actor="operator", checkpoint_interval=None)


@pytest.fixture
def store(database: Database, audit: AuditLog) -> KeyStore:
    return KeyStore(database, audit)


def events(audit: AuditLog) -> list[AuditEvent]:
    return audit.events()


def rows(database: Database) -> list[dict[str, Any]]:
    with database.begin() as conn:
        return [dict(r) for r in conn.execute(sa.select(api_keys)).mappings()]


# ----------------------------------------------------------------------------- create


def test_create_returns_the_secret_once_and_stores_its_hash(
    store: KeyStore, database: Database, audit: AuditLog
) -> None:
    created = store.create("ci-bot", "client", actor="alice", models=["b", "a", "a"], now=NOW)
    key = created.key
    assert re.fullmatch(rf"bst_{key.key_id}_[A-Za-z0-9_-]{{43}}", created.secret)
    assert (key.name, key.role, key.models, key.created_by) == (
        "ci-bot",
        Role.CLIENT,
        ("a", "b"),
        "alice",
    )
    assert (key.created_at, key.expires_at, key.status(NOW)) == (NOW, None, "active")
    assert created.secret not in repr(created)
    assert created.secret not in json.dumps(key.to_dict(NOW))
    (row,) = rows(database)
    assert row["secret_hash"] == hash_secret(created.secret)
    assert (
        row["secret_hash"]
        == hashlib.sha256(b"bastion-api-key-v1\x00" + created.secret.encode()).hexdigest()
    )
    (event,) = events(audit)
    assert (event.action, event.subject, event.actor) == (
        "keys.create",
        f"key:{key.key_id}",
        "alice",
    )
    assert dict(event.details) == {
        "name": "ci-bot",
        "role": "client",
        "models": ["a", "b"],
        "expires_at": None,
    }
    assert store.authenticate(created.secret, now=NOW) == key.principal()


def test_only_hashes_reach_the_database_files(
    store: KeyStore, database: Database, tmp_path: Path
) -> None:
    created = store.create("ci-bot", Role.ADMIN, actor="alice", now=NOW)
    rotated = store.rotate("ci-bot", actor="alice", now=NOW)
    body_old = created.secret[len("bst_000000000000_") :]
    body_new = rotated.secret[len("bst_000000000000_") :]
    with closing(sqlite3.connect(tmp_path / "keys.db")) as con:
        dump = "\n".join(con.iterdump())
        columns = [c[1] for c in con.execute("PRAGMA table_info(api_keys)")]
    assert "secret" not in columns  # secret_hash and previous_hash only
    for body in (body_old, body_new):
        assert body not in dump
    (row,) = rows(database)
    assert row["secret_hash"] == hash_secret(rotated.secret)
    assert row["previous_hash"] == hash_secret(created.secret)
    for path in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        data = path.read_bytes()
        assert body_old.encode() not in data
        assert body_new.encode() not in data


def test_create_with_expiry_and_injected_time(store: KeyStore) -> None:
    created = store.create("temp", "sre", actor="alice", expires_in=parse_duration("30d"), now=NOW)
    expires = NOW + timedelta(days=30)
    assert created.key.expires_at == expires
    assert (
        store.authenticate(created.secret, now=expires - timedelta(microseconds=1)).role == Role.SRE
    )
    with pytest.raises(AuthenticationError, match="invalid API key") as info:
        store.authenticate(created.secret, now=expires)
    assert info.value.reason == f"expired key {created.key.key_id}"
    assert store.get("temp").status(expires) == "expired"
    with pytest.raises(BastionError, match=f"key {created.key.key_id} is expired"):
        store.rotate(created.key.key_id, actor="alice", now=expires)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "invalid key name ''"),
        ({"name": "has space"}, "invalid key name"),
        ({"name": "-dash-first"}, "invalid key name"),
        ({"name": "x" * 101}, r"invalid key name 'xxxx.*\.\.\. \(101 characters\)"),
        ({"name": "nul\x00byte"}, r"invalid key name 'nul\\x00byte'"),
        ({"name": "caf\u00e9"}, "invalid key name"),
        ({"name": "a\u202eb"}, r"invalid key name 'a\\u202eb'"),
        ({"name": "0123456789ab"}, "looks like a key id or a key"),
        ({"name": "bst_thing"}, "looks like a key id or a key"),
        ({"role": "root"}, "unknown role 'root': choose from data-scientist, ml-engineer"),
        ({"role": "Admin"}, "unknown role 'Admin'"),
        ({"models": []}, "an empty model list would allow no model"),
        ({"models": "digits"}, "not one string"),
        ({"models": ["Digits"]}, "invalid model name 'Digits'"),
        ({"models": ["../etc"]}, "invalid model name"),
        ({"models": ["ok", 7]}, "invalid model name a int"),
        ({"models": [f"m{i}" for i in range(101)]}, "at most 100 models"),
        ({"expires_in": timedelta(0)}, "lifetime must be positive"),
        ({"expires_in": timedelta(seconds=-1)}, "lifetime must be positive"),
        ({"expires_in": MAX_DURATION + timedelta(seconds=1)}, "at most ten years"),
        ({"actor": ""}, "invalid actor"),
        ({"actor": "a" * 201}, "invalid actor"),
        ({"actor": "evil\nforged line"}, "invalid actor"),
        ({"now": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_create_refuses_bad_arguments_changes_nothing_and_audits_it(
    store: KeyStore,
    database: Database,
    audit: AuditLog,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    arguments: dict[str, Any] = {"name": "ok-name", "role": "client", "actor": "alice", **kwargs}
    name = arguments.pop("name")
    role = arguments.pop("role")
    with pytest.raises(BastionError, match=message) as info:
        store.create(name, role, **arguments)
    assert len(str(info.value)) < 200  # one short line, whatever was passed
    assert "\n" not in str(info.value)
    assert rows(database) == []
    (event,) = events(audit)
    assert (event.action, event.subject) == ("keys.create.refused", "keys")
    assert event.details["reason"] == str(info.value)
    # An invalid actor is not recorded as the actor: the log's own actor is.
    assert event.actor == ("operator" if "actor" in kwargs else "alice")


def test_duplicate_active_names_are_refused_until_revoked_or_expired(
    store: KeyStore, database: Database, audit: AuditLog
) -> None:
    first = store.create("svc", "client", actor="alice", expires_in=timedelta(hours=1), now=NOW)
    with pytest.raises(BastionError, match="an active key is already named 'svc'"):
        store.create("svc", "admin", actor="alice", now=NOW)
    assert len(rows(database)) == 1
    assert [e.action for e in events(audit)] == ["keys.create", "keys.create.refused"]
    # Expired: the name is free again.
    later = NOW + timedelta(hours=1)
    second = store.create("svc", "client", actor="alice", now=later)
    with pytest.raises(BastionError, match="already named"):
        store.create("svc", "client", actor="alice", now=later)
    store.revoke("svc", actor="alice", now=later)
    third = store.create("svc", "client", actor="alice", now=later)
    ids = {first.key.key_id, second.key.key_id, third.key.key_id}
    assert len(ids) == 3
    assert store.get("svc", now=later).key_id == third.key.key_id  # the name finds the active key


def test_concurrent_creates_under_one_name_make_one_key(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "race.db")
    open_database(url).dispose()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        db = open_database(url, migrate=False)  # one engine per thread, as separate processes
        try:
            barrier.wait()
            KeyStore(db, None).create("same", "client", actor="alice")
            outcomes.append("created")
        except BastionError as exc:
            outcomes.append(str(exc))
        finally:
            db.dispose()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["an active key is already named 'same'"] * 5 + ["created"]


# ----------------------------------------------------------------------------- get / list


def test_get_by_id_or_active_name_and_list(store: KeyStore) -> None:
    a = store.create("a-key", "admin", actor="alice", now=NOW).key
    b = store.create("b-key", "sre", actor="alice", now=NOW + timedelta(seconds=1)).key
    assert store.get(a.key_id) == a
    assert store.get("b-key") == b
    assert [k.key_id for k in store.list()] == [a.key_id, b.key_id]
    store.revoke("a-key", actor="alice", now=NOW + timedelta(seconds=2))
    assert [k.key_id for k in store.list()] == [b.key_id]
    listed = store.list(include_revoked=True)
    assert [k.key_id for k in listed] == [a.key_id, b.key_id]
    assert listed[0].status() == "revoked"
    assert store.get(a.key_id).revoked_by == "alice"  # by id: found whatever its status
    with pytest.raises(BastionError, match="no active key with id or name 'a-key'"):
        store.get("a-key")  # by name: active keys only


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ffffffffffff", "no active key with id or name 'ffffffffffff'"),
        ("nobody", "no active key with id or name 'nobody'"),
        ("", "give a key id or a key name"),
        ("x" * 100_000, r"'xxxx.*\.\.\. \(100000 characters\)"),
        ("a\x00b", r"'a\\x00b'"),
        ("\udcff", r"'\\udcff'"),
        ("name' OR 1=1 --", "no active key with id or name"),
    ],
)
def test_unknown_references_are_one_short_line(store: KeyStore, ref: str, message: str) -> None:
    store.create("present", "client", actor="alice")
    with pytest.raises(BastionError, match=message) as info:
        store.get(ref)
    assert len(str(info.value)) < 120


def test_a_whole_key_given_as_a_reference_is_refused_without_echo(
    store: KeyStore, audit: AuditLog
) -> None:
    created = store.create("svc", "client", actor="alice")
    for ref in (created.secret, created.secret + "x", "bst_anything"):
        with pytest.raises(BastionError, match="not the key itself") as info:
            store.revoke(ref, actor="alice")
        assert created.secret[len("bst_000000000000_") :] not in str(info.value)
    assert store.get("svc").status() == "active"
    assert all(
        created.secret[len("bst_000000000000_") :] not in json.dumps(e.to_dict())
        for e in events(audit)
    )


# ----------------------------------------------------------------------------- revoke


def test_revoke_is_immediate_and_audited(store: KeyStore, audit: AuditLog) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    revoked = store.revoke(created.key.key_id, actor="bob", now=NOW + timedelta(minutes=1))
    assert (revoked.status(), revoked.revoked_by) == ("revoked", "bob")
    assert revoked.revoked_at == NOW + timedelta(minutes=1)
    with pytest.raises(AuthenticationError, match="invalid API key") as info:
        store.authenticate(created.secret, now=NOW)
    assert info.value.reason == f"revoked key {created.key.key_id}"
    with pytest.raises(BastionError, match=f"key {created.key.key_id} is already revoked"):
        store.revoke(created.key.key_id, actor="bob")
    actions = [(e.action, e.actor) for e in events(audit)]
    assert actions == [
        ("keys.create", "alice"),
        ("keys.revoke", "bob"),
        ("keys.revoke.refused", "bob"),
    ]
    assert dict(events(audit)[1].details) == {"name": "svc", "role": "client"}


def test_revoke_also_ends_a_rotated_out_secret(store: KeyStore) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    rotated = store.rotate("svc", actor="alice", grace=timedelta(hours=1), now=NOW)
    assert store.authenticate(created.secret, now=NOW).key_id == created.key.key_id
    store.revoke("svc", actor="alice", now=NOW)
    for secret in (created.secret, rotated.secret):
        with pytest.raises(AuthenticationError):
            store.authenticate(secret, now=NOW)


# ----------------------------------------------------------------------------- rotate


def test_rotate_keeps_the_old_secret_for_the_grace_period(store: KeyStore, audit: AuditLog) -> None:
    created = store.create("svc", "client", actor="alice", models=["digits"], now=NOW)
    rotated = store.rotate("svc", actor="bob", grace=parse_duration("1h"), now=NOW)
    assert rotated.key.key_id == created.key.key_id
    assert rotated.secret != created.secret
    assert rotated.key.rotated_at == NOW
    assert rotated.key.previous_valid_until == NOW + timedelta(hours=1)
    assert rotated.secret not in repr(rotated)
    just_before = NOW + timedelta(minutes=59, seconds=59)
    for secret in (created.secret, rotated.secret):
        principal = store.authenticate(secret, now=just_before)
        assert principal.models == frozenset({"digits"})
    with pytest.raises(AuthenticationError) as info:
        store.authenticate(created.secret, now=NOW + timedelta(hours=1))
    assert info.value.reason == f"rotated-out secret of key {created.key.key_id}"
    assert store.authenticate(rotated.secret, now=NOW + timedelta(days=400)).name == "svc"
    event = events(audit)[-1]
    assert (event.action, event.actor) == ("keys.rotate", "bob")
    assert dict(event.details) == {
        "name": "svc",
        "grace_seconds": 3600,
        "previous_valid_until": "2030-06-15T13:00:00.000000Z",
    }


def test_rotate_with_no_grace_ends_the_old_secret_at_once(store: KeyStore) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    rotated = store.rotate("svc", actor="alice", grace=timedelta(0), now=NOW)
    assert rotated.key.previous_valid_until is None
    with pytest.raises(AuthenticationError) as info:
        store.authenticate(created.secret, now=NOW)
    assert info.value.reason == f"wrong secret for key {created.key.key_id}"
    assert store.authenticate(rotated.secret, now=NOW).key_id == created.key.key_id


def test_a_second_rotation_ends_the_first_grace(store: KeyStore) -> None:
    first = store.create("svc", "client", actor="alice", now=NOW)
    second = store.rotate("svc", actor="alice", grace=timedelta(hours=1), now=NOW)
    third = store.rotate("svc", actor="alice", grace=timedelta(hours=1), now=NOW)
    with pytest.raises(AuthenticationError):
        store.authenticate(first.secret, now=NOW)
    assert store.authenticate(second.secret, now=NOW).name == "svc"
    assert store.authenticate(third.secret, now=NOW).name == "svc"


@pytest.mark.parametrize(
    ("grace", "message"),
    [
        (timedelta(seconds=-1), "between zero and ten years"),
        (MAX_DURATION + timedelta(days=1), "between zero and ten years"),
    ],
)
def test_rotate_refuses_a_bad_grace(
    store: KeyStore, audit: AuditLog, grace: timedelta, message: str
) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    with pytest.raises(BastionError, match=message):
        store.rotate("svc", actor="alice", grace=grace, now=NOW)
    assert store.authenticate(created.secret, now=NOW).name == "svc"
    assert events(audit)[-1].action == "keys.rotate.refused"


def test_rotate_refuses_a_revoked_key(store: KeyStore) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    store.revoke("svc", actor="alice", now=NOW)
    with pytest.raises(BastionError, match=f"key {created.key.key_id} is revoked"):
        store.rotate(created.key.key_id, actor="alice", now=NOW)


def test_concurrent_rotations_each_leave_a_consistent_key(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "race.db")
    setup = open_database(url)
    key_id = KeyStore(setup, None).create("svc", "client", actor="alice").key.key_id
    setup.dispose()
    secrets: list[str] = []
    barrier = threading.Barrier(4)

    def rotate() -> None:
        db = open_database(url, migrate=False)
        try:
            barrier.wait()
            secrets.append(KeyStore(db, None).rotate(key_id, actor="alice").secret)
        finally:
            db.dispose()

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(secrets)) == 4
    db = open_database(url, migrate=False)
    try:
        table = KeyStore(db, None).snapshot()
        working = [s for s in secrets if _works(table, s)]
    finally:
        db.dispose()
    # Serialised: the last rotation's secret and the one before it (in its grace) work.
    assert len(working) == 2


def _works(table: KeyTable, secret: str) -> bool:
    try:
        table.authenticate(secret)
    except AuthenticationError:
        return False
    return True


# ----------------------------------------------------------------------------- audit failures


class BrokenAudit:
    """An audit log that refuses every append (a full disk, a lost connection)."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def append(self, action: str, *args: Any, **kwargs: Any) -> None:
        if action == self.fail_on:
            raise AuditError("cannot append to the audit log: disk full")


def test_a_creation_that_cannot_be_audited_is_undone(database: Database) -> None:
    store = KeyStore(database, BrokenAudit("keys.create"))  # type: ignore[arg-type]
    with pytest.raises(AuditError, match=r"key 'svc' was not created: .*disk full"):
        store.create("svc", "client", actor="alice")
    assert rows(database) == []


def test_a_rotation_that_cannot_be_audited_is_undone(database: Database) -> None:
    created = KeyStore(database, None).create("svc", "client", actor="alice", now=NOW)
    before = rows(database)
    store = KeyStore(database, BrokenAudit("keys.rotate"))  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="was not rotated"):
        store.rotate("svc", actor="alice", now=NOW)
    assert rows(database) == before
    assert store.authenticate(created.secret, now=NOW).name == "svc"


def test_a_revocation_that_cannot_be_audited_still_stands(database: Database) -> None:
    created = KeyStore(database, None).create("svc", "client", actor="alice")
    store = KeyStore(database, BrokenAudit("keys.revoke"))  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="was revoked but not audited"):
        store.revoke("svc", actor="alice")
    with pytest.raises(AuthenticationError):
        store.authenticate(created.secret)


def test_an_unrecordable_refusal_is_still_a_refusal(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(database, BrokenAudit("keys.create.refused"))  # type: ignore[arg-type]
    with pytest.raises(BastionError, match="unknown role"):
        store.create("svc", "root", actor="alice")
    assert "could not audit a refused keys.create" in caplog.text


# ----------------------------------------------------------------------------- hostile keys


def _flip(secret: str, index: int) -> str:
    char = "A" if secret[index] != "A" else "B"
    return secret[:index] + char + secret[index + 1 :]


@pytest.fixture
def issued(store: KeyStore) -> CreatedKey:
    return store.create("svc", "client", actor="alice", now=NOW)


HOSTILE: list[tuple[str, Callable[[str], object], str]] = [
    ("empty", lambda s: "", "no key given"),
    ("none", lambda s: None, "no key given"),
    ("bytes", lambda s: s.encode(), "key is not text"),
    ("int", lambda s: 12345, "key is not text"),
    ("oversized", lambda s: s + "A" * 10_000_000, "key too long"),
    ("just-over-limit", lambda s: s + "A" * (129 - len(s)), "key too long"),
    ("null-byte-inside", lambda s: s[:20] + "\x00" + s[21:], "malformed key"),
    ("null-byte-after", lambda s: s + "\x00", "malformed key"),
    ("newline-after", lambda s: s + "\n", "malformed key"),
    ("space-before", lambda s: " " + s, "malformed key"),
    ("uppercase-id", lambda s: s[:4] + s[4:16].upper() + s[16:], "malformed key"),
    ("fullwidth-digit", lambda s: s[:-1] + "\uff11", "malformed key"),
    ("arabic-digit", lambda s: s[:-1] + "\u0661", "malformed key"),
    ("lone-surrogate", lambda s: s[:-1] + "\udcff", "malformed key"),
    ("rtl-override", lambda s: s[:-1] + "\u202e", "malformed key"),
    ("short-body", lambda s: s[:-1], "malformed key"),
    ("bearer-prefix", lambda s: "Bearer " + s, "malformed key"),
    ("hash-instead", lambda s: hash_secret(s), "malformed key"),
    ("other-prefix", lambda s: "sk_" + s[4:], "malformed key"),
    ("sql", lambda s: "' OR '1'='1", "malformed key"),
]


@pytest.mark.parametrize(("label", "make", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_keys_are_refused_alike(
    store: KeyStore,
    issued: CreatedKey,
    label: str,
    make: Callable[[str], object],
    reason: str,
) -> None:
    value: Any = make(issued.secret)
    table = store.snapshot()
    for authenticate in (store.authenticate, table.authenticate):
        with pytest.raises(AuthenticationError) as info:
            authenticate(value, now=NOW)
        assert info.value.reason == reason
        expected = "missing API key" if reason == "no key given" else "invalid API key"
        assert str(info.value) == expected


def test_wrong_secret_and_unknown_id_get_the_same_answer(
    store: KeyStore, issued: CreatedKey
) -> None:
    key_id = issued.key.key_id
    wrong_secret = _flip(issued.secret, len(issued.secret) - 1)
    other_id = issued.secret.replace(
        key_id, "ffffffffffff" if key_id != "ffffffffffff" else "0" * 12
    )
    answers = {}
    for label, secret in (("wrong", wrong_secret), ("unknown", other_id)):
        with pytest.raises(AuthenticationError) as info:
            store.authenticate(secret, now=NOW)
        answers[label] = (str(info.value), info.value.reason)
    assert answers["wrong"] == ("invalid API key", f"wrong secret for key {key_id}")
    assert answers["unknown"][0] == "invalid API key"
    assert answers["unknown"][1].startswith("unknown key ")


def test_every_attempt_costs_two_constant_time_comparisons(
    store: KeyStore, issued: CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    table = store.snapshot()
    attempts = [
        issued.secret,  # right
        _flip(issued.secret, 30),  # wrong secret, known id
        issued.secret.replace(issued.key.key_id, "abcdefabcdef"),  # unknown id
        "not a key at all",  # malformed
    ]
    for secret in attempts:
        calls.clear()
        with suppress(AuthenticationError):
            table.authenticate(secret, now=NOW)
        assert calls == [(64, 64), (64, 64)], secret


def test_the_dummy_comparison_never_lets_a_key_in(database: Database) -> None:
    # A key whose id is all zeros (a fixed random source) and no rotated-out secret: the
    # value compared against in its place must match no secret at all.
    store = KeyStore(database, None, token_bytes=lambda n: bytes(n))
    created = store.create("zero", "admin", actor="alice")
    assert created.key.key_id == "000000000000"
    table = store.snapshot()
    for body in ("A" * 43, "-" * 43, "0" * 43):
        guess = f"bst_000000000000_{body}"
        if guess != created.secret:
            with pytest.raises(AuthenticationError):
                table.authenticate(guess)
    assert table.authenticate(created.secret).name == "zero"


# ----------------------------------------------------------------------------- snapshots


def test_snapshot_sees_revocations_and_rotations_after_refresh(store: KeyStore) -> None:
    created = store.create("svc", "client", actor="alice", now=NOW)
    other = store.create("other", "sre", actor="alice", now=NOW)
    table = store.snapshot()
    assert len(table) == 2
    assert "svc" not in repr(table)
    store.revoke("svc", actor="alice", now=NOW)
    # The old snapshot is stale until refreshed (the gateway refreshes every few seconds).
    assert table.authenticate(created.secret, now=NOW).name == "svc"
    refreshed = store.snapshot()
    with pytest.raises(AuthenticationError) as info:
        refreshed.authenticate(created.secret, now=NOW)
    assert info.value.reason == f"revoked key {created.key.key_id}"
    rotated = store.rotate("other", actor="alice", grace=timedelta(0), now=NOW)
    assert refreshed.authenticate(other.secret, now=NOW).name == "other"
    with pytest.raises(AuthenticationError):
        refreshed.authenticate(rotated.secret, now=NOW)
    latest = store.snapshot()
    assert latest.authenticate(rotated.secret, now=NOW).name == "other"
    with pytest.raises(AuthenticationError):
        latest.authenticate(other.secret, now=NOW)


def test_a_damaged_row_is_refused_without_taking_the_others_down(
    store: KeyStore, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    good = store.create("good", "client", actor="alice")
    bad = store.create("bad", "client", actor="alice")
    with database.begin() as conn:
        conn.execute(
            api_keys.update().where(api_keys.c.key_id == bad.key.key_id).values(role="root")
        )
    table = store.snapshot()
    assert len(table) == 1
    assert table.authenticate(good.secret).name == "good"
    for authenticate in (table.authenticate, store.authenticate):
        with pytest.raises(AuthenticationError):
            authenticate(bad.secret)
    assert f"API key '{bad.key.key_id}' is stored damaged" in caplog.text
    with pytest.raises(StorageError, match="stored damaged"):
        store.list()


def test_a_rotated_out_hash_without_an_end_is_refused(store: KeyStore, database: Database) -> None:
    created = store.create("svc", "client", actor="alice")
    rotated = store.rotate("svc", actor="alice")
    with database.begin() as conn:
        conn.execute(api_keys.update().values(previous_valid_until=None))
    with pytest.raises(AuthenticationError) as info:
        store.authenticate(created.secret)
    assert info.value.reason.startswith("rotated-out secret")
    assert store.authenticate(rotated.secret).name == "svc"


def test_naive_times_are_refused(store: KeyStore, issued: CreatedKey) -> None:
    naive = datetime(2030, 1, 1)
    with pytest.raises(BastionError, match="timezone-aware"):
        store.snapshot().authenticate(issued.secret, now=naive)
    with pytest.raises(BastionError, match="timezone-aware"):
        issued.key.status(naive)


# ----------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        (" 7d ", timedelta(days=7)),
        ("3660d", MAX_DURATION),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0d",
        "30",
        "d",
        "-1d",
        "1.5h",
        "30D",
        "30 d",
        "1y",
        "3661d",
        "999999w",
        "\u0663\u0660d",
        "\uff13\uff10d",
        "30d\x00",
        "9" * 50 + "d",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(BastionError, match="duration") as info:
        parse_duration(text)
    assert len(str(info.value)) < 160


@pytest.mark.parametrize("name", ["digits", "a", "m-1.2_x", "0" * 100])
def test_check_model_name_accepts(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "Digits", "-x", ".x", "a/b", "a b", "a" * 101, "é", "a\x00"])
def test_check_model_name_refuses(name: str) -> None:
    with pytest.raises(BastionError, match="invalid model name"):
        check_model_name(name)


def test_api_key_view_never_has_a_hash(store: KeyStore, issued: CreatedKey) -> None:
    view = issued.key.to_dict(NOW)
    assert set(view) == {
        "key_id", "name", "role", "models", "status", "created_at", "created_by",
        "expires_at", "rotated_at", "previous_valid_until", "revoked_at", "revoked_by",
    }  # fmt: skip
    assert isinstance(issued.key, ApiKey)
    assert hash_secret(issued.secret) not in json.dumps(view)
    assert hash_secret(issued.secret) not in repr(store.snapshot())


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.mark.services
def test_the_key_lifecycle_on_postgresql(postgres_url: str) -> None:
    database = open_database(postgres_url)
    try:
        audit = AuditLog(database, actor="operator", checkpoint_interval=None)
        store = KeyStore(database, audit)
        created = store.create("svc", "ml-engineer", actor="alice", models=["digits"], now=NOW)
        with pytest.raises(BastionError, match="already named"):
            store.create("svc", "client", actor="alice", now=NOW)
        principal = store.authenticate(created.secret, now=NOW)
        assert principal.allows(Permission.MODEL_APPROVE, "digits")
        assert not principal.allows(Permission.MODEL_APPROVE, "other")
        for hostile in (created.secret + "\x00", "a\x00b", created.secret[:-1] + "\udcff"):
            with pytest.raises(AuthenticationError):
                store.authenticate(hostile, now=NOW)
        with pytest.raises(BastionError, match="no active key"):
            store.get("a\x00b")  # PostgreSQL refuses NUL in text: never sent to it
        rotated = store.rotate("svc", actor="alice", grace=timedelta(minutes=5), now=NOW)
        table = store.snapshot()
        assert table.authenticate(created.secret, now=NOW).name == "svc"
        with pytest.raises(AuthenticationError):
            table.authenticate(created.secret, now=NOW + timedelta(minutes=5))
        store.revoke("svc", actor="alice", now=NOW)
        with pytest.raises(AuthenticationError):
            store.snapshot().authenticate(rotated.secret, now=NOW)
        assert [e.action for e in audit.events()] == [
            "keys.create",
            "keys.create.refused",
            "keys.rotate",
            "keys.revoke",
        ]
        with database.begin() as conn:
            stored = conn.execute(sa.select(api_keys)).mappings().one()
        assert stored["secret_hash"] == hash_secret(rotated.secret)
        assert created.secret not in json.dumps(dict(stored))
        assert rotated.secret not in json.dumps(dict(stored))
    finally:
        database.dispose()
