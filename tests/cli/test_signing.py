"""``bastion keygen | sign | verify``: exit codes, one-line errors, JSON schemas, audit events."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.core import find_workspace, key_id, load_public_key
from bastion.core.workspace import Workspace

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
CheckSchema = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def audit_actions() -> list[tuple[str, dict[str, Any]]]:
    ws = find_workspace()
    try:
        return [(e.action, dict(e.details)) for e in ws.audit().events()]
    finally:
        ws.close()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(300))
    (folder / "sub" / "config.json").write_text("{}")
    (folder / "empty").write_bytes(b"")
    return folder


# -- keygen ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("bastion_home")
@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_keygen(cli: Cli, tmp_path: Path, algorithm: str, check_schema: CheckSchema) -> None:
    result = cli("keygen", "--out", tmp_path / "k", "--algorithm", algorithm, "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("keygen", document)
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert document["algorithm"] == algorithm
    assert document["key_id"] == key_id(load_public_key(public))
    assert document["encrypted"] is False


@pytest.mark.usefixtures("bastion_home")
def test_keygen_refuses_to_overwrite(cli: Cli, tmp_path: Path) -> None:
    assert cli("keygen", "--out", tmp_path / "k").code == 0
    before = (tmp_path / "k.key").read_bytes()
    result = cli("keygen", "--out", tmp_path / "k")
    assert result.code == 2
    assert "exists: refusing to overwrite" in one_line(result.err)
    assert (tmp_path / "k.key").read_bytes() == before
    (tmp_path / "only.pub").write_text("someone's public key")
    assert cli("keygen", "--out", tmp_path / "only").code == 2
    assert not (tmp_path / "only.key").exists()
    assert cli("keygen", "--out", tmp_path / "k", "--force").code == 0
    assert (tmp_path / "k.key").read_bytes() != before


def test_keygen_with_passphrase_and_audit(
    cli: Cli, workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "correct horse")
    result = cli("keygen", "--out", tmp_path / "enc", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["encrypted"] is True
    assert b"ENCRYPTED" in (tmp_path / "enc.key").read_bytes()
    assert audit_actions()[-1][0] == "key.generate"
    assert cli("sign", model, "--key", tmp_path / "enc.key").code == 0
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "wrong")
    result = cli("sign", model, "--key", tmp_path / "enc.key")
    assert result.code == 2
    assert "passphrase is wrong" in one_line(result.err)
    monkeypatch.delenv("BASTION_KEY_PASSPHRASE")
    result = cli("sign", model, "--key", tmp_path / "enc.key")
    assert result.code == 2
    assert "is encrypted: set BASTION_KEY_PASSPHRASE" in one_line(result.err)


@pytest.mark.usefixtures("bastion_home")
def test_keygen_force_never_follows_a_planted_link(cli: Cli, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "k.key").symlink_to(victim)
    result = cli("keygen", "--out", tmp_path / "k", "--force")
    assert result.code == 2
    assert "cannot write" in one_line(result.err)
    assert victim.read_text() == "precious"


@pytest.mark.usefixtures("bastion_home")
def test_keygen_into_a_missing_folder(cli: Cli, tmp_path: Path) -> None:
    result = cli("keygen", "--out", tmp_path / "no" / "k")
    assert result.code == 2
    assert "cannot write" in one_line(result.err)


# -- sign and verify with the workspace key -------------------------------------------------


def test_sign_and_verify_with_the_workspace_key(
    cli: Cli, workspace: Workspace, model: Path, check_schema: CheckSchema
) -> None:
    result = cli("sign", model, "--format", "json", "--param", "lr=0.1", "--code-revision", "v1")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("sign", document)
    assert document["key_id"] == key_id(workspace.public_key())
    assert document["files"] == 3
    assert document["serialization"]["method"] == "shards"
    assert document["provenance"]["parameters"] == {"lr": "0.1"}
    assert document["provenance"]["code_revision"] == "v1"
    assert document["provenance"]["signer"]["actor"] == "tester"
    assert Path(document["signature"]) == model.with_name("model.sig")

    result = cli("verify", model, "--format", "json")
    assert result.code == 0, result.err
    verified = json.loads(result.out)
    check_schema("verify", verified)
    assert verified["verified"] is True
    assert verified["subject"] == document["subject"]
    assert verified["provenance"] == document["provenance"]

    result = cli("verify", model)
    assert result.code == 0
    assert "Verified" in result.out
    assert "3 files" in result.out

    actions = audit_actions()
    assert [a for a, _ in actions][-3:] == ["model.sign", "model.verify", "model.verify"]
    assert actions[-1][1]["ok"] is True


def test_failed_verification_lists_each_file(
    cli: Cli, workspace: Workspace, model: Path, check_schema: CheckSchema
) -> None:
    assert cli("sign", model).code == 0
    (model / "weights.bin").write_bytes(os.urandom(300))
    (model / "sub" / "config.json").unlink()
    (model / "added.py").write_text("import os")
    result = cli("verify", model)
    assert result.code == 1
    assert result.out == ""
    assert result.err.splitlines() == [
        f"bastion: verification failed: {model} does not match its signature: 3 problems",
        "  - added: added.py",
        "  - removed: sub/config.json",
        "  - modified: weights.bin",
    ]
    result = cli("verify", model, "--format", "json")
    assert result.code == 1
    document = json.loads(result.out)
    check_schema("verify", document)
    assert document["verified"] is False
    assert document["problems"] == [
        "added: added.py",
        "removed: sub/config.json",
        "modified: weights.bin",
    ]
    action, details = audit_actions()[-1]
    assert action == "model.verify"
    assert details["ok"] is False
    assert details["problems"] == document["problems"]


def test_sign_reuse_and_options(
    cli: Cli, workspace: Workspace, model: Path, tmp_path: Path
) -> None:
    first = cli("sign", model, "--output", tmp_path / "first.sig", "--format", "json")
    assert first.code == 0, first.err
    again = cli(
        "sign", model, "--reuse", tmp_path / "first.sig", "--format", "json", "--workers", "1"
    )
    assert again.code == 0, again.err
    document = json.loads(again.out)
    assert (document["reused_files"], document["hashed_files"]) == (3, 0)
    assert document["subject"] == json.loads(first.out)["subject"]
    blake = cli("sign", model, "--hash", "blake3", "--format", "json")
    assert json.loads(blake.out)["serialization"] == {
        "method": "files",
        "hash": "blake3",
        "shard_size": None,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore"],
    }
    assert cli("verify", model).code == 0
    shards = cli(
        "sign", model, "--shard-size", "100", "--serialization", "shards", "--format", "json"
    )
    assert json.loads(shards.out)["serialization"]["shard_size"] == 100
    assert cli("verify", model).code == 0
    result = cli("sign", model, "--reuse", tmp_path / "first.sig", "--hash", "blake3")
    assert result.code == 2
    assert "cannot reuse" in one_line(result.err)


def test_sign_records_the_git_revision_of_the_current_folder(
    cli: Cli, workspace: Workspace, model: Path, tmp_path: Path
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    subprocess.run(["git", "init", "-q"], check=True, env=env, cwd=tmp_path)
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", "m"], check=True, env=env, cwd=tmp_path
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.strip()
    document = json.loads(cli("sign", model, "--format", "json").out)
    assert document["provenance"]["code_revision"] == head


@pytest.mark.usefixtures("bastion_home")
def test_sign_and_verify_with_explicit_keys_and_no_workspace(
    cli: Cli, model: Path, tmp_path: Path
) -> None:
    assert cli("keygen", "--out", tmp_path / "k", "--algorithm", "ecdsa-p256").code == 0
    data = tmp_path / "train.csv"
    data.write_text("x\n")
    result = cli(
        "sign",
        model,
        "--key",
        tmp_path / "k.key",
        "--output",
        tmp_path / "m.sig",
        "--data",
        data,
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["provenance"]["code_revision"] is None
    assert document["provenance"]["training_data"][0]["kind"] == "file"
    result = cli("verify", model, "--key", tmp_path / "k.pub", "--signature", tmp_path / "m.sig")
    assert result.code == 0, result.err
    assert cli("keygen", "--out", tmp_path / "other").code == 0
    result = cli(
        "verify", model, "--key", tmp_path / "other.pub", "--signature", tmp_path / "m.sig"
    )
    assert result.code == 1
    assert "signed by a different key" in result.err
    result = cli("sign", model)
    assert result.code == 2
    assert "no --key given and no workspace" in one_line(result.err)
    result = cli("verify", model)
    assert result.code == 2
    assert "no --key given and no workspace" in one_line(result.err)


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sign", "{tmp}/missing"], "cannot read"),
        (["verify", "{model}"], "cannot read signature"),
        (["sign", "{model}", "--param", "oops"], "not of the form name=value"),
        (["sign", "{model}", "--key", "{tmp}/nokey"], "cannot read key"),
        (["verify", "{model}", "--key", "{model}/weights.bin"], "not a readable public key"),
        (["sign", "{model}", "--shard-size", "0"], "not a positive integer"),
        (["sign", "{model}", "--hash", "md5"], "invalid choice"),
        (["sign", "{model}", "--hash", "blake3", "--serialization", "shards"], "BLAKE3"),
        (["keygen"], "required"),
    ],
)
def test_could_not_run_is_exit_2_and_one_line(
    cli: Cli, model: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    args = [a.format(tmp=tmp_path, model=model) for a in argv]
    result = cli(*args)
    assert result.code == 2
    assert message in one_line(result.err)


@pytest.mark.usefixtures("workspace")
def test_hostile_signature_is_exit_1_not_a_crash(
    cli: Cli, model: Path, check_schema: CheckSchema
) -> None:
    signature = model.with_name("model.sig")
    for content in (b"{", b"[" * 100_000, b"\x00" * 1000, json.dumps({"mediaType": 1}).encode()):
        signature.write_bytes(content)
        result = cli("verify", model)
        assert result.code == 1, result.err
        assert result.err.startswith("bastion: verification failed: ")
        assert "Traceback" not in result.err
    with signature.open("wb") as handle:
        handle.truncate(100 * 2**20)
    result = cli("verify", model, "--format", "json")
    assert result.code == 1
    check_schema("verify", json.loads(result.out))


@pytest.mark.usefixtures("bastion_home")
def test_verify_a_model_signing_signature(
    cli: Cli, model: Path, tmp_path: Path, check_schema: CheckSchema
) -> None:
    import model_signing

    assert cli("keygen", "--out", tmp_path / "ec", "--algorithm", "ecdsa-p256").code == 0
    (model / "empty").unlink()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=tmp_path / "ec.key").sign(
        model, tmp_path / "ms.sig"
    )
    result = cli(
        "verify",
        model,
        "--key",
        tmp_path / "ec.pub",
        "--signature",
        tmp_path / "ms.sig",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("verify", document)
    assert document["provenance"] is None
    assert document["serialization"]["method"] == "files"
    result = cli("verify", model, "--key", tmp_path / "ec.pub", "--signature", tmp_path / "ms.sig")
    assert "provenance  none (not a bastion signature)" in result.out
