"""``bastion keys create | list | revoke | rotate``: API keys and their roles.

Run by the local workspace operator (the audit log names ``workspace.actor()``). When
``BASTION_API_KEY`` is set, that key must hold ``keys.manage`` and names the actor instead; a
refusal is an ``access.denied`` audit event. Every decision is an audit event: the store
records ``keys.create``/``keys.revoke``/``keys.rotate`` and their refusals, and this module
records the refusals of arguments it parses itself (``--expires``, ``--models``, ``--grace``).
A secret is printed once, by ``create`` and ``rotate``, and never again.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console

from bastion.cli.context import Context, add_format_option
from bastion.core.principals import (
    ApiKey,
    CreatedKey,
    KeyStore,
    Permission,
    Role,
    parse_duration,
)
from bastion.core.workspace import Workspace
from bastion.errors import BastionError

__all__ = ["register"]

logger = logging.getLogger(__name__)

_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

ONCE_NOTE = (
    "This is the only time the secret is shown: it cannot be shown again. Store it now (a "
    "secret manager) and pass it as BASTION_API_KEY, 'Authorization: Bearer <key>' or "
    "'X-API-Key: <key>'."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="API keys and roles: create, list, revoke, rotate",
        description="Manage the workspace's API keys. Only a hash of each key is stored; the "
        "secret is shown once, when the key is created or rotated. With BASTION_API_KEY set, "
        "that key must have the keys.manage permission (role admin).",
    )
    commands = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    commands.required = True

    create = commands.add_parser(
        "create",
        help="create a key and show its secret once",
        description="Create an API key with a role, optionally limited to some models and "
        "with an expiry, and print its secret once.",
    )
    create.add_argument("--name", required=True, metavar="N", help="unique among active keys")
    create.add_argument(
        "--role",
        required=True,
        metavar="R",
        help=f"one of: {', '.join(r.value for r in Role)}",
    )
    create.add_argument(
        "--expires",
        metavar="DURATION",
        help="lifetime such as 30d, 12h, 2w (default: never expires)",
    )
    create.add_argument(
        "--models",
        metavar="M1,M2",
        help="comma-separated model names the key is limited to (default: every model)",
    )
    add_format_option(create)
    create.set_defaults(handler=run_create)

    lister = commands.add_parser(
        "list",
        help="list keys (never their secrets)",
        description="List API keys, oldest first: id, name, role, status, model scope, expiry.",
    )
    lister.add_argument("--all", action="store_true", help="include revoked keys")
    add_format_option(lister)
    lister.set_defaults(handler=run_list)

    revoke = commands.add_parser(
        "revoke",
        help="revoke a key now",
        description="Revoke a key (by id, or by the name of an active key). It stops working "
        "at once here; running gateways drop it at their next key refresh "
        "(gateway.key_refresh_seconds).",
    )
    revoke.add_argument("key", metavar="KEY", help="key id or name (not the secret)")
    add_format_option(revoke)
    revoke.set_defaults(handler=run_revoke)

    rotate = commands.add_parser(
        "rotate",
        help="give a key a new secret; the old one works for a grace period",
        description="Give a key a new secret, shown once. The old secret keeps working for "
        "the grace period so that clients can roll over (--grace 0: it stops at once).",
    )
    rotate.add_argument("key", metavar="KEY", help="key id or name (not the secret)")
    rotate.add_argument(
        "--grace",
        default="24h",
        metavar="DURATION",
        help="how long the old secret keeps working: 0, 90m, 24h, 7d (default: 24h)",
    )
    add_format_option(rotate)
    rotate.set_defaults(handler=run_rotate)


# -- helpers ---------------------------------------------------------------------------------


def _operator(ctx: Context) -> tuple[Workspace, KeyStore, str]:
    """The workspace, its key store and the actor: the key's principal, or the operator."""
    workspace = ctx.workspace()
    actor = workspace.actor()
    if ctx.environ.get("BASTION_API_KEY"):
        actor = ctx.principal(Permission.KEYS_MANAGE).actor
    return workspace, KeyStore(workspace.database, workspace.audit()), actor


def _parsed(workspace: Workspace, operation: str, actor: str, parse: Callable[[], Any]) -> Any:
    """``parse()``, whose refusal is audited like the store's own (``keys.<op>.refused``)."""
    try:
        return parse()
    except BastionError as exc:
        try:
            workspace.audit().append(
                f"keys.{operation}.refused", "keys", {"reason": str(exc)}, actor=actor
            )
        except BastionError as audit_exc:
            # Nothing was changed, so the refusal stands; say that it went unrecorded.
            logger.warning("could not audit a refused keys %s: %s", operation, audit_exc)
        raise


