"""Fixtures shared by the whole suite: an isolated workspace and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.core.workspace import Workspace, init_workspace


@dataclass(frozen=True)
class CliResult:
    """What one ``bastion`` invocation returned and wrote."""

    code: int
    out: str
    err: str


@pytest.fixture
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, isolated BASTION_HOME; the current folder is ``tmp_path``."""
    home = tmp_path / "workspace"
    for name in ("BASTION_KEY_PASSPHRASE", "BASTION_DATABASE_URL", "BASTION_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_HOME", str(home))
    monkeypatch.setenv("BASTION_ACTOR", "tester")
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def workspace(bastion_home: Path) -> Iterator[Workspace]:
    """A freshly initialised workspace at ``bastion_home``."""
    ws, created = init_workspace()
    assert created
    yield ws
    ws.close()


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Call ``bastion`` in process: ``cli("scan", path) -> CliResult``."""

    def run(*argv: str | Path) -> CliResult:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
