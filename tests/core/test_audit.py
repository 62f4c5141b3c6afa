"""The tamper-evident audit log: format, API, checkpoints, tampering and concurrent writers.

The tampering tests edit the real SQLite file with the sqlite3 module, the way an attacker with
access to the workspace would, and expect :meth:`AuditLog.verify` to name the first bad record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.core import (
    CHECKPOINT_DOMAIN,
    EVENT_DOMAIN,
    GENESIS_HASH,
    AuditHead,
    AuditLog,
    AuditRecord,
    Workspace,
    canonical_json,
    checkpoint_message,
    event_hash,
    find_workspace,
    generate_key,
    init_workspace,
    key_id,
    sign_bytes,
    verify_bytes,
)
from bastion.errors import AuditChainError, AuditError, KeyMaterialError

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def log(workspace: Workspace) -> AuditLog:
    return workspace.audit()


# ----------------------------------------------------------------------------- canonical JSON


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 8785 appendix B and section 3.2.2.3.
        (333333333.33333329, "333333333.3333333"),
        (1e30, "1e+30"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (0.000000000000000000000000001, "1e-27"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (-0.0, "0"),
        (2.0, "2"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308".replace("e", "e+")),
        (9007199254740991, "9007199254740991"),
        (-9007199254740991, "-9007199254740991"),
        (True, "true"),
        (None, "null"),
        ("\u20ac$\u000f\nA'\u0042\u0022\u005c\\\"/", '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'),
        ("\u2028\u007f", '"\u2028\u007f"'),
    ],
)
def test_canonical_json_matches_rfc_8785(value: Any, expected: str) -> None:
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3: the sorting example.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert b" " not in canonical_json({"a": [1, {"b": None}]})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (2**53, "beyond 2\\*\\*53"),
        ({1: "x"}, "is not a string"),
        ({"a": {1, 2}}, r"\$\.a is a set"),
        ({"a": b"bytes"}, "is a bytes"),
        ({"a": datetime(2030, 1, 1)}, "is a datetime"),
        ("\ud800", "not valid Unicode"),
        ({"\udfff": 1}, "not valid Unicode"),
    ],
)
def test_canonical_json_refuses_what_json_cannot_carry(value: Any, message: str) -> None:
    with pytest.raises(AuditError, match=message):
        canonical_json(value)


def test_canonical_json_refuses_deep_nesting() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(AuditError, match="nested deeper"):
        canonical_json(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_canonical_numbers_read_back_exactly(number: float) -> None:
    text = canonical_json(number).decode()
    assert float(text) == number
    assert re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?(e[+-][1-9]\d*)?", text)


# ----------------------------------------------------------------------------- the format


def test_event_hash_is_sha256_of_the_documented_encoding() -> None:
    # Written out independently of canonical_json: ASCII keys sort the same either way.
    record = {
        "seq": 7,
        "ts": "2030-01-01T12:00:00.000000Z",
        "actor": "tester",
        "action": "registry.promote",
        "subject": "model:v1",
        "details": {"stage": "prod", "n": 3, "f": 1.5},
        "prev_hash": "ab" * 32,
    }
    encoded = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(b"bastion-audit-event-v1\n" + encoded.encode()).hexdigest()
    assert EVENT_DOMAIN == b"bastion-audit-event-v1\n"
    assert (
        event_hash(
            7,
            "2030-01-01T12:00:00.000000Z",
            "tester",
            "registry.promote",
            "model:v1",
            {"stage": "prod", "n": 3, "f": 1.5},
            "ab" * 32,
        )
        == expected
    )


def test_checkpoint_message_is_domain_separated_canonical_json() -> None:
    message = checkpoint_message(5, "cd" * 32, "2030-01-01T12:00:00.000000Z", "ef" * 32)
    assert CHECKPOINT_DOMAIN == b"bastion-audit-checkpoint-v1\n"
    assert message == CHECKPOINT_DOMAIN + (
        b'{"head_hash":"' + b"cd" * 32 + b'","key_id":"' + b"ef" * 32 + b'","seq":5,'
        b'"ts":"2030-01-01T12:00:00.000000Z"}'
    )


# ----------------------------------------------------------------------------- appending


def test_append_returns_the_record_as_stored(log: AuditLog) -> None:
    event = log.append("model.scan", "models/a.pt", {"findings": 2}, now=T0)
    assert event.seq == 1
    assert event.prev_hash == GENESIS_HASH == "0" * 64
    assert event.ts == T0
    assert event.actor == "tester"  # BASTION_ACTOR from the bastion_home fixture
    assert event.hash == event_hash(
        1, "2030-01-01T12:00:00.000000Z", "tester", "model.scan", "models/a.pt", {"findings": 2},
        GENESIS_HASH,
    )  # fmt: skip
    assert log.events() == [event]
    with pytest.raises(TypeError):
        event.details["findings"] = 3  # type: ignore[index]


def test_each_record_carries_the_hash_of_the_one_before(log: AuditLog) -> None:
    events = [log.append("test.event", f"s{i}", actor=f"actor-{i}", now=at(i)) for i in range(4)]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [e.actor for e in events] == ["actor-0", "actor-1", "actor-2", "actor-3"]
    assert log.head() == AuditHead(4, events[-1].hash)


def test_append_many_chains_a_batch_in_one_transaction(log: AuditLog) -> None:
    first = log.append("test.event", "before", now=at(0))
    batch = [AuditRecord("gateway.request", f"model:m{i}", {"status": 200}, actor=f"k{i}")
             for i in range(5)]  # fmt: skip
    events = log.append_many(batch)
    assert [e.seq for e in events] == [2, 3, 4, 5, 6]
    assert events[0].prev_hash == first.hash
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [e.actor for e in events] == [f"k{i}" for i in range(5)]
    assert log.events() == [first, *events]
    assert log.verify().events == 6


def test_append_many_writes_nothing_when_one_record_is_invalid(log: AuditLog) -> None:
    batch = [AuditRecord("test.event", "ok"), AuditRecord("Not An Action", "bad")]
    with pytest.raises(AuditError, match="action"):
        log.append_many(batch)
    assert log.events() == []
    assert log.append_many([]) == []


def test_append_many_makes_the_checkpoint_a_batch_crosses(bastion_home: Path) -> None:
    ws, _ = init_workspace(environ={**os.environ, "BASTION_AUDIT_CHECKPOINT_INTERVAL": "4"})
    try:
        log = ws.audit()
        log.append_many([AuditRecord("test.event", f"s{i}") for i in range(10)])
        result = log.verify()
        assert (result.checkpoints, result.last_checkpoint) == (1, 10)
    finally:
        ws.close()


def test_times_are_stored_in_utc(log: AuditLog) -> None:
    summer_in_paris = datetime(2030, 6, 1, 16, 30, tzinfo=timezone(timedelta(hours=2)))
    event = log.append("test.event", "s", now=summer_in_paris)
    assert event.to_dict()["ts"] == "2030-06-01T14:30:00.000000Z"


def test_details_survive_the_round_trip(log: AuditLog) -> None:
    details = {"big": 1e20, "tiny": 5e-324, "whole": 2.0, "neg": -0.0, "ü€😀": ["x", None, True]}
    event = log.append("test.event", "s", details)
    assert dict(log.events()[0].details) == dict(event.details)
    assert event.details["big"] == 1e20
    assert event.details["whole"] == 2
    log.verify()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "Workspace.Init"}, "not a dotted identifier"),
        ({"action": "workspace init"}, "not a dotted identifier"),
        ({"action": ".init"}, "not a dotted identifier"),
        ({"action": "init."}, "not a dotted identifier"),
        ({"action": ""}, "not a dotted identifier"),
        ({"action": "a." * 40 + "b"}, "longer than 64"),
        ({"subject": ""}, "subject must not be empty"),
        ({"subject": "x" * 4097}, "subject is longer than 4096"),
        ({"subject": "evil\x1b[2Jname"}, "subject contains control"),
        ({"subject": "file\u202egnp.exe"}, "subject contains control"),
        ({"subject": "line\nbreak"}, "subject contains control"),
        ({"actor": "root\r"}, "actor contains control"),
        ({"actor": "a" * 201}, "actor is longer than 200"),
        ({"details": ["not", "a", "mapping"]}, "details must be a mapping"),
        ({"details": {"blob": "x" * (64 * 1024)}}, "more than the 65536 allowed"),
        ({"details": {"when": datetime(2030, 1, 1)}}, "not JSON-serialisable"),
        (
            {"details": {"nested": {"Password": "hunter2"}}},
            r"'\$\.nested\.Password' names a secret",
        ),
        ({"details": {"token": "abc"}}, "names a secret"),
        ({"now": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_invalid_events_are_refused_with_a_clear_error(
    log: AuditLog, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"action": "test.event", "subject": "s", **kwargs}
    with pytest.raises(AuditError, match=message):
        log.append(args.pop("action"), args.pop("subject"), **args)
    assert log.events() == []


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    details=st.dictionaries(
        st.text(max_size=6).filter(lambda k: k.lower() not in {"token", "secret", "password"}),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=10),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=4), children, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=4,
    )
)
def test_whatever_append_accepts_verify_accepts(log: AuditLog, details: dict[str, Any]) -> None:
    event = log.append("test.property", "s", details)
    assert canonical_json(dict(log.events(limit=1)[0].details)) == canonical_json(details)
    assert log.verify().head.hash == event.hash


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_fast_canonical_encoder_writes_what_the_checking_one_does(value: Any) -> None:
    from bastion.core.audit import _canonical_checked

    try:
        expected = _canonical_checked(value)
    except AuditError:
        with pytest.raises(AuditError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), _JSON_VALUES, max_size=4),
    st.text(max_size=12),
    st.integers(1, 2**53 - 1),
)
def test_hashing_the_details_text_equals_hashing_the_details(
    details: dict[str, Any], text: str, seq: int
) -> None:
    from bastion.core.audit import _event_hash_of_text

    try:
        details_text = canonical_json(details).decode("utf-8")
    except AuditError:
        return  # not JSON the log would store
    ts = "2030-01-01T12:00:00.000000Z"
    try:
        expected = event_hash(seq, ts, text, "a.b", text, details, "0" * 64)
    except AuditError:
        with pytest.raises(AuditError):
            _event_hash_of_text(seq, ts, text, "a.b", text, details_text, "0" * 64)
        return
    assert _event_hash_of_text(seq, ts, text, "a.b", text, details_text, "0" * 64) == expected


# ----------------------------------------------------------------------------- reading


def test_events_filters(log: AuditLog) -> None:
    for i, action in enumerate(["a.one", "a.two", "b.one", "a.one", "ab.x", "a_b.one"]):
        log.append(action, f"s{i}", {"i": i}, now=at(i))
    assert [e.seq for e in log.events()] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in log.events(action="a.one")] == [1, 4]
    assert [e.seq for e in log.events(action="a.*")] == [1, 2, 4]  # not ab.x, not a_b.one
    assert [e.seq for e in log.events(since=at(3))] == [4, 5, 6]
    assert [e.seq for e in log.events(since=at(2) + timedelta(seconds=1))] == [4, 5, 6]
    assert [e.seq for e in log.events(limit=2)] == [5, 6]  # the newest, oldest first
    assert [e.seq for e in log.events(action="a.*", since=at(1), limit=1)] == [4]
    assert log.events(since=at(60)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "positive integer"),
        ({"limit": True}, "positive integer"),
        ({"action": "A B"}, "not a dotted identifier"),
        ({"action": "%.*"}, "not a dotted identifier"),
        ({"since": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_filters_are_errors(log: AuditLog, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        log.events(**kwargs)


def test_an_empty_log_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert (result.events, result.checkpoints, result.last_checkpoint) == (0, 0, None)
    assert result.head == AuditHead(0, GENESIS_HASH)
    assert log.events() == []


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_signs_the_head_with_the_workspace_key(
    workspace: Workspace, log: AuditLog
) -> None:
    with pytest.raises(AuditError, match="empty"):
        log.checkpoint()
    events = [log.append("test.event", f"s{i}") for i in range(3)]
    checkpoint = log.checkpoint(now=T0)
    assert (checkpoint.seq, checkpoint.head_hash, checkpoint.ts) == (3, events[-1].hash, T0)
    assert checkpoint.key_id == key_id(workspace.public_key())
    assert checkpoint.message() == checkpoint_message(
        3, events[-1].hash, "2030-01-01T12:00:00.000000Z", checkpoint.key_id
    )
    verify_bytes(workspace.public_key(), checkpoint.message(), checkpoint.signature)
    assert log.checkpoint() == checkpoint  # the head is already checkpointed
    head_file = json.loads((workspace.root / "audit.head").read_text())
    assert head_file == {"format": "bastion-audit-head-v1", **checkpoint.to_dict()}
    result = log.verify()
    assert (result.checkpoints, result.last_checkpoint, result.unanchored) == (1, 3, 0)
    assert result.anchors == (str(workspace.root / "audit.head"),)


def test_checkpoints_are_made_every_interval(bastion_home: Path) -> None:
    ws, _ = init_workspace(environ={**os.environ, "BASTION_AUDIT_CHECKPOINT_INTERVAL": "3"})
    try:
        log = ws.audit()
        for i in range(8):
            log.append("test.event", f"s{i}")
        result = log.verify()
        assert (result.checkpoints, result.last_checkpoint, result.unanchored) == (2, 6, 2)
        assert json.loads((ws.root / "audit.head").read_text())["seq"] == 6
    finally:
        ws.close()


def test_the_signing_key_is_loaded_once_and_only_when_a_checkpoint_is_due(
    workspace: Workspace,
) -> None:
    calls: list[int] = []

    def load() -> Any:
        calls.append(1)
        return workspace.signing_key()

    log = AuditLog(
        workspace.database,
        actor="tester",
        signing_key=load,
        public_key=workspace.public_key,
        checkpoint_interval=2,
    )
    log.append("test.event", "s1")
    assert calls == []
    for i in range(5):
        log.append("test.event", f"s{i + 2}")
    assert calls == [1]
    assert log.verify().checkpoints == 3


def test_an_encrypted_key_without_its_passphrase_delays_the_checkpoint_not_the_event(
    bastion_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BASTION_KEY_PASSPHRASE", "correct horse")
    ws, _ = init_workspace()
    ws.close()
    monkeypatch.delenv("BASTION_KEY_PASSPHRASE")
    monkeypatch.setenv("BASTION_AUDIT_CHECKPOINT_INTERVAL", "2")
    ws = find_workspace()
    try:
        log = ws.audit()
        log.append("test.event", "s1")  # no checkpoint due: the key is not needed
        with caplog.at_level(logging.WARNING, logger="bastion.core.audit"):
            event = log.append("test.event", "s2")
        assert event.seq == 2
        assert "checkpoint due but not made" in caplog.text
        assert "BASTION_KEY_PASSPHRASE" in caplog.text
        assert log.verify().checkpoints == 0
        with pytest.raises(KeyMaterialError, match="BASTION_KEY_PASSPHRASE"):
            log.checkpoint()
    finally:
        ws.close()
    ws = find_workspace(environ={**os.environ, "BASTION_KEY_PASSPHRASE": "correct horse"})
    try:
        ws.audit().append("test.event", "s3")  # the overdue checkpoint is made now
        assert ws.audit().verify().last_checkpoint == 3
    finally:
        ws.close()


def test_ecdsa_workspace_keys_sign_checkpoints(tmp_path: Path) -> None:
    from bastion.core import KeyAlgorithm

    ws, _ = init_workspace(tmp_path, {"BASTION_ACTOR": "t"}, algorithm=KeyAlgorithm.ECDSA_P256)
    try:
        log = ws.audit()
        log.append("test.event", "s")
        log.checkpoint()
        assert log.verify().checkpoints == 1
    finally:
        ws.close()


# ----------------------------------------------------------------------------- tampering


def db_path(ws: Workspace) -> Path:
    return ws.root / "bastion.db"


@contextmanager
def tamper(ws: Workspace) -> Iterator[sqlite3.Connection]:
    """The attacker's handle on the database file: plain sqlite3, autocommit."""
    with closing(sqlite3.connect(db_path(ws), isolation_level=None)) as con:
        con.row_factory = sqlite3.Row
        yield con


