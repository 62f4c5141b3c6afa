"""Benchmark: the gateway with every guard on against a bare Starlette app serving the same model.

The model is the demo's (softmax-linear on scikit-learn's 8x8 digits, safetensors, loaded by
bastion's loader). Both servers run in their own process under uvicorn with the same settings
(those of ``bastion serve``, see :func:`serve`) and answer ``POST /v2/models/digits/infer``
with an Open Inference Protocol v2 body:

* ``bare``: one Starlette route that parses the JSON, predicts and answers the scores as JSON;
* ``gateway``: :func:`bastion.gateway.app.create_app` on a fresh workspace (SQLite), every
  guard on with its default settings except the rate limits, raised so that the load is never
  refused (the limiter still counts every request): API-key authentication, rate limits per
  key and address (in memory), request validation, the extraction monitor (PRADA, examining
  queries in its worker process, the default), execution limits, output hardening for the
  ``client`` role, batched audit of every request, metrics;
* ``gw-inloop``: the same, with the extraction monitor's examination on the gateway's event
  loop (``gateway.extraction.worker_process = false``);
* ``replica`` (when PostgreSQL and Redis answer, as the tests' services): the same on a
  workspace whose database is a fresh PostgreSQL database, rate limits in Redis.

The load comes from a separate process on loopback: ``--connections`` keep-alive HTTP/1.1
connections (raw asyncio streams, so that the client costs far less than the servers), each
sending the 450 held-out digits in turn with one of 8 client keys, for ``--duration`` seconds
after a one-second warm-up. Runs are interleaved: each round runs every server once, in
rotating order, and each gateway run is paired with the bare run of its round; the table
gives medians over rounds of requests/s and latency, and the median of the paired ratios
(steadier than a ratio of medians on a shared machine).

Then the overhead in process, without sockets: the same two ASGI applications called
directly, alternately, ``--calls`` times each, with their background work (audit writer,
extraction monitor) running in the same event loop; the difference of the latency
percentiles is what the guard chain adds to one request. Last, a cProfile of the gateway in
process lists where its time goes.

Goals (issue 4): >= 90% of the bare throughput with every guard on, >= 80% in replica mode,
p99 overhead < 1 ms per request in process.

    .venv/bin/python benchmarks/gateway_bench.py --duration 5 --rounds 3 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "digits"
ROUTE = f"/v2/models/{MODEL}/infer"
KEYS = 8
#: Never refuse the benchmark's load, but count every request.
HIGH_LIMIT = "1000000000"

ASGIApp = Callable[..., Awaitable[None]]
#: The server each variant runs (replica mode runs the gateway on another workspace).
_KINDS = {"bare": "bare", "gateway": "gateway", "gw-inloop": "gateway-inloop"}


# --- the model, the workspace, the request bodies ------------------------------------------------


def prepare_model(folder: Path, kind: str = "demo") -> Path:
    """The served model: the demo's (``demo``) or a scikit-learn one (``sklearn``).

    ``sklearn``: a ``LogisticRegression`` on the same digits split, pickled and loaded through
    bastion's restricted unpickler (the per-model opt-in), answering ``predict_proba``: the
    "small scikit-learn model" the issue gives as the scale of a bare server.
    """
    from bastion.demo_model import train_demo_model, write_model_folder

    model, x_test, _ = train_demo_model(seed=0)
    datatype = "FP32"
    if kind == "demo":
        write_model_folder(model, folder / "model")
    else:
        import pickle
        import warnings

        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        (folder / "model").mkdir(parents=True, exist_ok=True)
        (folder / "model" / "model.pkl").write_bytes(pickle.dumps(estimator, protocol=5))
        config = {
            "inputs": [{"name": "pixels", "datatype": "FP64", "shape": [-1, 64]}],
            "outputs": [{"name": "scores", "datatype": "FP64", "shape": [-1, 10]}],
            "input_range": [0.0, 16.0],
            "classes": [str(c) for c in range(10)],
        }
        (folder / "model" / "config.json").write_text(json.dumps(config))
        datatype = "FP64"
    np.save(folder / "queries.npy", x_test.astype(np.float32))
    (folder / "datatype.txt").write_text(datatype)
    return folder / "model"


def bodies(folder: Path) -> list[bytes]:
    """One Open Inference Protocol request per held-out digit."""
    queries = np.load(folder / "queries.npy")
    datatype = (folder / "datatype.txt").read_text()
    return [
        json.dumps(
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": datatype, "data": q.tolist()}
                ]
            }
        ).encode()
        for q in queries
    ]


def workspace_environ(home: Path, database_url: str = "", redis_url: str = "") -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BASTION_") or k == "BASTION_KEY_PASSPHRASE"
    }
    env.update(
        BASTION_HOME=str(home),
        BASTION_ACTOR="bench",
        BASTION_GATEWAY_RATE_LIMIT_PER_KEY_PER_MINUTE=HIGH_LIMIT,
        BASTION_GATEWAY_RATE_LIMIT_PER_ADDRESS_PER_MINUTE=HIGH_LIMIT,
        BASTION_GATEWAY_RATE_LIMIT_REDIS_PREFIX=f"bastion_bench_{secrets.token_hex(4)}:",
    )
    if database_url:
        env["BASTION_DATABASE_URL"] = database_url
    if redis_url:
        env["BASTION_REDIS_URL"] = redis_url
    return env


def prepare_workspace(env: dict[str, str]) -> list[str]:
    """Create the workspace and ``KEYS`` client keys; return their secrets."""
    from bastion.core.principals import KeyStore, Role
    from bastion.core.workspace import init_workspace

    workspace, _ = init_workspace(environ=env)
    try:
        store = KeyStore(workspace.database, workspace.audit())
        return [store.create(f"bench-{n}", Role.CLIENT, actor="bench").secret for n in range(KEYS)]
    finally:
        workspace.close()


# --- the two applications ------------------------------------------------------------------------


def bare_app(model_dir: Path) -> ASGIApp:
    """One Starlette route: parse, predict, answer the scores (what a plain server does)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bastion.artifacts.loading import load_model

    model = load_model(model_dir, allow_pickle=True)

    async def infer(request: Request) -> Response:
        body = json.loads(await request.body())
        tensor = body["inputs"][0]
        batch = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        scores = model.predict(batch)
        answer = {
            "model_name": MODEL,
            "outputs": [
                {
                    "name": "scores",
                    "shape": list(scores.shape),
                    "datatype": "FP32",
                    "data": np.round(scores, 4).ravel().tolist(),
                }
            ],
        }
        return Response(json.dumps(answer), media_type="application/json")

    app: ASGIApp = Starlette(routes=[Route(ROUTE, infer, methods=["POST"])])
    return app


