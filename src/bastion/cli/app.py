"""Entry point of the command line: parses, dispatches, maps errors to exit codes.

Exit codes: 0 ran and nothing failed; 1 ran and found a failure (an unsafe file, a bad
signature, a broken audit chain); 2 could not run, with one line on stderr (a traceback only
with ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from bastion import __version__
from bastion.cli import assess as assess_cmd
from bastion.cli import demo as demo_cmd
from bastion.cli import init as init_cmd
from bastion.cli import log as log_cmd
from bastion.cli import scan as scan_cmd
from bastion.cli import signing as signing_cmd
from bastion.cli.context import Context
from bastion.errors import BastionError, VerificationError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The command modules, in help order. Each has ``register(subparsers)`` which adds its
#: parsers and sets ``handler(ctx) -> int`` as a default.
COMMANDS: tuple[ModuleType, ...] = (
    init_cmd,
    demo_cmd,
    scan_cmd,
    signing_cmd,
    log_cmd,
    assess_cmd,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage dump is noisy; one line, exit 2, as the contract says.
        self.exit(2, f"bastion: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the docs)."""
    parser = _Parser(
        prog="bastion",
        description="Defense in depth for machine-learning systems.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    debug = bool(args.debug)
    _configure_logging(debug)
    ctx = Context(args=args)
    try:
        code: int = args.handler(ctx)
    except VerificationError as exc:
        ctx.stderr.write(f"bastion: verification failed: {exc}\n")
        for problem in exc.problems:
            ctx.stderr.write(f"  - {problem}\n")
        if debug:
            traceback.print_exc(file=ctx.stderr)
        return exc.exit_code
    except BastionError as exc:
        ctx.stderr.write(f"bastion: error: {exc}\n")
        if debug:
            traceback.print_exc(file=ctx.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        ctx.stderr.write("bastion: interrupted\n")
        return 130
    else:
        return code
    finally:
        ctx.close()


def _configure_logging(debug: bool) -> None:
    root = logging.getLogger("bastion")
    if not any(getattr(h, "_bastion", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bastion: %(levelname)s: %(message)s"))
        handler._bastion = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
