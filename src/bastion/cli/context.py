"""What every command handler gets: parsed options, output streams and formatters."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.core.workspace import Workspace, find_workspace

if TYPE_CHECKING:
    from bastion.core.principals import Permission, Principal
from bastion.errors import AccessError, AuthenticationError, WorkspaceError

__all__ = ["SCHEMA_VERSION", "Context", "add_format_option"]

#: Version of every JSON document the CLI writes; each has a JSON Schema in bastion/schemas/.
SCHEMA_VERSION = "1.0"


def add_format_option(
    parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("text", "json")
) -> None:
    """Add ``--format`` to a subcommand's parser."""
    parser.add_argument(
        "--format",
        choices=choices,
        default="text",
        help="output format (default: text)",
    )


@dataclass
class Context:
    """Output and environment of one CLI invocation."""

    args: argparse.Namespace
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    _workspace: Workspace | None = None

    @property
    def format(self) -> str:
        return str(getattr(self.args, "format", "text"))

    @property
    def console(self) -> Console:
        """A rich console on stdout (no colour when it is not a terminal)."""
        return Console(file=self.stdout, highlight=False, soft_wrap=True)

    def workspace(self) -> Workspace:
        """The workspace; raises WorkspaceError (exit 2, one line) when there is none."""
        if self._workspace is None:
            self._workspace = find_workspace(self.cwd, self.environ)
        return self._workspace

    def optional_workspace(self) -> Workspace | None:
        """The workspace if there is one, else None: commands that work without one (scan,
        sign, verify) still record audit events when one exists."""
        try:
            return self.workspace()
        except WorkspaceError:
            return None

    def principal(self, permission: Permission, model: str | None = None) -> Principal:
        """The principal of ``$BASTION_API_KEY``, which must hold ``permission`` (on ``model``).

        Refusals are audit events (``access.denied``) naming the reason, which the user is
        not told beyond "invalid API key" or the missing permission.

        Raises:
            BastionError: ``model`` is not a valid model name (checked first, so that it
                can be recorded).
            AuthenticationError: no key, or an invalid one.
            AuthorizationError: the key's role or scope does not allow it.
        """
        from bastion.core.principals import KeyStore, check_model_name

        if model is not None:
            check_model_name(model)
        workspace = self.workspace()
        secret = self.environ.get("BASTION_API_KEY")
        try:
            principal = KeyStore(workspace.database, None).authenticate(secret)
            principal.require(permission, model)
        except AccessError as exc:
            workspace.audit().append(
                "access.denied",
                f"model:{model}" if model else "workspace",
                {"permission": str(permission), "reason": exc.reason, "via": "cli"},
            )
            if isinstance(exc, AuthenticationError) and not secret:
                raise AuthenticationError(
                    f"this needs an API key with permission {permission}: "
                    "set BASTION_API_KEY (see 'bastion keys create')"
                ) from exc
            raise
        return principal

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.close()

    def emit_json(self, payload: Mapping[str, Any]) -> None:
        """Write one JSON document with ``schema_version`` first."""
        document = {"schema_version": SCHEMA_VERSION, **payload}
        self.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")

    def emit(self, payload: Mapping[str, Any], text: Callable[[Console], None]) -> None:
        """Write ``payload`` as JSON or call ``text`` to render it for people."""
        if self.format == "json":
            self.emit_json(payload)
        else:
            text(self.console)

    def warn(self, message: str) -> None:
        """One line on stderr."""
        self.stderr.write(f"bastion: {message}\n")

    def show_progress(self) -> bool:
        """Whether a progress bar belongs on stderr: a terminal, and text output."""
        return self.format == "text" and self.stderr.isatty()

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr when it is a terminal; yields ``advance(n)``."""
        if not self.show_progress():
            yield lambda _n: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=self.stderr),
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
