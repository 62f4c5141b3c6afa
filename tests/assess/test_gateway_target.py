"""The remote target against bastion's own gateway over real HTTP (uvicorn on loopback).

A softmax-linear digits model (the demo's architecture, safetensors, bastion's loader) is
served by :func:`bastion.gateway.app.create_app` with four output policies, one per key:

* ``full``: a data-scientist key whose role sees every score at 12 decimals (no hardening);
* ``client``: the default client hardening, the top class only, at 2 decimals;
* ``label``: an ML-engineer key whose role sees the label only;
* ``rounded``: an SRE key whose role sees every score at 2 decimals.

Bastion's extraction family runs through :class:`RemoteTarget` with each key: Tramèr's
equation solving recovers the model from full scores and cannot run on the hardened answers,
and substitute training copies it less well from them at every budget. The target honours the
gateway's 429/Retry-After (a fake clock shared by the rate limiter and the target's sleep),
batches as many samples as the gateway's advertised ``max_batch``, and every request it sends
is in the gateway's audit records.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bastion.artifacts.loading import load_model
from bastion.artifacts.served_model import ServedModel
from bastion.assess.data import Dataset
from bastion.assess.domain import InputDomain
from bastion.assess.families.extraction import ExtractionConfig
from bastion.assess.results import FamilyResult
from bastion.assess.runner import run_assessment
from bastion.assess.targets.interface import Access, OutputKind
from bastion.assess.targets.remote_target import RemoteTarget
from bastion.config import GatewaySettings
from bastion.core.audit import AuditRecord
from bastion.core.principals import KeyStore, KeyTable, Role
from bastion.core.storage import open_database, sqlite_url
from bastion.demo_gateway import serve_in_background
from bastion.demo_model import DemoModel, write_model_folder
from bastion.gateway.app import create_app
from bastion.gateway.audit import RequestEntry, request_entries
from bastion.gateway.models import ModelSet, ServedEntry
from bastion.gateway.ratelimit import MemoryRateLimiter

DOMAIN = InputDomain((1, 8, 8), 0.0, 16.0)
DIGEST = "sha256:" + "5e" * 32
BUDGETS = (100, 300, 1000)


@dataclass(frozen=True)
class Keys:
    table: KeyTable
    secrets: dict[str, str]
    ids: dict[str, str]


class Sink:
    """The gateway's audit records, in memory."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append_many(self, records: Sequence[AuditRecord]) -> None:
        self.records.extend(records)

    def requests(self, key_id: str) -> list[RequestEntry]:
        return [r for r in request_entries(self.records) if r.details.get("key_id") == key_id]

    def refused(self, key_id: str) -> int:
        return sum(
            int(r.details["count"])
            for r in self.records
            if r.action == "gateway.requests.refused" and r.details.get("key_id") == key_id
        )


