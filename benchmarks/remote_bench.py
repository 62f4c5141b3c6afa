"""Benchmark: HTTP requests and wall time per 1,000 queries of a remote target (batching).

The demo model is served by bastion's real gateway (uvicorn on loopback, every guard on, rate
limits raised so that nothing is throttled). 1,000 held-out digits are classified through the
Open Inference Protocol v2 by:

* ``plain loop``: one ``POST .../infer`` per query on one keep-alive ``httpx.Client``: what a
  client that predicts sample by sample does;
* ``ART BlackBoxClassifier``: the Adversarial Robustness Toolbox's black-box estimator around
  a function that posts each batch ART hands it, on one keep-alive client: ART cuts queries
  into batches of 128 (its ``predict`` default) and knows nothing of the endpoint, so a gateway
  that takes fewer per request makes it fail (the failure and the requests until then are
  shown);
* ``RemoteTarget, batch 1``: bastion's target forced to one sample per request;
* ``RemoteTarget``: bastion's target as it is used, 256 samples per request by default;

against the gateway's default ``max_batch`` (256), then against gateways that accept less:
``max_batch`` 100 and 32 (the gateway answers 422 "batch too large" to a client that ignores
the ``parameters.max_batch`` of its model metadata; bastion's target reads it and is never
refused) and a 64 KiB body limit (413, not advertised: the target halves its batch on each
such refusal and keeps the size that was accepted, so the refusals are paid once per target).
Requests are counted by the target (every attempt, refusals included) and checked against the
gateway's audit records.
Each timing is the median of ``--repeat`` rounds, the clients taking turns in each round.

    .venv/bin/python benchmarks/remote_bench.py --repeat 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bastion.assess.targets.remote_target import RemoteTarget
from bastion.core.principals import Role
from extraction_gateway import DOMAIN, Served, demo_entry, digits_split, serve

QUERIES = 1000
#: (gateway setting shown, settings overrides)
GATEWAYS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("max_batch 256 (default)", {}),
    ("max_batch 100", {"max_batch": 100}),
    ("max_batch 32", {"max_batch": 32}),
    ("body <= 64 KiB", {"max_body_bytes": 64 * 1024}),
)


@dataclass
class Outcome:
    client: str
    gateway: str
    requests: int
    audited: int
    inferences: int
    batch: int | None
    seconds: list[float]
    labels: np.ndarray | None
    error: str = ""


class RefusedError(Exception):
    """The gateway answered something else than 200 to a client that cannot adapt."""

    def __init__(self, status: int, requests: int) -> None:
        super().__init__(f"HTTP {status} at request {requests}")
        self.status = status
        self.requests = requests


def _body(rows: np.ndarray) -> dict[str, Any]:
    flat = rows.reshape(len(rows), -1)
    return {
        "inputs": [
            {"name": "pixels", "shape": list(flat.shape), "datatype": "FP32",
             "data": flat.ravel().tolist()}
        ]
    }  # fmt: skip


def plain_loop(served: Served, x: np.ndarray) -> tuple[np.ndarray, int]:
    """One request per query; returns the labels and the number of requests."""
    headers = {"Authorization": f"Bearer {served.secrets['client']}"}
    labels = []
    with httpx.Client(base_url=served.url, headers=headers, timeout=30.0) as client:
        for row in x.reshape(len(x), -1):
            response = client.post("/infer", json=_body(row[None]))
            response.raise_for_status()
            scores = response.json()["outputs"][0]["data"]
            labels.append(int(np.argmax(scores)))
    return np.asarray(labels), len(x)


def art_blackbox(served: Served, x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """ART's BlackBoxClassifier around a function posting each batch; labels, requests, 128."""
    from art.estimators.classification import BlackBoxClassifier

    headers = {"Authorization": f"Bearer {served.secrets['client']}"}
    sent = 0
    with httpx.Client(base_url=served.url, headers=headers, timeout=30.0) as client:

        def predict(batch: np.ndarray) -> np.ndarray:
            nonlocal sent
            sent += 1
            response = client.post("/infer", json=_body(batch))
            if response.status_code != 200:
                raise RefusedError(response.status_code, sent)
            scores = response.json()["outputs"][0]["data"]
            return np.asarray(scores, dtype=np.float32).reshape(len(batch), -1)

        classifier = BlackBoxClassifier(
            predict, input_shape=(64,), nb_classes=10, clip_values=(0.0, 16.0)
        )
        scores = classifier.predict(x.reshape(len(x), -1))  # batch_size=128, ART's default
    return scores.argmax(axis=1), sent, 128


def remote(served: Served, x: np.ndarray, batch: int) -> tuple[np.ndarray, int, int]:
    """Bastion's target; returns the labels, the requests it sent and its final batch size."""
    target = RemoteTarget(served.url, DOMAIN, api_key=served.secrets["client"], batch_size=batch)
    try:
        labels = target.predict_labels(x)
    finally:
        target.close()
    return labels, target.queries.requests, target.batch_size


