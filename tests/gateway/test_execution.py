"""Execution limits: deadlines, the concurrency cap, and where predict runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tests.gateway.support import (
    GatewayFactory,
    Keys,
    MemorySink,
    SlowModel,
    infer_body,
    serving,
    wait_for,
)

from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.errors import GatewayError
from bastion.gateway.execution import Deadlines, Executor
from bastion.gateway.models import ServedEntry
from bastion.gateway.responses import Rejection

pytestmark = pytest.mark.anyio

SLOW_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}


async def test_slow_model_times_out_with_504_and_keeps_its_slot(
    make_gateway: GatewayFactory, keys: Keys, slow_model: SlowModel, sink: MemorySink
):
    gateway = make_gateway(models={"slow": slow_model}, timeout_seconds=0.2, inline_max_seconds=0)
    try:
        async with serving(gateway) as client:
            start = time.monotonic()
            response = await client.post(
                "/v2/models/slow/infer", json=SLOW_BODY, headers=keys.headers("sre")
            )
            elapsed = time.monotonic() - start
            assert (response.status_code, response.json()) == (504, {"error": "timeout"})
            assert elapsed < 1.0
            # The thread cannot be interrupted: its slot is held until it really finishes.
            assert gateway.executor.active == 1
            slow_model.release.set()
            await wait_for(lambda: gateway.executor.active == 0)
    finally:
        slow_model.release.set()
    (record,) = sink.requests()
    assert record.details["status"] == 504  # type: ignore[index]
    assert record.details["reason"] == "prediction not finished in time"  # type: ignore[index]


async def test_saturation_is_refused_at_once_and_others_are_not_starved(
    make_gateway: GatewayFactory,
    keys: Keys,
    slow_model: SlowModel,
    demo_model: ServedModel,
    sample: Any,
):
    gateway = make_gateway(
        models={"slow": slow_model, "digits": demo_model},
        concurrency=1,
        timeout_seconds=5,
        inline_max_seconds=0,
    )
    try:
        async with serving(gateway) as client:
            hanging = asyncio.ensure_future(
                client.post("/v2/models/slow/infer", json=SLOW_BODY, headers=keys.headers("sre"))
            )
            await wait_for(lambda: gateway.executor.active == 1)
            start = time.monotonic()
            refused = await client.post(
                "/v2/models/slow/infer", json=SLOW_BODY, headers=keys.headers("sre")
            )
            also_refused = await client.post(
                "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("sre")
            )
            assert time.monotonic() - start < 0.5  # refused at once, not queued
            assert (refused.status_code, refused.json()) == (503, {"error": "service unavailable"})
            assert also_refused.status_code == 503
            assert gateway.executor.saturated == 2
            slow_model.release.set()
            assert (await hanging).status_code == 200
            # With the slot back, the fast model answers again.
            fine = await client.post(
                "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("sre")
            )
            assert fine.status_code == 200
    finally:
        slow_model.release.set()


async def test_a_slow_request_does_not_block_the_event_loop(
    make_gateway: GatewayFactory,
    keys: Keys,
    slow_model: SlowModel,
    demo_model: ServedModel,
    sample: Any,
):
    gateway = make_gateway(models={"slow": slow_model, "digits": demo_model}, inline_max_seconds=0)
    try:
        async with serving(gateway) as client:
            hanging = asyncio.ensure_future(
                client.post("/v2/models/slow/infer", json=SLOW_BODY, headers=keys.headers("sre"))
            )
            await wait_for(lambda: gateway.executor.active == 1)
            start = time.monotonic()
            for n in range(5):
                response = await client.post(
                    "/v2/models/digits/infer",
                    json=infer_body(sample(n)),
                    headers=keys.headers("sre"),
                )
                assert response.status_code == 200
            assert time.monotonic() - start < 1.0
            assert not hanging.done()
            slow_model.release.set()
            await hanging
    finally:
        slow_model.release.set()


async def test_cheap_models_run_inline(
    make_gateway: GatewayFactory, keys: Keys, sample: Any
) -> None:
    gateway = make_gateway()
    async with serving(gateway) as client:
        for n in range(3):
            response = await client.post(
                "/v2/models/digits/infer", json=infer_body(sample(n)), headers=keys.headers("sre")
            )
            assert response.status_code == 200
    cost = gateway.executor.costs["digits"]
    assert cost.inline_rows > 0
    assert (cost.inline_calls, cost.thread_calls) == (3, 0)


class _Sponge:
    """Fast on the probe's constant batches, slow on anything else (a data-dependent cost)."""

    platform = "test"
    inputs = (TensorSpec("x", "FP32", (-1, 4)),)
    outputs = (TensorSpec("scores", "FP32", (-1, 2)),)
    input_range = (0.0, 1.0)
    classes = ("a", "b")

    def predict(self, batch: NDArray[Any]) -> NDArray[np.float64]:
        if np.ptp(batch) > 0:  # burn CPU, as a sponge example does
            end = time.thread_time() + 0.05
            while time.thread_time() < end:
                pass
        return np.tile([0.5, 0.5], (batch.shape[0], 1))


async def test_a_sponge_input_moves_its_model_to_threads(
    make_gateway: GatewayFactory, keys: Keys, caplog: pytest.LogCaptureFixture
):
    gateway = make_gateway(models={"sponge": _Sponge()}, inline_max_seconds=0.005)
    sponge = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 0, 1]}]}
    async with serving(gateway) as client:
        for _ in range(2):
            response = await client.post(
                "/v2/models/sponge/infer", json=sponge, headers=keys.headers("sre")
            )
            assert response.status_code == 200
    cost = gateway.executor.costs["sponge"]
    assert cost.demoted
    assert (cost.inline_calls, cost.thread_calls) == (1, 1)
    assert "its calls run in threads from now on" in caplog.text


