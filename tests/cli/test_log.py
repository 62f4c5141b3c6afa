"""``bastion log show | verify | checkpoint``: exit codes, output and JSON schemas."""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.cli.log import parse_since
from bastion.core import find_workspace

Cli = Callable[..., Any]  # the `cli` fixture of tests/conftest.py
CheckSchema = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def home(cli: Cli, bastion_home: Path) -> Path:
    """An initialised workspace: its log holds the workspace.init event."""
    assert cli("init").code == 0
    return bastion_home


def append(*events: tuple[str, str, dict[str, Any], datetime]) -> None:
    ws = find_workspace()
    try:
        log = ws.audit()
        for action, subject, details, when in events:
            log.append(action, subject, details, now=when)
    finally:
        ws.close()


def sql(home: Path, statement: str, *params: Any) -> None:
    with closing(sqlite3.connect(home / "bastion.db", isolation_level=None)) as con:
        con.execute(statement, params)


# ----------------------------------------------------------------------------- no workspace


@pytest.mark.parametrize(
    "argv",
    [
        ("log", "show"),
        ("log", "show", "--format", "json"),
        ("log", "verify"),
        ("log", "verify", "--format", "json"),
        ("log", "checkpoint"),
    ],
)
def test_log_without_a_workspace_is_one_line_exit_2(
    cli: Cli, bastion_home: Path, argv: tuple[str, ...]
) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert result.out == ""
    assert "run 'bastion init' first" in one_line(result.err)
    assert not bastion_home.exists()


def test_log_needs_a_subcommand(cli: Cli, home: Path) -> None:
    result = cli("log")
    assert result.code == 2
    assert "required" in one_line(result.err)


# ----------------------------------------------------------------------------- show


def test_show_lists_the_init_event(cli: Cli, home: Path) -> None:
    result = cli("log", "show")
    assert result.code == 0
    line = one_line(result.out)
    assert line.split()[:1] == ["1"]
    assert f"tester  workspace.init  {home}" in line
    assert '"database": "sqlite"' in line


def test_show_json_matches_its_schema(cli: Cli, home: Path, check_schema: CheckSchema) -> None:
    append(("model.scan", "a.pt", {"findings": 2, "ok": False}, NOW))
    result = cli("log", "show", "--format", "json")
    assert result.code == 0
    document = json.loads(result.out)
    check_schema("log-show", document)
    assert document["count"] == 2
    assert document["filters"] == {"since": None, "action": None, "limit": None}
    first, second = document["events"]
    assert first["action"] == "workspace.init"
    assert second == {
        **second,
        "seq": 2,
        "ts": "2030-06-15T12:00:00.000000Z",
        "action": "model.scan",
        "details": {"findings": 2, "ok": False},
        "prev_hash": first["hash"],
    }


def test_show_filters(cli: Cli, home: Path, check_schema: CheckSchema) -> None:
    recent = datetime.now(UTC) - timedelta(hours=1)
    append(
        ("registry.add", "m1", {}, recent - timedelta(days=3)),
        ("registry.promote", "m1", {}, recent - timedelta(days=2)),
        ("model.scan", "m1", {}, recent),
    )

    def seqs(*argv: str) -> list[int]:
        result = cli("log", "show", "--format", "json", *argv)
        assert result.code == 0, result.err
        document = json.loads(result.out)
        check_schema("log-show", document)
        return [event["seq"] for event in document["events"]]

    assert seqs() == [1, 2, 3, 4]
    assert seqs("--since", "24h") == [1, 4]
    assert seqs("--since", "60h") == [1, 3, 4]
    assert seqs("--since", "7d") == [1, 2, 3, 4]
    assert seqs("--action", "registry.*") == [2, 3]
    assert seqs("--action", "model.scan") == [4]
    assert seqs("--limit", "2") == [3, 4]
    assert seqs("--action", "registry.*", "--limit", "1") == [3]
    since = (recent - timedelta(days=2, minutes=1)).isoformat()
    assert seqs("--since", since) == [1, 3, 4]


