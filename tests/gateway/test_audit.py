"""Audit of every request: batched, off the request path, nothing lost, fail closed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.gateway.support import (
    GatewayFactory,
    Keys,
    MemorySink,
    client_for,
    infer_body,
    serving,
    wait_for,
)

from bastion.core.audit import MAX_DETAILS_BYTES, AuditRecord, canonical_json
from bastion.core.workspace import Workspace
from bastion.errors import AuditChainError, AuditError
from bastion.gateway.audit import (
    REQUESTS_ACTION,
    AuditWriter,
    payload_details,
    redact,
    request_entries,
)
from bastion.gateway.extraction import ExtractionAlert

pytestmark = pytest.mark.anyio

INFER = "/v2/models/digits/infer"


async def test_every_request_is_recorded(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    async with serving(make_gateway()) as client:
        await client.post(INFER, json=infer_body(sample(0), id="r1"), headers=keys.headers("sre"))
        await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("revoked"))
        await client.get("/v2/models/digits", headers=keys.headers("client"))
        await client.get("/nowhere")
        await client.get("/v2/health/live")  # health checks: metrics only
    records = sink.requests()
    assert [r.details["status"] for r in records] == [200, 401, 200, 404]  # type: ignore[index]
    ok, revoked, metadata, unknown = records
    assert ok.subject == "model:digits"
    assert ok.actor == f"sre (key {keys.ids['sre']}, sre)"
    assert ok.details == {
        "address": "10.0.0.1",
        "method": "POST",
        "route": "/v2/models/{name}/infer",
        "status": 200,
        "decision": "allowed",
        "latency_us": ok.details["latency_us"],  # type: ignore[index]
        "key_id": keys.ids["sre"],
        "version": "1",
        "batch": 1,
        "request_id": "r1",
        "at": ok.details["at"],
    }
    assert 0 < ok.details["latency_us"] < 5_000_000  # type: ignore[index,operator]
    assert revoked.actor == "anonymous"
    assert revoked.details["decision"] == "refused"  # type: ignore[index]
    assert revoked.details["reason"] == f"revoked key {keys.ids['revoked']}"  # type: ignore[index]
    assert revoked.details["model"] == "digits"  # type: ignore[index]
    assert metadata.details["route"] == "/v2/models/{name}"  # type: ignore[index]
    assert unknown.subject == "gateway"
    assert unknown.details["route"] == "unknown"  # type: ignore[index]
    assert all(r.at.tzinfo is not None and r.seq is None for r in records)
    assert [r.at for r in records] == sorted(r.at for r in records)


async def test_records_are_written_in_batches_off_the_request_path(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    gateway = make_gateway(audit_batch_size=4, audit_flush_seconds=30)
    async with serving(gateway) as client:
        for _ in range(3):
            await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("sre"))
        assert sink.requests() == []  # below the batch size, before the interval: queued
        await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("sre"))
        await wait_for(lambda: len(sink.records) >= 2)
        assert sink.calls == 1  # gateway.start and three requests, in one transaction
        assert len(sink.requests()) == 3
    assert len(sink.requests()) == 4


async def test_chain_verifies_after_a_shutdown_flush(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, workspace: Workspace
):
    audit = workspace.audit()
    # A flush interval far beyond the test: only the shutdown writes the records.
    gateway = make_gateway(audit=audit, audit_flush_seconds=60, audit_batch_size=1000)
    async with serving(gateway) as client:
        for n in range(25):
            await client.post(INFER, json=infer_body(sample(n)), headers=keys.headers("client"))
        assert gateway.audit.pending == 26  # start + 25 requests, none written yet
    assert gateway.audit.pending == 0
    verification = audit.verify()
    events = list(audit.events())
    assert verification.events == len(events)
    gateway_events = [e for e in events if e.action.startswith("gateway.")]
    # One key, one model, one flush: the 25 requests are one chained event.
    assert [e.action for e in gateway_events] == ["gateway.start", REQUESTS_ACTION, "gateway.stop"]
    entries = request_entries(events)
    assert [e.seq for e in entries] == [gateway_events[1].seq] * 25
    assert all(e.details["status"] == 200 for e in entries)
    assert gateway_events[1].details["count"] == 25


async def test_an_edited_request_entry_breaks_the_chain(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, workspace: Workspace
):
    audit = workspace.audit()
    async with serving(make_gateway(audit=audit)) as client:
        for n in range(3):
            await client.post(INFER, json=infer_body(sample(n)), headers=keys.headers("client"))
    (event,) = audit.events(action=REQUESTS_ACTION)
    forged = json.loads(json.dumps(dict(event.details)))
    forged["requests"][1]["status"] = 403  # hide that a request was answered
    text = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    with sqlite3.connect(workspace.root / "bastion.db") as con:
        con.execute("UPDATE audit_events SET details = ? WHERE seq = ?", (text, event.seq))
    with pytest.raises(AuditChainError, match=f"record {event.seq} was altered"):
        audit.verify()


async def test_outage_fails_closed_then_recovers_without_losing_records(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    gateway = make_gateway(audit_flush_seconds=0.01)
    async with serving(gateway) as client:
        await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("sre"))
        await wait_for(lambda: len(sink.requests()) == 1)
        sink.down = True
        accepted = await client.post(INFER, json=infer_body(sample(1)), headers=keys.headers("sre"))
        assert accepted.status_code == 200  # the log has not failed yet
        await wait_for(lambda: gateway.audit.failing)
        refused = await client.post(INFER, json=infer_body(sample(2)), headers=keys.headers("sre"))
        assert (refused.status_code, refused.json()) == (503, {"error": "service unavailable"})
        assert (await client.get("/v2/health/ready")).status_code == 503
        sink.down = False
        await wait_for(lambda: not gateway.audit.failing, timeout=10)
        again = await client.post(INFER, json=infer_body(sample(3)), headers=keys.headers("sre"))
        assert again.status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 200
    statuses = [r.details["status"] for r in sink.requests()]  # type: ignore[index]
    assert statuses == [200, 200, 200]  # nothing accepted was lost
    (refusals,) = sink.actions("gateway.requests.refused")
    assert refusals.details["count"] == 1  # type: ignore[index]
    assert refusals.details["reason"] == "audit log unavailable"  # type: ignore[index]


async def test_full_queue_refuses_or_drops_with_fail_open(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    sink.down = True
    closed = make_gateway(audit_queue_max=3, audit_flush_seconds=60)
    async with serving(closed) as client:
        statuses = [
            (await client.get("/v2", headers=keys.headers("sre"))).status_code for _ in range(4)
        ]
        sink.down = False
    assert statuses == [200, 200, 503, 503]
    opened = make_gateway(audit_queue_max=3, audit_flush_seconds=60, fail_open=True)
    sink.down = True
    async with serving(opened) as client:
        statuses = [
            (await client.get("/v2", headers=keys.headers("sre"))).status_code for _ in range(4)
        ]
        sink.down = False
    assert statuses == [200] * 4
    assert opened.audit.dropped == 2


async def test_payloads_are_recorded_redacted_only_when_asked(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    body = infer_body(
        sample(0), id="bob@example.com paid with 4111 1111 1111 1111, call +1 415-555-2671"
    )
    async with serving(make_gateway(audit_payloads=True)) as client:
        await client.post(INFER, json=body, headers=keys.headers("sre"))
    async with serving(make_gateway()) as client:
        await client.post(INFER, json=body, headers=keys.headers("sre"))
    with_payload, without = sink.requests()
    payload = with_payload.details["payload"]  # type: ignore[index]
    assert payload["id"] == "[email] paid with [card], call [phone]"  # type: ignore[index]
    assert payload["inputs"][0]["data"] == sample(0)  # type: ignore[index]
    assert "payload" not in without.details  # type: ignore[operator]
    # The request id is recorded as given only in the payload-less record's request_id.
    assert "bob@example.com" not in json.dumps(payload)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail alice.smith+tag@mail.example.co.uk now", "mail [email] now"),
        ("card 4111-1111-1111-1111.", "card [card]."),
        ("card 4111111111111112 fails Luhn", "card 4111111111111112 fails Luhn"),
        ("phone (415) 555-2671 or +44 20 7946 0958", "phone [phone] or [phone]"),
        ("pixels 0.25 12 16", "pixels 0.25 12 16"),
        ("build 2024-05-17", "build 2024-05-17"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_walks_structures_and_keeps_numbers() -> None:
    value = {"a@b.io": [1, 2.5, True, None, {"note": "x@y.org"}]}
    assert redact(value) == {"[email]": [1, 2.5, True, None, {"note": "[email]"}]}
    deep: Any = "x@y.org"
    for _ in range(100):
        deep = [deep]
    flat = json.dumps(redact(deep))
    assert "[truncated]" in flat
    assert "x@y.org" not in flat


def test_payloads_too_large_or_invalid_are_recorded_by_digest() -> None:
    big = json.dumps({"data": [1.0] * 30_000}).encode()
    assert payload_details(big)["omitted"] == "too large"
    assert payload_details(big)["bytes"] == len(big)
    assert payload_details(b"{not json")["omitted"] == "not recordable"
    assert payload_details(b'{"a": 1}') == {"payload": {"a": 1}}


def _entry(n: int, **extra: Any) -> dict[str, Any]:
    return {"status": 200, "decision": "allowed", "request_id": f"r{n}", **extra}


async def test_requests_of_one_key_and_model_share_an_event_in_queue_order() -> None:
    sink = MemorySink()
    writer = AuditWriter(sink, batch_size=100, flush_seconds=60)
    await writer.start()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    writer.request("key:a", "model:m", t0, _entry(0))
    writer.request("key:b", "model:m", t0 + timedelta(seconds=1), _entry(1))
    writer.request("key:a", "model:m", t0 + timedelta(seconds=2), _entry(2))
    writer.request("key:a", "model:n", t0 + timedelta(seconds=3), _entry(3))
    writer.submit(AuditRecord("gateway.model.loaded", "model:m", {}))
    writer.request("key:a", "model:m", t0 + timedelta(seconds=4), _entry(4))
    await writer.stop()
    assert sink.calls == 1
    summary = [
        (r.action, r.actor, r.subject, [e["request_id"] for e in r.details.get("requests", [])])
        for r in sink.records
    ]
    assert summary == [
        (REQUESTS_ACTION, "key:a", "model:m", ["r0", "r2"]),
        (REQUESTS_ACTION, "key:b", "model:m", ["r1"]),
        (REQUESTS_ACTION, "key:a", "model:n", ["r3"]),
        ("gateway.model.loaded", None, "model:m", []),
        (REQUESTS_ACTION, "key:a", "model:m", ["r4"]),
    ]
    first = sink.records[0]
    assert first.now == t0 + timedelta(seconds=2)
    assert (first.details["count"], first.details["first"], first.details["last"]) == (
        2,
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:02.000000Z",
    )
    # Read back in the order answered, whatever the grouping.
    entries = request_entries(sink.records)
    assert [e.details["request_id"] for e in entries] == ["r0", "r1", "r2", "r3", "r4"]
    assert [e.at for e in entries] == [t0 + timedelta(seconds=n) for n in range(5)]
    assert writer.written == 6


@pytest.mark.parametrize(
    "payload",
    [
        {"data": ["x" * 1000] * 18},  # about 18 KiB each
        {"data": ["\u00e9\U0001f600" * 300] * 10},  # non-ASCII: longer escaped than in UTF-8
        {"data": [1e20] * 2000},  # floats written out in full by the canonical form
    ],
    ids=["ascii", "unicode", "long-floats"],
)
async def test_large_entries_are_split_into_events_the_log_accepts(
    workspace: Workspace, payload: dict[str, Any]
) -> None:
    audit = workspace.audit()
    writer = AuditWriter(audit, batch_size=100, flush_seconds=60)
    await writer.start()
    now = datetime.now(UTC)
    for n in range(12):
        writer.request("key:a", "model:m", now, _entry(n, payload=payload))
    await writer.stop()
    assert (writer.written, writer.invalid, writer.pending) == (12, 0, 0)
    events = audit.events(action=REQUESTS_ACTION)
    assert len(events) > 1
    assert all(len(canonical_json(dict(e.details))) <= MAX_DETAILS_BYTES for e in events)
    assert [e.details["request_id"] for e in request_entries(events)] == [
        f"r{n}" for n in range(12)
    ]
    audit.verify()


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({}, "holds no list of requests"),
        ({"requests": "r0"}, "holds no list of requests"),
        ({"requests": ["r0"]}, "malformed request entry"),
        ({"requests": [{"status": 200}]}, "malformed request entry"),
        ({"requests": [{"at": "yesterday"}]}, "request entry with a bad time"),
    ],
)
def test_malformed_request_events_are_named(details: dict[str, Any], message: str) -> None:
    record = AuditRecord(REQUESTS_ACTION, "model:m", details, actor="key:a")
    with pytest.raises(AuditError, match=message):
        request_entries([record])


class _Picky:
    """A log that refuses one record's content (not the database)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append_many(self, records: Sequence[AuditRecord]) -> None:
        if any(r.subject == "bad" for r in records):
            raise AuditError("details key 'token' names a secret")
        self.records.extend(records)


