"""Two real gateway replicas (``bastion serve`` processes) on one workspace in PostgreSQL with
rate limits in Redis: one shared limit, one audit chain, and outages of either service,
simulated by a TCP proxy between the replicas and the service (never by stopping it).

The replicas reach PostgreSQL and Redis only through :class:`TcpProxy`; the tests read the
audit log through the same proxy once it forwards again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from sqlalchemy.engine import make_url
from tests.gateway.tcp_proxy import TcpProxy

from bastion.artifacts.signing import sign
from bastion.core.audit import AuditEvent
from bastion.core.principals import KeyStore, Role
from bastion.core.workspace import find_workspace, init_workspace
from bastion.demo_model import DemoModel, write_model_folder
from bastion.gateway.audit import request_entries
from bastion.registry import Registry

pytestmark = pytest.mark.services

#: Requests per minute per key; the per-address limit is far above it.
LIMIT = 12
PIXELS = [float(v % 17) for v in range(64)]


@dataclass
class Cluster:
    """Two replicas serving ``digits`` on one workspace, behind proxies the test controls."""

    env: dict[str, str]
    secrets: dict[str, str]
    postgres: TcpProxy
    redis: TcpProxy
    urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def infer(self, replica: int, key: str, request_id: str) -> httpx.Response:
        return httpx.post(
            f"{self.urls[replica]}/v2/models/digits/infer",
            json={
                "id": request_id,
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": PIXELS}
                ],
            },
            headers={"Authorization": f"Bearer {self.secrets[key]}"},
            timeout=10,
        )

    def stop(self) -> None:
        """Stop the replicas gracefully (each writes its audit queue) and wait for them."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                assert process.wait(timeout=40) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def audit_events(self, action: str) -> list[AuditEvent]:
        workspace = find_workspace(environ=self.env)
        try:
            return workspace.audit().events(action=action)
        finally:
            workspace.close()

    def verify_chain(self) -> int:
        workspace = find_workspace(environ=self.env)
        try:
            return workspace.audit().verify().events
        finally:
            workspace.close()


def _through(url: str, proxy: TcpProxy) -> str:
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _production_model(env: dict[str, str], folder: Path) -> dict[str, str]:
    """Keys, and a signed ``digits`` model taken to production by three people."""
    workspace, created = init_workspace(environ=env)
    assert created
    try:
        store = KeyStore(workspace.database, workspace.audit())
        made = {
            name: store.create(name, role, actor="operator")
            for name, role in (
                ("dana", Role.DATA_SCIENTIST),
                ("eli", Role.ML_ENGINEER),
                ("sam", Role.SRE),
                ("shop", Role.CLIENT),
                ("kiosk", Role.CLIENT),
            )
        }
        rng = np.random.default_rng(0)
        model = DemoModel(
            rng.normal(scale=0.05, size=(10, 64)).astype(np.float32),
            rng.normal(size=10).astype(np.float32),
            0.5,
        )
        write_model_folder(model, folder)
        sign(folder, workspace.signing_key(), actor="trainer")
        registry = Registry(workspace)
        version = registry.add("digits", folder, principal=made["dana"].key.principal())
        eli, sam = made["eli"].key.principal(), made["sam"].key.principal()
        registry.promote("digits", version.version, to="staging", principal=eli)
        registry.approve("digits", version.version, principal=eli)
        registry.promote("digits", version.version, to="production", principal=sam)
        return {name: created.secret for name, created in made.items()}
    finally:
        workspace.close()


def _start(env: dict[str, str], cwd: Path, log: Path) -> tuple[subprocess.Popen[str], Any]:
    handle = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--port", "0", "--format", "json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=handle,
        text=True,
    )
    return process, handle


def _url(process: subprocess.Popen[str], log: Path) -> str:
    assert process.stdout is not None
    text = ""
    for line in process.stdout:  # one indented JSON document, written once listening
        text += line
        if line.startswith("}"):
            break
    assert text, f"replica did not start: {log.read_text()}"
    url: str = json.loads(text)["url"]
    return url


