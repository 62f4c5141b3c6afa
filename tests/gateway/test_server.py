"""The gateway over real HTTP (uvicorn on a free port), with bastion's own OIP client."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from tests.gateway.support import GatewayFactory, Keys, MemorySink, infer_body

from bastion.artifacts.served_model import ServedModel
from bastion.assess.domain import InputDomain
from bastion.assess.targets.remote_target import RemoteTarget
from bastion.errors import GatewayError
from bastion.gateway.app import Gateway
from bastion.gateway.server import GatewayServer, bind


@contextmanager
def running(gateway: Gateway) -> Iterator[tuple[GatewayServer, str]]:
    listening: list[tuple[str, int]] = []
    server = GatewayServer(
        gateway, "127.0.0.1", 0, on_listening=lambda h, p: listening.append((h, p))
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="gateway-under-test")
    thread.start()
    try:
        assert server.wait_ready(10), errors
        assert listening == [server.address]
        host, port = listening[0]
        yield server, f"http://{host}:{port}"
    finally:
        server.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors


def test_serves_bastions_own_remote_target_and_flushes_on_stop(
    make_gateway: GatewayFactory,
    keys: Keys,
    sink: MemorySink,
    demo_model: ServedModel,
    digits: Any,
) -> None:
    x, _ = digits
    gateway = make_gateway(
        audit_flush_seconds=60,  # only the graceful shutdown writes the records
        output={"sre": {"mode": "scores", "decimals": 6}},
    )
    with running(gateway) as (_, url):
        target = RemoteTarget(
            f"{url}/v2/models/digits",
            InputDomain(shape=(64,), lower=0.0, upper=16.0),
            api_key=keys.secrets["sre"],
            batch_size=7,
        )
        try:
            scores = target.predict_proba(x[:20].astype(np.float32))
        finally:
            target.close()
        with httpx.Client(base_url=url) as client:
            live = client.get("/v2/health/live")
            refused = client.post("/v2/models/digits/infer", json=infer_body([0.0] * 64))
        pending = gateway.audit.pending
    expected = demo_model.predict(x[:20].astype(np.float32))
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    assert target.info.digest == "sha256:" + "0" * 64
    assert live.status_code == 200
    assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
    assert "server" not in refused.headers
    assert pending > 0
    assert gateway.audit.pending == 0
    records = sink.requests()
    # metadata + probe + 3 batches of up to 7 rows, then the refused request
    assert [r.details["status"] for r in records] == [200, 200, 200, 200, 200, 401]  # type: ignore[index]
    assert [r.details.get("batch") for r in records][2:5] == [7, 7, 6]  # type: ignore[union-attr]
    assert sink.records[-1].action == "gateway.stop"


def test_a_client_behind_the_labels_policy_still_works(
    make_gateway: GatewayFactory, keys: Keys, digits: Any, demo_model: ServedModel
) -> None:
    x, _ = digits
    gateway = make_gateway(output={"client": {"mode": "label"}})
    with running(gateway) as (_, url):
        target = RemoteTarget(
            f"{url}/v2/models/digits",
            InputDomain(shape=(64,), lower=0.0, upper=16.0),
            api_key=keys.secrets["client"],
            api_key_header="X-API-Key",
            classes=[str(c) for c in range(10)],
        )
        try:
            labels = target.predict_labels(x[:10].astype(np.float32))
        finally:
            target.close()
    expected = demo_model.predict(x[:10].astype(np.float32)).argmax(axis=1)
    np.testing.assert_array_equal(labels, expected)


def test_accepted_connections_get_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY on accepted sockets only if the listener's proto is TCP.
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
    finally:
        listener.close()


def test_an_address_in_use_is_one_clear_error() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(GatewayError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


class _FailingMonitor:
    async def start(self) -> None:
        raise RuntimeError("cannot start")

    async def stop(self) -> None:
        pass

    def blocked(self, key_id: str) -> bool:
        return False

    def observe(self, *args: Any) -> None:
        pass

    def stats(self) -> dict[str, int | float]:
        return {}


def test_a_failed_startup_is_an_error_and_releases_the_port(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = GatewayServer(make_gateway(monitor=_FailingMonitor()), "127.0.0.1", 0)
    with pytest.raises(GatewayError, match="could not start"):
        server.run()
    assert server.address is not None
    with socket.create_server(server.address):  # free again
        pass
    assert "gateway startup failed" in caplog.text
