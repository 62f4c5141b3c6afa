"""``bastion keys create | list | revoke | rotate``: output, JSON schemas, audit events, and
one-line refusals (exit 2) that change nothing."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bastion.cli.keys import ONCE_NOTE
from bastion.core import find_workspace
from bastion.core.principals import KeyStore, Principal, hash_secret
from bastion.errors import AuthenticationError

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
Check = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture


@pytest.fixture
def home(cli: Cli, bastion_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("BASTION_API_KEY", raising=False)
    assert cli("init").code == 0
    return bastion_home


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def key_rows(home: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(home / "bastion.db")) as con:
        return sorted(con.execute("SELECT * FROM api_keys").fetchall())


def audit_events(home: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(home / "bastion.db")) as con:
        rows = con.execute("SELECT actor, action, subject, details FROM audit_events ORDER BY seq")
        return [
            {"actor": a, "action": b, "subject": c, "details": json.loads(d)} for a, b, c, d in rows
        ]


def authenticate(secret: str) -> Principal:
    ws = find_workspace()
    try:
        return KeyStore(ws.database, None).authenticate(secret)
    finally:
        ws.close()


def create(cli: Cli, *argv: str) -> dict[str, Any]:
    result = cli("keys", "create", *argv, "--format", "json")
    assert result.code == 0, result.err
    document: dict[str, Any] = json.loads(result.out)
    return document


# ----------------------------------------------------------------------------- create


def test_create_shows_the_secret_once(cli: Cli, home: Path) -> None:
    result = cli("keys", "create", "--name", "ci-bot", "--role", "client", "--models", "digits")
    assert result.code == 0, result.err
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith("Created key ")
    assert "'ci-bot' (role client, models digits, expires never). Its secret:" in lines[0]
    secrets = [line.strip() for line in lines if line.strip().startswith("bst_")]
    assert len(secrets) == 1
    assert result.out.count(secrets[0]) == 1
    assert ONCE_NOTE in result.out
    assert "cannot be shown again" in result.out
    principal = authenticate(secrets[0])
    assert (principal.name, principal.role, principal.models) == (
        "ci-bot",
        "client",
        frozenset({"digits"}),
    )
    assert principal.actor.startswith("ci-bot (key ")
    # Only the hash is stored; neither table holds the secret.
    (row,) = key_rows(home)
    assert hash_secret(secrets[0]) in row
    assert all(secrets[0] not in str(v) for v in row)
    events = audit_events(home)
    assert [e["action"] for e in events] == ["workspace.init", "keys.create"]
    assert events[-1]["actor"] == "tester"
    assert secrets[0][len("bst_000000000000_") :] not in json.dumps(events)


def test_create_json_matches_its_schema(cli: Cli, home: Path, check_schema: Check) -> None:
    document = create(
        cli, "--name", "svc", "--role", "ml-engineer", "--expires", "30d", "--models", "b, a"
    )
    check_schema("keys-create", document)
    key = document["key"]
    assert (key["name"], key["role"], key["models"], key["status"]) == (
        "svc",
        "ml-engineer",
        ["a", "b"],
        "active",
    )
    assert key["expires_at"] is not None
    assert document["note"] == ONCE_NOTE
    assert authenticate(document["secret"]).key_id == key["key_id"]


def test_list_never_shows_secrets(cli: Cli, home: Path, check_schema: Check) -> None:
    first = create(cli, "--name", "a-key", "--role", "admin")
    second = create(cli, "--name", "b-key", "--role", "sre", "--models", "digits")
    text = cli("keys", "list")
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[0].split() == [
        "KEY",
        "ID",
        "NAME",
        "ROLE",
        "STATUS",
        "MODELS",
        "EXPIRES",
        "CREATED",
        "BY",
    ]
    assert lines[1].split()[:5] == [first["key"]["key_id"], "a-key", "admin", "active", "*"]
    assert lines[2].split()[:5] == [second["key"]["key_id"], "b-key", "sre", "active", "digits"]
    result = cli("keys", "list", "--format", "json")
    document = json.loads(result.out)
    check_schema("keys-list", document)
    assert document["count"] == 2
    for secret in (first["secret"], second["secret"]):
        assert secret not in text.out
        assert secret not in result.out
        assert hash_secret(secret) not in result.out


def test_list_all_includes_revoked_keys(cli: Cli, home: Path, check_schema: Check) -> None:
    assert cli("keys", "list").out.strip() == "No active API keys."
    created = create(cli, "--name", "gone", "--role", "client")
    assert cli("keys", "revoke", "gone").code == 0
    assert cli("keys", "list").out.strip() == "No active API keys."
    document = json.loads(cli("keys", "list", "--all", "--format", "json").out)
    check_schema("keys-list", document)
    assert document["include_revoked"] is True
    assert [(k["key_id"], k["status"]) for k in document["keys"]] == [
        (created["key"]["key_id"], "revoked")
    ]
    assert "revoked" in cli("keys", "list", "--all").out


# ----------------------------------------------------------------------------- revoke


def test_revoke_by_id_and_twice(cli: Cli, home: Path, check_schema: Check) -> None:
    created = create(cli, "--name", "svc", "--role", "client")
    key_id = created["key"]["key_id"]
    result = cli("keys", "revoke", key_id, "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("keys-revoke", document)
    assert (document["key"]["status"], document["key"]["revoked_by"]) == ("revoked", "tester")
    assert "secret" not in document
    with pytest.raises(AuthenticationError):
        authenticate(created["secret"])
    before = key_rows(home)
    again = cli("keys", "revoke", key_id)
    assert again.code == 2
    assert again.out == ""
    assert one_line(again.err) == f"bastion: error: key {key_id} is already revoked"
    assert key_rows(home) == before
    actions = [e["action"] for e in audit_events(home)]
    assert actions[-2:] == ["keys.revoke", "keys.revoke.refused"]


def test_revoke_text(cli: Cli, home: Path) -> None:
    create(cli, "--name", "svc", "--role", "client")
    result = cli("keys", "revoke", "svc")
    assert result.code == 0
    assert "Revoked key " in result.out
    assert "stops working now" in result.out


# ----------------------------------------------------------------------------- rotate


def test_rotate_with_a_grace_period(cli: Cli, home: Path, check_schema: Check) -> None:
    created = create(cli, "--name", "svc", "--role", "client")
    result = cli("keys", "rotate", "svc", "--grace", "1h", "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("keys-rotate", document)
    assert document["grace_seconds"] == 3600
    assert document["secret"] != created["secret"]
    assert document["key"]["previous_valid_until"] is not None
    assert authenticate(created["secret"]).name == "svc"  # still in its grace period
    assert authenticate(document["secret"]).name == "svc"
    assert audit_events(home)[-1]["details"]["grace_seconds"] == 3600


def test_rotate_with_no_grace_text(cli: Cli, home: Path) -> None:
    created = create(cli, "--name", "svc", "--role", "client")
    result = cli("keys", "rotate", created["key"]["key_id"], "--grace", "0")
    assert result.code == 0, result.err
    assert "Its new secret:" in result.out
    assert ONCE_NOTE in result.out
    assert "The old secret stopped working now." in result.out
    (new_secret,) = [w for w in result.out.split() if w.startswith("bst_")]
    with pytest.raises(AuthenticationError):
        authenticate(created["secret"])
    assert authenticate(new_secret).name == "svc"
    default = cli("keys", "rotate", "svc")
    assert "The old secret keeps working until " in default.out


# ----------------------------------------------------------------------------- refusals


@pytest.fixture
def populated(cli: Cli, home: Path) -> dict[str, Any]:
    return create(cli, "--name", "existing", "--role", "admin")


SRE = ["create", "--name", "n", "--role", "sre"]  # a valid create, to spoil one argument of

REFUSALS: list[tuple[str, list[str], str]] = [
    ("bad-role", ["create", "--name", "n", "--role", "root"], "unknown role 'root': choose from"),
    ("role-case", ["create", "--name", "n", "--role", "ADMIN"], "unknown role 'ADMIN'"),
    ("duration-no-unit", [*SRE, "--expires", "30"], "invalid duration '30'"),
    ("duration-zero", [*SRE, "--expires", "0d"], "invalid duration"),
    ("duration-years", [*SRE, "--expires", "1y"], "invalid duration"),
    ("duration-too-long", [*SRE, "--expires", "3661d"], "longer than ten years"),
    ("duration-negative", [*SRE, "--expires=-1d"], "invalid duration"),
    ("model-case", [*SRE, "--models", "Digits"], "invalid model name 'Digits'"),
    ("model-path", [*SRE, "--models", "../etc"], "invalid model name"),
    ("model-empty-item", [*SRE, "--models", "a,,b"], "none empty"),
    ("model-empty", [*SRE, "--models", ""], "none empty"),
    ("model-too-many", [*SRE, "--models", ",".join(f"m{i}" for i in range(101))], "at most 100"),
    (
        "duplicate-name",
        ["create", "--name", "existing", "--role", "sre"],
        "already named 'existing'",
    ),
    ("name-like-id", ["create", "--name", "abcdefabcdef", "--role", "sre"], "looks like a key id"),
    (
        "name-space",
        ["create", "--name", "two words", "--role", "sre"],
        "invalid key name 'two words'",
    ),
    ("name-huge", ["create", "--name", "n" * 1_000_000, "--role", "sre"], r"\(1000000 characters"),
    ("name-nul", ["create", "--name", "a\x00b", "--role", "sre"], r"invalid key name 'a\\x00b'"),
    ("name-ansi", ["create", "--name", "\x1b[2Jx", "--role", "sre"], r"'\\x1b\[2Jx'"),
    ("name-bidi", ["create", "--name", "a\u202eb", "--role", "sre"], r"'a\\u202eb'"),
    ("name-unicode", ["create", "--name", "caf\u00e9", "--role", "sre"], "invalid key name"),
    ("unknown-revoke", ["revoke", "nobody"], "no active key with id or name 'nobody'"),
    ("unknown-id-revoke", ["revoke", "ffffffffffff"], "no active key with id or name 'ffff"),
    ("unknown-rotate", ["rotate", "nobody"], "no active key with id or name 'nobody'"),
    ("huge-ref", ["revoke", "r" * 1_000_000], r"\(1000000 characters\)"),
    ("nul-ref", ["rotate", "a\x00b"], r"'a\\x00b'"),
    ("grace-bad", ["rotate", "existing", "--grace", "soon"], "invalid duration 'soon'"),
    ("grace-negative", ["rotate", "existing", "--grace=-1h"], "invalid duration"),
    ("grace-too-long", ["rotate", "existing", "--grace", "600w"], "longer than ten years"),
]


@pytest.mark.parametrize(("label", "argv", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_one_line_exit_2_change_nothing_and_are_audited(
    cli: Cli,
    home: Path,
    populated: dict[str, Any],
    label: str,
    argv: list[str],
    message: str,
) -> None:
    before = key_rows(home)
    events_before = len(audit_events(home))
    result = cli("keys", *argv)
    assert result.code == 2
    assert result.out == ""
    line = one_line(result.err)
    assert line.startswith("bastion: error: ")
    assert len(line) < 220
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert re.search(message, line), line
    assert key_rows(home) == before
    events = audit_events(home)
    assert len(events) == events_before + 1
    operation = argv[0]
    assert events[-1]["action"] == f"keys.{operation}.refused"
    assert events[-1]["actor"] == "tester"
    assert events[-1]["details"]["reason"] == line.removeprefix("bastion: error: ")
    assert authenticate(populated["secret"]).name == "existing"


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_a_secret_given_as_key_is_refused_and_never_repeated(
    cli: Cli, home: Path, populated: dict[str, Any], command: str
) -> None:
    secret = populated["secret"]
    result = cli("keys", command, secret)
    assert result.code == 2
    assert "give the key's id or name, not the key itself" in one_line(result.err)
    body = secret[len("bst_000000000000_") :]
    assert body not in result.err
    assert body not in json.dumps(audit_events(home))
    assert authenticate(secret).name == "existing"


@pytest.mark.parametrize(
    "argv",
    [
        ["keys"],
        ["keys", "create", "--role", "sre"],
        ["keys", "create", "--name", "x"],
        ["keys", "revoke"],
        ["keys", "list", "--nope"],
    ],
)
def test_argument_errors_are_one_line_exit_2(cli: Cli, home: Path, argv: list[str]) -> None:
    before = audit_events(home)
    result = cli(*argv)
    assert result.code == 2
    assert result.out == ""
    assert one_line(result.err).startswith("bastion: error:")
    assert audit_events(home) == before  # parsing never reached a decision


def test_keys_without_a_workspace(cli: Cli, bastion_home: Path) -> None:
    result = cli("keys", "list")
    assert result.code == 2
    assert "run 'bastion init' first" in one_line(result.err)
    assert not bastion_home.exists()


# ----------------------------------------------------------------------------- BASTION_API_KEY


def test_with_an_admin_key_the_key_is_the_actor(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = create(cli, "--name", "root-admin", "--role", "admin")
    monkeypatch.setenv("BASTION_API_KEY", admin["secret"])
    created = create(cli, "--name", "svc", "--role", "client")
    assert created["key"]["created_by"] == f"root-admin (key {admin['key']['key_id']}, admin)"
    assert cli("keys", "revoke", "svc").code == 0
    events = audit_events(home)
    assert events[-1]["action"] == "keys.revoke"
    assert events[-1]["actor"].startswith("root-admin (key ")


@pytest.mark.parametrize("command", [["list"], ["create", "--name", "x", "--role", "admin"],
                                     ["revoke", "existing"], ["rotate", "existing"]])  # fmt: skip
def test_a_key_without_keys_manage_is_refused(
    cli: Cli,
    home: Path,
    populated: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    sre = create(cli, "--name", "ops", "--role", "sre")
    monkeypatch.setenv("BASTION_API_KEY", sre["secret"])
    before = key_rows(home)
    result = cli("keys", *command)
    assert result.code == 2
    assert result.out == ""
    assert one_line(result.err) == "bastion: error: role sre does not have permission keys.manage"
    assert key_rows(home) == before
    event = audit_events(home)[-1]
    assert event["action"] == "access.denied"
    assert event["details"]["permission"] == "keys.manage"
    assert "role lacks keys.manage" in event["details"]["reason"]


def test_an_invalid_key_is_refused_without_detail(
    cli: Cli, home: Path, populated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("keys", "revoke", "existing").code == 0
    monkeypatch.setenv("BASTION_API_KEY", populated["secret"])  # now revoked
    result = cli("keys", "list")
    assert result.code == 2
    assert one_line(result.err) == "bastion: error: invalid API key"
    event = audit_events(home)[-1]
    assert (event["action"], event["details"]["reason"]) == (
        "access.denied",
        f"revoked key {populated['key']['key_id']}",
    )
    assert populated["secret"][len("bst_000000000000_") :] not in json.dumps(event)
