"""Prometheus metrics: counters by model and status, latency, rejections, state gauges."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.gateway.support import GatewayFactory, Keys, infer_body, serving

from bastion.gateway.metrics import CONTENT_TYPE, Metrics

pytestmark = pytest.mark.anyio


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_latency_and_rejections(
    make_gateway: GatewayFactory, keys: Keys, sample: Any
):
    gateway = make_gateway(rate_limit={"per_key_per_minute": 3, "per_address_per_minute": 100})
    bad = sample(0)
    bad[0] = -1.0
    async with serving(gateway) as client:
        await client.post(
            "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("client")
        )
        await client.post(
            "/v2/models/digits/infer", json=infer_body(bad), headers=keys.headers("client")
        )
        await client.post(
            "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("client")
        )
        await client.post(
            "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers("client")
        )
        await client.get("/v2", headers={"Authorization": "Bearer nope"})
        await client.get("/v2/health/live")
        response = await client.get("/metrics", headers=keys.headers("sre"))
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    samples = _samples(response.text)
    requests = "bastion_gateway_requests_total"
    assert samples[(requests, (("model", "digits"), ("status", "200")))] == 2
    assert samples[(requests, (("model", "digits"), ("status", "422")))] == 1
    # Refused before the model was looked up: no model label.
    assert samples[(requests, (("model", "-"), ("status", "429")))] == 1
    assert samples[(requests, (("model", "-"), ("status", "401")))] == 1
    assert samples[(requests, (("model", "-"), ("status", "200")))] == 1  # health
    rejections = "bastion_gateway_rejections_total"
    assert samples[(rejections, (("reason", "out_of_range"),))] == 1
    assert samples[(rejections, (("reason", "rate_limited"),))] == 1
    assert samples[(rejections, (("reason", "unauthenticated"),))] == 1
    histogram = "bastion_gateway_request_duration_seconds_count"
    assert samples[(histogram, (("model", "digits"),))] == 3
    assert samples[("bastion_gateway_models", ())] == 1
    assert samples[("bastion_gateway_ready", ())] == 1
    assert samples[("bastion_gateway_keys", ())] == len(keys.table)
    assert samples[("bastion_gateway_in_flight", ())] == 0
    assert ("bastion_gateway_audit_written_total", ()) in samples
    assert samples[("bastion_gateway_audit_failing", ())] == 0


async def test_extraction_statistics_are_exported(make_gateway: GatewayFactory, keys: Keys):
    gateway = make_gateway(extraction={"enabled": True})
    async with serving(gateway) as client:
        response = await client.get("/metrics", headers=keys.headers("admin"))
    names = {name for name, _ in _samples(response.text)}
    assert any(name.startswith("bastion_gateway_extraction_") for name in names)


def test_label_values_are_bounded() -> None:
    metrics = Metrics()
    for n in range(100):
        metrics.observe("-", 404, 0.001, "not_found")
        metrics.observe("digits", 200 + n % 2, 0.001, None)
    samples = _samples(metrics.render().decode())
    models = {dict(labels).get("model") for _, labels in samples}
    assert models <= {"-", "digits", None}


def test_state_gauges_get_valid_names() -> None:
    metrics = Metrics(lambda: {"extraction_keys-tracked": 3, "odd name.total": 1})
    samples = _samples(metrics.render().decode())
    assert samples[("bastion_gateway_extraction_keys_tracked", ())] == 3
    assert samples[("bastion_gateway_odd_name_total", ())] == 1
