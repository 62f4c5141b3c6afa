"""Execution-limits guard: a concurrency cap, per-request deadlines, and where predict runs.

(API not yet stable.) One slow or sponge-like input must not starve the other requests
(Shumailov et al. 2021, "Sponge Examples: Energy-Latency Attacks on Neural Networks",
arXiv:2006.03463; MITRE ATLAS AML.T0029 "Denial of ML Service"):

* **Concurrency cap** (``503``): at most ``gateway.concurrency`` predictions are in flight. It
  is a semaphore that never waits: a request that finds it full is refused at once rather than
  queued, so a flood of expensive inputs is shed instead of piling up latency for everyone. A
  prediction that outlived its request's deadline keeps its slot until its thread really
  finishes (a thread cannot be interrupted), so runaway work is counted, not forgotten.
* **Deadlines** (``504``; ``408`` while the body is still being read): every request gets
  ``gateway.timeout_seconds`` from its first byte. :class:`Deadlines` is one shared watchdog
  task that cancels the requests past their deadline, checked every few milliseconds, instead
  of a timer (``asyncio.timeout``) armed and disarmed per request: registering a request is
  one dictionary insert. Measured on the 2-core machine this was built on, ``asyncio.timeout``
  around a predict call cost about 10 microseconds per request; the watchdog costs well under 1.
* **Inline or thread.** A prediction handed to a worker thread costs a thread-pool round trip:
  measured here, 108 microseconds per call against 13 for the same single-row predict of the
  demo model run directly (a ``wait_for`` timeout on top: 167). At the few hundred
  microseconds a small model's request takes, the hop alone would cost a third of the
  throughput. So a predict estimated to finish within ``gateway.inline_max_seconds`` runs
  directly on the event loop, where it cannot be preempted but also cannot last long; anything
  bigger runs in a thread, where the deadline applies. The estimate is measured when the model
  is prepared (one row and a full batch, in a thread, timed), and every inline call is timed
  too: a model whose inline call ever takes more than four times the budget in CPU time (a
  data-dependent cost the probe did not see: a sponge input), or fifty times in wall time (a
  model that blocks), is moved to the thread pool for good, with a warning. CPU time, not
  wall time, because a wall clock also counts the time spent waiting for the GIL while another
  thread (the audit writer) holds it, which would demote a fast model for nothing. A model
  whose probe fails is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.errors import GatewayError
from bastion.gateway.models import ServedEntry
from bastion.gateway.responses import Rejection

__all__ = ["Deadlines", "Executor", "ModelCost"]

logger = logging.getLogger(__name__)

_PROBE_REPEATS = 3
_DEMOTE_FACTOR = 4.0
_DEMOTE_WALL_FACTOR = 50.0


@dataclass(slots=True)
class ModelCost:
    """Measured cost of a model's predict: ``fixed + per_row * rows`` seconds.

    Attributes:
        inline_rows: the largest batch run inline (0: always a thread).
        demoted: an inline call once overran the budget; the model now always uses threads.
    """

    fixed: float
    per_row: float
    inline_rows: int
    demoted: bool = False
    inline_calls: int = 0
    thread_calls: int = 0


@dataclass(slots=True)
class _Slot:
    deadline: float
    task: asyncio.Task[Any]
    expired: bool = False


class Deadlines:
    """Request deadlines enforced by one watchdog task.

    Args:
        timeout: seconds a request may take.
        tick: how often overdue requests are looked for (a tenth of ``timeout``, at most 50 ms).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        timeout: float,
        *,
        tick: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.tick = tick if tick is not None else min(0.05, timeout / 10)
        self._clock = clock
        # Insertion order is deadline order (one timeout for all), so the overdue ones are a
        # prefix: each tick looks only at those and stops at the first one still in time.
        self._slots: dict[int, _Slot] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    def enter(self) -> int:
        """Give the current task a deadline; returns a handle for :meth:`leave`."""
        task = asyncio.current_task()
        assert task is not None
        handle = self._next
        self._next += 1
        self._slots[handle] = _Slot(self._clock() + self.timeout, task)
        return handle

    def leave(self, handle: int) -> bool:
        """Remove the deadline; True if it had fired (the task was cancelled for it)."""
        slot = self._slots.pop(handle, None)
        return slot is not None and slot.expired

    def expired(self, handle: int) -> bool:
        """Whether the deadline of ``handle`` has fired."""
        slot = self._slots.get(handle)
        return slot is not None and slot.expired

    def sweep(self) -> int:
        """Cancel every request past its deadline; returns how many."""
        now = self._clock()
        fired = 0
        for slot in self._slots.values():
            if slot.deadline > now:
                break
            if not slot.expired:
                slot.expired = True
                slot.task.cancel()
                fired += 1
        return fired

    async def start(self) -> None:
        """Start the watchdog."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="bastion-deadlines"
            )

    async def stop(self) -> None:
        """Stop the watchdog."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.sweep()


