"""Audit guard: every request recorded in the audit log, in batches, off the request path.

(API not yet stable.) A request's entry is built on the request path (a small dictionary) and
put on a bounded in-memory queue; a background task takes up to ``gateway.audit_batch_size``
entries at a time, at least every ``gateway.audit_flush_seconds``, and appends them with
:meth:`bastion.core.audit.AuditLog.append_many` in a worker thread: one transaction per batch,
never a database commit per request (the issue measured a synchronous commit per request at
15-50% of a small model's throughput).

**One chained event per key and model per batch.** The requests of a batch made with the same
key (actor) to the same model (subject) become one ``gateway.requests`` event whose details are
``{"count", "first", "last", "requests": [entry, ...]}``, each entry stamped with its own time
(``at``). Hashing and storing one event per request cost 60-140 µs of the gateway's CPU each,
more than half of a small model's whole request; one per batch costs a few µs per request. The
chain covers every entry all the same: changing, removing or reordering one breaks the event's
hash. An event is split before its details pass the log's 64 KiB limit; events keep the order of
the queue (a lifecycle event between two requests is appended between their events).
:func:`request_entries` turns events back into one :class:`RequestEntry` per request.

Guarantees:

* **Nothing accepted is lost on a graceful shutdown.** :meth:`AuditWriter.stop` flushes the
  whole queue before returning (retrying while the database is down, for up to
  ``gateway.audit_shutdown_seconds``; what is still unwritten then is logged as an error with
  its count). The gateway stops it in its lifespan shutdown, after the server has finished the
  requests in flight.
* **Fail closed.** When a batch cannot be written (the database is unreachable), it stays at
  the head of the queue and is retried with exponential back-off (up to 5 s); meanwhile
  :attr:`AuditWriter.accepting` is False, and the gateway answers ``503`` to new requests
  (unless ``gateway.fail_open``). It recovers by itself at the next successful write. The
  queue never holds more than ``gateway.audit_queue_max`` records: when full, a request cannot
  be recorded and is refused with 503 (with ``fail_open``, served and counted as dropped).
* **Invalid records do not block the log.** A batch the log refuses for its content (not for
  the database) is retried record by record; a record still refused is logged and counted.

Payloads are recorded only with ``gateway.audit_payloads``, then with personal data redacted
(:func:`redact`): e-mail addresses, phone numbers and payment card numbers (Luhn-checked) in
string values become ``[email]``, ``[phone]``, ``[card]``. A payload too large for one audit
record (the log's 64 KiB limit) is replaced by its SHA-256 and size.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bastion.core.audit import (
    JSON,
    MAX_DETAILS_BYTES,
    AuditEvent,
    AuditRecord,
    canonical_json,
)
from bastion.core.timestamps import format_utc
from bastion.errors import AuditError, StorageError

__all__ = [
    "REQUESTS_ACTION",
    "AuditSink",
    "AuditWriter",
    "RequestEntry",
    "payload_details",
    "redact",
    "request_entries",
]

#: The action of the events that carry a batch's requests.
REQUESTS_ACTION = "gateway.requests"

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0
_PAYLOAD_BUDGET = 48 * 1024
_MAX_REDACT_DEPTH = 64
_MAX_TALLIES = 10_000
# An event's details are closed before this many bytes by an upper bound of each entry's
# canonical size (see _entry_size); a batch the log still refuses is written entry by entry.
_EVENT_BUDGET = MAX_DETAILS_BYTES - 4 * 1024
_MAX_ENTRIES_PER_EVENT = 1024
# Keys, punctuation and integers of an entry without its strings: its fields are the gateway's
# own dozen short names with integers of at most 16 digits.
_ENTRY_FIXED_BYTES = 512

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CARD_RE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
# A phone number: an optional +country code, an optional (area code), then groups of 2 to 4
# digits joined by single separators; _phone() then wants 7 to 15 digits in all and either a
# "+", parentheses or three groups, and leaves dates (2024-05-17) alone.
_PHONE_RE = re.compile(
    r"(?<![0-9+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?)?[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,4}"
    r"(?![0-9])"
)
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class AuditSink(Protocol):
    """Where batches go: :class:`bastion.core.audit.AuditLog` or anything with its method."""

    def append_many(self, records: Sequence[AuditRecord]) -> object:
        """Append ``records`` in one transaction, or raise."""
        ...


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[card]" if _luhn(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    groups = len(re.split(r"[ .-]", text))
    marked = text.startswith("+") or "(" in text or groups >= 3
    if 7 <= digits <= 15 and marked and not _DATE_RE.fullmatch(text):
        return "[phone]"
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with e-mail addresses, card numbers and phone numbers in strings replaced.

    Numbers, booleans and nulls are kept; containers are copied; anything nested deeper than
    64 levels becomes ``"[truncated]"``.
    """
    if isinstance(value, str):
        text = _EMAIL_RE.sub("[email]", value)
        text = _CARD_RE.sub(_card, text)
        return _PHONE_RE.sub(_phone, text)
    if _depth >= _MAX_REDACT_DEPTH and isinstance(value, Mapping | list | tuple):
        return "[truncated]"
    if isinstance(value, Mapping):
        return {str(redact(k, _depth + 1)): redact(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    return value


def payload_details(body: bytes) -> dict[str, Any]:
    """The ``payload`` entry of an audit record: the redacted request, or its digest and size.

    Never raises: a body that is not JSON, or too large or deep for a record, is recorded by
    digest.
    """
    digest = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    if len(body) > 4 * _PAYLOAD_BUDGET:
        return {**digest, "omitted": "too large"}
    try:
        value = redact(json.loads(body))
        size = len(canonical_json({"payload": value}))
    except (ValueError, RecursionError, AuditError):
        return {**digest, "omitted": "not recordable"}
    if size > _PAYLOAD_BUDGET:
        return {**digest, "omitted": "too large"}
    return {"payload": value}


def _iso(moment: float) -> str:
    return format_utc(datetime.fromtimestamp(moment, UTC))


@dataclass(frozen=True, slots=True)
class RequestEntry:
    """One request as the gateway recorded it, read back from a ``gateway.requests`` event.

    Attributes:
        seq: the sequence number of the event that holds it (None when read from records
            not appended yet).
        actor: the caller (``key:<id>``, or ``anonymous``).
        subject: ``model:<name>``, or ``gateway`` when no model was resolved.
        at: when the gateway answered (UTC, microseconds).
        details: the entry: address, method, route, status, decision, latency_us, key_id,
            reason, version or model, batch, request_id, and the payload when recorded.
    """

    seq: int | None
    actor: str
    subject: str
    at: datetime
    details: Mapping[str, Any]


def request_entries(events: Iterable[AuditEvent | AuditRecord]) -> list[RequestEntry]:
    """Every request recorded in ``events`` (other actions are skipped), by time answered.

    A batch's requests are grouped per key and model, so chain order is not answer order
    across keys; entries are sorted by their ``at`` (a stable sort: ties keep chain order).

    Raises:
        AuditError: a ``gateway.requests`` event does not hold a list of entries.
    """
    entries: list[RequestEntry] = []
    for event in events:
        if event.action != REQUESTS_ACTION:
            continue
        seq = event.seq if isinstance(event, AuditEvent) else None
        where = f"audit event {seq}" if seq is not None else "a gateway.requests record"
        items = (event.details or {}).get("requests")
        if not isinstance(items, list | tuple):
            raise AuditError(f"{where} holds no list of requests")
        for item in items:
            at = item.get("at") if isinstance(item, Mapping) else None
            if not isinstance(at, str):
                raise AuditError(f"{where} holds a malformed request entry")
            try:
                moment = datetime.fromisoformat(at)
            except ValueError as exc:
                raise AuditError(f"{where} holds a request entry with a bad time") from exc
            actor = event.actor or ""
            entries.append(RequestEntry(seq, actor, event.subject, moment, item))
    entries.sort(key=lambda entry: entry.at)
    return entries


# A request waiting in the queue: actor, subject, when, entry.
_Pending = tuple[str, str, datetime, dict[str, Any]]


def _entry_size(entry: Mapping[str, Any]) -> int:
    """An upper bound of ``entry``'s canonical JSON size in bytes, plus its comma."""
    if "payload" in entry:
        # Measured exactly: a payload's floats can be longer in canonical form than in
        # Python's (1e+20 is written out in full).
        return len(canonical_json(dict(entry))) + 1
    # A character takes at most 6 bytes in canonical JSON (a control character as \u00XX).
    chars = sum(len(value) for value in entry.values() if type(value) is str)
    return _ENTRY_FIXED_BYTES + 6 * chars


def _as_records(items: Sequence[AuditRecord | _Pending]) -> list[AuditRecord]:
    """The events for a run of queued items: requests grouped per actor and subject."""
    records: list[AuditRecord] = []
    # (actor, subject) -> (entries, estimated bytes, first, last); insertion-ordered.
    groups: dict[tuple[str, str], tuple[list[dict[str, Any]], list[int], list[datetime]]] = {}

    def close(key: tuple[str, str]) -> None:
        entries, _, span = groups.pop(key)
        details: dict[str, JSON] = {
            "count": len(entries),
            "first": format_utc(span[0]),
            "last": format_utc(span[1]),
            "requests": entries,
        }
        records.append(AuditRecord(REQUESTS_ACTION, key[1], details, actor=key[0], now=span[1]))

    def close_all() -> None:
        for key in list(groups):
            close(key)

    for item in items:
        if isinstance(item, AuditRecord):
            close_all()
            records.append(item)
            continue
        actor, subject, moment, entry = item
        entry = {**entry, "at": format_utc(moment)}
        size = _entry_size(entry)
        key = (actor, subject)
        group = groups.get(key)
        if group is not None and (
            group[1][0] + size > _EVENT_BUDGET or len(group[0]) >= _MAX_ENTRIES_PER_EVENT
        ):
            close(key)
            group = None
        if group is None:
            groups[key] = ([entry], [size + 128], [moment, moment])
        else:
            group[0].append(entry)
            group[1][0] += size
            group[2][1] = moment
    close_all()
    return records


class AuditWriter:
    """A bounded queue of audit records flushed in batches by a background task.

    Args:
        sink: the audit log.
        batch_size: the most records per transaction.
        flush_seconds: the longest a record waits before its batch is written.
        queue_max: the most records held (written or not).
        shutdown_seconds: how long :meth:`stop` keeps retrying a failing database.
    """

    def __init__(
        self,
        sink: AuditSink,
        *,
        batch_size: int = 256,
        flush_seconds: float = 0.25,
        queue_max: int = 100_000,
        shutdown_seconds: float = 30.0,
    ) -> None:
        self._sink = sink
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.queue_max = queue_max
        self.shutdown_seconds = shutdown_seconds
        self._queue: collections.deque[AuditRecord | _Pending] = collections.deque()
        self._tallies: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[Any]] = {}
        self._wakeup: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signalled = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failing = False
        self.written = 0
        self.dropped = 0
        self.invalid = 0
        self.failures = 0
        self.last_error = ""

    @property
    def pending(self) -> int:
        """Records accepted and not yet written."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        """Whether the log is keeping up: not failing, and the queue has room."""
        return not self.failing and len(self._queue) < self.queue_max

    @property
    def full(self) -> bool:
        """Whether the queue is at ``queue_max``."""
        return len(self._queue) >= self.queue_max

    def tally(self, actor: str, subject: str, **fields: str | int | None) -> None:
        """Count one refusal of a kind that comes in floods (rate limited, unavailable).

        Counts with the same actor, subject and fields become one ``gateway.requests.refused``
        event per flush, with ``count``, ``first`` and ``last``. At most 10,000 distinct
        combinations are kept between flushes; beyond that they are counted together under
        ``overflow``. O(1), never blocks.
        """
        key = (actor, subject, tuple(fields.items()))
        now = time.time()
        entry = self._tallies.get(key)
        if entry is None:
            if len(self._tallies) >= _MAX_TALLIES:
                key = ("anonymous", "gateway", (("overflow", 1),))
                entry = self._tallies.get(key)
            if entry is None:
                entry = self._tallies[key] = [0, now, now]
        entry[0] += 1
        entry[2] = now

    def drain_tallies(self) -> None:
        """Queue the refusals counted so far as their ``gateway.requests.refused`` events now.

        A flush does this by itself; the gateway calls it before its last event.
        """
        tallies, self._tallies = self._tallies, {}
        for (actor, subject, fields), (count, first, last) in tallies.items():
            details: dict[str, Any] = {k: v for k, v in fields if v is not None}
            details["count"] = int(count)
            details["first"] = _iso(first)
            details["last"] = _iso(last)
            self.submit(
                AuditRecord(
                    "gateway.requests.refused",
                    subject,
                    details,
                    actor=actor,
                    now=datetime.fromtimestamp(last, UTC),
                )
            )

    def request(self, actor: str, subject: str, at: datetime, entry: dict[str, Any]) -> bool:
        """Queue one request's entry (thread-safe, never blocks); False if the queue is full.

        It is written inside a ``gateway.requests`` event of ``actor`` and ``subject`` (see the
        module docstring); ``entry`` must not be changed afterwards.
        """
        return self._put((actor, subject, at, entry), force=False)

    def submit(self, record: AuditRecord, *, force: bool = False) -> bool:
        """Queue ``record`` (thread-safe, never blocks); False if the queue is full.

        ``force`` queues it even then: for the gateway's own few lifecycle events (start,
        stop, a model refused), which must not be lost to a flood of requests.
        """
        return self._put(record, force=force)

    def _put(self, item: AuditRecord | _Pending, *, force: bool) -> bool:
        if len(self._queue) >= self.queue_max and not force:
            self.dropped += 1
            return False
        self._queue.append(item)
        if len(self._queue) >= self.batch_size and not self._signalled:
            self._signalled = True
            loop = self._loop
            if loop is not None and self._wakeup is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._wakeup.set)
        return True

    async def start(self) -> None:
        """Start the background flusher."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._task = self._loop.create_task(self._run(), name="bastion-audit")

    async def stop(self) -> None:
        """Write everything queued, then stop (see the module docstring).

        The flusher is never cancelled in the middle of a write (its thread would finish the
        write anyway, and the batch would then be written twice): it is asked to stop after
        its current batch, and the rest is written here.
        """
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            assert self._wakeup is not None
            assert self._stop_event is not None
            self._wakeup.set()
            self._stop_event.set()
            await task
        deadline = time.monotonic() + self.shutdown_seconds
        backoff = self.flush_seconds
        while self._queue or self._tallies:
            if await self.flush_once():
                continue
            if time.monotonic() + backoff > deadline:
                logger.error(
                    "audit log unreachable at shutdown: %d records not written (%s)",
                    len(self._queue),
                    self.last_error,
                )
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def flush_once(self) -> bool:
        """Write one batch from the head of the queue; False if the database refused it."""
        if self._tallies:
            self.drain_tallies()
        count = min(len(self._queue), self.batch_size)
        if not count:
            return True
        batch = [self._queue[i] for i in range(count)]
        try:
            await asyncio.to_thread(self._append, batch)
        except AuditError as exc:
            if not isinstance(exc.__cause__, StorageError):
                # The log refused a record's content, not the database: isolate it.
                await self._write_one_by_one(count)
                return not self.failing
            return self._failed(exc)
        except Exception as exc:  # the database, the driver, the disk: all mean "not now"
            return self._failed(exc)
        for _ in range(count):
            self._queue.popleft()
        self.written += count
        if self.failing:
            logger.warning("audit log reachable again; %d records queued", len(self._queue))
        self.failing = False
        return True

    def _append(self, items: Sequence[AuditRecord | _Pending]) -> None:
        # In the worker thread: grouping and timestamps stay off the event loop.
        self._sink.append_many(_as_records(items))

    def _failed(self, exc: BaseException) -> bool:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self.failing:
            logger.error("cannot write the audit log (%s); refusing requests", self.last_error)
        self.failing = True
        return False

    async def _write_one_by_one(self, count: int) -> None:
        for _ in range(count):
            item = self._queue[0]
            try:
                await asyncio.to_thread(self._append, [item])
            except AuditError as exc:
                if isinstance(exc.__cause__, StorageError):
                    self._failed(exc)
                    return
                self.invalid += 1
                logger.error("audit record refused by the log and skipped: %s", exc)  # noqa: TRY400
            except Exception as exc:  # as in flush_once
                self._failed(exc)
                return
            else:
                self.written += 1
            self._queue.popleft()

    async def _run(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        backoff = self.flush_seconds
        while not self._stopping:
            if len(self._queue) < self.batch_size:
                await _wait(wakeup, self.flush_seconds)
            wakeup.clear()
            self._signalled = False
            if self._stopping:
                return
            ok = await self.flush_once()
            while ok and not self._stopping and len(self._queue) >= self.batch_size:
                ok = await self.flush_once()
            if ok:
                backoff = self.flush_seconds
            else:
                # Only a stop cuts the back-off short: new records must not hammer a failing
                # database.
                assert self._stop_event is not None
                await _wait(self._stop_event, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
