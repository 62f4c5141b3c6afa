"""Request limits: body size, JSON structure, the tensor against the model's signature."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.gateway.support import GatewayFactory, Keys, MemorySink, infer_body, serving

from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.gateway.models import ServedEntry
from bastion.gateway.responses import Rejection
from bastion.gateway.validation import (
    check_content_length,
    check_json_structure,
    parse_infer,
    read_body,
)

pytestmark = pytest.mark.anyio

Sample = Callable[[int], list[float]]
INFER = "/v2/models/digits/infer"


def _rejection(call: Callable[[], object]) -> Rejection:
    with pytest.raises(Rejection) as info:
        call()
    return info.value


# ----------------------------------------------------------------------------- body size


async def test_declared_body_too_large_is_refused_before_reading(
    make_gateway: GatewayFactory, keys: Keys, sink: MemorySink
):
    gateway = make_gateway(max_body_bytes=2048)
    async with serving(gateway) as client:
        response = await client.post(INFER, content=b"x" * 4096, headers={**keys.headers("client")})
    assert (response.status_code, response.json()) == (413, {"error": "request too large"})
    (record,) = sink.requests()
    assert record.details["reason"] == "Content-Length 4096 > 2048"  # type: ignore[index]


async def test_chunked_body_is_cut_at_the_limit(make_gateway: GatewayFactory, keys: Keys):
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 1 MB offered, in 1 KiB pieces, without a Content-Length
            sent += 1
            yield b" " * 1024

    gateway = make_gateway(max_body_bytes=4096)
    async with serving(gateway) as client:
        response = await client.post(INFER, content=chunks(), headers=keys.headers("client"))
    assert response.status_code == 413
    assert sent <= 6  # reading stopped at the limit, not at the end of the body


async def test_read_body_reassembles_and_limits() -> None:
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"e", "more_body": False},
    ]

    def receiver(items: list[dict[str, Any]]) -> Callable[[], Any]:
        queue = list(items)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        return receive

    assert await read_body(receiver(messages), 5) == b"abcde"
    with pytest.raises(Rejection) as info:
        await read_body(receiver(messages), 4)
    assert info.value.status == 413


@pytest.mark.parametrize("value", [b"12x", b"-1", b"1" * 30, b""])
def test_malformed_content_length(value: bytes) -> None:
    assert _rejection(lambda: check_content_length(value, 1000)).status == 400


def test_content_length_within_limit() -> None:
    check_content_length(b"1000", 1000)
    check_content_length(None, 1000)
    assert _rejection(lambda: check_content_length(b"1001", 1000)).status == 413


async def test_slow_body_times_out_with_408(
    make_gateway: GatewayFactory, keys: Keys, sample: Sample
):
    body = json.dumps(infer_body(sample(0))).encode()

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            await asyncio.sleep(0.1)  # a slowloris client: 100 bytes every 100 ms
            yield body[start : start + 100]

    gateway = make_gateway(timeout_seconds=0.25)
    async with serving(gateway) as client:
        response = await client.post(INFER, content=trickle(), headers=keys.headers("client"))
        after = await client.post(INFER, json=infer_body(sample(0)), headers=keys.headers("client"))
    assert (response.status_code, response.json()) == (408, {"error": "request timeout"})
    assert after.status_code == 200  # the task was uncancelled: the gateway carries on


# ----------------------------------------------------------------------------- JSON structure


def _depth(text: str) -> int:
    """Reference nesting depth, from the parsed document."""

    def depth(value: object) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    return depth(json.loads(text))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{},"\\ax', max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}",ab', max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


@given(value=json_values, max_depth=st.integers(4, 12))
@settings(max_examples=300, deadline=None)
def test_structure_check_agrees_with_the_parsed_depth(value: object, max_depth: int) -> None:
    text = json.dumps(value)
    actual = _depth(text)
    if actual > max_depth:
        assert (
            _rejection(lambda: check_json_structure(text.encode(), max_depth, 10**6)).status == 422
        )
    else:
        check_json_structure(text.encode(), max_depth, 10**6)


@pytest.mark.parametrize("depth", [5, 40, 200])
def test_long_documents_take_the_vectorised_path(depth: int) -> None:
    # Over 64 brackets: the cumulative sum, not the short loop.
    siblings = ",".join(["[1]"] * 40)
    document = ("[" * (depth - 1)) + f"[{siblings}]" + ("]" * (depth - 1))
    assert _depth(document) == depth + 1
    check_json_structure(document.encode(), depth + 1, 10**6)
    assert _rejection(lambda: check_json_structure(document.encode(), depth, 10**6)).status == 422


@pytest.mark.parametrize("text", [b"[[]", b"[]]", b"[}", b"{]", b"]" * 70, b"[" * 10])
def test_unbalanced_brackets(text: bytes) -> None:
    rejection = _rejection(lambda: check_json_structure(text, 16, 1000))
    assert rejection.status in (400, 422)


def test_brackets_in_strings_do_not_count() -> None:
    check_json_structure(
        json.dumps({"id": "[[[[[[[[[[[[[[[[[[[[[[[[", "x": '\\"]'}).encode(), 4, 10
    )


def test_element_count() -> None:
    check_json_structure(json.dumps(list(range(99))).encode(), 4, 100)
    rejection = _rejection(
        lambda: check_json_structure(json.dumps(list(range(200))).encode(), 4, 100)
    )
    assert (rejection.status, rejection.message) == (413, "too many elements")


def test_a_megabyte_of_brackets_is_refused_quickly() -> None:
    import time

    # Bodies of the gateway's default size limit that are each expensive for a naive check:
    # all openers, deep and balanced, many strings, many empty pairs (balanced: the parser
    # refuses it, the check only has to be quick).
    bodies = [b"[" * 2**20, b"[" * 2**19 + b"]" * 2**19, b'"a",' * 2**18, b"[]" * 2**19]
    for n, body in enumerate(bodies):
        start = time.perf_counter()
        if n < 3:
            with pytest.raises(Rejection):
                check_json_structure(body, 16, 2**21)
        else:
            check_json_structure(body, 16, 2**21)
        assert time.perf_counter() - start < 0.25


async def test_deep_and_malformed_json_over_http(make_gateway: GatewayFactory, keys: Keys):
    cases = {
        b"[" * 5000 + b"]" * 5000: (422, "request too deeply nested"),
        b'{"inputs": [}': (400, "malformed JSON"),
        b'{"inputs": [1,]}': (400, "malformed JSON"),
        b"\xff\xfe": (400, "malformed JSON"),
        b"": (400, "malformed JSON"),
        b'{"inputs": []}': (422, "invalid inference request"),
        b'{"inputs": [{"name": "pixels"}]}': (422, "invalid inference request"),
        b'{"inputs": [], "extra": 1}': (422, "invalid inference request"),
    }
    async with serving(make_gateway()) as client:
        for body, expected in cases.items():
            response = await client.post(INFER, content=body, headers=keys.headers("client"))
            assert (response.status_code, response.json()["error"]) == expected, body[:40]


# ----------------------------------------------------------------------------- tensors


@pytest.fixture
def entry(demo_model: ServedModel) -> ServedEntry:
    return ServedEntry.build("digits", "1", demo_model)


def _parse(entry: ServedEntry, document: dict[str, Any], **limits: int) -> Any:
    return parse_infer(
        json.dumps(document).encode(),
        entry,
        max_batch=limits.get("max_batch", 8),
        max_elements=limits.get("max_elements", 10_000),
        output_names=("scores",),
    )


def _tensor(**fields: Any) -> dict[str, Any]:
    tensor = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}
    tensor.update(fields)
    return {"inputs": [tensor]}


def test_valid_tensor_is_decoded(entry: ServedEntry) -> None:
    request = _parse(entry, _tensor(data=[[float(i % 17) for i in range(64)]] * 2, shape=[2, 64]))
    assert request.batch.dtype == np.float32
    assert request.batch.shape == (2, 64)
    assert request.batch[0, 16] == 16.0


@pytest.mark.parametrize(
    ("fields", "status", "message", "reason"),
    [
        ({"name": "image"}, 422, "invalid input tensor", "inputs ['image'] != [pixels]"),
        ({"datatype": "FP64"}, 422, "invalid input tensor", "datatype 'FP64' != FP32"),
        ({"datatype": "BYTES"}, 422, "invalid input tensor", "datatype 'BYTES' != FP32"),
        ({"shape": [64]}, 422, "invalid input tensor", "shape [64] does not fit"),
        ({"shape": [1, 63]}, 422, "invalid input tensor", "does not fit [-1, 64]"),
        ({"shape": [0, 64], "data": []}, 422, "invalid input tensor", "does not fit"),
        ({"shape": [2, 64]}, 422, "invalid input tensor", "64 values for shape [2, 64]"),
        ({"data": [1.0] * 63 + ["1"]}, 422, "invalid input tensor", "data of kind 'U'"),
        ({"data": [1.0] * 63 + [None]}, 422, "invalid input tensor", "data of kind 'O'"),
        ({"data": [[1.0] * 60, [1.0] * 4]}, 422, "invalid input tensor", "not a regular array"),
        ({"data": [1.0] * 63 + [1e30]}, 422, "input values out of range", "outside [0, 16]"),
        ({"data": [1.0] * 63 + [10**30]}, 422, "invalid input tensor", "data of kind 'O'"),
        ({"shape": [True, 64]}, 422, "invalid inference request", "shape.0"),
        ({"shape": [1.0, 64]}, 422, "invalid inference request", "shape.0"),
        ({"shape": [9, 64], "data": [1.0] * 576}, 422, "batch too large", "batch of 9 > 8"),
    ],
)
def test_tensor_refusals(
    entry: ServedEntry, fields: dict[str, Any], status: int, message: str, reason: str
) -> None:
    rejection = _rejection(lambda: _parse(entry, _tensor(**fields)))
    assert (rejection.status, rejection.message) == (status, message)
    assert reason in rejection.reason


def test_two_inputs_are_refused(entry: ServedEntry) -> None:
    document = _tensor()
    document["inputs"].append(dict(document["inputs"][0]))
    assert _rejection(lambda: _parse(entry, document)).message == "invalid input tensor"


def test_too_many_values_for_the_limit(entry: ServedEntry) -> None:
    rejection = _rejection(
        lambda: _parse(entry, _tensor(shape=[4, 64], data=[1.0] * 256), max_elements=200)
    )
    assert (rejection.status, rejection.metric) == (413, "too_many_elements")


@pytest.mark.parametrize(
    ("literal", "metric"),
    [("NaN", "non_finite"), ("Infinity", "non_finite"), ("-Infinity", "non_finite"),
     ("1e999", "non_finite"), ("-0.5", "out_of_range"), ("16.001", "out_of_range")],
)  # fmt: skip
def test_non_finite_and_out_of_range_values(entry: ServedEntry, literal: str, metric: str) -> None:
    values = ", ".join(["1.0"] * 63 + [literal])
    body = (
        '{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", '
        f'"data": [{values}]}}]}}'
    ).encode()
    rejection = _rejection(
        lambda: parse_infer(body, entry, max_batch=8, max_elements=10_000, output_names=())
    )
    assert rejection.status == 422
    assert rejection.metric == metric
    assert rejection.message in ("non-finite input values", "input values out of range")


def test_range_edges_are_accepted(entry: ServedEntry) -> None:
    request = _parse(entry, _tensor(data=[0.0] * 32 + [16.0] * 32))
    assert float(request.batch.min()) == 0.0
    assert float(request.batch.max()) == 16.0


class _IntModel:
    platform = "test"
    inputs = (TensorSpec("tokens", "INT8", (-1, 3)),)
    outputs = (TensorSpec("scores", "FP64", (-1, 2)),)
    input_range = None
    classes = ("a", "b")

    def predict(self, batch: Any) -> Any:
        return np.full((batch.shape[0], 2), 0.5)


def test_integer_inputs_keep_to_their_dtype() -> None:
    entry = ServedEntry.build("ints", "1", _IntModel())

    def parse(data: list[Any]) -> Any:
        document = {
            "inputs": [{"name": "tokens", "shape": [1, 3], "datatype": "INT8", "data": data}]
        }
        return parse_infer(json.dumps(document).encode(), entry, max_batch=4,
                           max_elements=100, output_names=())  # fmt: skip

    assert parse([1, -128, 127]).batch.dtype == np.int8
    assert _rejection(lambda: parse([1, 2, 128])).metric == "out_of_range"
    assert _rejection(lambda: parse([1, 2, 2.5])).metric == "invalid_tensor"


async def test_tensor_errors_over_http_are_generic_and_audited(
    make_gateway: GatewayFactory, keys: Keys, sample: Sample, sink: MemorySink
):
    bad = sample(0)
    bad[5] = 99.0
    async with serving(make_gateway()) as client:
        response = await client.post(INFER, json=infer_body(bad), headers=keys.headers("client"))
        nan = await client.post(
            INFER,
            content=json.dumps(infer_body(sample(0))).replace("0.0", "NaN", 1).encode(),
            headers=keys.headers("client"),
        )
    assert (response.status_code, response.json()) == (422, {"error": "input values out of range"})
    assert (nan.status_code, nan.json()) == (422, {"error": "non-finite input values"})
    reasons = [r.details["reason"] for r in sink.requests()]  # type: ignore[index]
    assert reasons[0] == "pixels: 1 values outside [0, 16] (min 0, max 99)"
    assert reasons[1] == "pixels: 1 NaN or infinite values"
    assert all(math.isfinite(r.details["latency_us"]) for r in sink.requests())  # type: ignore[index,arg-type]