def row(con: sqlite3.Connection, seq: int) -> dict[str, Any]:
    found = con.execute("SELECT * FROM audit_events WHERE seq = ?", (seq,)).fetchone()
    return dict(found)


def rehash(record: Mapping[str, Any]) -> str:
    """What an attacker computes to make an edited record self-consistent."""
    return event_hash(
        record["seq"],
        record["ts"],
        record["actor"],
        record["action"],
        record["subject"],
        json.loads(record["details"]),
        record["prev_hash"],
    )


def put(con: sqlite3.Connection, record: Mapping[str, Any]) -> None:
    con.execute(
        "INSERT INTO audit_events (seq, ts, actor, action, subject, details, prev_hash, hash) "
        "VALUES (:seq, :ts, :actor, :action, :subject, :details, :prev_hash, :hash)",
        dict(record),
    )


def expect_break(log: AuditLog, sequence: int, pattern: str, anchor: Path | None = None) -> None:
    with pytest.raises(AuditChainError) as info:
        log.verify(anchor=anchor)
    assert info.value.sequence == sequence, info.value.problems
    assert f"sequence={sequence}" in str(info.value)
    assert re.search(pattern, " | ".join(info.value.problems)), info.value.problems


@pytest.fixture
def history(workspace: Workspace) -> AuditLog:
    """Twelve events; checkpoints at 5 and 10 (the latter also in audit.head); 11-12 after."""
    log = workspace.audit()
    for i in range(1, 13):
        log.append("test.event", f"subject-{i}", {"i": i}, now=at(i))
        if i in (5, 10):
            log.checkpoint(now=at(i))
    result = log.verify()
    assert (result.events, result.checkpoints, result.last_checkpoint) == (12, 2, 10)
    return log