def gateway_app(model_dir: Path, env: dict[str, str], *, in_loop: bool = False) -> ASGIApp:
    """bastion's gateway on the workspace of ``env``, every guard on.

    ``in_loop``: the extraction monitor examines queries on the gateway's event loop instead
    of its worker process.
    """
    from bastion.artifacts.loading import load_model
    from bastion.core.principals import KeyStore
    from bastion.core.workspace import find_workspace
    from bastion.gateway.app import create_app
    from bastion.gateway.models import ModelSet

    workspace = find_workspace(environ=env)
    keys = KeyStore(workspace.database, None)
    settings = workspace.settings.gateway
    if in_loop:
        extraction = settings.extraction.model_copy(update={"worker_process": False})
        settings = settings.model_copy(update={"extraction": extraction})
    app: ASGIApp = create_app(
        settings,
        keys.snapshot,
        ModelSet.of({MODEL: load_model(model_dir, allow_pickle=True)}),
        workspace.audit(),
        redis_url=workspace.settings.redis_url,
    )
    return app


def serve(kind: str, model_dir: Path, port: int, env: dict[str, str]) -> None:
    """Run one server in this process until SIGTERM (the ``--serve`` subcommand).

    Both applications run under uvicorn with the settings of ``bastion serve``'s
    :class:`~bastion.gateway.server.GatewayServer` (lifespan on, no access log, no ``Server``
    header, no proxy headers), uvicorn binding the socket itself, so that the two differ only
    in the application. (GatewayServer binds its own socket with ``IPPROTO_TCP`` spelled out,
    so that asyncio sets ``TCP_NODELAY``; without it Nagle's algorithm and delayed ACKs held
    each response about 40 ms: 330 requests/s instead of 1,100.)
    """
    import uvicorn

    if kind == "bare":
        app = bare_app(model_dir)
    else:
        app = gateway_app(model_dir, env, in_loop=kind == "gateway-inloop")
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()