def _models(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise BastionError(
            "--models takes comma-separated model names, none empty (omit it for every model)"
        )
    return names


def _grace(text: str) -> timedelta:
    return timedelta(0) if text.strip() in ("0", "0s", "0m", "0h", "0d") else parse_duration(text)


def _when(key: ApiKey, field: str) -> str:
    value = key.to_dict()[field]
    return "never" if value is None else str(value)


def _summary(key: ApiKey) -> str:
    models = "every model" if key.models is None else "models " + ", ".join(key.models)
    expires = _when(key, "expires_at")
    return f"key {key.key_id} '{key.name}' (role {key.role}, {models}, expires {expires})"


def _show_secret(console: Console, created: CreatedKey) -> None:
    console.print("", markup=False, highlight=False)
    console.print(f"    {created.secret}", markup=False, highlight=False)
    console.print("", markup=False, highlight=False)
    console.print(ONCE_NOTE, markup=False, highlight=False)


def _print(console: Console, line: str) -> None:
    # Escaped, never raw: a row planted in the database must not drive the terminal.
    line = _UNPRINTABLE_RE.sub(lambda m: m.group().encode("unicode_escape").decode(), line)
    console.print(line, markup=False, highlight=False)


# -- commands --------------------------------------------------------------------------------


def run_create(ctx: Context) -> int:
    args = ctx.args
    workspace, store, actor = _operator(ctx)
    expires = _parsed(
        workspace,
        "create",
        actor,
        lambda: None if args.expires is None else parse_duration(args.expires),
    )
    models = _parsed(workspace, "create", actor, lambda: _models(args.models))
    created = store.create(args.name, args.role, actor=actor, expires_in=expires, models=models)
    payload = {"key": created.key.to_dict(), "secret": created.secret, "note": ONCE_NOTE}

    def text(console: Console) -> None:
        _print(console, f"Created {_summary(created.key)}. Its secret:")
        _show_secret(console, created)

    ctx.emit(payload, text)
    return 0


def run_list(ctx: Context) -> int:
    _, store, _ = _operator(ctx)
    keys = store.list(include_revoked=bool(ctx.args.all))
    payload = {
        "include_revoked": bool(ctx.args.all),
        "count": len(keys),
        "keys": [key.to_dict() for key in keys],
    }

    def text(console: Console) -> None:
        if not keys:
            _print(console, "No API keys." if ctx.args.all else "No active API keys.")
            return
        header = ("KEY ID", "NAME", "ROLE", "STATUS", "MODELS", "EXPIRES", "CREATED BY")
        rows = [header] + [
            (
                key.key_id,
                key.name,
                key.role.value,
                key.status(),
                "*" if key.models is None else ",".join(key.models),
                _when(key, "expires_at"),
                key.created_by,
            )
            for key in keys
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            _print(console, "  ".join([*cells, row[-1]]))

    ctx.emit(payload, text)
    return 0


def run_revoke(ctx: Context) -> int:
    _, store, actor = _operator(ctx)
    key = store.revoke(ctx.args.key, actor=actor)
    payload = {"key": key.to_dict()}

    def text(console: Console) -> None:
        _print(console, f"Revoked {_summary(key)}.")
        _print(
            console,
            "It stops working now; running gateways drop it at their next key refresh.",
        )

    ctx.emit(payload, text)
    return 0


def run_rotate(ctx: Context) -> int:
    args = ctx.args
    workspace, store, actor = _operator(ctx)
    grace = _parsed(workspace, "rotate", actor, lambda: _grace(args.grace))
    rotated = store.rotate(args.key, actor=actor, grace=grace)
    payload = {
        "key": rotated.key.to_dict(),
        "secret": rotated.secret,
        "grace_seconds": int(grace.total_seconds()),
        "note": ONCE_NOTE,
    }

    def text(console: Console) -> None:
        _print(console, f"Rotated {_summary(rotated.key)}. Its new secret:")
        _show_secret(console, rotated)
        until = rotated.key.to_dict()["previous_valid_until"]
        if until is None:
            _print(console, "The old secret stopped working now.")
        else:
            _print(console, f"The old secret keeps working until {until}.")

    ctx.emit(payload, text)
    return 0