async def test_an_invalid_record_does_not_block_the_others(caplog: pytest.LogCaptureFixture):
    sink = _Picky()
    writer = AuditWriter(sink, batch_size=10, flush_seconds=0.01)
    await writer.start()
    for subject in ("a", "bad", "b"):
        writer.submit(AuditRecord("test.event", subject, {}))
    await writer.stop()
    assert [r.subject for r in sink.records] == ["a", "b"]
    assert (writer.invalid, writer.written, writer.pending) == (1, 2, 0)
    assert "refused by the log and skipped" in caplog.text


async def test_shutdown_retries_a_failing_log_then_gives_up_loudly(
    caplog: pytest.LogCaptureFixture,
):
    sink = MemorySink()
    sink.down = True
    writer = AuditWriter(sink, batch_size=10, flush_seconds=0.01, shutdown_seconds=0.1)
    await writer.start()
    writer.submit(AuditRecord("test.event", "x", {}))
    await writer.stop()
    assert writer.pending == 1
    assert "1 records not written" in caplog.text


async def test_shutdown_waits_for_a_log_that_comes_back() -> None:
    sink = MemorySink()
    sink.down = True
    writer = AuditWriter(sink, batch_size=10, flush_seconds=0.01, shutdown_seconds=10)
    await writer.start()
    writer.submit(AuditRecord("test.event", "x", {}))

    async def restore() -> None:
        await asyncio.sleep(0.1)
        sink.down = False

    restoring = asyncio.ensure_future(restore())
    await writer.stop()
    await restoring
    assert [r.subject for r in sink.records] == ["x"]


