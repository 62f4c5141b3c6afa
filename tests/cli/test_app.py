"""The command-line entry point: dispatch, help, version, exit codes for bad arguments."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bastion import __version__
from bastion.cli.app import COMMANDS, build_parser


def test_version(cli: Any) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"bastion {__version__}"


def test_help_lists_every_command_in_order(cli: Any) -> None:
    result = cli("--help")
    assert result.code == 0
    positions = [result.out.index(f"    {name} ") for name in COMMANDS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("argv", [["nope"], [], ["scan"], ["--no-such-option"], ["log", "x"]])
def test_bad_arguments_exit_2_with_one_line(cli: Any, argv: list[str]) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1
    assert result.err.startswith("bastion: error:")


def test_every_command_module_registers_its_commands() -> None:
    parser = build_parser()
    for name in COMMANDS:
        args = parser.parse_args([name, *_minimal(name)])
        assert callable(args.handler), name


def _minimal(name: str) -> list[str]:
    return {
        "scan": ["x"],
        "keygen": ["--out", "k"],
        "sign": ["x"],
        "verify": ["x"],
        "log": ["verify"],
        "keys": ["list"],
        "registry": ["list"],
        "assess": ["run", "--target", "m:f", "--data", "d.npz", "--policy", "p.toml"],
    }.get(name, [])


def test_running_one_command_imports_only_its_module() -> None:
    code = (
        "import sys\n"
        "from bastion.cli.app import build_parser, _command_of\n"
        "build_parser(_command_of(['init']))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('bastion.cli.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(done.stdout.strip().split(","))
    assert "bastion.cli.init" in loaded
    assert not loaded & {"bastion.cli.assess", "bastion.cli.scan", "bastion.cli.signing"}
    assert "torch" not in done.stdout