@pytest.fixture(scope="module")
def served(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """The test set's logistic regression as a demo-architecture model on raw pixels 0-16."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, _, _ = digits
    fitted = LogisticRegression(max_iter=300).fit(x_train.reshape(len(x_train), -1), y_train)
    model = DemoModel(
        (fitted.coef_ / 16.0).astype(np.float32), fitted.intercept_.astype(np.float32), 0.0
    )
    return load_model(write_model_folder(model, tmp_path_factory.mktemp("served") / "digits"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    database = open_database(sqlite_url(tmp_path_factory.mktemp("keys") / "keys.db"))
    store = KeyStore(database, None)
    secrets: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, role in (
        ("full", Role.DATA_SCIENTIST),
        ("client", Role.CLIENT),
        ("label", Role.ML_ENGINEER),
        ("rounded", Role.SRE),
    ):
        created = store.create(name, role, actor="tests")
        secrets[name], ids[name] = created.secret, created.key.key_id
    yield Keys(store.snapshot(), secrets, ids)
    database.dispose()


@pytest.fixture(scope="module")
def data(digits: Any) -> Dataset:
    """The 540 held-out digits on raw pixels: fidelity is measured on them."""
    _, _, x_test, y_test = digits
    return Dataset((x_test * 16.0).astype(np.float32), y_test, "digits", "")


@pytest.fixture(scope="module")
def pool(digits: Any) -> Dataset:
    """The attacker's 1,257 unlabelled inputs from the task's distribution (the training
    digits: an attacker with in-distribution data; their labels are never used)."""
    x_train, y_train, _, _ = digits
    return Dataset((x_train * 16.0).astype(np.float32), y_train, "pool", "")


def _settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "audit_flush_seconds": 0.02,
        "rate_limit": {"per_key_per_minute": 100_000, "per_address_per_minute": 100_000},
        "output": {
            "data_scientist": {"mode": "scores", "decimals": 12},
            "ml_engineer": {"mode": "label"},
            "sre": {"mode": "scores", "decimals": 2},
        },
    }
    values.update(overrides)
    return GatewaySettings.model_validate(values)


@contextmanager
def gateway(
    served: ServedModel, keys: Keys, *, limiter: Any = None, **overrides: Any
) -> Iterator[tuple[str, Sink]]:
    """A gateway on a free loopback port; its audit records are complete once this exits."""
    sink = Sink()
    app = create_app(
        _settings(**overrides),
        keys.table,
        ModelSet([ServedEntry.build("digits", "1", served, digest=DIGEST)]),
        sink,
        rate_limiter=limiter,
        rng=np.random.default_rng(0),
    )
    with serve_in_background(app) as url:
        yield f"{url}/v2/models/digits", sink


def _metrics(result: FamilyResult) -> dict[tuple[str, float | None], float]:
    return {(m.name, m.at): m.value for m in result.metrics}


def _extract(
    url: str,
    secret: str,
    data: Dataset,
    answers: list[str],
    pool: Dataset | None = None,
    budgets: Sequence[int] = BUDGETS,
) -> tuple[Any, FamilyResult]:
    target = RemoteTarget(url, DOMAIN, api_key=secret)
    try:
        config = ExtractionConfig(budgets=list(budgets), answers=answers, steps=200)
        aux = {"queries": pool} if pool is not None else {}
        assessment = run_assessment(target, data, {"extraction": config}, seed=0, aux=aux)
    finally:
        target.close()
    return target, assessment.results[0]


def test_full_scores_give_the_model_away_and_hardened_answers_do_not(
    served: ServedModel, keys: Keys, data: Dataset, pool: Dataset
) -> None:
    with gateway(served, keys) as (url, _sink):
        full_target, full = _extract(
            url, keys.secrets["full"], data, ["probabilities", "label"], pool
        )
        client_target, client = _extract(
            url, keys.secrets["client"], data, ["probabilities", "top1", "label"], pool
        )
        label_target, label = _extract(
            url, keys.secrets["label"], data, ["probabilities", "label"], pool
        )
    assert full_target.info.output is OutputKind.PROBABILITIES
    assert client_target.info.output is OutputKind.PROBABILITIES  # top-1 answers, read as such
    assert label_target.info.access is Access.LABELS
    assert label_target.info.classes == tuple(str(c) for c in range(10))  # from the metadata

    f, c, lab = _metrics(full), _metrics(client), _metrics(label)
    # Equation solving: an exact copy from full scores ...
    assert f[("extraction.equation_solving.fidelity", 65.0)] >= 0.99
    assert f[("extraction.equation_solving.residual", None)] < 1e-3
    # ... and no copy at all through the hardened answers: the attack says it cannot run.
    for metrics in (c, lab):
        assert math.isnan(metrics[("extraction.equation_solving.fidelity", 65.0)])
    assert "probability answer is 0" in client.details["equation_solving"]["skipped"]
    assert "labels only" in label.details["equation_solving"]["skipped"]
    assert math.isnan(lab[("extraction.substitute_probabilities.fidelity", float(BUDGETS[0]))])

    # Substitute training: whatever the attacker makes of hardened answers copies the model
    # no better than full scores do, at every budget.
    for budget in map(float, BUDGETS):
        unhardened = f[("extraction.substitute_probabilities.fidelity", budget)]
        best_client = max(
            c[(f"extraction.substitute_{kind}.fidelity", budget)]
            for kind in ("probabilities", "top1", "label")
        )
        only_labels = lab[("extraction.substitute_label.fidelity", budget)]
        assert best_client <= unhardened, budget
        assert only_labels <= unhardened, budget
    assert f[("extraction.substitute_probabilities.fidelity", float(BUDGETS[-1]))] >= 0.9


def test_rounded_scores_are_read_as_probabilities(
    served: ServedModel, keys: Keys, data: Dataset
) -> None:
    # Scores at 2 decimals sum to 1 only within the rounding (0.05 over 10 classes): they are
    # still probabilities, not logits to be put through a softmax.
    with gateway(served, keys) as (url, _sink):
        target = RemoteTarget(url, DOMAIN, api_key=keys.secrets["rounded"])
        probabilities = target.predict_proba(data.x[:50])
        target.close()
    assert target.info.output is OutputKind.PROBABILITIES
    exact = served.predict(data.x[:50].reshape(50, -1))
    np.testing.assert_allclose(probabilities, np.round(exact, 2), atol=1e-9)
    assert np.abs(probabilities.sum(axis=1) - 1.0).max() > 1e-3  # beyond detect_output's 1e-3


def test_retry_after_is_honoured_and_every_query_counted(
    served: ServedModel, keys: Keys, data: Dataset
) -> None:
    clock = [1_000.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the target waits; the gateway's clock moves on
        sleeps.append(seconds)
        clock[0] += seconds

    limiter = MemoryRateLimiter(4, 100_000, clock=lambda: clock[0])
    with gateway(served, keys, limiter=limiter) as (url, sink):
        target = RemoteTarget(
            url, DOMAIN, api_key=keys.secrets["client"], batch_size=16, sleep=sleep
        )
        labels = target.predict_labels(data.x[:64])
        target.close()
    expected = served.predict(data.x[:64].reshape(64, -1)).argmax(axis=1)
    np.testing.assert_array_equal(labels, expected)
    # 1 metadata + 1 probe + 4 inferences of 16 = 6 answered, 4 allowed per minute: refused
    # with Retry-After, the target slept exactly that long and went on.
    assert sleeps
    assert all(s >= 1 and s == int(s) for s in sleeps)
    assert target.queries.used == 2 + 64
    refused = sink.refused(keys.ids["client"])
    assert refused == len(sleeps)
    answered = sink.requests(keys.ids["client"])
    assert len(answered) == 6
    assert target.queries.requests == len(answered) + refused


def test_batches_follow_the_limit_the_gateway_advertises(
    served: ServedModel, keys: Keys, data: Dataset
) -> None:
    with gateway(served, keys, max_batch=100) as (url, sink):
        target = RemoteTarget(url, DOMAIN, api_key=keys.secrets["full"], batch_size=256)
        x = np.concatenate([data.x] * 4)[:1000]
        target.predict_proba(x)
        target.close()
    assert target.batch_size == 100  # parameters.max_batch of the model metadata
    # metadata, probe, then 1000 / 100: no request is refused to find the limit.
    assert target.queries.requests == 2 + 10
    assert target.queries.used == 2 + 1000
    records = sink.requests(keys.ids["full"])
    assert [r for r in records if r.details["status"] != 200] == []
    batches = [r.details.get("batch", 0) for r in records if r.details["status"] == 200]
    assert max(batches) == 100
    assert sum(batches) == 2 + 1000


def test_the_gateway_audits_every_request_of_an_assessment(
    served: ServedModel, keys: Keys, data: Dataset
) -> None:
    with gateway(served, keys) as (url, sink):
        target, _ = _extract(
            url, keys.secrets["client"], data.take(slice(0, 120)), ["top1"], budgets=(50,)
        )
    records = sink.requests(keys.ids["client"])
    assert len(records) == target.queries.requests
    assert all(r.details["status"] == 200 for r in records)
    assert sum(r.details.get("batch", 0) for r in records) == target.queries.used
    assert {r.subject for r in records} == {"model:digits"}
    assert all(r.actor.startswith("client (key ") for r in records)
