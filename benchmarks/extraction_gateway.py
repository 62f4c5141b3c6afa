"""Benchmark: model extraction through bastion's gateway, with and without its output hardening.

The demo model (softmax-linear on scikit-learn's 8x8 digits, raw pixels 0-16, safetensors,
loaded by bastion's loader) is served by the real gateway (:func:`bastion.gateway.app.create_app`
under uvicorn on loopback, every guard on; rate limits raised so that the attack is never
throttled). Bastion's extraction family runs through :class:`RemoteTarget` with one key per
output policy of the gateway:

* ``full scores``: a role shown every score at 12 decimals (what an unhardened server gives);
* ``sre default``: the default for operators' roles, every score at 4 decimals;
* ``client default``: the default client hardening, the top class and its score at 2 decimals
  (the attacker spreads the rest of the mass evenly: ``top1`` answers);
* ``label only``: the predicted class only.

For each: substitute training (an MLP trained on the answers; Tramèr et al. 2016 section 5,
Papernot et al. 2017 for labels) at each query budget, its fidelity (agreement with the served
model's labels on the 450 held-out digits) averaged over ``--seeds`` runs, and Tramèr's equation
solving (section 4.1: ``d + 1 = 65`` queries plus 16 to verify), which needs every probability.
The attacker's queries come from the 1,347 training digits (an attacker with in-distribution
data; their labels are never used). The last columns give what the attack cost in HTTP requests
(batched) and whether the gateway's extraction monitor (PRADA) raised an alert for the key.

    .venv/bin/python benchmarks/extraction_gateway.py --seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.assess.data import Dataset
from bastion.assess.domain import InputDomain
from bastion.assess.families.extraction import ExtractionConfig
from bastion.assess.runner import run_assessment
from bastion.assess.targets.remote_target import RemoteTarget
from bastion.config import GatewaySettings
from bastion.core.audit import AuditRecord
from bastion.core.principals import KeyStore, Role
from bastion.core.storage import open_database, sqlite_url
from bastion.demo_gateway import serve_in_background
from bastion.gateway.app import create_app
from bastion.gateway.models import ModelSet, ServedEntry

MODEL = "digits"
DOMAIN = InputDomain((1, 8, 8), 0.0, 16.0)
#: (label, key name, its role, the role's output policy, answers the attacker trains on)
POLICIES: tuple[tuple[str, str, Role, dict[str, Any], str], ...] = (
    ("full scores", "full", Role.DATA_SCIENTIST, {"mode": "scores", "decimals": 12},
     "probabilities"),
    ("sre default (4 decimals)", "sre", Role.SRE, {}, "probabilities"),
    ("client default (top-1, 2 dec.)", "client", Role.CLIENT, {}, "top1"),
    ("label only", "label", Role.ML_ENGINEER, {"mode": "label"}, "label"),
)  # fmt: skip


class Sink:
    """The gateway's audit records in memory (the benchmark reads alerts and requests)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append_many(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)


@dataclass
class Served:
    """A running gateway: its model URL, one secret per key name, and its audit records."""

    url: str
    secrets: dict[str, str]
    key_ids: dict[str, str]
    sink: Sink
    entry: ServedEntry = field(repr=False)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The demo's split: (train x, train y, held-out x, held-out y), raw pixels, float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def demo_entry(folder: Path) -> ServedEntry:
    """The demo model trained, saved as safetensors and loaded by bastion's loader."""
    from bastion.artifacts.loading import load_model
    from bastion.demo_model import train_demo_model, write_model_folder

    model, _, _ = train_demo_model(seed=0)
    path = write_model_folder(model, folder / "model")
    return ServedEntry.build(MODEL, "1", load_model(path), digest="sha256:" + "0" * 64)