def test_show_with_nothing_matching_says_so(cli: Cli, home: Path) -> None:
    result = cli("log", "show", "--action", "nothing.here")
    assert (result.code, result.out.strip()) == (0, "No audit events match.")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "yesterday"), "'yesterday' is not an ISO-8601 date/time or an age"),
        (("--since", "24x"), "not an ISO-8601"),
        (("--since=-1d",), "not an ISO-8601"),
        (("--since", "2030-13-01"), "not an ISO-8601"),
        (("--since", "99999999999d"), "not an ISO-8601"),
        (("--limit", "0"), "not a positive integer"),
        (("--limit", "ten"), "not a positive integer"),
        (("--action", "Not An Action"), "not a dotted identifier"),
    ],
)
def test_show_bad_arguments_are_one_line_exit_2(
    cli: Cli, home: Path, argv: tuple[str, ...], message: str
) -> None:
    result = cli("log", "show", *argv)
    assert result.code == 2
    assert result.out == ""
    assert message in one_line(result.err)


def test_show_never_lets_a_record_drive_the_terminal(cli: Cli, home: Path) -> None:
    # append() refuses control characters; a record planted in the database is escaped.
    sql(home, "UPDATE audit_events SET subject = ? WHERE seq = 1", "\x1b[2J[bold]x[/bold]\u202e")
    result = cli("log", "show")
    assert result.code == 0
    assert "\x1b" not in result.out
    assert "\u202e" not in result.out
    assert "\\x1b[2J[bold]x[/bold]\\u202e" in result.out


def test_show_lists_each_request_of_a_gateway_batch(cli: Cli, home: Path) -> None:
    entry = {"status": 200, "decision": "allowed", "route": "/v2/models/{name}/infer"}
    requests = [
        {**entry, "at": "2030-06-15T11:59:58.000001Z", "request_id": "r1"},
        {**entry, "at": "2030-06-15T11:59:59.000002Z", "status": 422, "decision": "refused"},
    ]
    details = {"count": 2, "first": requests[0]["at"], "last": requests[1]["at"]}
    append(("gateway.requests", "model:digits", {**details, "requests": requests}, NOW))
    result = cli("log", "show", "--action", "gateway.requests")
    assert result.code == 0
    header, first, second = result.out.strip().splitlines()
    assert header.endswith(
        'gateway.requests  model:digits  {"count": 2, "first": "2030-06-15T11:59:58.000001Z", '
        '"last": "2030-06-15T11:59:59.000002Z"}'
    )
    assert first.split() == [
        "2030-06-15T11:59:58.000001Z",
        "200",
        "allowed",
        '{"request_id":',
        '"r1",',
        '"route":',
        '"/v2/models/{name}/infer"}',
    ]
    assert second.split()[:3] == ["2030-06-15T11:59:59.000002Z", "422", "refused"]
    # JSON keeps the event as stored.
    shown = json.loads(cli("log", "show", "--action", "gateway.requests", "--format", "json").out)
    assert shown["events"][0]["details"]["requests"] == requests


