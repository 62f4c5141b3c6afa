"""The demo's serving act: the promoted model behind ``bastion serve``, called and attacked.

(API not yet stable.) After the registry act has put the demo model in production, the
gateway is started in this process on ``127.0.0.1`` and a free port, serving the production
version through the registry (checked out, digests and signature verified, loaded from
safetensors), with the workspace's gateway settings except a low per-key rate limit
(:data:`DEMO_PER_KEY_PER_MINUTE`) so that the limit trips within the demo. Then, over real
HTTP:

1. the client application's key asks for a prediction and gets the hardened answer (the top
   class and its score at two decimals), while the SRE's key sees every score;
2. no key, an unknown key and a forged key built on the client's real key id get the same
   ``401``, byte for byte (nothing tells whether a key exists);
3. the client's key on a model outside its scope, and an admin key (no ``model.infer``) on the
   demo model, get ``403``;
4. a NaN, a wrong shape and an out-of-range pixel get ``422`` with generic messages (the
   detail goes to the audit log only);
5. the SRE's key assesses the served model as a black box through the gateway
   (:class:`~bastion.assess.targets.remote_target.RemoteTarget`): model extraction by
   substitute training and equation solving (Tramèr et al. 2016, arXiv:1609.02943) and
   invariance; the same equation solving is tried with the client's hardened answers; the
   reports are written to ``workdir/assessment/`` (:data:`REPORT_DIR`) and the result is
   recorded in the audit log against the model's digest;
6. a burst from the client's key trips the per-key limit: ``429`` with ``Retry-After``;
7. the SRE reads ``/metrics``; the gateway is stopped gracefully (its batched audit writer
   flushes) and the audit trail of its requests is shown.

Each part is a :class:`~bastion.demo.DemoStep` whose ``ok`` holds only when the outcome is the
expected one (the ``429`` really came, the bodies really are identical, ...).

:func:`serve_in_background` runs a gateway under :class:`~bastion.gateway.server.GatewayServer`
in a daemon thread (the demo, and the tests and benchmarks that need a real socket, use it).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from bastion.config import GatewaySettings
from bastion.core.audit import AuditEvent
from bastion.core.principals import KeyStore, Role
from bastion.core.workspace import Workspace
from bastion.demo import DemoStep
from bastion.demo_registry import DEMO_MODEL_NAME, DemoKeys
from bastion.errors import BastionError, GatewayError
from bastion.gateway.app import Gateway
from bastion.gateway.audit import REQUESTS_ACTION, request_entries
from bastion.gateway.models import ServedEntry

__all__ = [
    "DEMO_PER_KEY_PER_MINUTE",
    "REPORT_DIR",
    "demo_gateway_settings",
    "report_path",
    "serve_and_attack",
    "serve_in_background",
]

#: The per-key rate limit of the demo's gateway (requests per minute; the default is 100).
DEMO_PER_KEY_PER_MINUTE = 30
#: Where the assessment's reports go, relative to the demo's folder.
REPORT_DIR = "assessment"

_HOST = "127.0.0.1"
_INFER = f"/v2/models/{DEMO_MODEL_NAME}/infer"
_METADATA = f"/v2/models/{DEMO_MODEL_NAME}"
_OUT_OF_SCOPE = "/v2/models/fraud-detector/infer"
_BURST_MAX = 3 * DEMO_PER_KEY_PER_MINUTE  # calls before the burst gives up on a 429


# ------------------------------------------------------------------ a server in a thread


@contextlib.contextmanager
def serve_in_background(
    app: Gateway, *, host: str = _HOST, port: int = 0, start_timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` with :class:`~bastion.gateway.server.GatewayServer` in a daemon thread.

    Yields the base URL (``port`` 0: a free port chosen by the system) once the gateway
    serves: its lifespan startup has run. On exit the server is stopped gracefully and the
    thread joined, so the gateway's shutdown (for the audit writer: the flush of every record
    accepted) has finished. Uvicorn installs no signal handlers outside the main thread.

    Raises:
        GatewayError: the socket could not be bound or the gateway did not start within
            ``start_timeout`` seconds.
    """
    from bastion.gateway.server import GatewayServer

    server = GatewayServer(app, host, port, graceful_seconds=10.0)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="bastion-gateway", daemon=True)
    thread.start()
    if not server.wait_ready(start_timeout) or server.address is None:
        server.stop()
        thread.join(start_timeout)
        cause = failure[0] if failure else None
        if isinstance(cause, GatewayError):
            raise cause
        raise GatewayError("the gateway did not start in time") from cause
    bound_host, bound_port = server.address
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()
        thread.join()