@pytest.fixture
def cluster(
    postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    redis_target = urlsplit(redis_url)
    database_target = make_url(postgres_url)
    with (
        TcpProxy(database_target.host or "127.0.0.1", database_target.port or 5432) as postgres,
        TcpProxy(redis_target.hostname or "127.0.0.1", redis_target.port or 6379) as redis,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env.update(
            BASTION_HOME=str(tmp_path / "workspace"),
            BASTION_ACTOR="operator",
            BASTION_DATABASE_URL=_through(postgres_url, postgres),
            BASTION_REDIS_URL=f"redis://127.0.0.1:{redis.port}{redis_target.path or '/0'}",
            BASTION_GATEWAY_RATE_LIMIT_PER_KEY_PER_MINUTE=str(LIMIT),
            BASTION_GATEWAY_RATE_LIMIT_PER_ADDRESS_PER_MINUTE="10000",
            BASTION_GATEWAY_RATE_LIMIT_REDIS_PREFIX=redis_prefix,
            # Records wait up to half a second in the queue: requests accepted right after
            # PostgreSQL goes away are in memory only until it returns.
            BASTION_GATEWAY_AUDIT_FLUSH_SECONDS="0.5",
        )
        secrets = _production_model(env, tmp_path / "models" / "digits")
        cluster = Cluster(env, secrets, postgres, redis)
        started = [_start(env, tmp_path, tmp_path / f"replica-{n}.log") for n in range(2)]
        try:
            for n, (process, _) in enumerate(started):
                cluster.processes.append(process)
                cluster.urls.append(_url(process, tmp_path / f"replica-{n}.log"))
            yield cluster
        finally:
            postgres.forward()
            redis.forward()
            for process, handle in started:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=40)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                if process.stdout is not None:
                    process.stdout.close()
                handle.close()


def _request_ids(cluster: Cluster) -> list[str]:
    return [
        e.details["request_id"]
        for e in request_entries(cluster.audit_events("gateway.requests"))
        if "request_id" in e.details
    ]


def test_replicas_share_one_rate_limit_and_one_audit_chain(cluster: Cluster) -> None:
    answers = [cluster.infer(n % 2, "shop", f"shared-{n}") for n in range(LIMIT + 6)]
    statuses = [a.status_code for a in answers]
    # Whichever replica answers, the key's limit is one: LIMIT accepted in all, then refused.
    assert statuses == [200] * LIMIT + [429] * 6
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers[LIMIT:])
    # Another key is not affected by the first one's limit.
    assert cluster.infer(1, "kiosk", "other-key").status_code == 200

    cluster.stop()
    ids = _request_ids(cluster)
    accepted = [f"shared-{n}" for n in range(LIMIT)] + ["other-key"]
    assert sorted(ids) == sorted(accepted)  # each accepted request once, from both replicas
    refused = [
        e for e in cluster.audit_events("gateway.requests.refused") if e.details["status"] == 429
    ]
    assert sum(e.details["count"] for e in refused) == 6
    # Both replicas appended to one chain, and it verifies from the first record to the last.
    assert cluster.verify_chain() >= len(accepted) + 1


def test_redis_outage_fails_closed_and_recovers(cluster: Cluster) -> None:
    assert cluster.infer(0, "shop", "before").status_code == 200
    cluster.redis.blackhole()  # Redis hangs: the limiter's short timeouts answer for it
    started = time.monotonic()
    during = [cluster.infer(n % 2, "shop", f"during-{n}") for n in range(4)]
    assert [a.status_code for a in during] == [503] * 4
    assert all(a.json() == {"error": "service unavailable"} for a in during)
    assert time.monotonic() - started < 8
    cluster.redis.forward()
    recovered = _until_ok(cluster, "shop", "after", deadline=10.0)
    assert recovered == {0, 1}


def test_postgres_outage_fails_closed_recovers_and_loses_no_record(cluster: Cluster) -> None:
    accepted: list[str] = []

    def call(replica: int, request_id: str) -> int:
        answer = cluster.infer(replica, "kiosk" if replica else "shop", request_id)
        if answer.status_code == 200:
            accepted.append(request_id)
        return answer.status_code

    assert [call(n % 2, f"before-{n}") for n in range(4)] == [200] * 4
    cluster.postgres.refuse()
    refused: set[int] = set()
    deadline = time.monotonic() + 15
    n = 0
    while refused != {0, 1} and time.monotonic() < deadline:
        if call(n % 2, f"during-{n}") == 503:
            refused.add(n % 2)
        n += 1
        time.sleep(0.05)
    assert refused == {0, 1}, "both replicas refuse once the audit log cannot be written"
    # Accepted while the database was already gone, before a flush found out: queued only.
    assert any(request_id.startswith("during-") for request_id in accepted)
    cluster.postgres.forward()
    deadline = time.monotonic() + 20
    back: set[int] = set()
    while back != {0, 1} and time.monotonic() < deadline:
        if call(n % 2, f"after-{n}") == 200:
            back.add(n % 2)
        n += 1
        time.sleep(0.1)
    assert back == {0, 1}, "both replicas recover by themselves"

    cluster.stop()
    ids = _request_ids(cluster)
    # Every accepted request was written once, the ones accepted just before the outage too.
    assert sorted(ids) == sorted(accepted)
    assert cluster.verify_chain() >= len(accepted)


def _until_ok(cluster: Cluster, key: str, prefix: str, deadline: float) -> set[int]:
    ok: set[int] = set()
    end = time.monotonic() + deadline
    n = 0
    while ok != {0, 1} and time.monotonic() < end:
        if cluster.infer(n % 2, key, f"{prefix}-{n}").status_code == 200:
            ok.add(n % 2)
        n += 1
        time.sleep(0.1)
    return ok