def test_show_prints_a_malformed_request_batch_as_stored(cli: Cli, home: Path) -> None:
    append(("gateway.requests", "model:digits", {"requests": [{"status": 200}]}, NOW))
    result = cli("log", "show", "--action", "gateway.requests")
    assert result.code == 0
    assert one_line(result.out).endswith('{"requests": [{"status": 200}]}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2030-06-01", datetime(2030, 6, 1, tzinfo=UTC)),
        ("2030-06-01T08:30", datetime(2030, 6, 1, 8, 30, tzinfo=UTC)),
        ("2030-06-01T08:30:00Z", datetime(2030, 6, 1, 8, 30, tzinfo=UTC)),
        ("2030-06-01T10:30:00+02:00", datetime(2030, 6, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_since_accepts_iso_times_and_ages(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7", "d7", "1.5h", "7 days", "2030-02-30"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since(text, now=NOW)


# ----------------------------------------------------------------------------- verify


def test_verify_passes_on_an_intact_log(cli: Cli, home: Path, check_schema: CheckSchema) -> None:
    result = cli("log", "verify")
    assert result.code == 0
    assert result.out.startswith("Audit log verified: 1 events, 0 checkpoints, head at sequence 1")
    assert "No checkpoint yet" in result.out
    document = json.loads(cli("log", "verify", "--format", "json").out)
    check_schema("log-verify", document)
    assert document["verified"] is True
    assert (document["events"], document["checkpoints"], document["last_checkpoint"]) == (
        1,
        0,
        None,
    )


def test_verify_after_checkpoints(
    cli: Cli, home: Path, tmp_path: Path, check_schema: CheckSchema
) -> None:
    assert cli("log", "checkpoint").code == 0
    assert "covers the head" in cli("log", "verify").out
    offsite = tmp_path / "offsite.head"
    shutil.copy(home / "audit.head", offsite)
    append(("model.scan", "a.pt", {}, NOW))
    result = cli("log", "verify", "--anchor", str(offsite))
    assert result.code == 0
    assert "the 1 events after it are protected by the hash chain alone" in result.out
    assert f"Verified against {offsite}." in result.out
    document = json.loads(cli("log", "verify", "--anchor", str(offsite), "--format", "json").out)
    check_schema("log-verify", document)
    assert document["unanchored"] == 1
    assert document["anchors"] == [str(offsite), str(home / "audit.head")]


def test_verify_names_the_first_bad_record_and_exits_1(
    cli: Cli, home: Path, check_schema: CheckSchema
) -> None:
    append(*[("test.event", f"s{i}", {"i": i}, NOW) for i in range(2, 6)])
    sql(home, """UPDATE audit_events SET details = '{"i":99}' WHERE seq IN (3, 5)""")
    result = cli("log", "verify")
    assert result.code == 1
    assert result.out == ""
    first, *problems = result.err.strip().splitlines()
    assert first.startswith("bastion: verification failed: audit log does not verify: ")
    assert "first bad record at sequence=3" in first
    assert problems == [
        "  - record 3 was altered: its hash does not match its contents",
        "  - record 5 was altered: its hash does not match its contents",
    ]
    json_result = cli("log", "verify", "--format", "json")
    assert json_result.code == 1
    assert "sequence=3" in one_line(json_result.err)
    document = json.loads(json_result.out)
    check_schema("log-verify", document)
    assert (document["verified"], document["sequence"], len(document["problems"])) == (False, 3, 2)


def test_verify_names_truncation_behind_a_checkpoint(cli: Cli, home: Path) -> None:
    append(*[("test.event", f"s{i}", {}, NOW) for i in range(2, 5)])
    assert cli("log", "checkpoint").code == 0
    sql(home, "DELETE FROM audit_events WHERE seq >= 3")
    result = cli("log", "verify")
    assert result.code == 1
    assert "sequence=3" in result.err
    assert "truncated" in result.err


def test_verify_with_a_missing_anchor_file_cannot_run(cli: Cli, home: Path, tmp_path: Path) -> None:
    result = cli("log", "verify", "--anchor", str(tmp_path / "missing.head"))
    assert result.code == 2
    assert "cannot read anchor" in one_line(result.err)


def test_verify_with_a_damaged_head_anchor_fails(cli: Cli, home: Path) -> None:
    (home / "audit.head").write_text("not json")
    result = cli("log", "verify")
    assert result.code == 1
    assert "audit.head is damaged" in result.err


# ----------------------------------------------------------------------------- checkpoint


def test_checkpoint_signs_the_head(cli: Cli, home: Path, check_schema: CheckSchema) -> None:
    result = cli("log", "checkpoint", "--format", "json")
    assert result.code == 0
    document = json.loads(result.out)
    check_schema("log-checkpoint", document)
    checkpoint = document["checkpoint"]
    assert checkpoint["seq"] == 1
    assert json.loads((home / "audit.head").read_text())["signature"] == checkpoint["signature"]
    text = cli("log", "checkpoint")
    assert text.out.startswith("Checkpoint at sequence 1 (")


def test_checkpoint_with_an_encrypted_key_needs_the_passphrase(
    cli: Cli, bastion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "correct horse")
    assert cli("init").code == 0
    monkeypatch.delenv("BASTION_KEY_PASSPHRASE")
    result = cli("log", "checkpoint")
    assert result.code == 2
    assert "set BASTION_KEY_PASSPHRASE" in one_line(result.err)
    assert cli("log", "verify").code == 0  # verifying needs only the public key
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "correct horse")
    assert cli("log", "checkpoint").code == 0