class _Waits(_Sponge):
    """Waits without computing (as when another thread holds the GIL): not a sponge."""

    def predict(self, batch: NDArray[Any]) -> NDArray[np.float64]:
        if np.ptp(batch) > 0:
            time.sleep(0.02)
        return np.tile([0.5, 0.5], (batch.shape[0], 1))


async def test_waiting_is_not_mistaken_for_a_sponge(make_gateway: GatewayFactory, keys: Keys):
    gateway = make_gateway(models={"waits": _Waits()}, inline_max_seconds=0.002)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 0, 1]}]}
    async with serving(gateway) as client:
        response = await client.post(
            "/v2/models/waits/infer", json=body, headers=keys.headers("sre")
        )
        assert response.status_code == 200
    cost = gateway.executor.costs["waits"]
    assert not cost.demoted  # 20 ms of wall time, next to no CPU: under both thresholds
    assert cost.inline_calls == 1


class _Broken:
    platform = "test"
    inputs = (TensorSpec("x", "FP32", (-1, 4)),)
    outputs = (TensorSpec("scores", "FP32", (-1, 2)),)
    input_range = (0.0, 1.0)
    classes = ("a", "b")

    def __init__(self, *, fail_probe: bool = False, answer: Any = None) -> None:
        self.fail_probe = fail_probe
        self.answer = answer
        self.calls = 0

    def predict(self, batch: NDArray[Any]) -> Any:
        self.calls += 1
        if self.fail_probe or self.calls > 6:
            if self.answer is not None:
                return self.answer
            raise ValueError("weights at /models/secret.bin are corrupt")
        return np.tile([0.5, 0.5], (batch.shape[0], 1))


@pytest.mark.parametrize("answer", [None, np.zeros((1, 3)), np.full((1, 2), np.nan)])
async def test_model_failures_are_generic_500s(
    make_gateway: GatewayFactory,
    keys: Keys,
    answer: Any,
    sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
):
    gateway = make_gateway(models={"broken": _Broken(answer=answer)})
    async with serving(gateway) as client:
        response = await client.post(
            "/v2/models/broken/infer", json=SLOW_BODY, headers=keys.headers("sre")
        )
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    reason = sink.requests()[0].details["reason"]  # type: ignore[index]
    assert reason.startswith(("predict failed: ValueError", "predict answered shape"))  # type: ignore[union-attr]
    assert "secret" not in response.text


async def test_a_model_failing_its_probe_is_not_served(
    make_gateway: GatewayFactory,
    keys: Keys,
    demo_model: ServedModel,
    sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
):
    gateway = make_gateway(models={"broken": _Broken(fail_probe=True), "digits": demo_model})
    async with serving(gateway) as client:
        response = await client.get("/v2/models/broken", headers=keys.headers("sre"))
        ready = await client.get("/v2/health/ready")
    assert response.status_code == 404
    assert ready.status_code == 200  # the other model is served
    assert list(gateway.models) == ["digits"]
    assert "predict failed on a valid batch" in gateway.refused["broken"]
    (refusal,) = sink.actions("gateway.model.refused")
    assert refusal.subject == "model:broken"


async def test_executor_refuses_over_the_cap_without_a_gateway(demo_model: ServedModel) -> None:
    entry = ServedEntry.build("digits", "1", demo_model)
    executor = Executor(1, inline_max_seconds=0.0)
    await executor.start()
    cost = await executor.prepare(entry)
    assert cost.inline_rows == 0
    executor.active = 1  # as if a prediction were in flight
    with pytest.raises(Rejection) as info:
        await executor.run(entry, entry.probe(1))
    assert (info.value.status, info.value.metric) == (503, "saturated")
    executor.active = 0
    scores = await executor.run(entry, entry.probe(2))
    assert scores.shape == (2, 10)
    await wait_for(lambda: executor.active == 0)
    await executor.stop()


async def test_prepare_refuses_wrong_answers() -> None:
    entry = ServedEntry.build("broken", "1", _Broken(fail_probe=True, answer=np.zeros((1, 5))))
    executor = Executor(2)
    await executor.start()
    with pytest.raises(GatewayError, match="predict answered shape"):
        await executor.prepare(entry)
    await executor.stop()


async def test_deadlines_cancel_only_overdue_requests_in_order() -> None:
    now = [0.0]
    deadlines = Deadlines(1.0, clock=lambda: now[0])
    cancelled: list[str] = []

    async def request(name: str, hold: asyncio.Event) -> bool:
        handle = deadlines.enter()
        try:
            await hold.wait()
        except asyncio.CancelledError:
            assert deadlines.expired(handle)
            cancelled.append(name)
            return deadlines.leave(handle)
        return deadlines.leave(handle)

    hold = asyncio.Event()
    first = asyncio.ensure_future(request("first", hold))
    await asyncio.sleep(0)
    now[0] = 0.5
    second = asyncio.ensure_future(request("second", hold))
    await asyncio.sleep(0)
    now[0] = 1.2  # past the first deadline only
    assert deadlines.sweep() == 1
    assert deadlines.sweep() == 0  # fired once
    assert await first is True
    assert cancelled == ["first"]
    hold.set()
    assert await second is False


async def test_deadline_watchdog_runs_by_itself() -> None:
    deadlines = Deadlines(0.05)
    await deadlines.start()
    handle = -1
    try:
        handle = deadlines.enter()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(2)
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        assert deadlines.leave(handle)
    finally:
        await deadlines.stop()
