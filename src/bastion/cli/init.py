"""``bastion init``: create the workspace, or say that it exists and change nothing."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from bastion.cli.context import Context, add_format_option
from bastion.core.keys import KeyAlgorithm, key_id
from bastion.core.workspace import init_workspace

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "init",
        help="create the workspace (.bastion/ or $BASTION_HOME)",
        description="Create the workspace: settings, database, artifact store and signing "
        "key. An existing workspace is left unchanged.",
    )
    parser.add_argument(
        "--algorithm",
        choices=[a.value for a in KeyAlgorithm],
        default=KeyAlgorithm.ED25519.value,
        help="algorithm of the workspace signing key (default: ed25519)",
    )
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(ctx: Context) -> int:
    workspace, created = init_workspace(
        ctx.cwd, ctx.environ, algorithm=KeyAlgorithm(ctx.args.algorithm)
    )
    ctx._workspace = workspace
    public = workspace.public_key()
    if created:
        workspace.audit().append(
            "workspace.init",
            str(workspace.root),
            {"key_id": key_id(public), "database": workspace.database.dialect},
        )
    payload = {
        "workspace": str(workspace.root),
        "created": created,
        "config": str(workspace.config_path),
        "database": workspace.database.dialect,
        "public_key": str(workspace.public_key_path),
        "key_id": key_id(public),
    }

    def text(console: Console) -> None:
        if created:
            console.print(f"Created workspace {workspace.root}")
            console.print(f"  settings    {workspace.config_path}")
            console.print(f"  database    {workspace.database.dialect}")
            console.print(f"  signing key {workspace.public_key_path} (id {key_id(public)[:16]})")
        else:
            console.print(f"Workspace {workspace.root} already exists; nothing was changed.")

    ctx.emit(payload, text)
    return 0
