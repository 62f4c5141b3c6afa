"""``bastion serve``: refuses what it cannot serve, serves the production version, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bastion.artifacts.signing import sign
from bastion.core.principals import KeyStore, Role
from bastion.core.workspace import Workspace, find_workspace
from bastion.demo_model import DemoModel, write_model_folder
from bastion.gateway.audit import request_entries
from bastion.registry import Registry

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
CheckSchema = Callable[[str, dict[str, Any]], None]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def production(workspace: Workspace, tmp_path: Path) -> dict[str, str]:
    """A signed model ``digits`` taken to production by three people; returns key secrets."""
    store = KeyStore(workspace.database, workspace.audit())
    made = {
        name: store.create(name, role, actor="operator")
        for name, role in (
            ("dana", Role.DATA_SCIENTIST),
            ("eli", Role.ML_ENGINEER),
            ("sam", Role.SRE),
            ("shop", Role.CLIENT),
        )
    }
    rng = np.random.default_rng(0)
    folder = write_model_folder(
        DemoModel(
            rng.normal(scale=0.05, size=(10, 64)).astype(np.float32),
            rng.normal(size=10).astype(np.float32),
            0.5,
        ),
        tmp_path / "models" / "digits",
    )
    sign(folder, workspace.signing_key(), actor="trainer")
    registry = Registry(workspace)
    version = registry.add("digits", folder, principal=made["dana"].key.principal())
    registry.promote("digits", version.version, to="staging", principal=made["eli"].key.principal())
    registry.approve("digits", version.version, principal=made["eli"].key.principal())
    registry.promote(
        "digits", version.version, to="production", principal=made["sam"].key.principal()
    )
    return {name: created.secret for name, created in made.items()}


def test_a_named_model_without_a_production_version_stops_it(cli: Cli, production: Any) -> None:
    result = cli("serve", "--port", "0", "--models", "digits,nope")
    assert result.code == 2
    assert result.out == ""
    assert one_line(result.err) == (
        "bastion: error: cannot serve model nope: no production version"
    )


def test_nothing_in_production_stops_it(cli: Cli, workspace: Workspace) -> None:
    result = cli("serve", "--port", "0")
    assert result.code == 2
    assert one_line(result.err).startswith("bastion: error: no model to serve")


@pytest.mark.parametrize("argv", [["--models", "Bad Name"], ["--models", ","], ["--port", "70000"]])
def test_bad_arguments(cli: Cli, workspace: Workspace, argv: list[str]) -> None:
    result = cli("serve", *argv)
    assert result.code == 2
    assert one_line(result.err).startswith("bastion: error:")


def test_a_model_that_fails_verification_is_not_served(
    cli: Cli, production: Any, workspace: Workspace
) -> None:
    (blob,) = [p for p in (workspace.store_path / "sha256").rglob("*") if p.stat().st_size > 1000]
    blob.chmod(0o600)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # one bit of the weights
    blob.write_bytes(bytes(data))
    for checkout in (workspace.root / "checkouts").glob("*"):
        for path in sorted(checkout.rglob("*"), reverse=True):
            path.chmod(0o700)
    result = cli("serve", "--port", "0", "--models", "digits")
    assert result.code == 2
    line = one_line(result.err)
    assert line.startswith("bastion: error: cannot serve model digits:")
    events = [e for e in find_workspace().audit().events() if e.action == "gateway.model.refused"]
    assert [e.subject for e in events] == ["model:digits"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serves_the_production_version_then_stops_gracefully(
    production: dict[str, str],
    bastion_home: Path,
    tmp_path: Path,
    check_schema: CheckSchema,
    stop: signal.Signals,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--port", "0", "--format", "json"],
        cwd=tmp_path,
        env={**os.environ, "BASTION_GATEWAY_AUDIT_FLUSH_SECONDS": "60"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        text = ""
        for line in process.stdout:  # one indented JSON document, written once listening
            text += line
            if line.startswith("}"):
                break
        assert text, process.communicate(timeout=30)
        document = json.loads(text)
        check_schema("serve", document)
        assert document["host"] == "127.0.0.1"
        assert [m["name"] for m in document["models"]] == ["digits"]
        assert document["models"][0]["version"] == "1"
        with httpx.Client(base_url=document["url"], timeout=10) as client:
            pixels = [float(v % 17) for v in range(64)]
            answer = client.post(
                "/v2/models/digits/infer",
                json={"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                  "data": pixels}]},
                headers={"Authorization": f"Bearer {production['shop']}"},
            )  # fmt: skip
            refused = client.get("/v2/models/digits", headers={"X-API-Key": "bst_nope"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1"
        assert refused.status_code == 401
        time.sleep(0.2)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    audit = find_workspace().audit()
    audit.verify()
    requests = request_entries(audit.events())
    assert [e.details["status"] for e in requests] == [200, 401]
    assert requests[0].details["batch"] == 1
    actions = [e.action for e in audit.events() if e.action.startswith("gateway.")]
    assert actions[0] == "gateway.model.loaded"
    assert actions[-1] == "gateway.stop"


def test_text_output_says_where_it_listens() -> None:
    import io

    from rich.console import Console

    from bastion.cli.serve import _render

    out = io.StringIO()
    payload = {
        "url": "http://127.0.0.1:8080",
        "models": [{"name": "digits", "version": "3"}],
    }
    _render(Console(file=out, width=200), payload)
    first = out.getvalue().splitlines()[0]
    assert first == "bastion serve: digits v3 on http://127.0.0.1:8080 (Ctrl-C to stop)"
