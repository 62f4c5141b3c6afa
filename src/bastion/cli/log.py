"""``bastion log show | verify | checkpoint``: read, verify and checkpoint the audit log."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from bastion.cli.context import Context, add_format_option
from bastion.core.audit import AuditEvent
from bastion.errors import AuditChainError, AuditError
from bastion.gateway.audit import REQUESTS_ACTION, request_entries

__all__ = ["parse_since", "register"]

_AGE_RE = re.compile(r"(\d{1,9})([smhdw])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Shown escaped, never raw: a tampered record must not drive the terminal.
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Parse ``--since``: an ISO-8601 date or date-time (UTC unless it says otherwise) or an
    age such as ``90s``, ``30m``, ``24h``, ``7d``, ``2w``.

    Raises:
        argparse.ArgumentTypeError: it is neither (argparse turns it into one line, exit 2).
    """
    value = text.strip()
    match = _AGE_RE.fullmatch(value)
    try:
        if match:
            age = timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})
            return (now or datetime.now(UTC)) - age
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an ISO-8601 date/time or an age like 24h or 7d"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "log",
        help="the audit log: show, verify, checkpoint",
        description="Read and verify the workspace's tamper-evident audit log.",
    )
    commands = parser.add_subparsers(dest="log_command", metavar="SUBCOMMAND")
    commands.required = True

    show = commands.add_parser(
        "show",
        help="list audit events, oldest first",
        description="List audit events, oldest first. The records are shown as stored: run "
        "'bastion log verify' to check them.",
    )
    show.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only events since T: an ISO-8601 date/time (UTC by default) or an age (24h, 7d)",
    )
    show.add_argument(
        "--action", metavar="A", help="only action A ('registry.*' for a whole group)"
    )
    show.add_argument("--limit", type=_positive_int, metavar="N", help="only the newest N events")
    add_format_option(show)
    show.set_defaults(handler=run_show)

    verify = commands.add_parser(
        "verify",
        help="verify the hash chain, every checkpoint signature and the head anchor",
        description="Verify the audit log. Exit 0 when the chain and every checkpoint verify, "
        "1 naming the first bad record when they do not, 2 when it cannot be read.",
    )
    verify.add_argument(
        "--anchor",
        type=Path,
        metavar="FILE",
        help="a copy of the workspace's audit.head kept elsewhere: the log must still reach it",
    )
    add_format_option(verify)
    verify.set_defaults(handler=run_verify)

    checkpoint = commands.add_parser(
        "checkpoint",
        help="sign the head of the log with the workspace key now",
        description="Sign the head of the audit log with the workspace key "
        "(BASTION_KEY_PASSPHRASE when it is encrypted) and update audit.head.",
    )
    add_format_option(checkpoint)
    checkpoint.set_defaults(handler=run_checkpoint)


def _printable(text: str) -> str:
    return _UNPRINTABLE_RE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _render_event(event: AuditEvent) -> str:
    line = (
        f"{event.seq:>6}  {event.to_dict()['ts']}  {event.actor}  {event.action}  {event.subject}"
    )
    details = event.to_dict()["details"]
    if event.action == REQUESTS_ACTION:
        try:
            entries = request_entries([event])
        except AuditError:
            entries = None  # malformed: shown as stored, for 'bastion log verify' to judge
        if entries is not None:
            # One line per request under its batch's line, the same fields first on each.
            summary = {k: v for k, v in details.items() if k != "requests"}
            lines = [line + "  " + json.dumps(summary, ensure_ascii=False, sort_keys=True)]
            for entry in entries:
                rest = {k: v for k, v in entry.details.items() if k not in _ENTRY_COLUMNS}
                lines.append(
                    f"{'':>8}{entry.details['at']}  {entry.details.get('status', '?')} "
                    f"{entry.details.get('decision', '?')}  "
                    + json.dumps(rest, ensure_ascii=False, sort_keys=True)
                )
            return "\n".join(_printable(text) for text in lines)
    if details:
        line += "  " + json.dumps(details, ensure_ascii=False, sort_keys=True)
    return _printable(line)


_ENTRY_COLUMNS = frozenset({"at", "status", "decision"})


def run_show(ctx: Context) -> int:
    args = ctx.args
    log = ctx.workspace().audit()
    events = log.events(since=args.since, action=args.action, limit=args.limit)
    payload = {
        "filters": {
            "since": args.since.isoformat() if args.since is not None else None,
            "action": args.action,
            "limit": args.limit,
        },
        "count": len(events),
        "events": [event.to_dict() for event in events],
    }

    def text(console: Console) -> None:
        if not events:
            console.print("No audit events match.", markup=False, highlight=False)
            return
        for event in events:
            console.print(_render_event(event), markup=False, highlight=False)

    ctx.emit(payload, text)
    return 0


def run_verify(ctx: Context) -> int:
    log = ctx.workspace().audit()
    try:
        result = log.verify(anchor=ctx.args.anchor)
    except AuditChainError as exc:
        if ctx.format != "json":
            raise  # the top level prints the one-line diagnosis and the problems, exit 1
        ctx.emit_json(
            {
                "verified": False,
                "error": str(exc),
                "sequence": exc.sequence,
                "problems": list(exc.problems),
            }
        )
        ctx.stderr.write(f"bastion: verification failed: {exc}\n")
        return exc.exit_code
    payload = {"verified": True, **result.to_dict()}

    def text(console: Console) -> None:
        head = result.head
        console.print(
            f"Audit log verified: {result.events} events, {result.checkpoints} checkpoints, "
            f"head at sequence {head.seq} ({head.hash[:16]}).",
            markup=False,
            highlight=False,
        )
        if result.last_checkpoint is None:
            console.print(
                "No checkpoint yet: every event is protected by the hash chain alone "
                "('bastion log checkpoint' signs the head).",
                markup=False,
                highlight=False,
            )
        elif result.unanchored:
            console.print(
                f"Last checkpoint at sequence {result.last_checkpoint}; the "
                f"{result.unanchored} events after it are protected by the hash chain alone.",
                markup=False,
                highlight=False,
            )
        else:
            console.print(
                f"Last checkpoint at sequence {result.last_checkpoint} covers the head.",
                markup=False,
                highlight=False,
            )
        for anchor in result.anchors:
            console.print(f"Verified against {anchor}.", markup=False, highlight=False)

    ctx.emit(payload, text)
    return 0


def run_checkpoint(ctx: Context) -> int:
    checkpoint = ctx.workspace().audit().checkpoint()
    payload = {"checkpoint": checkpoint.to_dict()}

    def text(console: Console) -> None:
        console.print(
            f"Checkpoint at sequence {checkpoint.seq} ({checkpoint.head_hash[:16]}), signed by "
            f"key {checkpoint.key_id[:16]}.",
            markup=False,
            highlight=False,
        )

    ctx.emit(payload, text)
    return 0
