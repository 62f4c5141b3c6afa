"""``bastion registry ...``: identities from BASTION_API_KEY, exit codes, JSON schemas, audit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.principals import KeyStore
from bastion.core.workspace import Workspace
from bastion.demo_model import DemoModel, write_model_folder

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
Check = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture

ROLES = {
    "alice": "data-scientist",
    "bob": "ml-engineer",
    "carol": "ml-engineer",
    "dave": "sre",
    "frank": "client",
}


@pytest.fixture
def keys(workspace: Workspace) -> dict[str, str]:
    """The secret of each member's API key (and of ``scoped``, limited to model ``other``)."""
    store = KeyStore(workspace.database, workspace.audit())
    secrets = {n: store.create(n, r, actor="operator").secret for n, r in ROLES.items()}
    secrets["scoped"] = store.create(
        "scoped", "ml-engineer", actor="operator", models=["other"]
    ).secret
    return secrets


@pytest.fixture
def as_member(keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``as_member("bob")`` sets BASTION_API_KEY to bob's key; ``as_member("")`` unsets it."""

    def switch(name: str) -> None:
        if name:
            monkeypatch.setenv("BASTION_API_KEY", keys[name])
        else:
            monkeypatch.delenv("BASTION_API_KEY", raising=False)

    return switch


@pytest.fixture
def model(tmp_path: Path, cli: Cli, workspace: Workspace) -> Callable[..., Path]:
    def make(name: str = "demo", seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        demo = DemoModel(
            rng.normal(size=(10, 64)).astype(np.float32), np.zeros(10, np.float32), 0.5
        )
        folder = write_model_folder(demo, tmp_path / "models" / name)
        result = cli("sign", folder)
        assert result.code == 0, result.err
        return folder

    return make


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def run_json(cli: Cli, *argv: Any, code: int = 0) -> dict[str, Any]:
    result = cli(*argv, "--format", "json")
    assert result.code == code, result.err
    document: dict[str, Any] = json.loads(result.out)
    return document


def audit_actions(workspace: Workspace) -> list[str]:
    return [e.action for e in workspace.audit().events(action="registry.*")]


def test_the_whole_flow_with_one_key_per_role(
    cli: Cli,
    check_schema: Check,
    workspace: Workspace,
    as_member: Callable[[str], None],
    model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    as_member("alice")
    added = run_json(cli, "registry", "add", "digits", model())
    check_schema("registry-add", added)
    assert added["registered"] is True
    assert added["model"]["version"] == "1"
    assert added["model"]["registered_by"].startswith("alice (key ")

    as_member("")
    listed = run_json(cli, "registry", "list")
    check_schema("registry-list", listed)
    assert [(v["name"], v["version"], v["stage"]) for v in listed["versions"]] == [
        ("digits", "1", "registered")
    ]

    as_member("bob")
    check_schema(
        "registry-promote", run_json(cli, "registry", "promote", "digits", "1", "--to", "staging")
    )
    approved = run_json(cli, "registry", "approve", "digits", "1", "--comment", "reviewed")
    check_schema("registry-approve", approved)
    assert approved["model"]["approvals"][0]["comment"] == "reviewed"

    as_member("dave")
    promoted = run_json(cli, "registry", "promote", "digits", "1", "--to", "production")
    check_schema("registry-promote", promoted)
    assert (promoted["model"]["stage"], promoted["archived"]) == ("production", [])

    as_member("alice")
    run_json(cli, "registry", "add", "digits", model("v2", seed=1), "--version", "2.0")
    as_member("bob")
    run_json(cli, "registry", "promote", "digits", "2.0", "--to", "staging")
    as_member("carol")
    run_json(cli, "registry", "approve", "digits", "2.0")
    as_member("dave")
    promoted = run_json(cli, "registry", "promote", "digits", "2.0", "--to", "production")
    assert promoted["archived"] == ["1"]

    as_member("")
    shown = run_json(cli, "registry", "show", "digits", "1")
    check_schema("registry-show", shown)
    assert shown["model"]["stage"] == "archived"
    pulled = run_json(cli, "registry", "pull", "digits", "latest", "--out", tmp_path / "out")
    check_schema("registry-pull", pulled)
    assert pulled["path"] == str(tmp_path / "out" / "digits")
    assert cli("verify", pulled["path"]).code == 0

    assert audit_actions(workspace) == [
        "registry.add",
        "registry.promote",
        "registry.approve",
        "registry.promote",
        "registry.add",
        "registry.promote",
        "registry.approve",
        "registry.promote",
        "registry.archive",
        "registry.pull",
    ]
    assert cli("log", "verify").code == 0


def test_text_output(
    cli: Cli, as_member: Callable[[str], None], model: Callable[..., Path], tmp_path: Path
) -> None:
    as_member("alice")
    result = cli("registry", "add", "digits", model())
    assert result.code == 0, result.err
    assert "Registered digits 1 (stage registered)." in result.out
    assert "file        model.safetensors" in result.out
    as_member("")
    assert "digits  1        registered" in cli("registry", "list").out
    assert "[registered]" in cli("registry", "show", "digits", "1").out
    assert cli("registry", "list", "digits").code == 0
    pulled = cli("registry", "pull", "digits", "1", "--out", tmp_path / "o")
    assert "digests and signature verified" in pulled.out
    as_member("bob")
    assert "Approved digits 1 as bob." in cli("registry", "approve", "digits", "1").out
    assert (
        "Moved digits 1 to staging."
        in cli("registry", "promote", "digits", "1", "--to", "staging").out
    )
    assert "no longer loads" in cli("registry", "allow-pickle", "digits", "--off").out
    as_member("")
    assert cli("registry", "list", "--format", "json").code == 0


def test_changes_need_a_key_with_the_right_permission(
    cli: Cli,
    workspace: Workspace,
    as_member: Callable[[str], None],
    model: Callable[..., Path],
) -> None:
    folder = model()
    as_member("")
    result = cli("registry", "add", "digits", folder)
    assert result.code == 2
    assert "set BASTION_API_KEY" in one_line(result.err)
    as_member("frank")
    result = cli("registry", "add", "digits", folder)
    assert result.code == 2
    assert "does not have permission model.register" in one_line(result.err)
    as_member("alice")
    assert cli("registry", "add", "digits", folder).code == 0
    for who, argv, missing in [
        ("alice", ("approve", "digits", "1"), "model.approve"),
        ("alice", ("promote", "digits", "1", "--to", "staging"), "model.promote.staging"),
        ("bob", ("promote", "digits", "1", "--to", "production"), "model.promote.production"),
        ("bob", ("promote", "digits", "1", "--to", "archived"), "model.archive"),
        ("alice", ("allow-pickle", "digits"), "model.approve"),
        ("frank", ("list",), "model.read"),
        ("frank", ("show", "digits", "1"), "model.read"),
        ("frank", ("pull", "digits", "1"), "model.pull"),
        ("scoped", ("approve", "digits", "1"), "not allowed to use model 'digits'"),
    ]:
        as_member(who)
        result = cli("registry", *argv)
        assert result.code == 2, (who, argv)
        assert missing in one_line(result.err), (who, argv)
    assert len(workspace.audit().events(action="access.denied")) == 11  # one per refusal above
    # Promotion to production without an approval: a registry refusal, audited as such.
    as_member("bob")
    assert cli("registry", "promote", "digits", "1", "--to", "staging").code == 0
    as_member("dave")
    result = cli("registry", "promote", "digits", "1", "--to", "production")
    assert result.code == 2
    assert "needs an approval" in one_line(result.err)
    assert audit_actions(workspace)[-1] == "registry.promote.refused"


def test_a_scoped_key_lists_only_its_models(
    cli: Cli, as_member: Callable[[str], None], model: Callable[..., Path]
) -> None:
    folder = model()
    as_member("bob")
    assert cli("registry", "add", "digits", folder).code == 0
    as_member("scoped")
    assert cli("registry", "add", "other", folder).code == 0
    listed = run_json(cli, "registry", "list")
    assert [v["name"] for v in listed["versions"]] == ["other"]
    assert listed["count"] == 1
    as_member("")
    assert run_json(cli, "registry", "list")["count"] == 2


def test_verification_failures_exit_1_with_a_json_report(
    cli: Cli,
    check_schema: Check,
    workspace: Workspace,
    as_member: Callable[[str], None],
    model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    as_member("alice")
    unsigned = model()
    unsigned.with_name(unsigned.name + ".sig").unlink()
    document = run_json(cli, "registry", "add", "digits", unsigned, code=1)
    check_schema("registry-add", document)
    assert document["registered"] is False
    assert "no readable signature" in document["error"]

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.")
    assert cli("sign", evil).code == 0
    result = cli("registry", "add", "digits", evil)
    assert result.code == 1
    assert "verification failed" in result.err
    assert "model.pkl" in result.err

    folder = model("good")
    run_json(cli, "registry", "add", "digits", folder)
    blob = next((workspace.store_path / "sha256").iterdir())
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b" ")
    as_member("")
    document = run_json(cli, "registry", "pull", "digits", "1", "--out", tmp_path / "out", code=1)
    check_schema("registry-pull", document)
    assert document["pulled"] is False
    assert document["problems"][0].startswith("modified: ")
    assert not (tmp_path / "out" / "digits").exists()


def test_allow_pickle_and_bad_arguments(
    cli: Cli,
    check_schema: Check,
    as_member: Callable[[str], None],
    model: Callable[..., Path],
) -> None:
    as_member("bob")
    result = cli("registry", "allow-pickle", "digits")
    assert result.code == 2
    assert "no model named 'digits'" in one_line(result.err)
    run_json(cli, "registry", "add", "digits", model(), "--allow-pickle")
    document = run_json(cli, "registry", "allow-pickle", "digits", "--off")
    check_schema("registry-allow-pickle", document)
    assert document == {"schema_version": "1.0", "name": "digits", "allow_pickle": False}
    assert run_json(cli, "registry", "allow-pickle", "digits")["allow_pickle"] is True
    for argv in (
        ("registry", "promote", "digits", "1", "--to", "live"),
        ("registry", "show", "../etc", "1"),
        ("registry", "show", "digits", "../1"),
        ("registry", "show", "digits", "9"),
        ("registry", "add", "digits", "/no/such/model"),
        ("registry",),
    ):
        result = cli(*argv)
        assert result.code == 2, argv
        assert one_line(result.err).startswith("bastion: error:"), argv
