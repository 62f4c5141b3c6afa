"""Model-extraction detection per key with PRADA, in bounded memory and CPU (API not yet stable).

PRADA (Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing
Attacks", EuroS&P 2019, arXiv:1805.02628) watches the stream of one client's queries. Threat
model: a black-box attacker with query access who synthesises inputs to train a substitute
model (Papernot et al. 2017, arXiv:1602.02697; Tramèr et al. 2016, arXiv:1609.02943; Juuti et
al.'s own T-RND); MITRE ATLAS AML.T0024.002 "Extract ML Model", OWASP ML05 "Model Theft".
For each query ``x`` predicted as class ``c`` it takes the minimum L2 distance ``d`` from ``x``
to the client's earlier queries of class ``c`` kept in a growing set ``G_c``; ``x`` joins
``G_c`` when ``d`` exceeds the class threshold ``T_c``, which then becomes
``max(T_c, mean - std)`` of the distances that admitted members (the first member counts 0).
The distances of classes with at least 10 of them, outliers beyond three standard deviations
removed, are tested for normality with the Shapiro-Wilk statistic ``W`` every 10 queries
once there are ``min_queries`` of them: natural queries give nearly normal distances, synthetic
ones (small steps around a few seeds, points along decision boundaries) do not, and
``W < threshold`` raises an :class:`ExtractionAlert` (and blocks the key when
``extraction.block`` is set). These choices follow the authors' reference implementation
(Secure Systems Group, Aalto University, 2019).

A naive PRADA is a denial-of-service lever: its sets grow with every distinct query, its
distance list with every query, and each query costs a pass over a set of unbounded size and
dimension. Here memory and CPU per key are bounded whatever a client sends:

* ``G_c`` keeps at most ``max_points_per_class`` points (reservoir sampling, Vitter's
  algorithm R, once full: harder to flush with junk than a ring of the newest) and a key at
  most ``max_points_per_key`` over all its classes (a new point then replaces one of the
  largest class); the monitor as a whole at most ``max_total_points``, least recently active
  keys' state going first. ``T_c``'s mean and standard deviation are running (Welford), O(1).
* The distances are a sliding window of the last ``max_distances`` (arrays that grow with a
  key's traffic up to that size). In all, the monitor holds at most about
  ``max_total_points * max_dim * 8`` bytes of points (64 MiB by default) and
  ``max_keys * max_distances * 16`` bytes of distances (80 MiB with 10,000 busy keys).
* Inputs of more than ``max_dim`` values are reduced to ``max_dim`` by a fixed count sketch
  (each input position is hashed to one output coordinate with a random sign; Charikar, Chen,
  Farach-Colton 2002; Weinberger et al. 2009, arXiv:0902.2206): it preserves L2 distances in
  expectation, costs O(dimension) per query, which decoding the request already cost, and no
  more memory than one index per position. Inputs of more than ``max_input_values`` values
  are not examined (the gateway's body limits refuse them long before) and are counted.
  A repeated query is at distance 0 and never joins ``G_c``.
* At most ``max_keys`` keys are tracked (least recently active evicted first), and a key's
  state is dropped after ``idle_seconds`` without traffic; a block lasts until the key has
  been idle that long (revoking the key is the operator's permanent answer).
* :meth:`ExtractionMonitor.observe` only appends to a queue bounded in queries and in values;
  when it is full the queries are dropped and counted (``stats()["dropped"]``: a sustained
  count means the monitor is under-provisioned, and an attacker who floods to be dropped is
  also flooding the rate limits). The numeric work runs in a background task in slices of
  ``slice_queries`` queries (about a millisecond), yielding to the event loop between
  slices; it lingers ``linger_seconds`` for a fuller slice, since the work per key and slice
  is mostly fixed, and vectorises the queries of one key and class in a slice (one matrix
  product against ``G_c``, kept small enough for OpenBLAS to stay on one thread).

One deviation from the paper: a query at distance 0 from a member of its class (a repeat) is
not recorded in the tested distances. A repeat tells an attacker nothing new, and normal
clients repeat queries: held-out digits drawn with replacement were otherwise flagged
(W 0.88-0.89 after about 320 queries) while drawn without replacement they were not.

Limits, measured on the demo's digits model (``tests/gateway/test_extraction.py``): line
search along decision boundaries (Tramèr et al.) is caught after 80-100 queries and Jacobian
augmentation (Papernot et al.) after 130-160; queries drawn uniformly at random are not
caught (their distances are close to normal: PRADA targets synthetic samples near natural
ones), and an attacker who first sends benign queries dilutes the window (150 benign queries
before a line search kept W above 0.9 for the next 150).

With ``process=True`` the examination runs in a worker process (``python -m
bastion.gateway.extraction``, fed through its standard input): the gateway's process only
queues each request's arrays and, in the background task, frames what is queued into one
message (a JSON header naming the requests, then their raw values: nothing is unpickled on
either side) and writes it to the worker, which reports alerts and its figures back. Measured
in process on the demo's model (8 keys, one query per request): the examination costs the
event loop about 70-100 us per request when it runs there, and the framing about 10 us when
it runs in a worker (on this two-core machine the worker still slows the gateway's core by
sharing it). A worker that dies is replaced (its state is lost, and counted in
``worker_restarts``); a worker that cannot keep up fills the queue, whose bounds then drop.

The Shapiro-Wilk statistic is computed here with Royston's approximation of the coefficients
(Royston 1992, "Approximating the Shapiro-Wilk W-test for non-normality", Statistics and
Computing 2:117-119; algorithm AS R94, 1995), the same as ``scipy.stats.shapiro``'s SWILK,
with which the tests check agreement to 1e-8: the SciPy call costs about 0.2 ms of argument
handling, twenty times the computation, and would be the monitor's largest cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from bastion.config import ExtractionSettings

__all__ = ["ExtractionAlert", "ExtractionMonitor", "shapiro_wilk"]

logger = logging.getLogger(__name__)

#: PRADA's reference implementation tests every 10 queries, on classes with 10 distances or more.
TEST_EVERY = 10
MIN_CLASS_DISTANCES = 10
OUTLIER_STDS = 3.0
#: Below this many multiply-adds (m * n * k) OpenBLAS computes a product on one thread.
_BLAS_ONE_THREAD = 1 << 18

Float64Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ExtractionAlert:
    """A key's queries look like a model-extraction attack.

    Attributes:
        key_id: the key (as the gateway passed it to :meth:`ExtractionMonitor.observe`).
        statistic: the Shapiro-Wilk ``W`` of its query distances (below the threshold).
        queries: how many of the key's queries had been examined.
        at: the monitor's clock when the alert was raised.
        blocked: whether the key is now blocked (``extraction.block``).
    """

    key_id: str
    statistic: float
    queries: int
    at: float
    blocked: bool


# --- Shapiro-Wilk W (Royston 1992 / AS R94) ------------------------------------------------------

_C1 = (0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)


def _poly(coefficients: tuple[float, ...], x: float) -> float:
    return sum(c * x**i for i, c in enumerate(coefficients))


# One entry per sample size; a window of 512 distances gives up to ~450 sizes (about 1 MB).
@lru_cache(maxsize=1024)
def _shapiro_coefficients(n: int) -> Float64Array:
    if n == 3:
        return np.array([-math.sqrt(0.5), 0.0, math.sqrt(0.5)])
    # Wichura's AS241 quantiles (no SciPy import on the serving path: it takes ~0.3 s).
    quantile = NormalDist().inv_cdf
    m = np.array([quantile((i - 0.375) / (n + 0.25)) for i in range(1, n + 1)])
    summ2 = float(m @ m)
    u = 1.0 / math.sqrt(n)
    a_n = float(m[-1]) / math.sqrt(summ2) + _poly(_C1, u)
    if n > 5:
        a_n1 = float(m[-2]) / math.sqrt(summ2) + _poly(_C2, u)
        phi = (summ2 - 2 * float(m[-1]) ** 2 - 2 * float(m[-2]) ** 2) / (
            1 - 2 * a_n**2 - 2 * a_n1**2
        )
        a = m / math.sqrt(phi)
        a[-1], a[-2], a[0], a[1] = a_n, a_n1, -a_n, -a_n1
    else:
        phi = (summ2 - 2 * float(m[-1]) ** 2) / (1 - 2 * a_n**2)
        a = m / math.sqrt(phi)
        a[-1], a[0] = a_n, -a_n
    a.setflags(write=False)
    return a


def shapiro_wilk(sample: NDArray[np.floating[Any]]) -> float:
    """The Shapiro-Wilk ``W`` statistic of a sample (3 to 5000 values, not all equal).

    Royston's approximation of the coefficients (AS R94), as ``scipy.stats.shapiro``; W near 1
    means consistent with a normal distribution.

    Raises:
        ValueError: fewer than 3 values, more than 5000, or all equal.
    """
    y = np.sort(np.asarray(sample, dtype=np.float64).ravel())
    if y.size < 3 or y.size > 5000:
        raise ValueError("the Shapiro-Wilk statistic needs 3 to 5000 values")
    w = _w_of_sorted(y)
    if w is None:
        raise ValueError("the Shapiro-Wilk statistic is undefined for a constant sample")
    return w


def _w_of_sorted(y: Float64Array) -> float | None:
    """W of an ascending sample of 3 to 5000 values; None if they are all equal."""
    centred = y - float(y.sum()) / y.size
    spread = float(centred @ centred)
    if spread <= 0.0:
        return None
    return min(1.0, float(_shapiro_coefficients(y.size) @ y) ** 2 / spread)


# --- state -------------------------------------------------------------------------------------


class _ClassSet:
    """``G_c`` of one key and class, its threshold ``T_c`` and the statistics that move it."""

    __slots__ = ("admitted", "mean", "n", "norms", "points", "seen", "sq", "threshold")

    def __init__(self, dim: int) -> None:
        self.points = np.empty((4, dim))
        self.norms = np.empty(4)  # squared norms of the points
        self.n = 0  # members held
        self.seen = 0  # members ever admitted (for the reservoir)
        self.threshold = 0.0
        # Welford over the distances that admitted members; the first member counts as 0.
        self.admitted, self.mean, self.sq = 1, 0.0, 0.0

    def admit_distance(self, d: float) -> None:
        self.admitted += 1
        delta = d - self.mean
        self.mean += delta / self.admitted
        self.sq += delta * (d - self.mean)
        self.threshold = max(self.threshold, self.mean - math.sqrt(self.sq / self.admitted))

    def append(self, x: Float64Array, capacity: int) -> None:
        if self.n == self.points.shape[0]:
            grown = min(capacity, 2 * self.n)
            points = np.empty((grown, self.points.shape[1]))
            points[: self.n] = self.points[: self.n]
            norms = np.empty(grown)
            norms[: self.n] = self.norms[: self.n]
            self.points, self.norms = points, norms
        self.put(self.n, x)
        self.n += 1

    def put(self, index: int, x: Float64Array) -> None:
        self.points[index] = x
        self.norms[index] = x @ x

    def remove(self, index: int) -> None:
        last = self.n - 1
        self.points[index] = self.points[last]
        self.norms[index] = self.norms[last]
        self.n = last

    def nearest(self, x: Float64Array) -> Float64Array:
        """Each row's distance to its nearest member (inf with none held).

        ``||p||^2 - 2 p.x`` picks the nearest member with one product, then the distance is
        computed directly (exact, and exactly 0 for a repeated query). Products are split so
        that OpenBLAS keeps to one thread: it spreads larger ones over every core, which on a
        busy server costs far more than it saves (up to 3.6 ms instead of 0.09 ms measured for
        64 rows on a two-core machine).
        """
        m, k = x.shape
        if not self.n:
            return np.full(m, np.inf)
        held = self.points[: self.n]
        norms = self.norms[: self.n]
        if m == 1:  # the common case, in the fewest NumPy calls
            row = x[0]
            gap = row - held[(norms - 2.0 * (held @ row)).argmin()]
            return np.array([math.sqrt(gap @ gap)])
        step = max(1, _BLAS_ONE_THREAD // (self.n * k))
        indices = np.concatenate(
            [(norms - 2.0 * (x[i : i + step] @ held.T)).argmin(axis=1) for i in range(0, m, step)]
        )
        gap = x - held[indices]
        found: Float64Array = np.sqrt(np.einsum("ij,ij->i", gap, gap))
        return found


class _KeyState:
    """PRADA's state for one key and input dimension."""

    __slots__ = (
        "alerted",
        "class_counts",
        "classes",
        "dim",
        "distances",
        "filled",
        "head",
        "key_id",
        "labels",
        "last_seen",
        "points",
        "queries",
        "statistic",
        "window",
    )

    def __init__(self, key_id: str, window: int, dim: int, now: float) -> None:
        self.key_id = key_id
        self.dim = dim
        self.classes: dict[int, _ClassSet] = {}
        self.points = 0
        # Sliding window of the last `window` distances and their classes: arrays that grow
        # with the key's traffic up to `window`, then a ring.
        self.window = window
        self.distances = np.zeros(min(window, 32))
        self.labels = np.zeros(min(window, 32), dtype=np.int64)
        self.head = 0
        self.filled = 0
        self.class_counts: dict[int, int] = {}
        self.queries = 0
        self.statistic: float | None = None
        self.alerted = False
        self.last_seen = now

    def record(self, label: int, d: float) -> None:
        if self.filled < self.window:  # still growing: append
            if self.filled == self.distances.size:
                more = min(self.window, 2 * self.filled) - self.filled
                self.distances = np.concatenate([self.distances, np.zeros(more)])
                self.labels = np.concatenate([self.labels, np.zeros(more, dtype=np.int64)])
            index = self.filled
            self.filled += 1
        else:  # full: replace the oldest
            index = self.head
            self.head = (index + 1) % self.window
            old = int(self.labels[index])
            left = self.class_counts[old] - 1
            if left:
                self.class_counts[old] = left
            else:
                del self.class_counts[old]
        self.distances[index] = d
        self.labels[index] = label
        self.class_counts[label] = self.class_counts.get(label, 0) + 1

    def sample(self) -> Float64Array:
        """The distances PRADA tests: classes with enough of them, outliers removed."""
        distances = self.distances[: self.filled]
        eligible = [c for c, k in self.class_counts.items() if k >= MIN_CLASS_DISTANCES]
        if not eligible:
            return np.empty(0)
        if len(eligible) < len(self.class_counts):
            distances = distances[np.isin(self.labels[: self.filled], eligible)]
        deviation = distances - float(distances.sum()) / distances.size
        variance = float(deviation @ deviation) / distances.size
        kept: Float64Array = distances[deviation * deviation < OUTLIER_STDS**2 * variance]
        return kept