def test_an_edited_record_is_named(workspace: Workspace, history: AuditLog) -> None:
    with tamper(workspace) as con:
        con.execute("""UPDATE audit_events SET details = '{"i":999}' WHERE seq = 3""")
    expect_break(history, 3, r"record 3 was altered: its hash does not match")


def test_an_edited_subject_actor_or_time_is_named(workspace: Workspace, history: AuditLog) -> None:
    with tamper(workspace) as con:
        con.execute("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 7")
        con.execute("UPDATE audit_events SET ts = '2029-01-01T00:00:00.000000Z' WHERE seq = 8")
    expect_break(history, 7, r"record 8 was altered")


def test_non_canonical_details_are_named(workspace: Workspace, history: AuditLog) -> None:
    # Same JSON value, other bytes: the hash still matches, the stored text is not canonical.
    with tamper(workspace) as con:
        con.execute("""UPDATE audit_events SET details = '{"i": 3}' WHERE seq = 3""")
    expect_break(history, 3, r"record 3 was altered: details are not in canonical form")


def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link(
    workspace: Workspace, history: AuditLog
) -> None:
    with tamper(workspace) as con:
        record = {**row(con, 3), "details": '{"i":999}'}
        con.execute("UPDATE audit_events SET details = ?, hash = ? WHERE seq = 3",
                    (record["details"], rehash(record)))  # fmt: skip
    expect_break(history, 4, r"record 4 does not link to record 3")