async def test_counted_refusals_are_written_before_the_stop_event(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    gateway = make_gateway(
        audit_flush_seconds=60,
        rate_limit={"per_key_per_minute": 1, "per_address_per_minute": 100},
    )
    async with serving(gateway) as client:
        for _ in range(3):
            await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("client"))
    actions = [r.action for r in sink.records]
    assert actions == ["gateway.start", REQUESTS_ACTION, "gateway.requests.refused", "gateway.stop"]
    assert sink.records[2].details["count"] == 2  # type: ignore[index]


async def test_tallies_are_bounded() -> None:
    sink = MemorySink()
    writer = AuditWriter(sink, batch_size=100_000, flush_seconds=10)
    for n in range(10_050):
        writer.tally("anonymous", "gateway", address=f"10.0.{n // 256}.{n % 256}", status=429)
    await writer.start()
    await writer.stop()
    records = sink.actions("gateway.requests.refused")
    assert len(records) == 10_001
    assert sum(r.details["count"] for r in records) == 10_050  # type: ignore[index,misc]
    assert records[-1].details["overflow"] == 1  # type: ignore[index]


async def test_extraction_alerts_and_blocks_reach_the_audit_log(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    gateway = make_gateway(extraction={"enabled": True, "block": True})
    monitor: Any = gateway.extraction
    async with serving(gateway):
        monitor.on_alert(ExtractionAlert(keys.ids["client"], 0.42, 120, 1.0, True))
        await wait_for(lambda: bool(sink.actions("gateway.extraction.alert")))
    (alert,) = sink.actions("gateway.extraction.alert")
    assert alert.subject == f"key:{keys.ids['client']}"
    assert alert.details == {"queries": 120, "blocked": True, "statistic": 0.42}


class _Blocker:
    def __init__(self, blocked: str) -> None:
        self.blocked_key = blocked
        self.observed: list[tuple[str, int]] = []

    def blocked(self, key_id: str) -> bool:
        return key_id == self.blocked_key

    def observe(self, key_id: str, inputs: Any, labels: Any) -> None:
        self.observed.append((key_id, len(labels)))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def stats(self) -> dict[str, int | float]:
        return {"keys": 1, "alerts": 0}


async def test_a_blocked_key_is_refused_and_answers_are_observed(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    monitor = _Blocker(keys.ids["client-0"])
    gateway = make_gateway(monitor=monitor)
    async with serving(gateway) as client, client_for(gateway, "10.0.0.2") as other:
        blocked = await client.post(
            INFER, json=infer_body(sample(0)), headers=keys.headers("client-0")
        )
        allowed = await other.post(
            INFER, json=infer_body(sample(0)), headers=keys.headers("client-1")
        )
    assert (blocked.status_code, blocked.json()) == (403, {"error": "forbidden"})
    assert allowed.status_code == 200
    assert monitor.observed == [(keys.ids["client-1"], 1)]
    reasons = [r.details.get("reason") for r in sink.requests()]  # type: ignore[union-attr]
    assert reasons == ["key blocked by the extraction monitor", None]