# ------------------------------------------------------------------ the act


def report_path(workdir: Path) -> Path:
    """Where the demo writes the assessment's HTML report (``workdir/assessment/report.html``)."""
    return workdir / REPORT_DIR / "report.html"


def demo_gateway_settings(workspace: Workspace) -> GatewaySettings:
    """The workspace's gateway settings with the demo's changes (defaults are untouched).

    Loopback on a free port, and a per-key limit of :data:`DEMO_PER_KEY_PER_MINUTE` so that
    a burst trips it quickly. Every other guard keeps its configured value.
    """
    gateway = workspace.settings.gateway
    return gateway.model_copy(
        update={
            "host": _HOST,
            "port": 0,
            "rate_limit": gateway.rate_limit.model_copy(
                update={"per_key_per_minute": DEMO_PER_KEY_PER_MINUTE}
            ),
        }
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    """One HTTP exchange as the demo shows it."""

    status: int
    body: bytes
    headers: httpx.Headers

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Caller:
    """Sends the demo's requests and counts them by status (for the audit check)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.sent: Counter[int] = Counter()
        self.remote = 0  # requests sent by the assessment's remote targets

    def __call__(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> _Answer:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        if body is not None:
            content = json.dumps(body).encode()
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = self.client.request(method, path, headers=headers, content=content)
        self.sent[response.status_code] += 1
        return _Answer(response.status_code, response.content, response.headers)


def _infer_body(
    rows: NDArray[Any] | list[list[float]], *, shape: Sequence[int] | None = None
) -> dict[str, Any]:
    data = np.asarray(rows, dtype=np.float64)
    return {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(shape) if shape is not None else [int(data.shape[0]), 64],
                "datatype": "FP32",
                "data": data.reshape(-1).tolist(),
            }
        ]
    }


def _held_out() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The digits the demo model was not trained on (the split of ``train_demo_model``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    y = np.asarray(digits.target, dtype=np.int64)
    _, x_test, _, y_test = train_test_split(
        np.asarray(digits.data, dtype=np.float32), y, test_size=0.25, random_state=0, stratify=y
    )
    return np.asarray(x_test, dtype=np.float32), np.asarray(y_test, dtype=np.int64)


def serve_and_attack(
    workspace: Workspace, keys: DemoKeys, report: Callable[[DemoStep], None], workdir: Path
) -> Path | None:
    """Serve the production demo model, call it as clients and attackers would, and assess it.

    Args:
        workspace: the demo's workspace (the registry holds the model in production).
        keys: the principals and secrets of the registry act.
        report: receives each :class:`~bastion.demo.DemoStep`.
        workdir: the demo's folder; the reports go to ``workdir / REPORT_DIR``.

    Returns:
        The HTML report of the assessment, or None if it could not run.

    Raises:
        BastionError: the gateway could not be started at all.
    """
    from bastion.gateway.app import create_app
    from bastion.gateway.models import load_production_models
    from bastion.registry import Registry

    audit = workspace.audit()
    store = KeyStore(workspace.database, audit)
    admin = store.create("ops-admin", Role.ADMIN, actor=workspace.actor())
    models, refusals = load_production_models(Registry(workspace), [DEMO_MODEL_NAME], audit=audit)
    if refusals:
        raise GatewayError(f"the gateway refused the demo model: {refusals[0].reason}")
    settings = demo_gateway_settings(workspace)
    app = create_app(
        settings,
        KeyStore(workspace.database, None).snapshot,
        models,
        audit,
        redis_url=workspace.settings.redis_url,
    )
    x, y = _held_out()
    html: Path | None = None
    with (
        serve_in_background(app, host=settings.host, port=settings.port) as url,
        httpx.Client(base_url=url, timeout=30.0) as client,
    ):
        call = _Caller(client)
        entry = models[DEMO_MODEL_NAME]
        report(
            DemoStep(
                f"Started the gateway on {url} serving {DEMO_MODEL_NAME} "
                f"v{entry.version} from the registry",
                "only the production version is served, after its digests and signature "
                "were verified again on checkout; every guard is on",
                app.ready and DEMO_MODEL_NAME in app.models,
                (
                    f"model      {DEMO_MODEL_NAME} v{entry.version}  "
                    f"{entry.model.platform}  digest {entry.digest[:23]}...",
                    f"limits     {DEMO_PER_KEY_PER_MINUTE} requests/minute per key (demo), "
                    f"{settings.rate_limit.per_address_per_minute} per address, "
                    f"batch <= {settings.max_batch}, body <= {settings.max_body_bytes} bytes",
                    "output     client: top-"
                    f"{settings.output.client.top_k} at {settings.output.client.decimals} "
                    f"decimals; sre: {settings.output.sre.mode} at "
                    f"{settings.output.sre.decimals} decimals",
                ),
            )
        )
        _authorised(call, keys, x, y, entry, report)
        _unauthenticated(call, keys, report)
        _forbidden(call, keys, admin.secret, x, report)
        _invalid(call, keys, x, report)
        html = _assess(call, url, keys, x, y, workspace, workdir, report)
        _rate_limited(call, keys, x, report)
        _metrics(call, keys, report)
    _audit_trail(workspace, call, report)
    return html


def _authorised(
    call: _Caller,
    keys: DemoKeys,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    entry: ServedEntry,
    report: Callable[[DemoStep], None],
) -> None:
    # The example: among the first held-out digits, the one the model is surest of.
    scores = entry.model.predict(x[:20])
    right = np.where(scores.argmax(axis=1) == y[:20], scores.max(axis=1), -1.0)
    pick = int(right.argmax())
    sample = _infer_body(x[pick : pick + 1])
    meta = call("GET", _METADATA, key=keys.client_secret)
    client = call("POST", _INFER, key=keys.client_secret, body=sample)
    sre = call("POST", _INFER, key=keys.sre_secret, body=sample)
    ok = meta.status == client.status == sre.status == 200
    lines = [f"GET  {_METADATA}  {meta.status}  input "
             + (", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in meta.json["inputs"])
                if meta.status == 200 else "?")]  # fmt: skip
    if ok:
        shown = client.json["outputs"][0]["data"]
        nonzero = [(i, v) for i, v in enumerate(shown) if v]
        full = sre.json["outputs"][0]["data"]
        ok = (
            len(nonzero) == 1
            and round(nonzero[0][1], 2) == nonzero[0][1]
            and len(full) == 10
            and all(v > 0 for v in full)
            and nonzero[0][0] == int(np.argmax(full))
        )
        label, score = nonzero[0] if nonzero else (-1, 0.0)
        lines += [
            f"POST {_INFER}  200  (a held-out {int(y[pick])}, both keys)",
            f"     client sees: digit {label}, score {score:.2f}; the other scores withheld",
            f"     sre sees:    {', '.join(f'{v:.4f}' for v in full)}",
        ]
    else:
        lines.append(f"POST {_INFER}  client {client.status}, sre {sre.status}")
    report(
        DemoStep(
            "The client application asked for a prediction with its key",
            "an authorised call is answered, hardened for the caller's role: the client "
            "gets the top class at two decimals, not the score vector an extraction "
            "attack feeds on",
            ok,
            tuple(lines),
        )
    )


def _forged_key(key_id: str) -> str:
    """A well-formed key for ``key_id`` with a random secret (``bst_<id>_<43 characters>``)."""
    return f"bst_{key_id}_{secrets.token_urlsafe(32)[:43]}"


def _unauthenticated(call: _Caller, keys: DemoKeys, report: Callable[[DemoStep], None]) -> None:
    body = _infer_body([[0.0] * 64])
    attempts = (
        ("no key", None),
        ("an unknown key", _forged_key(secrets.token_hex(6))),
        ("the client's key id with a forged secret", _forged_key(keys.client.key_id)),
    )
    answers = [(what, call("POST", _INFER, key=key, body=body)) for what, key in attempts]
    bodies = {a.body for _, a in answers}
    ok = all(a.status == 401 for _, a in answers) and len(bodies) == 1
    report(
        DemoStep(
            "Called without a key, with an unknown key, and with a forged secret for the "
            "client's real key id",
            "no key, no answer; and the refusal is the same byte for byte, so it never "
            "tells whether a key exists",
            ok,
            (
                *(f"{what:<41} {a.status}  {a.body.decode()}" for what, a in answers),
                "identical bodies" if len(bodies) == 1 else "the bodies DIFFER",
            ),
        )
    )


def _forbidden(
    call: _Caller,
    keys: DemoKeys,
    admin_secret: str,
    x: NDArray[np.float32],
    report: Callable[[DemoStep], None],
) -> None:
    body = _infer_body(x[:1])
    scope = call("POST", _OUT_OF_SCOPE, key=keys.client_secret, body=body)
    metrics = call("GET", "/metrics", key=keys.client_secret)
    role = call("POST", _INFER, key=admin_secret, body=body)
    report(
        DemoStep(
            "The client's key asked for another model and for the metrics; an admin key "
            "asked for a prediction",
            "a key reaches only the models in its scope (whether the other model exists "
            "is not revealed) and only what its role allows: the client may not read the "
            "operators' metrics, the admin (keys and audit) may not call inference",
            scope.status == metrics.status == role.status == 403,
            (
                f"client POST {_OUT_OF_SCOPE}  {scope.status}  {scope.body.decode()}",
                f"client GET  /metrics  {metrics.status}  {metrics.body.decode()}",
                f"admin  POST {_INFER}  {role.status}  {role.body.decode()}",
            ),
        )
    )


def _invalid(
    call: _Caller, keys: DemoKeys, x: NDArray[np.float32], report: Callable[[DemoStep], None]
) -> None:
    row = [float(v) for v in x[0]]
    # JSON has no NaN; Python's encoder (and many clients) write the bare token anyway.
    nan = json.dumps(_infer_body([[-1.0, *row[1:]]])).replace('"data": [-1.0,', '"data": [NaN,')
    cases = (
        ("a NaN pixel", call("POST", _INFER, key=keys.client_secret, content=nan.encode())),
        (
            "63 pixels instead of 64",
            call(
                "POST", _INFER, key=keys.client_secret, body=_infer_body([row[:63]], shape=[1, 63])
            ),
        ),
        (
            "a pixel of 255 (range 0-16)",
            call("POST", _INFER, key=keys.client_secret, body=_infer_body([[255.0, *row[1:]]])),
        ),
    )
    report(
        DemoStep(
            "Sent a NaN, a wrong shape and an out-of-range pixel",
            "malformed and out-of-distribution input is refused before it reaches the "
            "model, with a generic message; the detail goes to the audit log",
            all(a.status == 422 for _, a in cases),
            tuple(f"{what:<28} {a.status}  {a.body.decode()}" for what, a in cases),
        )
    )


def _rate_limited(
    call: _Caller, keys: DemoKeys, x: NDArray[np.float32], report: Callable[[DemoStep], None]
) -> None:
    body = _infer_body(x[1:2])
    answered = 0
    limited: _Answer | None = None
    for _ in range(_BURST_MAX):
        answer = call("POST", _INFER, key=keys.client_secret, body=body)
        if answer.status == 429:
            limited = answer
            break
        answered += answer.status == 200
    retry = limited.headers.get("retry-after", "") if limited is not None else ""
    report(
        DemoStep(
            f"Sent a burst from the client's key (limit {DEMO_PER_KEY_PER_MINUTE} per minute)",
            "flooding is cut off per key (and per address) with 429 and a Retry-After the "
            "client can honour",
            limited is not None and retry.isdigit() and int(retry) >= 1,
            (
                f"{answered} more calls answered 200, then "
                + (
                    f"429  {limited.body.decode()}  Retry-After: {retry} s"
                    if limited is not None
                    else f"no 429 after {_BURST_MAX} calls"
                ),
            ),
        )
    )


def _assess(
    call: _Caller,
    url: str,
    keys: DemoKeys,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    workspace: Workspace,
    workdir: Path,
    report: Callable[[DemoStep], None],
) -> Path | None:
    from bastion.assess.data import Dataset
    from bastion.assess.domain import InputDomain
    from bastion.assess.families.extraction import ExtractionConfig
    from bastion.assess.families.invariance import InvarianceConfig
    from bastion.assess.report import write_reports
    from bastion.assess.runner import record, run_assessment
    from bastion.assess.targets.remote_target import RemoteTarget

    domain = InputDomain((1, 8, 8), 0.0, 16.0)
    data = Dataset(x.reshape(-1, 1, 8, 8), y, source="digits held out (450)")
    configs: dict[str, Any] = {
        "extraction": ExtractionConfig(
            budgets=[50, 100, 200], answers=["probabilities", "label"], steps=200
        ),
        "invariance": InvarianceConfig(brightness=[0.1], noise=[0.05], shift=[1]),
    }
    folder = workdir / REPORT_DIR
    try:
        target = RemoteTarget(f"{url}{_METADATA}", domain, api_key=keys.sre_secret)
        try:
            # The substitutes train on one thread by themselves (small_model_threads).
            assessment = run_assessment(target, data, configs, seed=0)
        finally:
            target.close()
            call.remote += target.queries.requests
        reports = write_reports(
            assessment,
            json_path=folder / "report.json",
            html_path=report_path(workdir),
            markdown_path=folder / "summary.md",
        )
        record(workspace.audit(), assessment, reports)
    except BastionError as exc:
        report(
            DemoStep(
                "Assessed the served model through the gateway (SRE key)",
                "the assessment could not run",
                False,
                (str(exc),),
            )
        )
        return None
    lines = [
        f"target   {target.info.name}  ({target.info.access.value}, {target.info.output.value})",
        f"queries  {target.queries.used:,} in {target.queries.requests} HTTP requests, "
        f"{assessment.seconds:.1f} s",
    ]
    for result in assessment.results:
        lines += [f"{result.family:<10} {line}" for line in result.summary]
    refused, outcome = _hardened_extraction(call, url, keys, domain)
    lines.append(f"client key: {outcome}")
    lines += [f"{kind:<4} report  {path}" for kind, path in reports.items()]
    extraction = next((r for r in assessment.results if r.family == "extraction"), None)
    solved = (extraction.details.get("equation_solving") or {}) if extraction else {}
    report(
        DemoStep(
            "Assessed the served model through the gateway as a black box (SRE key)",
            "the red team attacks the live endpoint as an adversary would: from the SRE's "
            "scores (4 decimals) equation solving copies the linear model, from the client's "
            "hardened answers it cannot even start; the result is recorded in the audit log "
            "against the model's digest",
            "html" in reports and solved.get("fidelity", 0.0) >= 0.99 and refused,
            tuple(lines),
        )
    )
    return Path(reports["html"])


def _hardened_extraction(call: _Caller, url: str, keys: DemoKeys, domain: Any) -> tuple[bool, str]:
    """Equation solving through the client's hardened answers: (refused, what happened)."""
    from bastion.assess.privacy.extraction import solve_softmax_regression
    from bastion.assess.targets.remote_target import RemoteTarget

    try:
        target = RemoteTarget(f"{url}{_METADATA}", domain, api_key=keys.client_secret, retries=0)
    except BastionError as exc:
        return False, f"not reachable ({exc})"
    try:
        solved = solve_softmax_regression(
            target.predict_proba,
            domain.shape,
            bounds=(domain.lower, domain.upper),
            rng=np.random.default_rng(0),
        )
    except BastionError as exc:
        return True, f"the same equation solving cannot run on top-1 answers: {exc}"
    finally:
        target.close()
        call.remote += target.queries.requests
    return False, f"equation solving ran on the hardened answers: residual {solved.residual:.2g}"


def _metrics(call: _Caller, keys: DemoKeys, report: Callable[[DemoStep], None]) -> None:
    sre = call("GET", "/metrics", key=keys.sre_secret)
    wanted = ("bastion_gateway_requests_total", "bastion_gateway_rejections_total")
    lines = [
        line
        for line in sre.body.decode(errors="replace").splitlines()
        if line.startswith(wanted) and not line.endswith(" 0.0")
    ]
    report(
        DemoStep(
            "The SRE read the gateway's Prometheus metrics",
            "operators see requests by status and refusals by guard, with their key "
            "(gateway.operate)",
            sre.status == 200 and bool(lines),
            (f"GET /metrics  {sre.status}", *lines),
        )
    )


def _audit_trail(workspace: Workspace, call: _Caller, report: Callable[[DemoStep], None]) -> None:
    events = workspace.audit().events(action="gateway.*")
    requests = request_entries(events)
    tallied = sum(int(e.details.get("count", 0)) for e in events
                  if e.action == "gateway.requests.refused")  # fmt: skip
    alerts = [e for e in events if e.action == "gateway.extraction.alert"]
    sent = call.sent.total() + call.remote
    recorded = Counter(int(e.details.get("status", 0)) for e in requests)
    # Every request sent is either recorded on its own or counted in a tally (rate limited),
    # and each refusal the demo saw is there with its status.
    ok = (
        any(e.action == "gateway.stop" for e in events)
        and len(requests) + tallied == sent
        and all(recorded[s] >= n for s, n in call.sent.items() if s != 429)
    )
    report(
        DemoStep(
            "Stopped the gateway gracefully and read its audit trail",
            "every request is in the hash-chained audit log (who, which model, the decision "
            "and the refusal's reason), one chained event per key and model per batch written "
            "off the request path and flushed at shutdown; rate-limited floods are counted, "
            "not written one by one",
            ok,
            (
                *_trail_lines(events),
                f"{sent} requests sent: {len(requests)} recorded as entries of "
                f"{len({r.seq for r in requests})} gateway.requests events, {tallied} "
                f"rate-limited request(s) counted in gateway.requests.refused; "
                f"{len(alerts)} extraction alert(s)",
            ),
        )
    )


def _trail_lines(events: Sequence[AuditEvent]) -> list[str]:
    """One line per run of alike events (same action, actor, status and reason)."""
    lines: list[str] = []
    run: list[AuditEvent] = []

    def describe(event: AuditEvent) -> str:
        details = event.details
        text = f"{event.action:<24} {event.subject:<14} by {event.actor:<16}"
        if event.action == REQUESTS_ACTION:
            statuses = Counter(str(r.details.get("status")) for r in request_entries([event]))
            return f"{text} {', '.join(f'{n}x {s}' for s, n in sorted(statuses.items()))}"
        if "status" in details:
            text += f" {details['status']} {details.get('decision', '')}"
        if "count" in details:
            text += f" x{details['count']}"
        if "reason" in details:
            text += f"  ({details['reason']})"
        return text.rstrip()

    def flush() -> None:
        if not run:
            return
        first, last = run[0], run[-1]
        seqs = f"#{first.seq}" if len(run) == 1 else f"#{first.seq}-{last.seq}"
        lines.append(
            f"{seqs:<9} {describe(first)}" + (f"  ({len(run)} events)" if len(run) > 1 else "")
        )
        run.clear()

    for event in events:
        if run and describe(run[-1]) != describe(event):
            flush()
        run.append(event)
    flush()
    return lines