def test_an_edited_checkpointed_record_breaks_the_checkpoint(
    workspace: Workspace, history: AuditLog
) -> None:
    with tamper(workspace) as con:
        record = {**row(con, 5), "subject": "innocent"}
        con.execute("UPDATE audit_events SET subject = ?, hash = ? WHERE seq = 5",
                    (record["subject"], rehash(record)))  # fmt: skip
    expect_break(history, 5, r"checkpoint at sequence 5 does not match record 5")


def test_a_rewritten_history_is_caught_by_the_checkpoint(
    workspace: Workspace, history: AuditLog
) -> None:
    # The attacker edits record 3 and recomputes every hash and link after it: the chain is
    # consistent again, but the signed checkpoints still name the old hashes.
    with tamper(workspace) as con:
        prev = row(con, 2)["hash"]
        for seq in range(3, 13):
            record = {**row(con, seq), "prev_hash": prev}
            if seq == 3:
                record["details"] = '{"i":999}'
            record["hash"] = prev = rehash(record)
            con.execute(
                "UPDATE audit_events SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (record["details"], record["prev_hash"], record["hash"], seq),
            )
    expect_break(history, 5, r"checkpoint at sequence 5 does not match record 5: the history")
    # ... and pointing the checkpoints at the new hashes breaks their signatures instead.
    with tamper(workspace) as con:
        for seq in (5, 10):
            con.execute("UPDATE audit_checkpoints SET head_hash = ? WHERE seq = ?",
                        (row(con, seq)["hash"], seq))  # fmt: skip
    expect_break(history, 5, r"checkpoint at sequence 5: the signature does not verify")