@dataclass(slots=True)
class _Pending:
    key_id: str
    inputs: NDArray[Any]
    labels: NDArray[Any]
    offset: int = 0


class ExtractionMonitor:
    """PRADA per key, off the request path, with bounded memory and CPU.

    Args:
        settings: the ``gateway.extraction`` settings (threshold, min_queries and the bounds).
        on_alert: called with each alert, from the monitor's task (exceptions are logged).
        clock: the time source of idle expiry, blocks and alerts.
        max_dim: inputs with more values are reduced to this many by a count sketch.
        max_points_per_key: the most points a key holds over all its classes (default four
            classes' worth).
        max_total_points: the most points held over all keys.
        max_input_values: inputs with more values per query are not examined (counted).
        max_pending_queries: the queue's bound in queries.
        max_pending_values: the queue's bound in input values.
        slice_queries: queries examined between two yields to the event loop.
        linger_seconds: how long the task waits for a full slice before examining a smaller one.
        seed: the seed of the reservoir sampling and of the sketch.
        process: examine the queries in a worker process (``python -m
            bastion.gateway.extraction``) instead of this event loop: this process then only
            queues, frames and sends them (see the module docstring). :meth:`process_pending`
            is for the in-process mode.
    """

    def __init__(
        self,
        settings: ExtractionSettings,
        *,
        on_alert: Callable[[ExtractionAlert], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_dim: int = 128,
        max_points_per_key: int | None = None,
        max_total_points: int = 1 << 16,
        max_input_values: int = 1 << 22,
        max_pending_queries: int = 4096,
        max_pending_values: int = 1 << 22,
        slice_queries: int = 32,
        linger_seconds: float = 0.02,
        seed: int = 0,
        process: bool = False,
    ) -> None:
        self.settings = settings
        self.on_alert = on_alert
        self._clock = clock
        self.max_dim = max_dim
        self.max_points_per_class = settings.max_points_per_class
        self.max_points_per_key = max(
            self.max_points_per_class,
            max_points_per_key if max_points_per_key is not None else 4 * self.max_points_per_class,
        )
        self.max_total_points = max(max_total_points, self.max_points_per_key)
        self.max_input_values = max_input_values
        self.max_pending_queries = max_pending_queries
        self.max_pending_values = max_pending_values
        self.slice_queries = max(1, slice_queries)
        self.linger_seconds = linger_seconds
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._states: OrderedDict[tuple[str, int], _KeyState] = OrderedDict()
        self._blocked: OrderedDict[str, float] = OrderedDict()
        self._queue: deque[_Pending] = deque()
        self._pending_queries = 0
        self._pending_values = 0
        self._points = 0
        self._sketches: OrderedDict[int, tuple[NDArray[np.int64], Float64Array]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self.process = process
        self._options = {
            "max_dim": max_dim,
            "max_points_per_key": self.max_points_per_key,
            "max_total_points": self.max_total_points,
            "max_input_values": max_input_values,
            "seed": seed,
        }
        self._remote: dict[str, int | float] = {}  # the worker's latest stats
        self.worker_restarts = 0
        self.worker_pid: int | None = None
        self._counters = dict.fromkeys(
            (
                "observed",
                "processed",
                "dropped",
                "skipped",
                "tests",
                "alerts",
                "evicted_keys",
                "expired_keys",
            ),
            0,
        )

    # --- request path: O(1) ----------------------------------------------------------------------

    def blocked(self, key_id: str) -> bool:
        """Whether the key is blocked; a block lasts until the key has been idle long enough."""
        since = self._blocked.get(key_id)
        if since is None:
            return False
        now = self._clock()
        if now - since > self.settings.idle_seconds:
            del self._blocked[key_id]
            return False
        self._blocked[key_id] = now  # refused traffic keeps the block alive
        return True

    def observe(self, key_id: str, inputs: NDArray[Any], labels: NDArray[Any]) -> None:
        """Queue a request's queries for examination (O(1); the arrays must not change after).

        Args:
            key_id: the key that sent them.
            inputs: the batch, one query per row (any shape after the first axis).
            labels: the predicted class of each row.

        Raises:
            ValueError: ``inputs`` and ``labels`` do not have the same number of rows.
        """
        if not self.settings.enabled:
            return
        if inputs.ndim < 1 or labels.shape != (inputs.shape[0],):
            raise ValueError("one predicted label per input row is required")
        count = int(inputs.shape[0])
        self._counters["observed"] += count
        if (
            self._pending_queries + count > self.max_pending_queries
            or self._pending_values + inputs.size > self.max_pending_values
        ):
            self._counters["dropped"] += count
            return
        self._queue.append(_Pending(key_id, inputs, labels))
        self._pending_queries += count
        self._pending_values += int(inputs.size)
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()

    # --- background task ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the task that examines queued queries (idempotent)."""
        if self._task is not None:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        if self._queue:
            self._wake.set()
        run = self._run_remote() if self.process else self._run()
        self._task = asyncio.get_running_loop().create_task(run)

    async def stop(self) -> None:
        """Examine what is queued, then stop the task."""
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        try:
            await self._task
        finally:
            self._task = None
            self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._pending_queries < self.slice_queries and not self._stopping:
                # Linger a moment for a fuller slice: the work per slice and key is mostly
                # fixed, so bigger slices cost less per query.
                await asyncio.sleep(self.linger_seconds)
            try:
                self.process_pending(self.slice_queries)
            except Exception:  # the monitor must outlive a bug in one slice
                logger.exception("extraction monitor: a slice of queries failed")
            await asyncio.sleep(0)

    # --- the worker process (process=True) ---------------------------------------------------

    async def _run_remote(self) -> None:
        """Keep a worker process fed; restart it (its state lost) if it dies."""
        while True:
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bastion.gateway.extraction",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert worker.stdin is not None
            assert worker.stdout is not None
            self.worker_pid = worker.pid
            reader = asyncio.get_running_loop().create_task(self._read_worker(worker.stdout))
            try:
                config = {"op": "config", "settings": self.settings.model_dump()}
                worker.stdin.write(_frame({**config, "options": self._options}))
                await self._feed_worker(worker.stdin, reader)
                await asyncio.wait_for(reader, _WORKER_STOP_SECONDS)
                await asyncio.wait_for(worker.wait(), _WORKER_STOP_SECONDS)
            except (OSError, TimeoutError, _WorkerGoneError) as exc:
                self.worker_restarts += 1
                logger.error(  # noqa: TRY400 - a lost worker is expected, not a bug to trace
                    "extraction worker lost (%s); restarting it", type(exc).__name__
                )
                if worker.returncode is None:
                    worker.kill()
                await worker.wait()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                if self._stopping and not self._queue:
                    return
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                if worker.returncode is None:
                    worker.kill()
                raise
            else:
                return

    async def _feed_worker(self, stdin: asyncio.StreamWriter, reader: asyncio.Task[None]) -> None:
        assert self._wake is not None
        while True:
            if reader.done():
                raise _WorkerGoneError
            if not self._queue:
                if self._stopping:
                    stdin.write(_frame({"op": "stop"}))
                    await stdin.drain()
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._pending_queries < self.slice_queries and not self._stopping:
                await asyncio.sleep(self.linger_seconds)
            # Everything queued goes in one frame: the header names each request, the payload
            # holds its raw values (no pickle: nothing here deserialises objects).
            items: list[list[str | int]] = []
            chunks: list[bytes] = []
            sent = 0
            while self._queue:
                item = self._queue.popleft()
                inputs = np.ascontiguousarray(item.inputs[item.offset :])
                labels = np.ascontiguousarray(item.labels[item.offset :])
                rows = int(inputs.shape[0])
                sent += rows
                self._pending_queries -= rows
                self._pending_values -= int(item.inputs.size)
                width = math.prod(inputs.shape[1:])
                items.append([item.key_id, rows, width, inputs.dtype.str, labels.dtype.str])
                chunks += [inputs.tobytes(), labels.tobytes()]
            try:
                stdin.write(_frame({"op": "batch", "items": items}, b"".join(chunks)))
                await stdin.drain()  # a slow worker holds the queue here: its bounds then drop
            except OSError:
                self._counters["dropped"] += sent
                raise

    async def _read_worker(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                sizes = await stdout.readexactly(_FRAME.size)
                header_size, payload_size = _FRAME.unpack(sizes)
                header = json.loads(await stdout.readexactly(header_size))
                await stdout.readexactly(payload_size)
            except asyncio.IncompleteReadError:
                return
            op = header.get("op")
            if op == "stats":
                self._remote = header["stats"]
            elif op == "alert":
                self._remote_alert(header)
            elif op == "stopped":
                return

    def _remote_alert(self, header: dict[str, Any]) -> None:
        now = self._clock()
        key_id = str(header["key_id"])
        block = bool(header["blocked"])
        if block:
            self._blocked[key_id] = now
            self._blocked.move_to_end(key_id)
            while len(self._blocked) > self.settings.max_keys:
                self._blocked.popitem(last=False)
        alert = ExtractionAlert(
            key_id, float(header["statistic"]), int(header["queries"]), now, block
        )
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:
                logger.exception("extraction monitor: the alert callback failed")

    # --- the numeric work ------------------------------------------------------------------------

    def process_pending(self, max_items: int | None = None) -> int:
        """Examine up to ``max_items`` queued queries (all by default); return how many.

        Synchronous: the background task calls it in slices; tests call it directly.
        """
        budget = self._pending_queries if max_items is None else max_items
        groups: dict[tuple[str, int], list[tuple[NDArray[Any], NDArray[Any]]]] = {}
        taken = 0
        while self._queue and taken < budget:
            item = self._queue[0]
            rows = min(budget - taken, item.inputs.shape[0] - item.offset)
            part = item.inputs[item.offset : item.offset + rows]
            labels = item.labels[item.offset : item.offset + rows]
            item.offset += rows
            if item.offset == item.inputs.shape[0]:
                self._queue.popleft()
                self._pending_values -= int(item.inputs.size)
            self._pending_queries -= rows
            taken += rows
            width = math.prod(part.shape[1:])
            groups.setdefault((item.key_id, width), []).append((part, labels))
        now = self._clock()
        self._expire(now)
        for (key_id, width), parts in groups.items():
            self._examine(key_id, width, parts, now)
        self._counters["processed"] += taken
        return taken

    def _examine(
        self,
        key_id: str,
        width: int,
        parts: list[tuple[NDArray[Any], NDArray[Any]]],
        now: float,
    ) -> None:
        count = sum(p.shape[0] for p, _ in parts)
        if width > self.max_input_values or width == 0:
            self._counters["skipped"] += count
            return
        if len(parts) == 1:
            x = parts[0][0].reshape(count, width).astype(np.float64)
            labels = parts[0][1]
        else:
            x = np.concatenate([p.reshape(p.shape[0], width) for p, _ in parts]).astype(np.float64)
            labels = np.concatenate([lab for _, lab in parts]).astype(np.int64)
        if not math.isfinite(float(x.sum())):  # one pass when every value is finite
            finite = np.isfinite(x).all(axis=1)
            self._counters["skipped"] += int(count - finite.sum())
            x, labels = x[finite], labels[finite]
            if x.shape[0] == 0:
                return
        if width > self.max_dim:
            x = self._sketch(x)
        state = self._state(key_id, width, x.shape[1], now)
        label_list = [int(v) for v in labels.tolist()]
        if len(label_list) == 1:
            distances = self._class_distances(state, label_list[0], x).tolist()
        else:
            rows_of: dict[int, list[int]] = {}
            for j, label in enumerate(label_list):
                rows_of.setdefault(label, []).append(j)
            found = np.empty(len(label_list))
            for label, rows in rows_of.items():
                found[rows] = self._class_distances(state, label, x[rows])
            distances = found.tolist()
        # Distances enter the window in arrival order; PRADA tests every TEST_EVERY queries.
        for label, d in zip(label_list, distances, strict=True):
            if 0.0 < d < math.inf:  # the first of a class has none; a repeat (0) tells nothing
                state.record(label, d)
            state.queries += 1
            if state.queries % TEST_EVERY == 0:
                self._test(state, now)
        self._limit_points(state)

    def _class_distances(self, state: _KeyState, label: int, x: Float64Array) -> Float64Array:
        """The rows' distances to ``G_label`` in order, admitting members as PRADA does."""
        members = state.classes.get(label)
        if members is None:
            members = state.classes[label] = _ClassSet(x.shape[1])
        best = members.nearest(x)
        m = x.shape[0]
        for j in range(m):
            d = float(best[j])
            if d == math.inf:  # the first of its class (none held): joins without a distance
                self._insert(state, members, x[j])
            elif d > members.threshold:
                members.admit_distance(d)
                self._insert(state, members, x[j])
            else:
                continue
            if j + 1 < m:  # a member admitted from this slice counts for the rows after it
                gap = x[j + 1 :] - x[j]
                np.minimum(
                    best[j + 1 :], np.sqrt(np.einsum("ij,ij->i", gap, gap)), out=best[j + 1 :]
                )
        return best

    def _insert(self, state: _KeyState, members: _ClassSet, x: Float64Array) -> None:
        """Add ``x`` to ``G_c`` within the per-class and per-key bounds."""
        cap = self.max_points_per_class
        members.seen += 1
        if members.n >= cap:  # reservoir sampling (algorithm R)
            slot = int(self._rng.integers(members.seen))
            if slot < cap:
                members.put(slot, x)
            return
        if state.points >= self.max_points_per_key:
            # The key is full: the new member replaces one of its largest class.
            largest = max(state.classes.values(), key=lambda c: c.n)
            if largest is members:
                members.put(int(self._rng.integers(members.n)), x)
                return
            largest.remove(int(self._rng.integers(largest.n)))
            state.points -= 1
            self._points -= 1
        members.append(x, self.max_points_per_class)
        state.points += 1
        self._points += 1

    def _test(self, state: _KeyState, now: float) -> None:
        sample = state.sample()  # a fresh array: sorted in place
        if sample.size < self.settings.min_queries or sample.size > 5000:
            return
        sample.sort()
        w = _w_of_sorted(sample)
        if w is None:  # all equal: nothing to test
            return
        self._counters["tests"] += 1
        state.statistic = w
        if w >= self.settings.threshold or state.alerted:
            return
        state.alerted = True
        self._counters["alerts"] += 1
        block = self.settings.block
        if block:
            self._blocked[state.key_id] = now
            self._blocked.move_to_end(state.key_id)
            while len(self._blocked) > self.settings.max_keys:
                self._blocked.popitem(last=False)
        alert = ExtractionAlert(state.key_id, w, state.queries, now, block)
        logger.warning(
            "extraction alert: key %s, W=%.3f after %d queries%s",
            state.key_id,
            w,
            state.queries,
            " (blocked)" if block else "",
        )
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:
                logger.exception("extraction monitor: the alert callback failed")

    # --- bounds --------------------------------------------------------------------------------

    def _state(self, key_id: str, width: int, dim: int, now: float) -> _KeyState:
        slot = (key_id, width)
        state = self._states.get(slot)
        if state is None:
            state = _KeyState(key_id, self.settings.max_distances, dim, now)
            self._states[slot] = state
            while len(self._states) > self.settings.max_keys:
                self._drop_oldest("evicted_keys")
        else:
            self._states.move_to_end(slot)
        state.last_seen = now
        return state

    def _expire(self, now: float) -> None:
        # Least recently active first: the idle ones are a prefix.
        limit = now - self.settings.idle_seconds
        while self._states and next(iter(self._states.values())).last_seen < limit:
            self._drop_oldest("expired_keys")

    def _limit_points(self, current: _KeyState) -> None:
        while self._points > self.max_total_points and len(self._states) > 1:
            if next(iter(self._states.values())) is current:
                self._states.move_to_end(next(iter(self._states)))
                continue
            self._drop_oldest("evicted_keys")

    def _drop_oldest(self, counter: str) -> None:
        _, state = self._states.popitem(last=False)
        self._points -= state.points
        self._counters[counter] += 1

    def _sketch(self, x: Float64Array) -> Float64Array:
        """Reduce rows of more than ``max_dim`` values to ``max_dim`` with a count sketch."""
        m, width = x.shape
        sketch = self._sketches.get(width)
        if sketch is None:
            rng = np.random.default_rng((self._seed, width))
            picked: NDArray[np.int64] = np.asarray(
                rng.integers(0, self.max_dim, size=(width,)), dtype=np.int64
            )
            signed: Float64Array = np.where(rng.random(width) < 0.5, -1.0, 1.0)
            sketch = (picked, signed)
            self._sketches[width] = sketch
            while len(self._sketches) > 4:
                self._sketches.popitem(last=False)
        else:
            self._sketches.move_to_end(width)
        columns, signs = sketch
        # Row r's position i adds sign[i] * x[r, i] to output cell (r, column[i]).
        cells = (np.arange(m)[:, None] * self.max_dim + columns[None, :]).ravel()
        sums = np.bincount(cells, weights=(x * signs).ravel(), minlength=m * self.max_dim)
        reduced: Float64Array = sums.reshape(m, self.max_dim).astype(np.float64, copy=False)
        return reduced

    # --- inspection ----------------------------------------------------------------------------

    def statistic(self, key_id: str) -> float | None:
        """The key's latest Shapiro-Wilk ``W`` (its most recent input dimension), if tested."""
        found = [s for (k, _), s in self._states.items() if k == key_id]
        return found[-1].statistic if found else None

    def stats(self) -> dict[str, int | float]:
        """Counters and the sizes of every bounded structure (for metrics and tests).

        With ``process=True``, the examination's figures are the worker's latest report.
        """
        if self.process:
            return {
                **self._local_stats(),  # zeros: the figures below replace them
                **self._remote,
                "observed": self._counters["observed"],
                "dropped": self._counters["dropped"],
                "blocked": len(self._blocked),
                "pending": self._pending_queries,
                "pending_values": self._pending_values,
                "worker_restarts": self.worker_restarts,
            }
        return self._local_stats()

    def _local_stats(self) -> dict[str, int | float]:
        states = self._states.values()
        return {
            **self._counters,
            "keys": len(self._states),
            "blocked": len(self._blocked),
            "points": self._points,
            "max_key_points": max((s.points for s in states), default=0),
            "max_class_points": max((c.n for s in states for c in s.classes.values()), default=0),
            "max_key_classes": max((len(s.classes) for s in states), default=0),
            "distances": sum(s.filled for s in states),
            "pending": self._pending_queries,
            "pending_values": self._pending_values,
            "state_bytes": sum(
                s.distances.nbytes
                + s.labels.nbytes
                + sum(c.points.nbytes + c.norms.nbytes for c in s.classes.values())
                for s in states
            ),
        }


# --- the worker process ------------------------------------------------------------------------

#: How long :meth:`ExtractionMonitor.stop` waits for the worker to finish.
_WORKER_STOP_SECONDS = 30.0
#: A frame: header length and payload length (big-endian), a JSON header, raw bytes.
_FRAME = struct.Struct(">II")
_NUMERIC_KINDS = frozenset("biuf")


class _WorkerGoneError(Exception):
    """The worker process stopped answering."""


def _frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _FRAME.pack(len(head), len(payload)) + head + payload


def _read_frame(stream: Any) -> tuple[dict[str, Any], bytes] | None:
    sizes = stream.read(_FRAME.size)
    if len(sizes) < _FRAME.size:
        return None
    header_size, payload_size = _FRAME.unpack(sizes)
    header = json.loads(stream.read(header_size))
    payload = stream.read(payload_size)
    if len(payload) < payload_size:
        return None
    return header, payload


def _numeric(dtype: str) -> np.dtype[Any]:
    kind = np.dtype(dtype)
    if kind.kind not in _NUMERIC_KINDS:
        raise ValueError(f"not a numeric dtype: {dtype}")
    return kind


def _worker_main(stdin: Any, stdout: Any) -> int:
    """The worker: examine the batches read from ``stdin``, report on ``stdout``."""
    from bastion.config import ExtractionSettings

    first = _read_frame(stdin)
    if first is None or first[0].get("op") != "config":
        return 2
    settings = ExtractionSettings.model_validate(first[0]["settings"])
    options = first[0]["options"]

    def send(header: dict[str, Any]) -> None:
        stdout.write(_frame(header))
        stdout.flush()

    def alert(found: ExtractionAlert) -> None:
        send(
            {
                "op": "alert",
                "key_id": found.key_id,
                "statistic": found.statistic,
                "queries": found.queries,
                "blocked": found.blocked,
            }
        )

    monitor = ExtractionMonitor(
        settings,
        on_alert=alert,
        max_pending_queries=1 << 62,  # the parent bounds the queue
        max_pending_values=1 << 62,
        **options,
    )
    reported = 0.0
    while (frame := _read_frame(stdin)) is not None:
        header, payload = frame
        if header["op"] == "stop":
            break
        offset = 0
        for key_id, rows, width, dtype, label_dtype in header["items"]:
            kind, label_kind = _numeric(dtype), _numeric(label_dtype)
            inputs = np.frombuffer(payload, kind, rows * width, offset).reshape(rows, width)
            offset += rows * width * kind.itemsize
            labels = np.frombuffer(payload, label_kind, rows, offset)
            offset += rows * label_kind.itemsize
            monitor.observe(str(key_id), inputs, labels)
        monitor.process_pending()
        if time.monotonic() - reported > 0.25:
            send({"op": "stats", "stats": monitor.stats()})
            reported = time.monotonic()
    monitor.process_pending()
    send({"op": "stats", "stats": monitor.stats()})
    send({"op": "stopped"})
    return 0


if __name__ == "__main__":  # the worker of ExtractionMonitor(process=True)
    sys.exit(_worker_main(sys.stdin.buffer, sys.stdout.buffer))
