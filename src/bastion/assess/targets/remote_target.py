"""Remote targets: a model behind an Open Inference Protocol v2 REST endpoint (black box).

The Open Inference Protocol (KServe v2; spoken by Triton, KServe, Seldon MLServer and
bastion's own gateway) is read from its specification:

- ``GET  {base}/v2/models/{name}``: metadata, with the input and output tensors' names,
  datatypes and shapes (``-1`` for a variable dimension);
- ``POST {base}/v2/models/{name}/infer`` with ``{"inputs": [{"name", "shape", "datatype",
  "data"}]}`` answers ``{"outputs": [{"name", "shape", "datatype", "data"}]}``, row-major.

Queries are batched: each request carries up to ``batch_size`` samples (or the
``parameters.max_batch`` the model metadata advertises, if smaller), halved whenever the
endpoint answers 413 (payload too large) or 400/422 naming a batch or size limit, and the size
it accepted is kept for later requests, so 1,000 queries take as few requests as the endpoint
allows. A 429 or 503 is retried after its ``Retry-After`` (seconds or an HTTP date; an
exponential back-off otherwise), at most ``retries`` times. Every sample answered is a query
charged to the budget, and a request that would go past the budget is never sent.

What the endpoint answers is read from the answer itself: an integer tensor (or one value per
row) is a label, rows of non-negative scores summing to one are probabilities, anything else
logits. Two hardened answers of bastion's gateway (:mod:`bastion.gateway.output`) are read as
probabilities too: a top-k tensor (its ``parameters.top_k``; the scores outside the top k are
0, so a score-based attack that needs every probability refuses it) and scores rounded to a
few decimals, whose rows sum to one only within the rounding. Class names come from the
metadata's ``parameters.classes`` when the caller names none.

The API key goes in ``Authorization: Bearer <key>`` unless another header is named (e.g.
``X-API-Key``); it is never logged. The HTTP client takes an injectable ``transport``
(``httpx.MockTransport`` in tests), and ``sleep`` and ``now`` are injectable too.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryBudgetError,
    QueryCounter,
    TargetBase,
    TargetInfo,
    check_batch,
    class_names,
    detect_output,
    one_hot,
)
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import torch

__all__ = ["RemoteTarget", "parse_endpoint"]

logger = logging.getLogger(__name__)

_DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
_LABEL_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_SIZE_WORDS = ("batch", "size", "too large", "too many", "limit")


def parse_endpoint(url: str, model: str | None = None) -> tuple[str, str]:
    """Split ``http://host/v2/models/NAME`` (or a base URL plus ``model``) into (base, name).

    Raises:
        AssessmentError: not an http(s) URL, or no model name.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AssessmentError(f"{url!r} is not an http(s) endpoint URL")
    path = parts.path.rstrip("/")
    marker = "/v2/models/"
    if marker in path:
        prefix, _, rest = path.partition(marker)
        name = rest.split("/")[0]
        base = f"{parts.scheme}://{parts.netloc}{prefix}"
    else:
        base = f"{parts.scheme}://{parts.netloc}{path}"
        name = model or ""
    if model and name != model:
        name = model
    if not name:
        raise AssessmentError(f"no model name in {url!r}: use .../v2/models/NAME or --model-name")
    return base, name


def _rounded_probabilities(scores: NDArray[np.float64], most_decimals: int = 6) -> bool:
    """Whether ``scores`` look like probabilities rounded to a few decimals.

    Every value in [0, 1] is a multiple of ``10**-d`` for some ``d <= most_decimals``, and
    every row sums to one within what rounding each of its values by half a unit can add up to.
    """
    if scores.ndim != 2 or not scores.size or scores.min() < 0 or scores.max() > 1:
        return False
    for decimals in range(1, most_decimals + 1):
        scaled = scores * 10.0**decimals
        if np.allclose(scaled, np.round(scaled), rtol=0.0, atol=1e-6):
            slack = scores.shape[1] * 0.5 * 10.0**-decimals + 1e-9
            return bool(np.all(np.abs(scores.sum(axis=1) - 1.0) <= slack))
    return False


