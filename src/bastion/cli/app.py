"""Entry point of the command line: parses, dispatches, maps errors to exit codes.

Exit codes: 0 ran and nothing failed; 1 ran and found a failure (an unsafe file, a bad
signature, a broken audit chain); 2 could not run, with one line on stderr (a traceback only
with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from bastion import __version__
from bastion.cli.context import Context
from bastion.errors import BastionError, VerificationError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Every command, in help order: name -> (module whose ``register(subparsers)`` adds it and
#: sets ``handler(ctx) -> int``, one-line help). A module may register several commands
#: (``signing`` adds keygen, sign and verify). Only the module of the command being run is
#: imported, so ``bastion scan`` does not pay for torch (``assess``) or SQLAlchemy; ``--help``
#: and an unknown command import them all.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("bastion.cli.init", "create the workspace (.bastion/ or $BASTION_HOME)"),
    "demo": ("bastion.cli.demo", "the whole lifecycle on the bundled example model"),
    "scan": ("bastion.cli.scan", "static scan of model files; never deserializes them"),
    "keygen": ("bastion.cli.signing", "create a signing key pair (PREFIX.key, PREFIX.pub)"),
    "sign": ("bastion.cli.signing", "sign a model file or folder, with provenance"),
    "verify": ("bastion.cli.signing", "verify a model against its signature"),
    "log": ("bastion.cli.log", "the audit log: show, verify, checkpoint"),
    "registry": ("bastion.cli.registry", "model registry: add, list, show, approve, promote, pull"),
    "keys": ("bastion.cli.keys", "API keys and roles: create, list, revoke, rotate"),
    "serve": ("bastion.cli.serve", "the hardened inference gateway (OIP v2 over HTTP)"),
    "assess": ("bastion.cli.assess", "red-team assessment of a model against a policy"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own usage dump is noisy; one line, exit 2, as the contract says.
        self.exit(2, f"bastion: error: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: complete for ``command`` (every command when None).

    Commands other than ``command`` get a parser with their help line only: enough for
    ``bastion --help`` and for argparse's "invalid choice" message.
    """
    parser = _Parser(
        prog="bastion",
        description="Defense in depth for machine-learning systems.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    modules = dict.fromkeys(
        module for name, (module, _) in COMMANDS.items() if command in (None, name)
    )
    registered: set[str] = set()
    for module in modules:
        before = set(subparsers.choices)
        importlib.import_module(module).register(subparsers)
        registered |= set(subparsers.choices) - before
    for name, (_, help_line) in COMMANDS.items():
        if name not in registered:
            subparsers.add_parser(name, help=help_line)
    # Keep help order as in COMMANDS whichever modules were imported.
    choices = subparsers._choices_actions  # argparse keeps the help order here
    order = list(COMMANDS)
    choices.sort(key=lambda a: order.index(a.dest) if a.dest in order else len(order))
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word not an option), if it is a known one.

    ``--version`` needs no command module (""), ``--help`` needs them all (None).
    """
    for word in argv:
        if word == "--version":
            return ""
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(arguments))
    try:
        args = parser.parse_args(arguments)
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