# --- the load generator --------------------------------------------------------------------------


def request_bytes(body: bytes, secret: str) -> bytes:
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    port: int,
    requests: list[bytes],
    warm_until: float,
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while (started := time.perf_counter()) < deadline:
            writer.write(requests[n % len(requests)])
            n += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if started >= warm_until:
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(
    port: int, connections: int, duration: float, all_bodies: list[bytes], keys: list[str]
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    warm_until, deadline = start + 1.0, start + 1.0 + duration
    tasks = []
    for c in range(connections):
        secret = keys[c % len(keys)] if keys else ""
        offset = c * len(all_bodies) // connections
        mine = [request_bytes(b, secret) for b in all_bodies[offset:] + all_bodies[:offset]]
        tasks.append(_connection(port, mine, warm_until, deadline, latencies, statuses))
    await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "rps": len(latencies) / duration,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))],
        "statuses": statuses,
    }


# --- orchestration -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


@contextlib.contextmanager
def server(
    kind: str, folder: Path, model_dir: Path, env: dict[str, str]
) -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve", kind, "--folder", str(folder), "--port", str(port)]
    process = subprocess.Popen(argv, env=env)
    try:
        wait_listening(port, process)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_load(
    folder: Path, keys: Path, port: int, connections: int, duration: float
) -> dict[str, Any]:
    argv = [
        sys.executable,
        __file__,
        "--load",
        "--folder",
        str(folder),
        "--keys",
        str(keys),
        "--port",
        str(port),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def postgres_database() -> tuple[str, Callable[[], None]] | None:
    """A fresh PostgreSQL database at the tests' server (TEST_POSTGRES_URL), or None."""
    try:
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url
    except ImportError:
        return None
    url = make_url(
        os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    params: dict[str, Any] = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "dbname": url.database or "postgres",
        "connect_timeout": 3,
    }
    if url.password:
        params["password"] = url.password
    name = f"bastion_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(autocommit=True, **params) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError:
        return None

    def drop() -> None:
        with psycopg.connect(autocommit=True, **params) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return url.set(database=name).render_as_string(hide_password=False), drop


def redis_reachable(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


# --- in process ----------------------------------------------------------------------------------


async def call_asgi(app: ASGIApp, body: bytes, secret: str) -> int:
    """One POST through an ASGI application, no server; returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": ROUTE,
        "raw_path": ROUTE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {secret}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    done = asyncio.get_running_loop().create_future()
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False) and not done.done():
            done.set_result(None)

    await app(scope, receive, send)
    return status


async def _lifespan(app: ASGIApp) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup") and not started.done():
            started.set_result(message["type"])

    task = asyncio.get_running_loop().create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    outcome = await started
    if outcome != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {outcome}")
    return task, inbox


async def in_process(
    model_dir: Path, env: dict[str, str], keys: list[str], all_bodies: list[bytes], calls: int
) -> tuple[dict[str, list[float]], str]:
    apps = {"bare": bare_app(model_dir), "gateway": gateway_app(model_dir, env)}
    lifespans = {name: await _lifespan(app) for name, app in apps.items()}
    timings: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():  # warm-up
        for n in range(200):
            await call_asgi(app, all_bodies[n % len(all_bodies)], keys[n % len(keys)])
    for n in range(calls):
        body, secret = all_bodies[n % len(all_bodies)], keys[n % len(keys)]
        for name in ("bare", "gateway") if n % 2 else ("gateway", "bare"):
            started = time.perf_counter()
            status = await call_asgi(apps[name], body, secret)
            timings[name].append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{name} answered {status}")
        if n % 16 == 15:
            await asyncio.sleep(0)  # let background tasks (audit, extraction) run, as a server
    profile = cProfile.Profile()
    profile.enable()
    for n in range(calls):
        await call_asgi(apps["gateway"], all_bodies[n % len(all_bodies)], keys[n % len(keys)])
        if n % 16 == 15:
            await asyncio.sleep(0)
    await asyncio.sleep(0.5)  # the audit writer's next flush
    profile.disable()
    for task, inbox in lifespans.values():
        await inbox.put({"type": "lifespan.shutdown"})
        await task
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(15)
    text.write("own time per bastion module (s):\n")
    for module, seconds in by_module(profile)[:12]:
        text.write(f"  {seconds:7.3f}  {module}\n")
    return timings, text.getvalue()


async def limiter_rates(redis_url: str | None, seconds: float = 2.0) -> dict[str, float]:
    """Checks per second of each rate limiter with 16 concurrent callers, in process."""
    from bastion.gateway.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

    prefix = f"bastion_bench_{secrets.token_hex(4)}:"
    limiters: dict[str, RateLimiter] = {"memory": MemoryRateLimiter(10**9, 10**9)}
    if redis_url:
        limiters["redis, group commit"] = RedisRateLimiter(10**9, 10**9, redis_url, prefix=prefix)
        limiters["redis, one call each"] = RedisRateLimiter(
            10**9, 10**9, redis_url, prefix=prefix, max_batch=1
        )
    rates = {}
    for name, limiter in limiters.items():
        count = 0
        deadline = time.perf_counter() + seconds

        async def caller(
            n: int, limiter: RateLimiter = limiter, deadline: float = deadline
        ) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await limiter.check(f"key-{n % KEYS}", f"10.0.0.{n}")
                count += 1

        await asyncio.gather(*(caller(n) for n in range(16)))
        rates[name] = count / seconds
        await limiter.close()
    if redis_url:
        import redis

        with redis.Redis.from_url(redis_url) as client:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
    return rates


def by_module(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time per bastion module, largest first."""
    totals: dict[str, float] = {}
    for (filename, _, _), row in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if "/bastion/" in filename:
            module = filename.split("/bastion/", 1)[1]
            totals[module] = totals.get(module, 0.0) + row[2]
    return sorted(totals.items(), key=lambda item: -item[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--calls", type=int, default=3000, help="in-process calls per app")
    parser.add_argument(
        "--model",
        choices=("demo", "sklearn"),
        default="demo",
        help="the demo's numpy model, or a scikit-learn LogisticRegression (pickle, opt-in)",
    )
    parser.add_argument(
        "--replica", choices=("auto", "on", "off"), default="auto", help="PostgreSQL + Redis run"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    # Internal subcommands: the servers and the load generator run in their own processes.
    parser.add_argument(
        "--serve", choices=("bare", "gateway", "gateway-inloop"), help=argparse.SUPPRESS
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.serve, args.folder / "model", args.port, dict(os.environ))
        return 0
    if args.load:
        keys = json.loads(args.keys.read_text())
        result = asyncio.run(
            load(args.port, args.connections, args.duration, bodies(args.folder), keys)
        )
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="bastion-gateway-bench-") as tmp:
        folder = Path(tmp)
        model_dir = prepare_model(folder, args.model)
        env = workspace_environ(folder / "workspace")
        keys = prepare_workspace(env)
        (folder / "keys-workspace.json").write_text(json.dumps(keys))
        variants: dict[str, dict[str, str]] = {"bare": env, "gateway": env, "gw-inloop": env}
        drop: Callable[[], None] | None = None
        replica_note = "replica: off"
        if args.replica != "off":
            database = postgres_database()
            if database is not None and redis_reachable(args.redis_url):
                url, drop = database
                replica_env = workspace_environ(folder / "replica", url, args.redis_url)
                replica_keys = prepare_workspace(replica_env)
                (folder / "keys-replica.json").write_text(json.dumps(replica_keys))
                variants["replica"] = replica_env
                replica_note = "replica: PostgreSQL audit, Redis rate limits"
            elif args.replica == "on":
                print("replica mode needs PostgreSQL and Redis", file=sys.stderr)
                return 2
            else:
                if database is not None:
                    database[1]()
                replica_note = "replica: skipped (PostgreSQL or Redis not reachable)"
        try:
            results = benchmark(folder, model_dir, variants, args)
        finally:
            if drop is not None:
                drop()
        report(results, args, replica_note)

        timings, profile = asyncio.run(in_process(model_dir, env, keys, bodies(folder), args.calls))
        bare_t, gateway_t = timings["bare"], timings["gateway"]
        print(f"\nin process ({args.calls} calls each, interleaved, no sockets):")
        print(f"{'app':10} {'p50 ms':>8} {'p99 ms':>8}")
        for name, values in timings.items():
            p50_ms, p99_ms = 1e3 * percentile(values, 0.5), 1e3 * percentile(values, 0.99)
            print(f"{name:10} {p50_ms:8.3f} {p99_ms:8.3f}")
        p50 = 1e3 * (percentile(gateway_t, 0.5) - percentile(bare_t, 0.5))
        p99 = 1e3 * (percentile(gateway_t, 0.99) - percentile(bare_t, 0.99))
        print(f"overhead of the guard chain: p50 {p50:.3f} ms, p99 {p99:.3f} ms (goal < 1 ms)")
        print("\ncProfile of the gateway in process (top by own time):")
        print(profile)

        replica = "replica" in variants
        rates = asyncio.run(limiter_rates(args.redis_url if replica else None))
        print("rate limiter alone, 16 concurrent callers in process:")
        for name, rate in rates.items():
            print(f"  {name:22} {rate:9.0f} checks/s  {1e6 / rate:7.1f} us per check")
    return 0


def benchmark(
    folder: Path, model_dir: Path, variants: dict[str, dict[str, str]], args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    """Start every server, then run the load on each, ``rounds`` times in rotating order."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        ports = {
            name: stack.enter_context(server(_KINDS.get(name, "gateway"), folder, model_dir, env))[
                0
            ]
            for name, env in variants.items()
        }
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                keys = folder / f"keys-{'replica' if name == 'replica' else 'workspace'}.json"
                results[name].append(
                    run_load(folder, keys, ports[name], args.connections, args.duration)
                )
    return results


def report(
    results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, replica_note: str
) -> None:
    load = os.getloadavg()
    print(
        f"model {args.model}; {args.connections} connections, {args.duration:g} s per run, "
        f"{args.rounds} rounds interleaved; {os.cpu_count()} cores; "
        f"load average {load[0]:.2f}; {replica_note}; "
        f"python {sys.version.split()[0]}"
    )
    print(
        f"{'server':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8} "
        f"{'(paired)':>9}  statuses"
    )
    bare = results["bare"]
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        paired = statistics.median(r["rps"] / b["rps"] for r, b in zip(runs, bare, strict=True))
        codes: dict[str, int] = {}
        for r in runs:
            for code, count in r["statuses"].items():
                codes[code] = codes.get(code, 0) + count
        ratio = rps / statistics.median(b["rps"] for b in bare)
        print(
            f"{name:10} {rps:8.0f} {p50:8.2f} {p99:8.2f} {ratio:7.1%} {paired:8.1%}   "
            + " ".join(f"{code}:{count}" for code, count in sorted(codes.items()))
        )
    print("goal: gateway >= 90% of bare, replica >= 80%")


if __name__ == "__main__":
    raise SystemExit(main())