@contextlib.contextmanager
def serve(
    entry: ServedEntry,
    keys: Sequence[tuple[str, Role]],
    outputs: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> Iterator[Served]:
    """The gateway serving ``entry`` on a free loopback port, with one key per ``keys``.

    ``outputs`` maps a role's settings name (``data_scientist``) to its output policy;
    ``overrides`` are further gateway settings. Rate limits are raised so that nothing is
    throttled unless asked (the limiter still counts every request).
    """
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        database = open_database(sqlite_url(Path(tmp) / "keys.db"))
        store = KeyStore(database, None)
        secrets: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name, role in keys:
            created = store.create(name, role, actor="bench")
            secrets[name], ids[name] = created.secret, created.key.key_id
        values: dict[str, Any] = {
            "rate_limit": {"per_key_per_minute": 10**9, "per_address_per_minute": 10**9},
            "output": outputs or {},
        }
        values.update(overrides)
        sink = Sink()
        app = create_app(
            GatewaySettings.model_validate(values),
            store.snapshot(),
            ModelSet([entry]),
            sink,
            rng=np.random.default_rng(0),
        )
        try:
            with serve_in_background(app) as url:
                yield Served(f"{url}/v2/models/{MODEL}", secrets, ids, sink, entry)
        finally:
            database.dispose()


@dataclass
class Row:
    label: str
    key: str
    answers: str
    fidelity: dict[int, list[float]] = field(default_factory=dict)
    equation: str = ""
    requests: int = 0
    queries: int = 0
    alert: bool = False


def run(args: argparse.Namespace) -> list[Row]:
    x_train, _, x_test, y_test = digits_split()
    pool = Dataset(x_train.reshape(-1, 1, 8, 8), np.zeros(len(x_train), np.int64), "pool", "")
    data = Dataset(x_test.reshape(-1, 1, 8, 8), y_test, "digits held out", "")
    budgets = sorted(args.budgets)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        entry = demo_entry(Path(tmp))
    keys = [(key, role) for _, key, role, _, _ in POLICIES]
    outputs = {role.value.replace("-", "_"): policy for _, _, role, policy, _ in POLICIES if policy}
    rows = [Row(label, key, answers) for label, key, _, _, answers in POLICIES]
    with serve(entry, keys, outputs) as served:
        for row in rows:
            for seed in range(args.seeds):
                target = RemoteTarget(served.url, DOMAIN, api_key=served.secrets[row.key])
                config = ExtractionConfig(
                    budgets=budgets,
                    answers=[row.answers],
                    steps=args.steps,
                    equation_solving=seed == 0,
                )
                assessment = run_assessment(
                    target, data, {"extraction": config}, seed=seed, aux={"queries": pool}
                )
                target.close()
                result = assessment.results[0]
                for metric in result.metrics:
                    if metric.name.endswith(".fidelity") and "substitute" in metric.name:
                        row.fidelity.setdefault(int(metric.at or 0), []).append(metric.value)
                if seed == 0:
                    solved = result.details["equation_solving"]
                    row.equation = (
                        f"fidelity {solved['fidelity']:.3f}, residual {solved['residual']:.1e}"
                        if "fidelity" in solved
                        else f"cannot run: {solved['skipped'].split(':')[0]}"
                    )
                    row.requests = target.queries.requests
                    row.queries = target.queries.used
        time.sleep(0.5)  # let the extraction monitor finish its last slice
    alerted = {
        r.subject.removeprefix("key:")
        for r in served.sink.records
        if r.action == "gateway.extraction.alert"
    }
    for row in rows:
        row.alert = served.key_ids[row.key] in alerted
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> None:
    budgets = sorted(args.budgets)
    print(
        f"\nSubstitute fidelity vs queries through the gateway (mean of {args.seeds} seed(s), "
        f"MLP substitute, {args.steps} Adam steps; held-out digits: 450)\n"
    )
    header = f"{'gateway output (key role)':32s} {'answers':14s}" + "".join(
        f"{b:>8d}" for b in budgets
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(
            f"{statistics.fmean(row.fidelity[b]):8.3f}" if b in row.fidelity else f"{'n/a':>8s}"
            for b in budgets
        )
        print(f"{row.label:32s} {row.answers:14s}{cells}")
    base = rows[0]
    print("\nFidelity lost to hardening (full scores minus each), per budget:")
    for row in rows[1:]:
        deltas = "".join(
            f"{statistics.fmean(base.fidelity[b]) - statistics.fmean(row.fidelity[b]):+8.3f}"
            if b in row.fidelity and b in base.fidelity
            else f"{'n/a':>8s}"
            for b in budgets
        )
        print(f"{row.label:32s} {'':14s}{deltas}")
    if args.seeds > 1:
        spread = max(
            (max(v) - min(v) for row in rows for v in row.fidelity.values() if len(v) > 1),
            default=math.nan,
        )
        print(f"(largest spread between seeds at one budget: {spread:.3f})")
    print("\nEquation solving (Tramèr et al. 2016, 4.1; 65 + 16 queries), and cost of one run:")
    for row in rows:
        print(
            f"{row.label:32s} {row.equation:46s} {row.queries:6d} queries in "
            f"{row.requests:3d} requests  PRADA alert: {'yes' if row.alert else 'no'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[25, 50, 100, 250, 500, 1000],
        help="query budgets (at most the 1,347 attacker inputs)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="runs averaged per budget")
    parser.add_argument("--steps", type=int, default=400, help="substitute Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The monitor's alerts are in the table; its log lines would only break it up.
    logging.getLogger("bastion.gateway").setLevel(logging.ERROR)
    started = time.perf_counter()
    rows = run(args)
    report(rows, args)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