class Executor:
    """Runs predictions under the concurrency cap, inline or in threads (see module docs).

    Args:
        concurrency: the most predictions in flight.
        inline_max_seconds: the budget of a prediction run on the event loop (0: never inline).
        max_batch: the largest batch a request may carry (the probe's second size).

    Attributes:
        costs: the measured cost of each prepared model.
        active: predictions in flight now.
        saturated: requests refused because the cap was reached.
    """

    def __init__(
        self, concurrency: int, *, inline_max_seconds: float = 0.002, max_batch: int = 256
    ) -> None:
        self.concurrency = concurrency
        self.inline_max_seconds = inline_max_seconds
        self.max_batch = max_batch
        self.costs: dict[str, ModelCost] = {}
        self.active = 0
        self.saturated = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="bastion-predict"
            )
        return self._pool

    async def prepare(self, entry: ServedEntry) -> ModelCost:
        """Probe ``entry``'s predict (in a thread) and decide where its calls run.

        Raises:
            GatewayError: predict failed on a valid batch, or answered the wrong shape.
        """
        rows = max(1, min(self.max_batch, 64))
        timings: dict[int, float] = {}
        for size in (1, rows):
            batch = entry.probe(size)
            best = float("inf")
            for _ in range(_PROBE_REPEATS):
                try:
                    elapsed, scores = await asyncio.get_running_loop().run_in_executor(
                        self._threads(), _timed, entry.model.predict, batch
                    )
                except Exception as exc:  # a model's own failure, whatever it is
                    raise GatewayError(
                        f"model {entry.name}: predict failed on a valid batch "
                        f"({type(exc).__name__})"
                    ) from exc
                try:
                    check_scores(entry, scores, size)
                except Rejection as exc:
                    raise GatewayError(f"model {entry.name}: {exc.reason}") from None
                best = min(best, elapsed)
            timings[size] = best
        per_row = max(0.0, (timings[rows] - timings[1]) / max(rows - 1, 1))
        fixed = max(0.0, timings[1] - per_row)
        budget = self.inline_max_seconds
        if budget <= 0 or fixed + per_row > budget:
            inline_rows = 0
        elif per_row <= 0:
            inline_rows = self.max_batch
        else:
            inline_rows = int(min(self.max_batch, (budget - fixed) / per_row))
        cost = ModelCost(fixed, per_row, inline_rows)
        self.costs[entry.name] = cost
        logger.info(
            "model %s: predict %.1f us + %.2f us/row; inline up to %d rows",
            entry.name,
            fixed * 1e6,
            per_row * 1e6,
            inline_rows,
        )
        return cost

    async def run(self, entry: ServedEntry, batch: NDArray[Any]) -> NDArray[np.float64]:
        """Predict ``batch`` under the cap.

        Raises:
            Rejection: 503 when ``concurrency`` predictions are already in flight; 500 when
                predict fails or answers the wrong shape (the reason names the exception
                type only).
            asyncio.CancelledError: the request's deadline fired while a thread was working.
        """
        if self.active >= self.concurrency:
            self.saturated += 1
            raise Rejection(
                503,
                "service unavailable",
                reason=f"{self.concurrency} predictions in flight",
                metric="saturated",
            )
        cost = self.costs.get(entry.name)
        rows = int(batch.shape[0])
        if cost is not None and not cost.demoted and rows <= cost.inline_rows:
            self.active += 1
            try:
                wall, cpu = time.perf_counter(), time.thread_time()
                scores = _predict(entry, batch)
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            finally:
                self.active -= 1
            cost.inline_calls += 1
            # CPU time, so that waiting for the GIL (another thread's 5 ms switch interval)
            # is not mistaken for a slow input; wall time only for a model that blocks.
            budget = self.inline_max_seconds
            if cpu > _DEMOTE_FACTOR * budget or wall > _DEMOTE_WALL_FACTOR * budget:
                cost.demoted = True
                logger.warning(
                    "model %s: an inline predict took %.1f ms (%.1f ms of CPU; budget %.1f ms); "
                    "its calls run in threads from now on",
                    entry.name,
                    wall * 1e3,
                    cpu * 1e3,
                    budget * 1e3,
                )
            return check_scores(entry, scores, rows)
        if cost is not None:
            cost.thread_calls += 1
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self.active += 1
        future = self._threads().submit(_predict, entry, batch)
        # The slot is given back when the thread finishes, not when the request gives up.
        future.add_done_callback(self._release_from_thread)
        scores = await asyncio.wrap_future(future)
        return check_scores(entry, scores, rows)

    def _release_from_thread(self, _future: concurrent.futures.Future[Any]) -> None:
        # Runs in the worker thread (or at once if already done): hand the decrement to the
        # loop so that `active` is only ever changed there.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self.active -= 1

    async def start(self) -> None:
        """Bind to the running loop (slots are released on it)."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Stop taking work; threads still running are left to finish."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _timed(
    predict: Callable[[NDArray[Any]], NDArray[np.float64]], batch: NDArray[Any]
) -> tuple[float, NDArray[np.float64]]:
    start = time.perf_counter()
    scores = predict(batch)
    return time.perf_counter() - start, scores


def _predict(entry: ServedEntry, batch: NDArray[Any]) -> NDArray[np.float64]:
    try:
        return entry.model.predict(batch)
    except Exception as exc:  # a model's own failure: the client sees a generic 500
        logger.exception("model %s: predict failed", entry.name)
        raise Rejection(
            500,
            "internal error",
            reason=f"predict failed: {type(exc).__name__}",
            metric="predict_error",
        ) from None


def check_scores(entry: ServedEntry, scores: Any, rows: int) -> NDArray[np.float64]:
    """Scores as a finite ``(rows, classes)`` float64 array.

    Raises:
        Rejection: 500 when the model answered anything else.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.shape != (rows, len(entry.classes)) or not np.isfinite(array).all():
        raise Rejection(
            500,
            "internal error",
            reason=f"predict answered shape {array.shape} or non-finite scores",
            metric="predict_error",
        )
    return array
