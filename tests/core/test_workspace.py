"""Workspace discovery and creation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bastion.core.workspace import (
    current_actor,
    find_workspace,
    init_workspace,
    workspace_path,
)
from bastion.errors import WorkspaceError


def test_path_defaults_to_dot_bastion(tmp_path: Path) -> None:
    assert workspace_path(tmp_path, {}) == tmp_path / ".bastion"
    assert workspace_path(tmp_path, {"BASTION_HOME": "/srv/ws"}) == Path("/srv/ws")


def test_init_creates_every_part(tmp_path: Path) -> None:
    ws, created = init_workspace(tmp_path, {})
    try:
        assert created
        assert ws.root == tmp_path / ".bastion"
        assert ws.config_path.is_file()
        assert ws.store_path.is_dir()
        assert stat.S_IMODE(ws.private_key_path.stat().st_mode) == 0o600
        assert (ws.root / "bastion.db").is_file()
        assert ws.database.schema_version() >= 1
        ws.signing_key()
    finally:
        ws.close()


def test_init_twice_changes_nothing(tmp_path: Path) -> None:
    ws, _ = init_workspace(tmp_path, {})
    ws.close()
    before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file() and "db" not in p.name}
    again, created = init_workspace(tmp_path, {})
    again.close()
    assert not created
    after = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file() and "db" not in p.name}
    assert before == after


def test_find_without_workspace_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="run 'bastion init'"):
        find_workspace(tmp_path, {})


def test_init_refuses_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    with pytest.raises(WorkspaceError, match="refusing to touch"):
        init_workspace(tmp_path, {"BASTION_HOME": str(foreign)})
    assert sorted(p.name for p in foreign.iterdir()) == ["important.txt"]


def test_init_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / ".bastion").write_text("")
    with pytest.raises(WorkspaceError, match="not a folder"):
        init_workspace(tmp_path, {})


def test_passphrase_protects_the_workspace_key(tmp_path: Path) -> None:
    env = {"BASTION_KEY_PASSPHRASE": "correct horse"}
    ws, _ = init_workspace(tmp_path, env)
    ws.close()
    assert b"ENCRYPTED" in ws.private_key_path.read_bytes()
    find_workspace(tmp_path, env).signing_key()


def test_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_actor({"BASTION_ACTOR": "ci-bot"}) == "ci-bot"
    assert "@" in current_actor({})