def test_a_deleted_record_is_named(workspace: Workspace, history: AuditLog) -> None:
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_events WHERE seq = 4")
    expect_break(history, 4, r"record 4 missing from the chain \(deleted\)")


def test_truncation_behind_a_checkpoint_is_named(workspace: Workspace, history: AuditLog) -> None:
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_events WHERE seq >= 8")
    expect_break(
        history, 8, r"truncated: checkpoint at sequence 10 names record 10, but the chain ends"
    )


def test_an_inserted_record_is_named(workspace: Workspace, history: AuditLog) -> None:
    # Records 4.. move up one place; the new record 4 links correctly to record 3 and has a
    # valid hash of its own, but the old record 4 (now 5) no longer links to it.
    with tamper(workspace) as con:
        for seq in range(12, 3, -1):
            con.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (seq + 1, seq))
        record = {
            "seq": 4,
            "ts": "2030-01-01T12:03:30.000000Z",
            "actor": "tester",
            "action": "test.event",
            "subject": "planted",
            "details": "{}",
            "prev_hash": row(con, 3)["hash"],
        }
        put(con, {**record, "hash": rehash(record)})
    expect_break(history, 5, r"record 5 does not link to record 4")


def test_a_record_appended_with_a_forged_link_is_named(
    workspace: Workspace, history: AuditLog
) -> None:
    with tamper(workspace) as con:
        record = {**row(con, 12), "seq": 13, "prev_hash": "f" * 64, "subject": "planted"}
        put(con, {**record, "hash": rehash(record)})
    expect_break(history, 13, r"record 13 does not link to record 12")


