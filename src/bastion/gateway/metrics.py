"""Prometheus metrics of the gateway, served at ``GET /metrics`` (API not yet stable).

Counters and the latency histogram are updated on the request path (a cached child per label
set: one dictionary lookup and an increment); everything that is state rather than an event
(audit queue, key table, concurrency, extraction monitor) is read only when Prometheus scrapes,
by a collector, so it costs nothing per request.

``/metrics`` needs a key with ``gateway.operate`` (roles ``sre`` and ``admin``) like every
other keyed route, rather than being open on loopback: behind a reverse proxy every client
looks like loopback, and the metrics name the models served and the rejection reasons.
Prometheus sends the key with ``authorization: {credentials: <key>}`` in its scrape config.

Metric names and labels (label values come from fixed sets or served model names only, so a
client cannot inflate their number):

* ``bastion_gateway_requests_total{model,status}``: requests answered (``model`` is ``-`` for
  routes without one).
* ``bastion_gateway_request_duration_seconds{model}``: time from first byte to answer.
* ``bastion_gateway_rejections_total{reason}``: refusals by guard reason
  (``unauthenticated``, ``forbidden``, ``rate_limited``, ``body_too_large``, ``too_deep``,
  ``out_of_range``, ``saturated``, ``timeout``, ...).
* gauges read at scrape time: ``bastion_gateway_in_flight``, ``bastion_gateway_models``,
  ``bastion_gateway_audit_queue``, ``bastion_gateway_audit_failing``,
  ``bastion_gateway_audit_written_total``, ``bastion_gateway_audit_dropped_total``,
  ``bastion_gateway_keys``, ``bastion_gateway_keys_age_seconds``, and
  ``bastion_gateway_extraction_<stat>`` for each statistic of the extraction monitor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

#: The ``Content-Type`` of ``/metrics`` (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Gauges = Callable[[], Mapping[str, float]]
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


class _StateCollector(Collector):
    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        for raw, value in sorted(self._gauges().items()):
            name = _NAME_RE.sub("_", raw)  # whatever a monitor calls its statistics
            family: GaugeMetricFamily | CounterMetricFamily
            if name.endswith("_total"):
                family = CounterMetricFamily(f"bastion_gateway_{name[:-6]}", _help(name))
            else:
                family = GaugeMetricFamily(f"bastion_gateway_{name}", _help(name))
            family.add_metric([], float(value))
            yield family


def _help(name: str) -> str:
    return name.removesuffix("_total").replace("_", " ").capitalize() + "."


class Metrics:
    """The gateway's metrics, in a registry of its own (several gateways in one process).

    Args:
        gauges: returns the state gauges (name without prefix -> value) at scrape time.
    """

    def __init__(self, gauges: Gauges | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "bastion_gateway_requests",
            "Requests answered, by model and status.",
            ["model", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "bastion_gateway_request_duration_seconds",
            "Time from a request's first byte to its answer.",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._rejections = Counter(
            "bastion_gateway_rejections",
            "Requests refused by a guard, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._rejection_children: dict[str, Counter] = {}
        if gauges is not None:
            self.registry.register(_StateCollector(gauges))

    def observe(self, model: str, status: int, seconds: float, rejection: str | None) -> None:
        """Count one answered request (and its rejection reason, if refused)."""
        key = (model, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._requests.labels(model, str(status))
            self._request_children[key] = counter
        counter.inc()
        histogram = self._latency_children.get(model)
        if histogram is None:
            histogram = self._latency.labels(model)
            self._latency_children[model] = histogram
        histogram.observe(seconds)
        if rejection is not None:
            self.reject(rejection)

    def reject(self, reason: str) -> None:
        """Count one refusal."""
        child = self._rejection_children.get(reason)
        if child is None:
            child = self._rejections.labels(reason)
            self._rejection_children[reason] = child
        child.inc()

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
