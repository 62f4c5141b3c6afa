"""The gateway's ASGI application: routing, the Open Inference Protocol v2, the guard chain.

(API not yet stable.) :func:`create_app` builds a :class:`Gateway`, a plain ASGI application
(no framework, no middleware stack: a request is one coroutine calling the guards in order).

Routes (KServe Open Inference Protocol v2, REST):

==========================================  =================================================
``GET  /v2/health/live``                    liveness (no key)
``GET  /v2/health/ready``                   readiness: models loaded, backing services up
                                            (no key)
``GET  /v2``                                server metadata
``GET  /v2/models/{name}``                  model metadata (``model.infer`` or ``model.read``)
``GET  /v2/models/{name}/ready``            model readiness (same permissions)
``POST /v2/models/{name}/infer``            inference (``model.infer``)
``GET  /metrics``                           Prometheus metrics (``gateway.operate``)
``GET  /openapi.json``                      the OpenAPI document
==========================================  =================================================

The guards of an inference, in order (each its own module):

1. availability: the gateway has started and the audit log keeps up, else ``503``
   (:mod:`~bastion.gateway.audit`; fail closed unless ``gateway.fail_open``);
2. authentication, role and model scope: ``401``/``403`` (:mod:`~bastion.gateway.auth`);
3. rate limits per key and per client address: ``429`` with ``Retry-After``
   (:mod:`~bastion.gateway.ratelimit`). Requests whose key fails, and requests to unknown
   routes, are limited too, under one shared anonymous key and their address, so that
   guessing keys or paths is throttled like everything else;
4. request limits: body size ``413``, JSON depth and elements, the tensor against the model's
   signature, batch, NaN/Inf and value range ``422`` (:mod:`~bastion.gateway.validation`);
5. extraction monitor: a key it has blocked gets ``403`` (:mod:`~bastion.gateway.extraction`);
6. execution limits: concurrency cap ``503``, deadline ``504`` (:mod:`~bastion.gateway.execution`);
7. predict, then the extraction monitor observes the query (queued, processed off the path);
8. output hardening per role (:mod:`~bastion.gateway.output`);
9. audit and metrics of every request (:mod:`~bastion.gateway.audit`,
   :mod:`~bastion.gateway.metrics`).

Every request has one deadline, ``gateway.timeout_seconds`` from its first byte, enforced by a
shared watchdog (:class:`~bastion.gateway.execution.Deadlines`): past it, a request still
receiving its body gets ``408``, one waiting for its prediction ``504``, anything else ``503``.

Audit records: one entry per request, written in a ``gateway.requests`` event that holds a
flushed batch's requests of one key and model (actor: the key's principal, or ``anonymous``;
subject ``model:<name>`` or ``gateway``; each entry: its time, key id, client address, method,
route, status, decision, reason of a refusal, latency in microseconds, model version, batch
size, the client's request id, and the redacted payload if ``gateway.audit_payloads``; read
them back with :func:`~bastion.gateway.audit.request_entries`).
Two kinds of refusal are recorded as counts instead, one ``gateway.requests.refused`` event per
key, address and reason per flush (see :meth:`~bastion.gateway.audit.AuditWriter.tally`): rate
limited requests, and requests refused while the gateway is unavailable. Both come in floods
by nature, and writing each one would let a flood exhaust the audit log (then every client
would be refused, fail closed). Health checks are counted in the metrics only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bastion import __version__
from bastion.config import GatewaySettings
from bastion.core.audit import AuditRecord
from bastion.core.principals import Permission, Principal
from bastion.errors import GatewayError, ServiceUnavailableError
from bastion.gateway.audit import AuditSink, AuditWriter, payload_details
from bastion.gateway.auth import Authenticator, KeySource, secret_from_headers
from bastion.gateway.execution import Deadlines, Executor
from bastion.gateway.extraction import ExtractionAlert, ExtractionMonitor
from bastion.gateway.metrics import CONTENT_TYPE, Metrics
from bastion.gateway.models import ModelSet, ServedEntry
from bastion.gateway.openapi import openapi_document
from bastion.gateway.output import OutputHardener
from bastion.gateway.ratelimit import RateLimiter, make_rate_limiter
from bastion.gateway.responses import (
    JSON_HEADERS,
    Receive,
    Rejection,
    Scope,
    Send,
    dumps,
    send_bytes,
)
from bastion.gateway.validation import (
    ClientDisconnected,
    check_content_length,
    check_json_structure,
    parse_infer,
    read_body,
)

__all__ = ["ExtractionGuard", "Gateway", "create_app"]

logger = logging.getLogger(__name__)

_ANONYMOUS_KEY = "-"
_NO_MODEL = "-"
_MODELS_PREFIX = "/v2/models/"
_METRICS_HEADERS = (
    (b"content-type", CONTENT_TYPE.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)

# Routes: name -> allowed method. Model routes carry the model name separately.
_LIVE, _READY, _SERVER, _METRICS, _OPENAPI = "live", "ready", "server", "metrics", "openapi"
_MODEL, _MODEL_READY, _INFER = "model", "model_ready", "infer"
_FIXED_ROUTES = {
    "/v2/health/live": _LIVE,
    "/v2/health/ready": _READY,
    "/v2": _SERVER,
    "/metrics": _METRICS,
    "/openapi.json": _OPENAPI,
}
_METHODS = {
    _LIVE: "GET",
    _READY: "GET",
    _SERVER: "GET",
    _METRICS: "GET",
    _OPENAPI: "GET",
    _MODEL: "GET",
    _MODEL_READY: "GET",
    _INFER: "POST",
}
_TEMPLATES = {
    _LIVE: "/v2/health/live",
    _READY: "/v2/health/ready",
    _SERVER: "/v2",
    _METRICS: "/metrics",
    _OPENAPI: "/openapi.json",
    _MODEL: "/v2/models/{name}",
    _MODEL_READY: "/v2/models/{name}/ready",
    _INFER: "/v2/models/{name}/infer",
}
_MODEL_READ = (Permission.MODEL_INFER, Permission.MODEL_READ)


class ExtractionGuard(Protocol):
    """What the gateway calls of :class:`bastion.gateway.extraction.ExtractionMonitor`."""

    def blocked(self, key_id: str) -> bool:
        """Whether ``key_id`` is blocked (O(1))."""
        ...

    def observe(self, key_id: str, inputs: NDArray[Any], labels: NDArray[Any]) -> None:
        """Queue one answered batch for analysis (O(1))."""
        ...

    async def start(self) -> None:
        """Start the background analysis."""
        ...

    async def stop(self) -> None:
        """Stop it."""
        ...

    def stats(self) -> dict[str, int | float]:
        """Counters for the metrics."""
        ...


class _Call:
    """What one request has gathered so far (for its answer, audit record and metrics)."""

    __slots__ = (
        "address",
        "batch",
        "body",
        "entry",
        "method",
        "name",
        "phase",
        "principal",
        "reason",
        "request_id",
        "route",
        "started",
    )

    def __init__(self, started: float, route: str | None, name: str | None, method: str) -> None:
        self.started = started
        self.route = route
        self.name = name
        self.method = method
        self.address = "-"
        self.principal: Principal | None = None
        self.entry: ServedEntry | None = None
        self.phase = "start"
        self.reason = ""
        self.request_id: str | None = None
        self.batch = 0
        self.body: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = JSON_HEADERS
    extra: tuple[tuple[bytes, bytes], ...] = ()
    metric: str | None = None
    tally: bool = False


class Gateway:
    """The ASGI application. Build it with :func:`create_app`.

    Run it under any ASGI server with lifespan support (``bastion serve`` uses uvicorn), or in
    process with ``async with gateway: ...``, which runs the same startup and shutdown as the
    lifespan protocol (``httpx.ASGITransport`` does not send lifespan events).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        authenticator: Authenticator,
        models: ModelSet,
        audit: AuditWriter,
        limiter: RateLimiter,
        extraction: ExtractionGuard | None,
        executor: Executor,
        deadlines: Deadlines,
        hardener: OutputHardener,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.auth = authenticator
        self.models = models
        self.audit = audit
        self.limiter = limiter
        self.extraction = extraction
        self.executor = executor
        self.deadlines = deadlines
        self.hardener = hardener
        self.metrics = Metrics(self._gauges)
        self.refused: dict[str, str] = {}
        self._clock = clock
        self._fail_open = settings.fail_open
        self._started = False
        self._limiter_down_until = 0.0
        self._openapi: bytes | None = None

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Start the background tasks, prepare every model, and start serving.

        A model whose probe fails is refused (logged, audited) and not served. If startup
        itself fails, whatever was started is stopped again (audit records written) before
        the error propagates.
        """
        if self._started:
            return
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        self._started = True
        self._audit_event(
            "gateway.start",
            "gateway",
            {"models": {e.name: e.version for e in self.models.values()}},
        )

    async def _start(self) -> None:
        await self.deadlines.start()
        await self.audit.start()
        await self.auth.start()
        await self.executor.start()
        kept = []
        for entry in self.models.values():
            try:
                await self.executor.prepare(entry)
            except GatewayError as exc:
                # The reason is the message; a traceback would add nothing.
                logger.error("not serving model %s: %s", entry.name, exc)  # noqa: TRY400
                self.refused[entry.name] = str(exc)
                self._audit_event(
                    "gateway.model.refused",
                    f"model:{entry.name}",
                    {"version": entry.version, "reason": str(exc)[:1000]},
                )
            else:
                kept.append(entry)
        self.models = ModelSet(kept)
        self._openapi = dumps(openapi_document(self.settings, self.models))
        if self.extraction is not None:
            await self.extraction.start()

    async def shutdown(self) -> None:
        """Stop serving, stop the background tasks, and write every audit record accepted."""
        if not self._started:
            return
        self._started = False
        await self._stop(record=True)

    async def _stop(self, *, record: bool = False) -> None:
        # Each part's stop is safe to call when it never started. The audit writer goes last:
        # everything before it may still record events. ``record``: end the trail with the
        # counted refusals, then gateway.stop, so that nothing follows the stop.
        if self.extraction is not None:
            await self.extraction.stop()
        await self.limiter.close()
        await self.auth.stop()
        await self.deadlines.stop()
        await self.executor.stop()
        if record:
            self.audit.drain_tallies()
            self._audit_event("gateway.stop", "gateway", {})
        await self.audit.stop()

    async def __aenter__(self) -> Gateway:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def ready(self) -> bool:
        """Serving, with models, fresh keys, a working audit log and rate limiter."""
        return (
            self._started
            and len(self.models) > 0
            and self.auth.available
            and (self.audit.accepting or self._fail_open)
            and time.monotonic() >= self._limiter_down_until
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # report any failure to the server, which exits
                    logger.exception("gateway startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        route = _FIXED_ROUTES.get(path)
        name = None
        if route is None and path.startswith(_MODELS_PREFIX):
            route, name = _model_route(path)
        if (route is _LIVE or route is _READY) and method == "GET":
            await self._health(route, send, started)
            return
        call = _Call(started, route, name, method)
        client = scope.get("client")
        if client:
            call.address = str(client[0])
        handle = self.deadlines.enter()
        try:
            answer = await self._dispatch(call, scope, receive)
        except Rejection as rejection:
            answer = self._refusal(call, rejection)
        except asyncio.CancelledError:
            if not self.deadlines.expired(handle):
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            answer = self._refusal(call, _timeout(call.phase))
        except ClientDisconnected:
            call.reason = "client disconnected"
            self.deadlines.leave(handle)
            self._record(call, 499, "disconnected", tally=False)
            return
        except Exception:
            logger.exception("gateway: unexpected error")
            answer = self._refusal(
                call,
                Rejection(500, "internal error", reason="unexpected error", metric="error"),
            )
        finally:
            self.deadlines.leave(handle)
        await send_bytes(send, answer.status, answer.body, answer.headers, answer.extra)
        self._record(call, answer.status, answer.metric, tally=answer.tally)

    def _refusal(self, call: _Call, rejection: Rejection) -> _Answer:
        call.reason = rejection.reason
        return _Answer(
            rejection.status,
            dumps({"error": rejection.message}),
            JSON_HEADERS,
            rejection.headers,
            rejection.metric,
            tally=rejection.tally,
        )

    async def _health(self, route: str, send: Send, started: float) -> None:
        if route is _LIVE:
            await send_bytes(send, 200, b'{"live":true}')
            status = 200
        else:
            status = 200 if self.ready else 503
            await send_bytes(
                send, status, b'{"ready":true}' if status == 200 else b'{"ready":false}'
            )
        self.metrics.observe(_NO_MODEL, status, time.perf_counter() - started, None)

    # ------------------------------------------------------------------ the guard chain

    async def _dispatch(self, call: _Call, scope: Scope, receive: Receive) -> _Answer:
        route = call.route
        if route is None or _METHODS[route] != call.method:
            await self._limit(call, anonymous=True)
            if route is None:
                raise Rejection(404, "not found", reason="no such route", metric="not_found")
            raise Rejection(
                405,
                "method not allowed",
                reason=f"{call.method[:16]} not allowed",
                metric="method_not_allowed",
                headers=((b"allow", _METHODS[route].encode()),),
            )
        self._gate()
        authorization = api_key = content_length = None
        for header, value in scope["headers"]:
            if header == b"authorization":
                authorization = value
            elif header == b"x-api-key":
                api_key = value
            elif header == b"content-length":
                content_length = value
        call.phase = "auth"
        try:
            principal = self.auth.authenticate(secret_from_headers(authorization, api_key))
        except Rejection as rejection:
            if rejection.status == 401:
                call.reason = rejection.reason
                await self._limit(call, anonymous=True)
            raise
        call.principal = principal
        await self._limit(call, anonymous=False)
        if route is _INFER:
            return await self._infer(call, receive, content_length)
        if route is _MODEL or route is _MODEL_READY:
            entry = self._entry(call, _MODEL_READ)
            if route is _MODEL:
                metadata = entry.metadata()
                metadata["outputs"] = self.hardener.metadata_outputs(entry, principal.role)
                # Clients batch up to this many samples per request (bastion's RemoteTarget
                # reads it) instead of discovering the limit through refusals.
                metadata["parameters"]["max_batch"] = self.settings.max_batch
                return _Answer(200, dumps(metadata))
            return _Answer(200, dumps({"name": entry.name, "ready": self.ready}))
        if route is _SERVER:
            return _Answer(
                200, dumps({"name": "bastion", "version": __version__, "extensions": []})
            )
        if route is _METRICS:
            self.auth.authorize(principal, Permission.GATEWAY_OPERATE)
            return _Answer(200, self.metrics.render(), _METRICS_HEADERS)
        # _OPENAPI
        return _Answer(200, self._openapi or dumps(openapi_document(self.settings, {})))

    def _gate(self) -> None:
        if not self._started:
            raise Rejection(
                503, "service unavailable", reason="gateway not started", metric="unavailable"
            )
        if not self.audit.accepting and not self._fail_open:
            raise Rejection(
                503,
                "service unavailable",
                reason="audit log queue full" if self.audit.full else "audit log unavailable",
                metric="unavailable",
                tally=True,
            )

    async def _limit(self, call: _Call, *, anonymous: bool) -> None:
        call.phase = "ratelimit"
        key_id = _ANONYMOUS_KEY if anonymous or call.principal is None else call.principal.key_id
        try:
            decision = await self.limiter.check(key_id, call.address)
        except ServiceUnavailableError:
            self._limiter_down_until = time.monotonic() + 1.0
            if self._fail_open:
                return
            raise Rejection(
                503, "service unavailable", reason="rate limiter unavailable", metric="unavailable"
            ) from None
        if not decision.allowed:
            raise Rejection(
                429,
                "too many requests",
                reason=f"rate limit ({decision.scope})",
                metric="rate_limited",
                headers=((b"retry-after", str(max(1, math.ceil(decision.retry_after))).encode()),),
                tally=True,
            )

    def _entry(self, call: _Call, permissions: tuple[Permission, ...]) -> ServedEntry:
        principal = call.principal
        assert principal is not None
        assert call.name is not None
        # Scope first: a key limited to some models learns nothing about the others.
        Authenticator.authorize_any(principal, permissions, call.name)
        entry: ServedEntry | None = self.models.get(call.name)
        if entry is None:
            raise Rejection(404, "not found", reason="no such model", metric="not_found")
        call.entry = entry
        return entry

    async def _infer(self, call: _Call, receive: Receive, content_length: bytes | None) -> _Answer:
        entry = self._entry(call, (Permission.MODEL_INFER,))
        principal = call.principal
        assert principal is not None
        settings = self.settings
        call.phase = "body"
        check_content_length(content_length, settings.max_body_bytes)
        body = await read_body(receive, settings.max_body_bytes)
        if settings.audit_payloads:
            call.body = body
        call.phase = "validate"
        check_json_structure(body, settings.max_json_depth, settings.max_json_elements)
        role = principal.role
        request = parse_infer(
            body,
            entry,
            max_batch=settings.max_batch,
            max_elements=settings.max_json_elements,
            output_names=self.hardener.output_names(entry, role),
        )
        call.request_id = request.id
        call.batch = int(request.batch.shape[0])
        extraction = self.extraction
        if extraction is not None and extraction.blocked(principal.key_id):
            raise Rejection(
                403, "forbidden", reason="key blocked by the extraction monitor", metric="blocked"
            )
        call.phase = "execute"
        scores = await self.executor.run(entry, request.batch)
        call.phase = "respond"
        if extraction is not None:
            labels: NDArray[np.int64] = scores.argmax(axis=1)
            extraction.observe(principal.key_id, request.batch, labels)
        outputs = self.hardener.harden(entry, role, scores)
        if request.outputs is not None:
            outputs = [o for o in outputs if o["name"] in request.outputs]
        response: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version}
        if request.id is not None:
            response["id"] = request.id
        response["outputs"] = outputs
        return _Answer(200, dumps(response))

    # ------------------------------------------------------------------ audit and metrics

    def _record(self, call: _Call, status: int, metric: str | None, *, tally: bool) -> None:
        elapsed = time.perf_counter() - call.started
        entry = call.entry
        model = entry.name if entry is not None else _NO_MODEL
        self.metrics.observe(model, status, elapsed, metric)
        principal = call.principal
        actor = principal.actor if principal is not None else "anonymous"
        subject = f"model:{model}" if entry is not None else "gateway"
        route = _TEMPLATES[call.route] if call.route is not None else "unknown"
        if tally:
            self.audit.tally(
                actor,
                subject,
                key_id=principal.key_id if principal is not None else None,
                address=call.address,
                route=route,
                status=status,
                reason=call.reason,
            )
            return
        details: dict[str, Any] = {
            "address": call.address,
            "method": call.method[:16],
            "route": route,
            "status": status,
            "decision": "allowed" if status < 400 else "refused",
            "latency_us": int(elapsed * 1e6),
        }
        if principal is not None:
            details["key_id"] = principal.key_id
        if call.reason:
            details["reason"] = call.reason[:500]
        if entry is not None:
            details["version"] = entry.version
        elif call.name is not None:
            details["model"] = call.name[:100]
        if call.batch:
            details["batch"] = call.batch
        if call.request_id is not None:
            details["request_id"] = call.request_id
        if call.body is not None:
            details.update(payload_details(call.body))
        self.audit.request(actor, subject, self._clock(), details)

    def _audit_event(self, action: str, subject: str, details: dict[str, Any]) -> None:
        self.audit.submit(
            AuditRecord(action, subject, details, actor="bastion-gateway"), force=True
        )

    def _gauges(self) -> dict[str, float]:
        auth = self.auth
        audit = self.audit
        gauges: dict[str, float] = {
            "in_flight": self.executor.active,
            "models": len(self.models),
            "ready": float(self.ready),
            "audit_queue": audit.pending,
            "audit_failing": float(audit.failing),
            "audit_written_total": audit.written,
            "audit_dropped_total": audit.dropped,
            "audit_invalid_total": audit.invalid,
            "keys": auth.size,
            "keys_age_seconds": auth.age if math.isfinite(auth.age) else -1.0,
            "saturated_total": self.executor.saturated,
        }
        if self.extraction is not None:
            for name, value in self.extraction.stats().items():
                gauges[f"extraction_{name}"] = float(value)
        return gauges


def _model_route(path: str) -> tuple[str | None, str | None]:
    rest = path[len(_MODELS_PREFIX) :]
    name, _, tail = rest.partition("/")
    if not name:
        return None, None
    if not tail:
        return _MODEL, name
    if tail == "infer":
        return _INFER, name
    if tail == "ready":
        return _MODEL_READY, name
    return None, None


def _timeout(phase: str) -> Rejection:
    if phase == "body":
        return Rejection(
            408, "request timeout", reason="body not received in time", metric="body_timeout"
        )
    if phase == "execute":
        return Rejection(504, "timeout", reason="prediction not finished in time", metric="timeout")
    return Rejection(
        503, "service unavailable", reason=f"deadline passed during {phase}", metric="timeout"
    )


def create_app(
    settings: GatewaySettings,
    keys: KeySource,
    models: ModelSet,
    audit: AuditSink,
    *,
    redis_url: str = "",
    rate_limiter: RateLimiter | None = None,
    extraction: ExtractionGuard | None = None,
    rng: np.random.Generator | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Gateway:
    """Build the gateway with every guard on, as ``settings`` configures them.

    Args:
        settings: the ``gateway`` settings.
        keys: the API keys: a fixed :class:`~bastion.core.principals.KeyTable`, or a function
            loading one (``KeyStore(db, None).snapshot``), reloaded every
            ``key_refresh_seconds``.
        models: the models to serve (see :mod:`bastion.gateway.models`).
        audit: the audit log (``workspace.audit()``) or anything with ``append_many``.
        redis_url: share rate limits in this Redis; empty for limits in memory.
        rate_limiter: a limiter to use instead of the one ``make_rate_limiter`` builds.
        extraction: an extraction monitor to use instead of the one built from
            ``settings.extraction`` (none when that is disabled).
        rng: the noise source of output hardening.
        clock: the current time (key expiry, audit timestamps).

    Returns:
        The ASGI application; serve it with lifespan on, or ``async with`` it in process.
    """
    now = clock or (lambda: datetime.now(UTC))
    writer = AuditWriter(
        audit,
        batch_size=settings.audit_batch_size,
        flush_seconds=settings.audit_flush_seconds,
        queue_max=settings.audit_queue_max,
        shutdown_seconds=settings.audit_shutdown_seconds,
    )
    if extraction is None and settings.extraction.enabled:
        extraction = ExtractionMonitor(
            settings.extraction,
            on_alert=_alert_recorder(writer),
            process=settings.extraction.worker_process,
        )
    return Gateway(
        settings,
        authenticator=Authenticator(
            keys,
            refresh_seconds=settings.key_refresh_seconds,
            fail_open=settings.fail_open,
            clock=now,
        ),
        models=models,
        audit=writer,
        limiter=rate_limiter or make_rate_limiter(settings, redis_url),
        extraction=extraction,
        executor=Executor(
            settings.concurrency,
            inline_max_seconds=settings.inline_max_seconds,
            max_batch=settings.max_batch,
        ),
        deadlines=Deadlines(settings.timeout_seconds),
        hardener=OutputHardener(settings.output, rng),
        clock=now,
    )


def _alert_recorder(writer: AuditWriter) -> Callable[[ExtractionAlert], None]:
    """An ``on_alert`` callback that writes each extraction alert to the audit log."""

    def record(alert: ExtractionAlert) -> None:
        details: dict[str, Any] = {"queries": int(alert.queries), "blocked": bool(alert.blocked)}
        if math.isfinite(alert.statistic):
            details["statistic"] = round(float(alert.statistic), 6)
        logger.warning("extraction alert for key %s: %s", alert.key_id, details)
        writer.submit(
            AuditRecord(
                "gateway.extraction.alert",
                f"key:{alert.key_id}"[:200],
                details,
                actor="bastion-gateway",
            )
        )

    return record
