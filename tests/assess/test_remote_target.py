"""Remote OIP v2 targets against an in-process endpoint (httpx.MockTransport): batching to the
endpoint's limit, 429/Retry-After, the query budget, the API key, malformed answers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from bastion.assess.attacks import HopSkipJump, SquareAttack
from bastion.assess.domain import InputDomain
from bastion.assess.targets import TargetOptions, open_target
from bastion.assess.targets.interface import Access, OutputKind, QueryBudgetError
from bastion.assess.targets.remote_target import RemoteTarget, parse_endpoint
from bastion.errors import AssessmentError

URL = "http://models.test/v2/models/digits"
DOMAIN = InputDomain((1, 8, 8), 0.0, 1.0)


@dataclass
class Endpoint:
    """An OIP v2 server for a scikit-learn model, with a batch limit and rate limiting."""

    model: Any
    max_batch: int = 64
    key: str | None = "s3cret"
    header: str = "Authorization"
    output: str = "probabilities"  # or "logits", "label"
    throttle: list[str] = field(default_factory=list)  # Retry-After values to answer first
    requests: list[int] = field(default_factory=list)  # batch size of each inference served
    malformed: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        expected = f"Bearer {self.key}" if self.header == "Authorization" else self.key
        if self.key is not None and request.headers.get(self.header) != expected:
            return httpx.Response(401, json={"error": "unauthorized"})
        if request.method == "GET" and request.url.path == "/v2/models/digits":
            shape = [-1, 10] if self.output != "label" else [-1]
            return httpx.Response(
                200,
                json={
                    "name": "digits",
                    "platform": "sklearn",
                    "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
                    "outputs": [{"name": "scores", "datatype": "FP32", "shape": shape}],
                    "parameters": {"digest": "sha256:" + "ab" * 32},
                },
            )
        if request.method != "POST" or request.url.path != "/v2/models/digits/infer":
            return httpx.Response(404, json={"error": "not found"})
        if self.throttle:
            return httpx.Response(429, headers={"Retry-After": self.throttle.pop(0)})
        body = json.loads(request.content)
        tensor = body["inputs"][0]
        n = tensor["shape"][0]
        if tensor["name"] != "pixels" or tensor["shape"][1:] != [64]:
            return httpx.Response(400, json={"error": "bad input"})
        if n > self.max_batch:
            return httpx.Response(413, json={"error": "batch too large"})
        self.requests.append(n)
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(n, 64)
        if self.malformed:
            return httpx.Response(200, json={"outputs": [{"name": "scores", "data": [1]}]})
        if self.output == "label":
            data, datatype, shape = self.model.predict(x).tolist(), "INT64", [n]
        elif self.output == "logits":
            data, datatype, shape = (
                self.model.decision_function(x).ravel().tolist(),
                "FP32",
                [n, 10],
            )
        else:
            data, datatype, shape = self.model.predict_proba(x).ravel().tolist(), "FP32", [n, 10]
        return httpx.Response(
            200,
            json={
                "model_name": "digits",
                "outputs": [{"name": "scores", "datatype": datatype, "shape": shape, "data": data}],
            },
        )


def _target(endpoint: Endpoint, **options: Any) -> RemoteTarget:
    sleeps: list[float] = options.pop("sleeps", [])
    return RemoteTarget(
        URL,
        DOMAIN,
        api_key=endpoint.key,
        api_key_header=endpoint.header,
        transport=httpx.MockTransport(endpoint),
        sleep=sleeps.append,
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        **options,
    )


def test_parse_endpoint():
    assert parse_endpoint(URL) == ("http://models.test", "digits")
    assert parse_endpoint("https://h:8443/prefix/v2/models/m/versions/2") == (
        "https://h:8443/prefix",
        "m",
    )
    assert parse_endpoint("http://h", "named") == ("http://h", "named")
    with pytest.raises(AssessmentError, match="no model name"):
        parse_endpoint("http://h/")
    with pytest.raises(AssessmentError, match="not an http"):
        parse_endpoint("ftp://h/v2/models/m")


def test_predictions_and_identity(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model)
    target = _target(endpoint)
    info = target.info
    assert (info.kind, info.access, info.output) == (
        "remote",
        Access.SCORES,
        OutputKind.PROBABILITIES,
    )
    assert info.digest == "sha256:" + "ab" * 32
    assert info.num_classes == 10
    x = digits[2][:30]
    np.testing.assert_allclose(
        target.predict_proba(x), logistic_model.predict_proba(x.reshape(30, 64)), atol=1e-6
    )


def test_batches_to_the_endpoints_limit(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model, max_batch=100)
    target = _target(endpoint, batch_size=512)
    x = np.tile(digits[2], (2, 1, 1, 1))[:1000]
    before = target.queries.requests
    target.predict_labels(x)
    # 512 and 256 are refused (413), then 128 is too, then 64 per request: 16 served requests.
    assert target.batch_size == 64
    assert endpoint.requests.count(64) == 15
    assert sum(endpoint.requests) == 1000 + 2  # 2: the probe when the target was opened
    assert target.queries.requests - before == 16 + 3
    target.predict_labels(x)
    assert target.queries.requests - before == 16 + 3 + 16  # the learned size is kept
    assert target.queries.used == 2002


def test_rate_limits_are_honoured(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model)
    sleeps: list[float] = []
    target = _target(endpoint, sleeps=sleeps)
    endpoint.throttle = ["2", "Thu, 01 Jan 2026 00:00:05 GMT", "junk"]
    target.predict_labels(digits[2][:5])
    assert sleeps[:2] == [2.0, 5.0]
    assert 0 < sleeps[2] <= 30
    endpoint.throttle = ["1"] * 10
    with pytest.raises(AssessmentError, match="kept rate-limiting"):
        target.predict_labels(digits[2][:5])


def test_query_budget_is_never_overrun(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model)
    target = _target(endpoint, max_queries=50)
    target.predict_labels(digits[2][:40])
    served = list(endpoint.requests)
    with pytest.raises(QueryBudgetError):
        target.predict_labels(digits[2][:20])
    assert endpoint.requests == served  # nothing was sent
    assert target.queries.used == 42


def test_api_key_header_and_refusal(logistic_model: Any):
    endpoint = Endpoint(logistic_model, header="X-API-Key")
    assert _target(endpoint).info.num_classes == 10
    with pytest.raises(AssessmentError, match="refused the API key"):
        RemoteTarget(URL, DOMAIN, api_key="wrong", transport=httpx.MockTransport(endpoint))
    with pytest.raises(AssessmentError, match="has no model 'other'"):
        RemoteTarget(
            "http://models.test",
            DOMAIN,
            model="other",
            api_key="s3cret",
            api_key_header="X-API-Key",
            transport=httpx.MockTransport(endpoint),
        )


def test_label_only_endpoint_and_decision_attack(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model, output="label")
    with pytest.raises(AssessmentError, match="labels only"):
        _target(endpoint)
    names = tuple(str(i) for i in range(10))
    target = _target(endpoint, classes=list(names))
    assert target.info.access is Access.LABELS
    x, y = digits[2][:4], digits[3][:4]
    adv = HopSkipJump(iterations=2, init_evals=20).perturb(
        target, x, y, 0.0, rng=np.random.default_rng(0)
    )
    assert (target.predict_labels(adv) != y).all()
    # The 4 points' queries of each step share requests (up to the endpoint's limit).
    assert target.queries.used / target.queries.requests >= 4


def test_logits_endpoint_with_square_attack(logistic_model: Any, digits: Any):
    endpoint = Endpoint(logistic_model, output="logits")
    target = _target(endpoint)
    assert target.info.output is OutputKind.LOGITS
    x, y = digits[2][:30], digits[3][:30]
    adv = SquareAttack(max_queries=60).perturb(target, x, y, 0.2, rng=np.random.default_rng(0))
    assert (target.predict_labels(adv) == y).mean() < 0.8
    per_request = target.queries.used / target.queries.requests
    assert per_request > 10  # batched, not one request per query
    assert math.isfinite(per_request)


def test_malformed_answers_and_unreachable(logistic_model: Any):
    with pytest.raises(AssessmentError, match="malformed output tensor"):
        _target(Endpoint(logistic_model, malformed=True))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(AssessmentError, match="cannot reach"):
        open_target(URL, DOMAIN, TargetOptions(transport=httpx.MockTransport(down)))