class RemoteTarget(TargetBase):
    """A classifier behind an OIP v2 endpoint (see the module docstring)."""

    def __init__(
        self,
        url: str,
        domain: InputDomain,
        *,
        model: str | None = None,
        api_key: str | None = None,
        api_key_header: str = "Authorization",
        transport: httpx.BaseTransport | None = None,
        batch_size: int = 256,
        max_queries: int | None = None,
        retries: int = 5,
        timeout: float = 30.0,
        output: OutputKind | None = None,
        output_name: str | None = None,
        classes: list[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._base, self._model = parse_endpoint(url, model)
        self._domain = domain
        self._queries = QueryCounter(limit=max_queries)
        self._batch_size = max(1, batch_size)
        self._retries = retries
        self._sleep = sleep
        self._now = now
        headers = {"Accept": "application/json"}
        if api_key:
            value = f"Bearer {api_key}" if api_key_header.lower() == "authorization" else api_key
            headers[api_key_header] = value
        self._client = httpx.Client(
            base_url=self._base, headers=headers, timeout=timeout, transport=transport
        )
        self._path = f"/v2/models/{quote(self._model, safe='')}"
        metadata = self._metadata()
        advertised = (metadata.get("parameters") or {}).get("max_batch")
        if isinstance(advertised, int) and not isinstance(advertised, bool) and advertised > 0:
            # An endpoint that says how many samples it takes (bastion's gateway does) is
            # believed up front; a size refusal still halves the batch as for any endpoint.
            self._batch_size = min(self._batch_size, advertised)
        inputs = metadata.get("inputs") or []
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise AssessmentError(f"model {self._model!r} has {len(inputs)} inputs; one is needed")
        self._input_name = str(inputs[0].get("name", "input"))
        datatype = str(inputs[0].get("datatype", "FP32")).upper()
        if datatype not in _DATATYPES:
            raise AssessmentError(
                f"model {self._model!r} takes {datatype}; a float input is needed"
            )
        self._datatype = datatype
        shape = [int(d) for d in inputs[0].get("shape", [])[1:]]
        if shape and all(d > 0 for d in shape):
            if math.prod(shape) != domain.size:
                raise AssessmentError(
                    f"model {self._model!r} takes {shape} per sample; the input domain has "
                    f"{domain.size} values"
                )
            self._sample_shape = tuple(shape)
        else:
            self._sample_shape = domain.shape
        self._output_name = output_name
        outputs = metadata.get("outputs") or []
        if output_name is None and len(outputs) == 1 and isinstance(outputs[0], dict):
            self._output_name = str(outputs[0].get("name")) or None
        if not classes:
            declared = (metadata.get("parameters") or {}).get("classes")
            if (
                isinstance(declared, list)
                and declared
                and all(isinstance(c, str | int) for c in declared)
            ):
                classes = [str(c) for c in declared]
        probe = np.random.default_rng(0).uniform(domain.lower, domain.upper, (2, *domain.shape))
        scores, kind = self._infer(probe.astype(np.float32))
        self._output = output or kind
        count = len(classes) if classes else (scores.shape[1] if scores.ndim == 2 else 0)
        if self._output is OutputKind.LABELS and not classes:
            raise AssessmentError(f"model {self._model!r} answers labels only: name its classes")
        self._info = TargetInfo(
            kind="remote",
            name=f"{self._base}{self._path}",
            access=Access.LABELS if self._output is OutputKind.LABELS else Access.SCORES,
            output=self._output,
            classes=class_names(classes, count),
            digest=str((metadata.get("parameters") or {}).get("digest", "")),
        )

    # -- HTTP -------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """One request, retried on 429/503 after Retry-After; other errors raise."""
        for attempt in range(self._retries + 1):
            self._queries.requests += 1
            try:
                response = self._client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise AssessmentError(f"cannot reach {self._base}: {type(exc).__name__}") from exc
            if response.status_code not in (429, 503) or attempt == self._retries:
                return response
            delay = self._retry_after(response, attempt)
            logger.info("endpoint answered %d; retrying in %.2fs", response.status_code, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After")
        if value:
            value = value.strip()
            if value.isdigit():
                return float(min(int(value), 300))
            try:
                moment = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                moment = None
            if moment is not None:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return float(min(max(0.0, (moment - self._now()).total_seconds()), 300.0))
        return float(min(2.0**attempt * 0.5, 30.0))

    def _metadata(self) -> dict[str, Any]:
        response = self._send("GET", self._path)
        if response.status_code in (401, 403):
            raise AssessmentError(f"{self._base} refused the API key ({response.status_code})")
        if response.status_code == 404:
            raise AssessmentError(f"{self._base} has no model {self._model!r}")
        if response.status_code != 200:
            raise AssessmentError(f"{self._base} answered {response.status_code} for metadata")
        try:
            data = response.json()
        except ValueError as exc:
            raise AssessmentError(f"{self._base} sent metadata that is not JSON") from exc
        if not isinstance(data, dict):
            raise AssessmentError(f"{self._base} sent malformed metadata")
        return data

    def _request(self, batch: NDArray[np.float32]) -> tuple[NDArray[Any], str, bool]:
        feed = self._domain.preprocess(batch).astype(_DATATYPES[self._datatype])
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": self._input_name,
                    "shape": [int(feed.shape[0]), *self._sample_shape],
                    "datatype": self._datatype,
                    "data": feed.reshape(-1).tolist(),
                }
            ]
        }
        if self._output_name:
            body["outputs"] = [{"name": self._output_name}]
        response = self._send("POST", f"{self._path}/infer", body)
        if response.status_code == 200:
            return self._decode(response, feed.shape[0])
        text = response.text[:200].lower()
        if response.status_code == 413 or (
            response.status_code in (400, 422) and any(w in text for w in _SIZE_WORDS)
        ):
            raise _TooLarge
        if response.status_code in (401, 403):
            raise AssessmentError(f"{self._base} refused the API key ({response.status_code})")
        if response.status_code == 429:
            raise AssessmentError(f"{self._base} kept rate-limiting after {self._retries} retries")
        raise AssessmentError(f"{self._base} answered {response.status_code} to an inference")

    def _decode(self, response: httpx.Response, n: int) -> tuple[NDArray[Any], str, bool]:
        """The chosen output tensor, its datatype, and whether it is a top-k answer."""
        try:
            outputs = response.json()["outputs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AssessmentError(f"{self._base} sent a malformed inference response") from exc
        if not isinstance(outputs, list) or not outputs:
            raise AssessmentError(f"{self._base} sent no outputs")
        chosen = outputs[0]
        if self._output_name:
            named = [
                o for o in outputs if isinstance(o, dict) and o.get("name") == self._output_name
            ]
            if not named:
                raise AssessmentError(f"{self._base} sent no output {self._output_name!r}")
            chosen = named[0]
        try:
            datatype = str(chosen["datatype"]).upper()
            shape = [int(d) for d in chosen["shape"]]
            values = np.asarray(chosen["data"], dtype=np.float64)
            array = values.reshape(shape)
            parameters = chosen.get("parameters") or {}
            top_k = isinstance(parameters, dict) and parameters.get("top_k") is not None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AssessmentError(f"{self._base} sent a malformed output tensor") from exc
        if array.shape[0] != n:
            raise AssessmentError(f"{self._base} answered {array.shape[0]} rows for {n} inputs")
        if not np.isfinite(array).all():
            raise AssessmentError(f"{self._base} answered non-finite scores")
        return array, datatype, top_k

    def _infer(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float64], OutputKind]:
        """Scores (or labels) for a batch, in as few requests as the endpoint accepts."""
        batch = check_batch(self._domain, x)
        remaining = self._queries.remaining
        if remaining is not None and batch.shape[0] > remaining:
            raise QueryBudgetError(
                f"query budget of {self._queries.limit} exhausted ({self._queries.used} used, "
                f"{batch.shape[0]} more asked)"
            )
        parts: list[NDArray[Any]] = []
        kind = OutputKind.LOGITS
        start = 0
        while start < batch.shape[0]:
            chunk = batch[start : start + self._batch_size]
            try:
                array, datatype, top_k = self._request(chunk)
            except _TooLarge:
                if self._batch_size == 1:
                    raise AssessmentError(
                        f"{self._base} refuses even one sample per request"
                    ) from None
                self._batch_size = max(1, self._batch_size // 2)
                logger.info("endpoint refused the batch; now %d per request", self._batch_size)
                continue
            self._queries.charge(chunk.shape[0], requests=0)
            if datatype in _LABEL_TYPES or array.ndim == 1 or array.shape[1] == 1:
                kind = OutputKind.LABELS
                array = array.reshape(-1)
            elif top_k or _rounded_probabilities(array):
                kind = OutputKind.PROBABILITIES
            else:
                kind = detect_output(array)
            parts.append(array)
            start += chunk.shape[0]
        return np.concatenate(parts), kind

    # -- Target -----------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Samples per request, as learned from the endpoint."""
        return self._batch_size

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        values, _ = self._infer(x)
        if self._output is OutputKind.LABELS:
            return one_hot(values.astype(np.int64), self._info.num_classes)
        return np.asarray(values, dtype=np.float64)

    def predict_labels(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        values, _ = self._infer(x)
        if self._output is OutputKind.LABELS:
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values.argmax(axis=1), dtype=np.int64)

    def torch_model(self) -> torch.nn.Module:
        raise AssessmentError("a remote endpoint is a black box: it has no gradients")

    def close(self) -> None:
        self._client.close()


class _TooLarge(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The endpoint refused a batch for its size."""
