"""PRADA extraction detection: agreement with a plain implementation, attacks detected on the
digits model, benign traffic not flagged, and bounded state whatever a client sends."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from bastion.config import ExtractionSettings
from bastion.demo_model import DemoModel, train_demo_model
from bastion.gateway.extraction import ExtractionAlert, ExtractionMonitor, shapiro_wilk

Floats = NDArray[np.float64]


@pytest.fixture(scope="module")
def digits() -> tuple[DemoModel, Floats]:
    """The demo model and the 450 held-out digits (raw pixels in [0, 16]) it was measured on."""
    model, x_test, _ = train_demo_model(seed=0)
    return model, x_test


def reference_prada(
    stream: Floats, labels: NDArray[np.int64], min_queries: int = 50, window: int | None = None
) -> list[tuple[int, float]]:
    """PRADA written out plainly, no bounds (Juuti et al. 2019, Algorithm 1, with the
    conventions of the authors' code and of bastion's: a repeat, at distance 0, is not
    recorded; the test runs every 10 queries on classes with 10 distances or more, outliers
    beyond 3 standard deviations removed), over the last ``window`` distances if given.
    Returns (query number, W) at every test."""
    growing: dict[int, list[Floats]] = {}
    admitted: dict[int, list[float]] = {}
    threshold: dict[int, float] = {}
    recorded: list[tuple[int, float]] = []
    tests = []
    for q, (x, c) in enumerate(zip(stream.astype(np.float64), labels.tolist(), strict=True), 1):
        if c not in growing:
            growing[c], admitted[c], threshold[c] = [x], [0.0], 0.0
        else:
            d = min(float(np.linalg.norm(x - g)) for g in growing[c])
            if d > 0:
                recorded.append((c, d))
            if d > threshold[c]:
                growing[c].append(x)
                admitted[c].append(d)
                threshold[c] = max(threshold[c], float(np.mean(admitted[c]) - np.std(admitted[c])))
        if q % 10 == 0:
            recent = recorded[-window:] if window else recorded
            counts = Counter(c for c, _ in recent)
            pooled = np.array([d for c, d in recent if counts[c] >= 10])
            if pooled.size:
                pooled = pooled[np.abs(pooled - pooled.mean()) < 3 * pooled.std()]
            if pooled.size >= min_queries and np.ptp(pooled) > 0:
                tests.append((q, float(stats.shapiro(pooled).statistic)))
    return tests


def feed(
    monitor: ExtractionMonitor, key: str, model: DemoModel, stream: Floats, *, each: bool = True
) -> list[tuple[int, float]]:
    """Observe ``stream`` one query per request (as a client sends it); the W after each test."""
    seen: list[tuple[int, float]] = []
    last = None
    for q in range(len(stream)):
        batch = stream[q : q + 1].astype(np.float32)
        monitor.observe(key, batch, model.predict(batch))
        if each:
            monitor.process_pending()
            w = monitor.statistic(key)
            if w is not None and w != last:
                seen.append((q + 1, w))
                last = w
    monitor.process_pending()
    return seen


def monitor_with(alerts: list[ExtractionAlert] | None = None, **kw: Any) -> ExtractionMonitor:
    settings = ExtractionSettings(
        **{k: v for k, v in kw.items() if k in ExtractionSettings.model_fields}
    )
    extra = {k: v for k, v in kw.items() if k not in ExtractionSettings.model_fields}
    return ExtractionMonitor(settings, on_alert=None if alerts is None else alerts.append, **extra)


# --- attack streams on the digits model (black box: labels only) -------------------------------


def papernot_queries(model: DemoModel, x_test: Floats, seed: int, total: int = 400) -> Floats:
    """Jacobian-based dataset augmentation (Papernot et al. 2017, arXiv:1602.02697): seeds from
    the test set, then each round adds x + lambda * sign(gradient of the substitute's score for
    the oracle's label), lambda = 0.1 of the input range, the substitute a logistic regression
    retrained on the oracle's labels each round."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    current = x_test[rng.choice(len(x_test), 20, replace=False)]
    queries = list(current)
    while len(queries) < total:
        oracle = model.predict(current)
        substitute = LogisticRegression(max_iter=500).fit(current / 16, oracle)
        rows = np.searchsorted(substitute.classes_, oracle)
        grads = substitute.coef_[rows] if substitute.coef_.shape[0] > 1 else substitute.coef_
        fresh = np.clip(current + 1.6 * np.sign(grads), 0, 16)
        queries += list(fresh)
        current = np.concatenate([current, fresh])
    return np.array(queries[:total])


def line_search_queries(model: DemoModel, x_test: Floats, seed: int, total: int = 400) -> Floats:
    """Decision-boundary search (Tramèr et al. 2016, arXiv:1609.02943, section 4.2): pairs of
    test images of different predicted classes, and 8 bisection steps along each segment."""
    rng = np.random.default_rng(seed)
    queries: list[Floats] = []
    while len(queries) < total:
        a, b = x_test[rng.choice(len(x_test), 2, replace=False)]
        label_a, label_b = model.predict(np.stack([a, b]))
        queries += [a, b]
        if label_a == label_b:
            continue
        low, high = 0.0, 1.0
        for _ in range(8):
            middle = (low + high) / 2
            point = a + middle * (b - a)
            queries.append(point)
            if model.predict(point[None])[0] == label_a:
                low = middle
            else:
                high = middle
    return np.array(queries[:total])


ATTACKS: dict[str, Callable[[DemoModel, Floats, int], Floats]] = {
    "papernot": papernot_queries,
    "line-search": line_search_queries,
}


# --- the statistic -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 11, 20, 50, 51, 100, 257, 512, 2000])
def test_shapiro_wilk_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    for sample in (rng.normal(size=n), rng.exponential(size=n), rng.uniform(size=n)):
        assert shapiro_wilk(sample) == pytest.approx(stats.shapiro(sample).statistic, abs=1e-8)


def test_shapiro_wilk_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(ValueError, match="3 to 5000"):
        shapiro_wilk(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="constant"):
        shapiro_wilk(np.ones(10))


# --- agreement with the plain implementation ----------------------------------------------------


def mixed_stream(model: DemoModel, x_test: Floats) -> Floats:
    """An attack (raising the alert), then benign queries with repeats."""
    rng = np.random.default_rng(7)
    attack = line_search_queries(model, x_test, seed=3, total=150)
    return np.concatenate([attack, x_test[rng.integers(0, len(x_test), 150)]])


@pytest.mark.parametrize("each", [True, False], ids=["per-query", "one-batch"])
def test_agrees_with_a_plain_unbounded_implementation(
    digits: tuple[DemoModel, Floats], each: bool
) -> None:
    model, x_test = digits
    stream = mixed_stream(model, x_test)
    expected = reference_prada(stream.astype(np.float32), model.predict(stream.astype(np.float32)))
    alerts: list[ExtractionAlert] = []
    monitor = monitor_with(alerts)
    got = feed(monitor, "k", model, stream, each=each)
    assert len(expected) > 15
    if each:
        # Every test, the same W (collapsing repeats of an unchanged W, as feed() does).
        collapsed = [t for i, t in enumerate(expected) if i == 0 or t[1] != expected[i - 1][1]]
        assert [q for q, _ in got] == [q for q, _ in collapsed]
        assert [w for _, w in got] == pytest.approx([w for _, w in collapsed], abs=1e-8)
    assert monitor.statistic("k") == pytest.approx(expected[-1][1], abs=1e-8)
    first_low = next(q for q, w in expected if w < 0.90)
    assert [a.queries for a in alerts] == [first_low]
    assert monitor.stats()["processed"] == len(stream)


def test_agrees_over_a_sliding_window_of_distances(digits: tuple[DemoModel, Floats]) -> None:
    """With ``max_distances`` below the stream's length, the window slides as the plain
    implementation's last-N list does."""
    model, x_test = digits
    stream = mixed_stream(model, x_test).astype(np.float32)
    expected = reference_prada(stream, model.predict(stream), window=160)
    monitor = monitor_with(max_distances=160)
    got = feed(monitor, "k", model, stream)
    collapsed = [t for i, t in enumerate(expected) if i == 0 or t[1] != expected[i - 1][1]]
    assert len(collapsed) > 15
    assert [q for q, _ in got] == [q for q, _ in collapsed]
    assert [w for _, w in got] == pytest.approx([w for _, w in collapsed], abs=1e-8)
    assert monitor.stats()["distances"] == 160


# --- attacks and benign traffic ---------------------------------------------------------------


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_extraction_queries_are_detected(
    digits: tuple[DemoModel, Floats], attack: str, seed: int
) -> None:
    model, x_test = digits
    alerts: list[ExtractionAlert] = []
    monitor = monitor_with(alerts)
    feed(monitor, "thief", model, ATTACKS[attack](model, x_test, seed), each=False)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.key_id == "thief"
    assert not alert.blocked
    assert alert.statistic < 0.90
    # Measured: line search is caught after 80-100 queries, Papernot augmentation after
    # 130-160 (the first test is possible at 50 distances).
    assert 50 <= alert.queries <= 200


@pytest.mark.parametrize("replace", [False, True], ids=["distinct", "with-repeats"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_benign_traffic_is_not_flagged(
    digits: tuple[DemoModel, Floats], replace: bool, seed: int
) -> None:
    """A normal client: random held-out digits, 450 queries, one per request."""
    model, x_test = digits
    rng = np.random.default_rng(100 + seed)
    order = rng.integers(0, len(x_test), 450) if replace else rng.permutation(len(x_test))
    alerts: list[ExtractionAlert] = []
    monitor = monitor_with(alerts)
    tests = feed(monitor, "client", model, x_test[order])
    assert alerts == []
    assert len(tests) > 10
    assert min(w for _, w in tests) > 0.90


def test_the_same_attack_from_another_key_is_judged_separately(
    digits: tuple[DemoModel, Floats],
) -> None:
    model, x_test = digits
    alerts: list[ExtractionAlert] = []
    monitor = monitor_with(alerts, block=True)
    attack = line_search_queries(model, x_test, seed=0)
    benign = x_test[np.random.default_rng(5).permutation(len(x_test))[:400]]
    for q in range(400):  # interleaved, as two clients would be
        for key, stream in (("thief", attack), ("client", benign)):
            batch = stream[q : q + 1].astype(np.float32)
            monitor.observe(key, batch, model.predict(batch))
        monitor.process_pending()
    assert [a.key_id for a in alerts] == ["thief"]
    assert alerts[0].blocked
    assert monitor.blocked("thief")
    assert not monitor.blocked("client")


# --- blocking and alerts --------------------------------------------------------------------------


def test_a_block_lasts_while_the_key_keeps_trying(digits: tuple[DemoModel, Floats]) -> None:
    model, x_test = digits
    clock = [0.0]
    monitor = monitor_with(block=True, idle_seconds=60.0, clock=lambda: clock[0])
    feed(monitor, "thief", model, line_search_queries(model, x_test, seed=1), each=False)
    assert monitor.blocked("thief")
    for _ in range(5):  # refused attempts every 50 s keep the block
        clock[0] += 50.0
        assert monitor.blocked("thief")
    clock[0] += 61.0
    assert not monitor.blocked("thief")
    assert monitor.stats()["blocked"] == 0


def test_a_failing_alert_callback_does_not_stop_the_monitor(
    digits: tuple[DemoModel, Floats],
) -> None:
    model, x_test = digits

    def broken(alert: ExtractionAlert) -> None:
        raise RuntimeError("sink down")

    monitor = ExtractionMonitor(ExtractionSettings(), on_alert=broken)
    feed(monitor, "thief", model, line_search_queries(model, x_test, seed=0), each=False)
    assert monitor.stats()["alerts"] == 1
    assert monitor.stats()["processed"] == 400


def test_disabled_monitor_observes_nothing(digits: tuple[DemoModel, Floats]) -> None:
    model, x_test = digits
    monitor = monitor_with(enabled=False)
    feed(monitor, "k", model, x_test[:100], each=False)
    assert monitor.stats()["observed"] == monitor.stats()["keys"] == 0


def test_one_label_per_row_is_required() -> None:
    monitor = monitor_with()
    with pytest.raises(ValueError, match="one predicted label per input row"):
        monitor.observe("k", np.zeros((3, 4), np.float32), np.zeros(2, np.int64))


# --- bounds ---------------------------------------------------------------------------------------


def test_repeated_identical_queries_hold_one_point_and_no_distance() -> None:
    monitor = monitor_with()
    query = np.full((1, 64), 3.0, np.float32)
    for _ in range(5000):
        monitor.observe("k", query, np.array([4]))
        monitor.process_pending()
    sizes = monitor.stats()
    assert (sizes["points"], sizes["distances"], sizes["tests"]) == (1, 0, 0)
    assert sizes["processed"] == 5000


def test_distinct_queries_of_one_class_stop_at_the_class_cap() -> None:
    monitor = monitor_with(max_points_per_class=32, max_distances=64)
    rng = np.random.default_rng(0)
    for _ in range(50):
        monitor.observe("k", rng.uniform(0, 16, (100, 64)).astype(np.float32), np.zeros(100))
        monitor.process_pending()
    sizes = monitor.stats()
    assert sizes["max_class_points"] == 32
    assert sizes["distances"] == 64
    assert sizes["processed"] == 5000


def test_many_classes_stop_at_the_key_cap() -> None:
    monitor = monitor_with(max_points_per_class=16, max_points_per_key=64)
    rng = np.random.default_rng(1)
    for _ in range(40):
        monitor.observe("k", rng.normal(size=(100, 64)), rng.integers(0, 1000, 100))
    monitor.process_pending()
    sizes = monitor.stats()
    assert sizes["max_key_points"] == sizes["points"] == 64
    assert sizes["max_class_points"] <= 16


def test_huge_inputs_are_sketched_to_a_fixed_dimension() -> None:
    monitor = monitor_with(max_points_per_class=16)
    rng = np.random.default_rng(2)
    width = 150_000
    for _ in range(6):
        monitor.observe("k", rng.normal(size=(10, width)).astype(np.float32), np.zeros(10))
    monitor.process_pending()
    sizes = monitor.stats()
    assert sizes["max_class_points"] == 16
    # 16 points of max_dim (128) float64 values, and the distance ring: not 16 x 150,000.
    assert sizes["state_bytes"] < 64 * 1024


def test_the_sketch_keeps_distances_roughly() -> None:
    monitor = monitor_with()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 20_000))
    sketched = monitor._sketch(x)
    assert sketched.shape == (40, 128)
    true = np.linalg.norm(x[1:] - x[:-1], axis=1)
    kept = np.linalg.norm(sketched[1:] - sketched[:-1], axis=1)
    ratio = kept / true
    assert 0.9 < float(np.mean(ratio)) < 1.1
    assert float(np.max(np.abs(ratio - 1))) < 0.5


def test_inputs_beyond_the_value_limit_are_skipped_and_counted() -> None:
    monitor = monitor_with(max_input_values=1000)
    monitor.observe("k", np.zeros((2, 1001), np.float32), np.zeros(2))
    monitor.observe("k", np.array([[np.nan] * 4, [1.0] * 4]), np.zeros(2))
    monitor.process_pending()
    sizes = monitor.stats()
    assert sizes["skipped"] == 3
    assert sizes["points"] == 1


def test_tracked_keys_and_total_points_are_capped() -> None:
    monitor = monitor_with(
        max_keys=50, max_points_per_class=8, max_points_per_key=20, max_total_points=600
    )
    rng = np.random.default_rng(4)
    for n in range(300):
        monitor.observe(f"key-{n}", rng.normal(size=(30, 64)), rng.integers(0, 10, 30))
        monitor.process_pending()
        assert monitor.stats()["points"] <= 600
    sizes = monitor.stats()
    assert sizes["keys"] == 600 // 20  # the point budget binds before max_keys
    assert sizes["max_key_points"] == 20
    assert sizes["evicted_keys"] == 300 - 600 // 20


def test_idle_keys_expire() -> None:
    clock = [0.0]
    monitor = monitor_with(idle_seconds=100.0, clock=lambda: clock[0])
    rng = np.random.default_rng(5)
    for n in range(20):
        monitor.observe(f"key-{n}", rng.normal(size=(5, 64)), np.zeros(5))
    monitor.process_pending()
    assert monitor.stats()["keys"] == 20
    clock[0] = 150.0
    monitor.observe("fresh", rng.normal(size=(1, 64)), np.zeros(1))
    monitor.process_pending()
    sizes = monitor.stats()
    assert (sizes["keys"], sizes["expired_keys"], sizes["points"]) == (1, 20, 1)


def test_a_full_queue_drops_and_counts() -> None:
    monitor = monitor_with(max_pending_queries=100, max_pending_values=100 * 64)
    rng = np.random.default_rng(6)
    for _ in range(30):
        monitor.observe("k", rng.normal(size=(10, 64)), np.zeros(10))
    sizes = monitor.stats()
    assert (sizes["pending"], sizes["dropped"], sizes["processed"]) == (100, 200, 0)
    monitor.observe("k", rng.normal(size=(1, 10_000)), np.zeros(1))  # over the value bound
    assert monitor.stats()["dropped"] == 201
    assert monitor.process_pending() == 100
    assert monitor.stats()["pending"] == monitor.stats()["pending_values"] == 0


# --- the background task -------------------------------------------------------------------------


def test_background_task_examines_in_slices_and_keeps_the_loop_responsive(
    digits: tuple[DemoModel, Floats],
) -> None:
    model, x_test = digits
    alerts: list[ExtractionAlert] = []
    monitor = monitor_with(alerts, slice_queries=16, max_pending_queries=10_000)
    attack = line_search_queries(model, x_test, seed=0).astype(np.float32)
    labels = model.predict(attack)

    async def main() -> int:
        ticks = 0
        await monitor.start()
        for q in range(len(attack)):
            monitor.observe("thief", attack[q : q + 1], labels[q : q + 1])
        while monitor.stats()["pending"]:
            ticks += 1  # another coroutine gets the loop between slices
            await asyncio.sleep(0)
        await monitor.stop()
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= len(attack) // 16 - 1
    assert monitor.stats()["processed"] == len(attack)
    assert len(alerts) == 1


def test_stop_examines_what_is_queued(digits: tuple[DemoModel, Floats]) -> None:
    model, x_test = digits
    monitor = monitor_with()

    async def main() -> None:
        await monitor.start()
        await monitor.start()  # idempotent
        batch = x_test[:200].astype(np.float32)
        monitor.observe("k", batch, model.predict(batch))
        await monitor.stop()
        await monitor.stop()

    asyncio.run(main())
    assert monitor.stats()["processed"] == 200


# --- the worker process -------------------------------------------------------------------------


async def _observe_all(
    monitor: ExtractionMonitor, key: str, model: DemoModel, stream: Floats
) -> None:
    batch = stream.astype(np.float32)
    labels = model.predict(batch)
    for q in range(len(batch)):
        monitor.observe(key, batch[q : q + 1], labels[q : q + 1])
        if q % 25 == 24:
            await asyncio.sleep(0.005)


def test_a_worker_process_decides_as_the_event_loop_does(
    digits: tuple[DemoModel, Floats],
) -> None:
    model, x_test = digits
    attack = line_search_queries(model, x_test, seed=1)
    local: list[ExtractionAlert] = []
    feed(monitor_with(local, block=True), "thief", model, attack, each=False)
    remote: list[ExtractionAlert] = []
    monitor = monitor_with(remote, block=True, process=True)

    async def main() -> None:
        await monitor.start()
        await _observe_all(monitor, "thief", model, attack)
        await monitor.stop()

    asyncio.run(main())
    assert [(a.key_id, a.queries, a.blocked) for a in remote] == [
        (a.key_id, a.queries, a.blocked) for a in local
    ]
    assert remote[0].statistic == pytest.approx(local[0].statistic, abs=1e-12)
    assert monitor.blocked("thief")
    sizes = monitor.stats()
    assert (sizes["observed"], sizes["processed"], sizes["alerts"]) == (400, 400, 1)
    assert (sizes["pending"], sizes["worker_restarts"]) == (0, 0)


def test_a_lost_worker_process_is_replaced(digits: tuple[DemoModel, Floats]) -> None:
    model, x_test = digits
    monitor = monitor_with(process=True)

    async def main() -> None:
        await monitor.start()
        await _observe_all(monitor, "k", model, x_test[:100])
        while monitor.worker_pid is None or not monitor.stats().get("processed"):
            await asyncio.sleep(0.05)
        first = monitor.worker_pid
        os.kill(first, signal.SIGKILL)  # the worker this test's monitor started
        await asyncio.sleep(0.2)
        await _observe_all(monitor, "k", model, x_test[100:200])
        await monitor.stop()
        assert monitor.worker_pid != first

    asyncio.run(main())
    sizes = monitor.stats()
    assert sizes["worker_restarts"] == 1
    assert sizes["pending"] == 0
    assert sizes["processed"] >= 100  # the new worker's count: the old one's state is gone


def test_the_worker_reads_only_numeric_arrays() -> None:
    from bastion.gateway.extraction import _frame, _read_frame, _worker_main

    config = {"op": "config", "settings": ExtractionSettings().model_dump(), "options": {}}
    x = np.arange(128, dtype=np.float32).reshape(2, 64)
    labels = np.array([3, 4], dtype=np.int64)
    good = _frame(
        {"op": "batch", "items": [["k", 2, 64, "<f4", "<i8"]]}, x.tobytes() + labels.tobytes()
    )
    out = io.BytesIO()
    assert _worker_main(io.BytesIO(_frame(config) + good + _frame({"op": "stop"})), out) == 0
    out.seek(0)
    frames = []
    while (frame := _read_frame(out)) is not None:
        frames.append(frame[0])
    assert frames[-1] == {"op": "stopped"}
    assert frames[-2]["stats"]["processed"] == 2
    hostile = _frame({"op": "batch", "items": [["k", 2, 64, "|O", "<i8"]]}, bytes(2 * 64 * 8 + 16))
    with pytest.raises(ValueError, match="not a numeric dtype"):
        _worker_main(io.BytesIO(_frame(config) + hostile), io.BytesIO())
