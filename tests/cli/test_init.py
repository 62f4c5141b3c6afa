"""``bastion init``: the workspace it creates, what it refuses, and that a second run is a no-op."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.config import default_toml
from bastion.core import find_workspace, key_id, load_private_key, load_public_key
from bastion.errors import KeyMaterialError

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
CheckSchema = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_init_creates_the_workspace(cli: Cli, bastion_home: Path) -> None:
    result = cli("init")
    assert result.code == 0
    assert result.out.startswith(f"Created workspace {bastion_home}\n")
    assert (bastion_home / "bastion.toml").read_text("utf-8") == default_toml()
    assert (bastion_home / "store").is_dir()
    with closing(sqlite3.connect(bastion_home / "bastion.db")) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_migrations", "audit_events", "audit_checkpoints"} <= tables
    private = bastion_home / "keys" / "workspace.key"
    assert mode(private) == 0o600
    assert mode(bastion_home) == 0o700
    assert mode(bastion_home / "keys") == 0o700
    assert b"ENCRYPTED" not in private.read_bytes()
    key = load_private_key(private)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert key_id(key) == key_id(load_public_key(bastion_home / "keys" / "workspace.pub"))


def test_init_json_matches_its_schema(
    cli: Cli, bastion_home: Path, check_schema: CheckSchema
) -> None:
    first = json.loads(cli("init", "--format", "json").out)
    check_schema("init", first)
    assert first["created"] is True
    assert first["workspace"] == str(bastion_home)
    assert first["database"] == "sqlite"
    assert first["key_id"] == key_id(load_public_key(bastion_home / "keys" / "workspace.pub"))
    second = json.loads(cli("init", "--format", "json").out)
    check_schema("init", second)
    assert second == {**first, "created": False}


def test_the_passphrase_encrypts_the_key(
    cli: Cli, bastion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "correct horse")
    assert cli("init").code == 0
    private = bastion_home / "keys" / "workspace.key"
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert mode(private) == 0o600
    with pytest.raises(KeyMaterialError, match="set BASTION_KEY_PASSPHRASE"):
        load_private_key(private)
    with pytest.raises(KeyMaterialError, match="passphrase is wrong"):
        load_private_key(private, b"wrong horse")
    load_private_key(private, b"correct horse")


def test_init_with_ecdsa(cli: Cli, bastion_home: Path) -> None:
    assert cli("init", "--algorithm", "ecdsa-p256").code == 0
    key = load_private_key(bastion_home / "keys" / "workspace.key")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert cli("log", "checkpoint").code == 0
    assert cli("log", "verify").code == 0


def test_a_second_init_changes_nothing_and_says_so(cli: Cli, bastion_home: Path) -> None:
    assert cli("init").code == 0
    before = snapshot(bastion_home)
    assert {"bastion.toml", "bastion.db", "keys/workspace.key", "keys/workspace.pub"} <= set(before)
    time.sleep(0.05)  # past the file system's timestamp granularity
    result = cli("init", "--algorithm", "ecdsa-p256")  # options cannot change it either
    assert result.code == 0
    assert one_line(result.out) == f"Workspace {bastion_home} already exists; nothing was changed."
    assert snapshot(bastion_home) == before
    ws = find_workspace()
    try:
        assert [e.action for e in ws.audit().events()] == ["workspace.init"]
    finally:
        ws.close()


def test_init_records_the_workspace_init_event(cli: Cli, bastion_home: Path) -> None:
    assert cli("init").code == 0
    ws = find_workspace()
    try:
        log = ws.audit()
        (event,) = log.events()
        assert (event.seq, event.action, event.subject, event.actor) == (
            1,
            "workspace.init",
            str(bastion_home),
            "tester",
        )
        assert dict(event.details) == {
            "key_id": key_id(ws.public_key()),
            "database": "sqlite",
        }
        assert log.verify().head.hash == event.hash
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("database_url =", "colour = 1\ndatabase_url =", "colour"),
        ("[audit]\n", "[audit]\ninterval = 5\n", "audit.interval"),
    ],
)
def test_an_unknown_setting_is_named(
    cli: Cli, bastion_home: Path, old: str, new: str, key: str
) -> None:
    assert cli("init").code == 0
    config = bastion_home / "bastion.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    for argv in (("init",), ("log", "show")):
        result = cli(*argv)
        assert result.code == 2
        assert f"unknown setting '{key}' in {config}" in one_line(result.err)


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("BASTION_AUDIT_CHECKPOINT_INTERVAL", "0", "audit.checkpoint_interval"),
        ("BASTION_SCAN_WORKERS", "many", "scan.workers"),
    ],
)
def test_a_bad_environment_override_is_an_error(
    cli: Cli,
    bastion_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    key: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = cli("init")
    assert result.code == 2
    assert f"invalid setting '{key}'" in one_line(result.err)
    assert not bastion_home.exists()  # checked before anything is written


def test_a_foreign_folder_is_refused(cli: Cli, bastion_home: Path) -> None:
    bastion_home.mkdir()
    (bastion_home / "important.txt").write_text("keep me")
    result = cli("init")
    assert result.code == 2
    assert "is not empty and has no bastion.toml: refusing to touch it" in one_line(result.err)
    assert [p.name for p in bastion_home.iterdir()] == ["important.txt"]
    assert (bastion_home / "important.txt").read_text() == "keep me"


def test_an_empty_folder_is_used(cli: Cli, bastion_home: Path) -> None:
    bastion_home.mkdir()
    assert cli("init").code == 0
    assert (bastion_home / "bastion.toml").is_file()


def test_a_command_needing_a_workspace_without_one_is_one_line_exit_2(
    cli: Cli, bastion_home: Path
) -> None:
    result = cli("log", "show")
    assert result.code == 2
    assert one_line(result.err) == (
        f"bastion: error: no bastion workspace at {bastion_home}: run 'bastion init' first"
    )


@pytest.mark.services
def test_init_on_postgresql(
    cli: Cli,
    bastion_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    check_schema: CheckSchema,
) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", postgres_url)
    document = json.loads(cli("init", "--format", "json").out)
    check_schema("init", document)
    assert document["database"] == "postgresql"
    assert not (bastion_home / "bastion.db").exists()
    assert cli("log", "checkpoint").code == 0
    assert cli("log", "verify").code == 0
    shown = json.loads(cli("log", "show", "--format", "json").out)
    assert [e["action"] for e in shown["events"]] == ["workspace.init"]