def test_reordered_records_are_named(workspace: Workspace, history: AuditLog) -> None:
    with tamper(workspace) as con:
        three, seven = row(con, 3), row(con, 7)
        con.execute("DELETE FROM audit_events WHERE seq IN (3, 7)")
        put(con, {**seven, "seq": 3})
        put(con, {**three, "seq": 7})
    expect_break(history, 3, r"record 3 was altered")


@pytest.mark.parametrize(
    ("statement", "sequence", "pattern"),
    [
        (
            "UPDATE audit_checkpoints SET head_hash = (SELECT hash FROM audit_events WHERE seq = 4)"
            " WHERE seq = 5",
            5,
            r"checkpoint at sequence 5: the signature does not verify",
        ),
        (
            "UPDATE audit_checkpoints SET signature = 'AAAA' || substr(signature, 5) WHERE seq = 5",
            5,
            r"checkpoint at sequence 5: the signature does not verify",
        ),
        (
            "UPDATE audit_checkpoints SET signature = 'not base64!' WHERE seq = 5",
            5,
            r"checkpoint at sequence 5: the signature does not verify",
        ),
        (
            "UPDATE audit_checkpoints SET ts = '2031-01-01T00:00:00.000000Z' WHERE seq = 5",
            5,
            r"checkpoint at sequence 5: the signature does not verify",
        ),
        (
            "UPDATE audit_checkpoints SET seq = 4, "
            "head_hash = (SELECT hash FROM audit_events WHERE seq = 4) WHERE seq = 5",
            4,
            r"checkpoint at sequence 4: the signature does not verify",
        ),
    ],
)
def test_an_altered_checkpoint_is_named(
    workspace: Workspace, history: AuditLog, statement: str, sequence: int, pattern: str
) -> None:
    with tamper(workspace) as con:
        con.execute(statement)
    expect_break(history, sequence, pattern)


@pytest.mark.parametrize("claim_workspace_key", [False, True])
def test_a_forged_checkpoint_is_named(
    workspace: Workspace, history: AuditLog, claim_workspace_key: bool
) -> None:
    # The attacker signs the head with a key of their own, naming it or the workspace key.
    forger = generate_key()
    with tamper(workspace) as con:
        head = row(con, 12)
        signer = key_id(workspace.public_key()) if claim_workspace_key else key_id(forger)
        ts = "2030-01-01T13:00:00.000000Z"
        signature = sign_bytes(forger, checkpoint_message(12, head["hash"], ts, signer))
        con.execute(
            "INSERT INTO audit_checkpoints (seq, head_hash, ts, key_id, signature) "
            "VALUES (12, ?, ?, ?, ?)",
            (head["hash"], ts, signer, base64.b64encode(signature).decode()),
        )
    if claim_workspace_key:
        expect_break(history, 12, r"checkpoint at sequence 12: the signature does not verify")
    else:
        expect_break(history, 12, r"checkpoint at sequence 12 was signed by key .*, not by")


def test_deleted_checkpoints_are_caught_by_the_head_anchor(
    workspace: Workspace, history: AuditLog, tmp_path: Path
) -> None:
    offsite = tmp_path / "offsite-audit.head"
    shutil.copy(workspace.root / "audit.head", offsite)
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_checkpoints")
    expect_break(history, 10, r"anchor .*audit.head names the checkpoint at sequence 10, which")
    # LIMIT: whoever can also delete audit.head leaves a log consistent on its own ...
    (workspace.root / "audit.head").unlink()
    result = history.verify()
    assert (result.events, result.checkpoints, result.anchors) == (12, 0, ())
    # ... which only a copy of the anchor kept elsewhere still catches.
    expect_break(history, 10, r"anchor .*offsite-audit.head names the checkpoint", offsite)


