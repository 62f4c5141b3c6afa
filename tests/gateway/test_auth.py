"""Authentication and authorization: keys, roles, model scope, the refreshed key table."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.gateway.support import GatewayFactory, Keys, MemorySink, infer_body, serving, wait_for

from bastion.core.principals import KeyTable, Permission, Role
from bastion.errors import StorageError
from bastion.gateway.auth import Authenticator, secret_from_headers
from bastion.gateway.responses import Rejection

pytestmark = pytest.mark.anyio

INFER = "/v2/models/digits/infer"


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        (b"Bearer abc", None, "abc"),
        (b"bearer   abc  ", None, "abc"),
        (b"BEARER abc", b"other", None),  # two different keys: none
        (b"Bearer abc", b"abc", "abc"),
        (b"Basic abc", b"key", "key"),
        (b"Bearer ", b"key", None),
        (b"Bearer abc", b"", None),
        (None, b" key ", "key"),
        (None, b"", None),
        (b"Token abc", None, None),
        (None, None, None),
    ],
)
def test_secret_from_headers(
    authorization: bytes | None, api_key: bytes | None, expected: str | None
) -> None:
    assert secret_from_headers(authorization, api_key) == expected


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("client", 200),
        ("data-scientist", 200),
        ("ml-engineer", 200),
        ("sre", 200),
        ("admin", 403),  # keys.manage, audit.read: no model.infer
        ("digits-only", 200),
        ("scoped", 403),
        ("revoked", 401),
        ("expired", 401),
    ],
)
async def test_who_may_infer(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, key: str, status: int
):
    async with serving(make_gateway()) as client:
        response = await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers(key))
    assert response.status_code == status


@pytest.mark.parametrize(
    ("key", "status"), [("sre", 200), ("admin", 200), ("client", 403), ("data-scientist", 403)]
)
async def test_who_may_read_metrics(
    make_gateway: GatewayFactory, keys: Keys, key: str, status: int
):
    async with serving(make_gateway()) as client:
        response = await client.get("/metrics", headers=keys.headers(key))
        anonymous = await client.get("/metrics")
    assert response.status_code == status
    assert anonymous.status_code == 401


async def test_every_keyed_route_needs_a_key(make_gateway: GatewayFactory):
    async with serving(make_gateway()) as client:
        for method, path in [
            ("GET", "/v2"),
            ("GET", "/v2/models/digits"),
            ("GET", "/v2/models/digits/ready"),
            ("POST", INFER),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 401, path


async def test_refusals_are_audited_with_the_reason(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, sink: MemorySink
):
    async with serving(make_gateway()) as client:
        await client.post(INFER, json=infer_body(sample(0)))
        await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("expired"))
        await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("scoped"))
    missing, expired, scoped = sink.requests()
    assert missing.details["reason"] == "no key given"  # type: ignore[index]
    assert expired.details["reason"] == f"expired key {keys.ids['expired']}"  # type: ignore[index]
    assert scoped.details["reason"].endswith("model 'digits' out of scope")  # type: ignore[index,union-attr]
    assert scoped.actor == f"scoped (key {keys.ids['scoped']}, client)"
    assert [r.details["status"] for r in (missing, expired, scoped)] == [401, 401, 403]  # type: ignore[index]


async def test_revocation_reaches_the_gateway_at_the_next_refresh(
    make_gateway: GatewayFactory, keys: Keys
):
    created = keys.store.create("short-lived", Role.CLIENT, actor="tests")
    headers = {"Authorization": f"Bearer {created.secret}"}
    gateway = make_gateway(key_source=keys.store.snapshot, key_refresh_seconds=0.05)
    async with serving(gateway) as client:
        assert (await client.get("/v2", headers=headers)).status_code == 200
        keys.store.revoke(created.key.key_id, actor="tests")
        statuses = []
        for _ in range(40):  # two seconds at most; a refresh is due every 50 ms
            statuses.append((await client.get("/v2", headers=headers)).status_code)
            if statuses[-1] == 401:
                break
            await asyncio.sleep(0.05)
    assert statuses[-1] == 401
    assert len(statuses) <= 10


async def test_key_source_outage_fails_closed_and_recovers(
    make_gateway: GatewayFactory, keys: Keys
):
    state = {"down": False}

    def source() -> KeyTable:
        if state["down"]:
            raise StorageError("database unreachable")
        return keys.table

    gateway = make_gateway(key_source=source, key_refresh_seconds=0.02)
    async with serving(gateway) as client:
        assert (await client.get("/v2", headers=keys.headers("sre"))).status_code == 200
        state["down"] = True
        await wait_for(lambda: not gateway.auth.available)
        refused = await client.get("/v2", headers=keys.headers("sre"))
        assert (refused.status_code, refused.json()) == (503, {"error": "service unavailable"})
        assert (await client.get("/v2/health/ready")).status_code == 503
        state["down"] = False
        await wait_for(lambda: gateway.auth.available)
        assert (await client.get("/v2", headers=keys.headers("sre"))).status_code == 200
    assert gateway.auth.failures > 0


async def test_key_source_outage_with_fail_open_keeps_the_last_table(
    make_gateway: GatewayFactory, keys: Keys
):
    calls = {"n": 0}

    def source() -> KeyTable:
        calls["n"] += 1
        if calls["n"] > 1:
            raise StorageError("database unreachable")
        return keys.table

    gateway = make_gateway(key_source=source, key_refresh_seconds=0.02, fail_open=True)
    async with serving(gateway) as client:
        await wait_for(lambda: not gateway.auth.available)
        assert (await client.get("/v2", headers=keys.headers("sre"))).status_code == 200


async def test_a_first_load_that_fails_refuses_until_keys_load(make_gateway: GatewayFactory):
    def source() -> KeyTable:
        raise StorageError("database unreachable")

    gateway = make_gateway(key_source=source, key_refresh_seconds=60)
    async with serving(gateway) as client:
        response = await client.get("/v2", headers={"Authorization": "Bearer whatever"})
    assert response.status_code == 503


def test_authorize_any(keys: Keys) -> None:
    admin = keys.table.authenticate(keys.secrets["admin"])
    client = keys.table.authenticate(keys.secrets["client"])
    both = (Permission.MODEL_INFER, Permission.MODEL_READ)
    Authenticator.authorize_any(admin, both, "digits")  # model.read
    Authenticator.authorize_any(client, both, "digits")  # model.infer
    with pytest.raises(Rejection) as info:
        Authenticator.authorize_any(client, (Permission.GATEWAY_OPERATE,))
    assert (info.value.status, info.value.message) == (403, "forbidden")
    assert "lacks gateway.operate" in info.value.reason