def audited(served: Served) -> tuple[int, int]:
    """The gateway's request records so far: all of them, and the inferences answered 200."""
    from bastion.gateway.audit import request_entries

    records = request_entries(served.sink.records)
    inferences = sum(
        1 for r in records if r.details["route"].endswith("/infer") and r.details["status"] == 200
    )
    return len(records), inferences


Run = Callable[[], tuple[np.ndarray, int, int]]


def measure(name: str, gateway: str, served: Served, run: Run) -> Outcome:
    """One timed run, and the gateway's own count of its requests (its audit records)."""
    before = audited(served)
    started = time.perf_counter()
    error = ""
    labels: np.ndarray | None
    try:
        labels, requests, batch = run()
    except RefusedError as exc:
        labels, requests, batch, error = None, exc.requests, None, f"failed: {exc}"
    seconds = time.perf_counter() - started
    time.sleep(0.1)  # the audit writer flushes every 20 ms here
    after = audited(served)
    return Outcome(
        name,
        gateway,
        requests,
        after[0] - before[0],
        after[1] - before[1],
        batch,
        [seconds],
        labels,
        error,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per client (median)")
    args = parser.parse_args()
    logging.getLogger("bastion.gateway").setLevel(logging.ERROR)  # monitor alerts: not here

    _, _, x_test, _ = digits_split()
    x = np.concatenate([x_test, x_test, x_test])[:QUERIES].reshape(-1, 1, 8, 8)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        entry = demo_entry(Path(tmp))
    expected = entry.model.predict(x.reshape(QUERIES, -1)).argmax(axis=1)
    try:
        import art  # noqa: F401 - only whether it is installed
    except ImportError:
        has_art = False
        print("adversarial-robustness-toolbox is not installed: its row is skipped")
    else:
        has_art = True

    outcomes: list[Outcome] = []
    for gateway, overrides in GATEWAYS:
        settings = {"audit_flush_seconds": 0.02, **overrides}
        with serve(entry, [("client", Role.CLIENT)], **settings) as served:
            clients: dict[str, Run] = {}
            if not overrides:
                clients["plain loop (1 query/request)"] = lambda s=served: (*plain_loop(s, x), 1)
                clients["RemoteTarget, batch 1"] = lambda s=served: remote(s, x, 1)
            if has_art:
                clients["ART BlackBoxClassifier"] = lambda s=served: art_blackbox(s, x)
            clients["RemoteTarget"] = lambda s=served: remote(s, x, 256)
            results: dict[str, Outcome] = {}
            names = list(clients)
            for round_ in range(args.repeat):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    outcome = measure(name, gateway, served, clients[name])
                    if name in results:
                        results[name].seconds += outcome.seconds
                    else:
                        results[name] = outcome
            outcomes += [results[name] for name in names]

    for outcome in outcomes:
        if outcome.labels is not None and not np.array_equal(outcome.labels, expected):
            raise SystemExit(f"{outcome.client} on {outcome.gateway}: wrong labels")
    naive = outcomes[0]
    naive_time = statistics.median(naive.seconds)
    print(
        f"\n{QUERIES:,} queries (held-out digits) through bastion's gateway on loopback; "
        f"median of {args.repeat} rounds\n"
    )
    header = (
        f"{'client':30s} {'gateway':24s} {'requests':>8s} {'audited':>8s} {'infer':>6s} "
        f"{'batch':>6s} "
        f"{'wall s':>8s} {'q/request':>10s} {'requests vs naive':>18s} {'time vs naive':>14s}"
    )
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        seconds = statistics.median(outcome.seconds)
        if outcome.error:
            print(
                f"{outcome.client:30s} {outcome.gateway:24s} {outcome.requests:8d} "
                f"{outcome.audited:8d} {outcome.inferences:6d} {'-':>6s}  {outcome.error}"
            )
            continue
        print(
            f"{outcome.client:30s} {outcome.gateway:24s} {outcome.requests:8d} "
            f"{outcome.audited:8d} {outcome.inferences:6d} {outcome.batch or 0:6d} {seconds:8.3f} "
            f"{QUERIES / outcome.requests:10.1f} {outcome.requests / naive.requests:18.4f} "
            f"{seconds / naive_time:14.4f}"
        )
    print(
        "\nrequests: sent by the client, every attempt (the target's include its metadata and "
        "probe requests\nand the refused oversized batches); audited: request entries "
        "the gateway wrote for them;\ninfer: of those, inferences answered; batch: the samples "
        "per request the client settled on.\nWall times include the client's own work (JSON); "
        "client and gateway share this process, so\nthey vary with the machine's load; the "
        "request counts do not."
    )


if __name__ == "__main__":
    main()
