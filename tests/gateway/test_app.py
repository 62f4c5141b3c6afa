"""The gateway application: routes, the Open Inference Protocol v2, the guard chain, errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from tests.gateway.support import (
    GatewayFactory,
    Keys,
    MemorySink,
    client_for,
    infer_body,
    serving,
)

from bastion import __version__
from bastion.artifacts.served_model import ServedModel

pytestmark = pytest.mark.anyio

Sample = Callable[[int], list[float]]


async def test_health_needs_no_key_and_readiness_follows_startup(make_gateway: GatewayFactory):
    gateway = make_gateway()
    async with client_for(gateway) as client:
        live = await client.get("/v2/health/live")
        assert (live.status_code, live.json()) == (200, {"live": True})
        before = await client.get("/v2/health/ready")
        assert (before.status_code, before.json()) == (503, {"ready": False})
        async with gateway:
            ready = await client.get("/v2/health/ready")
            assert (ready.status_code, ready.json()) == (200, {"ready": True})
            assert gateway.ready
        after = await client.get("/v2/health/ready")
        assert after.status_code == 503


async def test_not_ready_without_models(make_gateway: GatewayFactory):
    async with serving(make_gateway(models={})) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503


async def test_requests_before_startup_are_refused(make_gateway: GatewayFactory, keys: Keys):
    async with client_for(make_gateway()) as client:
        response = await client.get("/v2", headers=keys.headers("client"))
    assert (response.status_code, response.json()) == (503, {"error": "service unavailable"})


async def test_server_metadata(make_gateway: GatewayFactory, keys: Keys):
    async with serving(make_gateway()) as client:
        response = await client.get("/v2", headers=keys.headers("client"))
    assert response.status_code == 200
    assert response.json() == {"name": "bastion", "version": __version__, "extensions": []}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_model_metadata_and_readiness(make_gateway: GatewayFactory, keys: Keys):
    async with serving(make_gateway()) as client:
        metadata = await client.get("/v2/models/digits", headers=keys.headers("sre"))
        ready = await client.get("/v2/models/digits/ready", headers=keys.headers("client"))
        # model.read is enough for metadata (admin has it, not model.infer).
        admin = await client.get("/v2/models/digits", headers=keys.headers("admin"))
    assert metadata.status_code == 200
    document = metadata.json()
    assert document["name"] == "digits"
    assert document["versions"] == ["1"]
    assert document["platform"] == "bastion-safetensors"
    assert document["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert document["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}]
    assert document["parameters"]["classes"] == [str(c) for c in range(10)]
    assert ready.json() == {"name": "digits", "ready": True}
    assert admin.status_code == 200
    # admin's policy is label-only: the metadata lists the output it receives.
    assert admin.json()["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]}]


async def test_infer_answers_the_open_inference_protocol(
    make_gateway: GatewayFactory,
    keys: Keys,
    sample: Sample,
    demo_model: ServedModel,
):
    rows = [sample(0), sample(1), sample(2)]
    body = infer_body([v for row in rows for v in row], rows=3, id="req-7")
    async with serving(make_gateway()) as client:
        response = await client.post(
            "/v2/models/digits/infer", json=body, headers=keys.headers("sre")
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "digits"
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-7"
    (output,) = answer["outputs"]
    assert output["name"] == "scores"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [3, 10]
    expected = demo_model.predict(np.asarray(rows, dtype=np.float32))
    np.testing.assert_allclose(np.reshape(output["data"], (3, 10)), expected, atol=5e-5)


async def test_infer_accepts_nested_data_and_x_api_key(
    make_gateway: GatewayFactory, keys: Keys, sample: Sample
):
    body = infer_body([sample(3), sample(4)], rows=2)
    async with serving(make_gateway()) as client:
        response = await client.post(
            "/v2/models/digits/infer", json=body, headers=keys.headers("sre", scheme="x-api-key")
        )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["shape"] == [2, 10]
    assert "id" not in response.json()


async def test_requested_outputs(make_gateway: GatewayFactory, keys: Keys, sample: Sample):
    async with serving(make_gateway()) as client:
        named = await client.post(
            "/v2/models/digits/infer",
            json=infer_body(sample(0), outputs=[{"name": "scores"}]),
            headers=keys.headers("sre"),
        )
        unknown = await client.post(
            "/v2/models/digits/infer",
            json=infer_body(sample(0), outputs=[{"name": "logits"}]),
            headers=keys.headers("sre"),
        )
    assert [o["name"] for o in named.json()["outputs"]] == ["scores"]
    assert (unknown.status_code, unknown.json()) == (422, {"error": "invalid inference request"})


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nowhere", 404, None),
        ("GET", "/v2/models/digits/explain", 404, None),
        ("GET", "/v2/models/", 404, None),
        ("GET", "/v2/models/digits/infer", 405, "POST"),
        ("POST", "/v2/models/digits", 405, "GET"),
        ("DELETE", "/metrics", 405, "GET"),
        ("POST", "/v2/health/live", 405, "GET"),
    ],
)
async def test_unknown_routes_and_methods(
    make_gateway: GatewayFactory, method: str, path: str, status: int, allow: str | None
):
    async with serving(make_gateway()) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert response.json() == {"error": "not found" if status == 404 else "method not allowed"}
    assert response.headers.get("allow") == allow


async def test_unknown_model_and_scope(make_gateway: GatewayFactory, keys: Keys, sample: Sample):
    async with serving(make_gateway()) as client:
        missing = await client.post(
            "/v2/models/nope/infer", json=infer_body(sample(0)), headers=keys.headers("client")
        )
        # A key scoped to other models gets 403 for this one, and for one that does not
        # exist: its scope says nothing about which models are served.
        scoped_real = await client.post(
            "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("scoped")
        )
        scoped_missing = await client.get("/v2/models/nope", headers=keys.headers("scoped"))
        allowed = await client.post(
            "/v2/models/digits/infer",
            json=infer_body(sample(0)),
            headers=keys.headers("digits-only"),
        )
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
    assert (scoped_real.status_code, scoped_real.json()) == (403, {"error": "forbidden"})
    assert (scoped_missing.status_code, scoped_missing.json()) == (403, {"error": "forbidden"})
    assert allowed.status_code == 200


async def test_rotating_keys_from_one_address_is_caught_by_the_address_limit(
    make_gateway: GatewayFactory, keys: Keys, sample: Sample, sink: MemorySink
):
    gateway = make_gateway(rate_limit={"per_key_per_minute": 3, "per_address_per_minute": 6})
    body = infer_body(sample(0))
    statuses = []
    async with serving(gateway) as client, client_for(gateway, "10.9.9.9") as other:
        for n in range(8):  # a fresh key for every request: the key limit never trips
            response = await client.post(
                "/v2/models/digits/infer", json=body, headers=keys.headers(f"client-{n}")
            )
            statuses.append(response.status_code)
        refused = response
        # Another address is not affected.
        elsewhere = await other.post(
            "/v2/models/digits/infer", json=body, headers=keys.headers("client-7")
        )
    assert statuses == [200] * 6 + [429] * 2
    assert refused.json() == {"error": "too many requests"}
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # within two sliding windows
    assert elsewhere.status_code == 200
    # The refusals are recorded as counts (a flood must not flood the audit log).
    tallies = sink.actions("gateway.requests.refused")
    assert sum(r.details["count"] for r in tallies) == 2  # type: ignore[index]
    assert {r.details["reason"] for r in tallies} == {"rate limit (address)"}  # type: ignore[index]
    assert {r.details["address"] for r in tallies} == {"10.0.0.1"}  # type: ignore[index]


async def test_key_limit(make_gateway: GatewayFactory, keys: Keys, sample: Sample):
    gateway = make_gateway(rate_limit={"per_key_per_minute": 2, "per_address_per_minute": 100})
    statuses = []
    async with serving(gateway) as client:
        for _ in range(4):
            response = await client.post(
                "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("sre")
            )
            statuses.append(response.status_code)
    assert statuses == [200, 200, 429, 429]


async def test_guessing_keys_or_paths_is_rate_limited_per_address(
    make_gateway: GatewayFactory, keys: Keys
):
    gateway = make_gateway(rate_limit={"per_key_per_minute": 100, "per_address_per_minute": 3})
    async with serving(gateway) as client:
        guesses = [
            (await client.get("/v2", headers={"Authorization": f"Bearer bst_{n:012x}_x"}))
            for n in range(3)
        ]
        probe = await client.get("/admin")
        valid = await client.get("/v2", headers=keys.headers("client"))
    assert [g.status_code for g in guesses] == [401, 401, 401]
    assert probe.status_code == 429
    assert valid.status_code == 429  # the address is spent, whatever key it now shows


GENERIC = {
    "unauthorized",
    "forbidden",
    "not found",
    "malformed JSON",
    "request too deeply nested",
    "invalid input tensor",
}

ERROR_CASES = [
    ("no key", "POST", "/v2/models/digits/infer", None, b"{}"),
    ("bad key", "POST", "/v2/models/digits/infer", "bst_0123456789ab_" + "A" * 43, b"{}"),
    ("admin infers", "POST", "/v2/models/digits/infer", "admin", b"{}"),
    ("not JSON", "POST", "/v2/models/digits/infer", "client", b"{'inputs': Traceback"),
    ("deep", "POST", "/v2/models/digits/infer", "client", b"[" * 100 + b"]" * 100),
    ("wrong tensor", "POST", "/v2/models/digits/infer", "client", None),
    ("unknown model", "GET", "/v2/models/secret-model", "client", None),
    ("metrics by client", "GET", "/metrics", "client", None),
]


@pytest.mark.parametrize(("case", "method", "path", "key", "body"), ERROR_CASES)
async def test_errors_leak_nothing(
    make_gateway: GatewayFactory,
    keys: Keys,
    case: str,
    method: str,
    path: str,
    key: str | None,
    body: bytes | None,
):
    headers = {}
    if key is not None:
        headers = keys.headers(key) if key in keys.secrets else {"Authorization": f"Bearer {key}"}
    if case == "wrong tensor":
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
        ).encode()
    async with serving(make_gateway()) as client:
        response = await client.request(method, path, content=body, headers=headers)
    assert 400 <= response.status_code < 500
    document = response.json()
    assert list(document) == ["error"]
    text = document["error"]
    assert len(text) < 40
    for leak in ("Traceback", "pixels", "digits", "FP32", "secret-model", "key", "pydantic", "64"):
        assert leak not in response.text, (case, response.text)
    assert text in GENERIC  # a fixed text, nothing quoted from the request


async def test_key_failures_are_indistinguishable(make_gateway: GatewayFactory, keys: Keys):
    unknown_id = "bst_0123456789ab_" + "A" * 43
    known_id_wrong_secret = keys.secrets["client"][:-4] + "AAAA"
    presented = {
        "missing": {},
        "empty bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "malformed": {"Authorization": "Bearer nonsense"},
        "too long": {"X-API-Key": "bst_" + "a" * 500},
        "unknown": {"Authorization": f"Bearer {unknown_id}"},
        "wrong secret": {"Authorization": f"Bearer {known_id_wrong_secret}"},
        "revoked": keys.headers("revoked"),
        "expired": keys.headers("expired"),
    }
    answers = {}
    async with serving(make_gateway()) as client:
        for name, headers in presented.items():
            response = await client.get("/v2/models/digits", headers=headers)
            answers[name] = (
                response.status_code,
                response.content,
                response.headers.get("www-authenticate"),
                tuple(sorted(response.headers.items())),
            )
    assert len(set(answers.values())) == 1, answers
    status, content, challenge, _ = answers["missing"]
    assert (status, content) == (401, b'{"error":"unauthorized"}')
    assert challenge == 'Bearer realm="bastion"'


async def test_unexpected_errors_are_generic(
    make_gateway: GatewayFactory, keys: Keys, sample: Sample, monkeypatch: pytest.MonkeyPatch
):
    gateway = make_gateway()

    def broken(*_args: object, **_kwargs: object) -> list[object]:
        raise RuntimeError("internal detail /etc/secret")

    monkeypatch.setattr(gateway.hardener, "harden", broken)
    async with serving(gateway) as client:
        response = await client.post(
            "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("sre")
        )
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert "secret" not in response.text


async def test_websocket_scope_is_closed(make_gateway: GatewayFactory):
    gateway = make_gateway()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await gateway({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_lifespan_protocol(make_gateway: GatewayFactory, sink: MemorySink):
    gateway = make_gateway()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            assert gateway.ready

    await gateway({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert [r.action for r in sink.records] == ["gateway.start", "gateway.stop"]


async def test_client_disconnect_is_recorded(make_gateway: GatewayFactory, keys: Keys, sink):
    gateway = make_gateway()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/digits/infer",
        "headers": [(b"authorization", f"Bearer {keys.secrets['client']}".encode())],
        "client": ("10.1.1.1", 1),
    }
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: object) -> None:
        sent.append(message)

    async with gateway:
        await gateway(scope, receive, send)
    assert sent == []
    (record,) = sink.requests()
    assert record.details["status"] == 499  # type: ignore[index]
    assert record.details["reason"] == "client disconnected"  # type: ignore[index]


def test_httpx_version_supports_asgi_client_address() -> None:
    # client_for() relies on ASGITransport(client=...) to give each test client an address.
    transport = httpx.ASGITransport(app=lambda *a: None, client=("10.0.0.2", 1))  # type: ignore[arg-type]
    assert transport.client == ("10.0.0.2", 1)