def test_truncation_with_deleted_checkpoints_is_caught_by_the_head_anchor(
    workspace: Workspace, history: AuditLog, tmp_path: Path
) -> None:
    offsite = tmp_path / "offsite-audit.head"
    shutil.copy(workspace.root / "audit.head", offsite)
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_events WHERE seq >= 8")
        con.execute("DELETE FROM audit_checkpoints")
    expect_break(history, 8, r"truncated: anchor .*audit.head at sequence 10 names record 10")
    # LIMIT: with audit.head gone too, the remaining seven records verify on their own ...
    (workspace.root / "audit.head").unlink()
    assert history.verify().events == 7
    # ... and the off-site copy is what proves the rollback.
    expect_break(history, 8, r"truncated: anchor .*offsite-audit.head", offsite)
    # New events appended after the rollback re-use the numbers: still caught (the chain,
    # now ending at record 8, does not reach record 10).
    history.append("test.event", "after the rollback")
    expect_break(history, 9, r"truncated: .* but the chain ends at record 8", offsite)


def test_limit_events_after_the_last_checkpoint_are_protected_by_the_chain_only(
    workspace: Workspace, history: AuditLog
) -> None:
    # Documented limit: dropping the unanchored tail (11, 12), or appending well-formed
    # records to it, leaves a consistent log. Checkpoints bound what can be lost this way.
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_events WHERE seq > 10")
    result = history.verify()
    assert (result.events, result.unanchored) == (10, 0)


def test_a_damaged_head_anchor_fails_verification(workspace: Workspace, history: AuditLog) -> None:
    (workspace.root / "audit.head").write_text('{"format": "bastion-audit-head-v1", "seq": "x"}')
    with pytest.raises(AuditChainError, match=r"anchor .* is damaged"):
        history.verify()
    with pytest.raises(AuditChainError, match=r"anchor .* is damaged"):
        history.checkpoint()  # not silently replaced: someone has to look first
    (workspace.root / "audit.head").unlink()
    history.checkpoint()
    assert history.verify().last_checkpoint == 12


def test_a_missing_offsite_anchor_is_an_error_not_a_pass(history: AuditLog, tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot read anchor"):
        history.verify(anchor=tmp_path / "nope")


def test_a_rolled_back_log_is_never_signed(workspace: Workspace, history: AuditLog) -> None:
    # After a rollback to record 8 (checkpoint 10 deleted), signing the shorter head would
    # launder the rollback: the anchor still names record 10, so checkpoint() refuses.
    with tamper(workspace) as con:
        con.execute("DELETE FROM audit_events WHERE seq >= 9")
        con.execute("DELETE FROM audit_checkpoints WHERE seq >= 9")
    with pytest.raises(AuditChainError, match=r"refusing to checkpoint: .* sequence=9: .*trunc"):
        history.checkpoint()
    assert json.loads((workspace.root / "audit.head").read_text())["seq"] == 10
    expect_break(history, 9, r"truncated: anchor .*audit.head at sequence 10")


def test_a_rewritten_history_is_never_signed(
    workspace: Workspace, history: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    # The attacker rewrites record 12 (after the last checkpoint) consistently and appends
    # until a checkpoint is due: the checkpoint refuses, the events are still recorded.
    with tamper(workspace) as con:
        record = {**row(con, 11), "subject": "innocent"}
        record["hash"] = rehash(record)
        con.execute("UPDATE audit_events SET subject = ?, hash = ? WHERE seq = 11",
                    (record["subject"], record["hash"]))  # fmt: skip
    with pytest.raises(AuditChainError, match=r"refusing to checkpoint: .*sequence=12"):
        history.checkpoint()
    log = AuditLog(
        workspace.database,
        actor="tester",
        signing_key=workspace.signing_key,
        public_key=workspace.public_key,
        checkpoint_interval=3,
        head_path=workspace.root / "audit.head",
    )
    with caplog.at_level(logging.WARNING, logger="bastion.core.audit"):
        assert log.append("test.event", "s13").seq == 13
    assert "checkpoint due but not made (refusing to checkpoint" in caplog.text
    assert json.loads((workspace.root / "audit.head").read_text())["seq"] == 10
    expect_break(history, 12, r"record 12 does not link to record 11")


def test_a_checkpoint_trusts_only_hashes_it_computed_and_verify_still_checks_contents(
    workspace: Workspace, history: AuditLog
) -> None:
    with tamper(workspace) as con:
        con.execute("UPDATE audit_events SET subject = 'innocent' WHERE seq = 11")
    # Another log (another process) trusts nothing it did not write: it refuses to sign.
    with pytest.raises(AuditChainError, match=r"refusing to checkpoint: .*sequence=11"):
        workspace.audit().checkpoint()
    # Record 11 was written by ``history`` itself and its stored hash is still the one it
    # computed, so its checkpoint does not re-hash it; the edit is found by verify.
    assert history.checkpoint().seq == 12
    expect_break(history, 11, r"record 11 was altered: its hash does not match")


# ----------------------------------------------------------------------------- concurrency


def test_a_conflicting_insert_is_retried_not_forked(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulate a writer that read a stale head (as if the lock had been bypassed): the primary
    # key on seq refuses the duplicate and append retries with the real head.
    first = log.append("test.event", "s1")
    log.append("test.event", "s2")
    stale = iter([AuditHead(1, first.hash)])
    real = AuditLog._read_head

    def read_head(conn: Any) -> AuditHead:
        return next(stale, None) or real(conn)

    monkeypatch.setattr(AuditLog, "_read_head", staticmethod(read_head))
    with caplog.at_level(logging.WARNING, logger="bastion.core.audit"):
        event = log.append("test.event", "s3")
    assert event.seq == 3
    assert "conflicted" in caplog.text
    assert log.verify().events == 3
    monkeypatch.setattr(AuditLog, "_read_head", staticmethod(lambda conn: AuditHead(1, "x")))
    with pytest.raises(AuditError, match="cannot append"):
        log.append("test.event", "s4")  # a writer that never sees the real head gives up
    monkeypatch.setattr(AuditLog, "_read_head", staticmethod(real))
    assert log.verify().events == 3


WORKERS = 4
APPENDS = 50


# Run by builtins.exec in each spawned process: under pytest's --import-mode=importlib this test
# module is not importable there, so the worker travels as source (and imports only bastion).
_APPEND_WORKER = """
from bastion.core.workspace import find_workspace

ws = find_workspace(environ=environ)
try:
    log = ws.audit()
    barrier.wait(timeout=60)
    for i in range(appends):
        log.append("test.concurrent", f"worker-{worker}", {"worker": worker, "i": i})
finally:
    ws.close()
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def shared_environ(request: pytest.FixtureRequest, bastion_home: Path) -> dict[str, str]:
    """The environment of a workspace that several processes append to."""
    environ = {**os.environ, "BASTION_AUDIT_CHECKPOINT_INTERVAL": "25"}
    if request.param == "postgresql":
        environ["BASTION_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    ws, _ = init_workspace(environ=environ)
    assert ws.database.dialect == request.param
    ws.close()
    return environ


def test_concurrent_processes_never_fork_the_chain(shared_environ: dict[str, str]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    processes = [
        context.Process(
            target=exec,
            args=(
                _APPEND_WORKER,
                {"environ": shared_environ, "worker": w, "appends": APPENDS, "barrier": barrier},
            ),
        )
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WORKERS

    ws = find_workspace(environ=shared_environ)
    try:
        log = ws.audit()
        result = log.verify()
        events = log.events()
    finally:
        ws.close()
    total = WORKERS * APPENDS
    assert result.events == total
    assert [e.seq for e in events] == list(range(1, total + 1))
    assert len({e.hash for e in events}) == total
    for worker in range(WORKERS):
        mine = [e.details["i"] for e in events if e.details["worker"] == worker]
        assert mine == list(range(APPENDS))  # each writer's events in its own order
    # Checkpoints were made under contention, each at least 25 events after the last.
    assert result.checkpoints >= 1
    assert result.unanchored < 25


# ----------------------------------------------------------------------------- public surface


def test_core_exports_the_public_api_of_its_modules() -> None:
    import bastion.core
    from bastion.core import audit, keys, principals, storage, workspace

    modules = (audit, keys, principals, storage, workspace)
    exported = set(bastion.core.__all__)
    assert len(exported) == len(bastion.core.__all__)
    for module in modules:
        assert set(module.__all__) <= exported, module.__name__
        for name in module.__all__:
            assert getattr(bastion.core, name) is getattr(module, name)
    assert {"AuditLog", "AuditEvent", "Checkpoint", "AuditVerification"} <= exported
    assert all(not name.startswith("_") for name in exported)
