"""safetensors headers: bounds, overlaps, sizes, metadata, duplicate keys, header size."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bastion.artifacts.findings import ScanStatus


def _file(header: dict[str, object] | str, data: bytes) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_real_file_is_clean_and_loads(scan, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {"w": np.ones((3, 4), dtype=np.float32), "b": np.arange(3, dtype=np.int64)}
    save_file(tensors, path, metadata={"format": "np"})
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "safetensors"
    np.testing.assert_array_equal(load_file(path)["b"], tensors["b"])


def test_handmade_valid_file_is_clean(scan) -> None:
    header = {"a": _tensor("F32", [2], 0, 8), "b": _tensor("BF16", [2, 2], 8, 16)}
    assert scan(_file(header, bytes(16))).status is ScanStatus.CLEAN


@pytest.mark.parametrize(
    ("header", "data_size", "rule"),
    [
        (
            {"a": _tensor("F32", [4], 0, 16), "b": _tensor("F32", [2], 8, 16)},
            16,
            "SAFETENSORS-OFFSETS",
        ),
        ({"a": _tensor("F32", [4], 0, 16)}, 8, "SAFETENSORS-OFFSETS"),
        ({"a": _tensor("F32", [4], 0, 12)}, 12, "SAFETENSORS-DTYPE-SHAPE"),
        ({"a": _tensor("F32", [1], 0, 4)}, 12, "SAFETENSORS-OFFSETS"),
        ({"a": _tensor("F32", [1], 8, 12)}, 12, "SAFETENSORS-OFFSETS"),
        ({"a": _tensor("F32", [1], 4, 0)}, 4, "SAFETENSORS-OFFSETS"),
        ({"a": _tensor("X99", [1], 0, 4)}, 4, "SAFETENSORS-MALFORMED"),
        ({"a": _tensor("F32", [-1], 0, 4)}, 4, "SAFETENSORS-MALFORMED"),
        ({"__metadata__": {"k": 1}, "a": _tensor("F32", [1], 0, 4)}, 4, "SAFETENSORS-MALFORMED"),
        ({"a": "not a tensor"}, 0, "SAFETENSORS-MALFORMED"),
    ],
    ids=[
        "overlap",
        "out-of-bounds",
        "dtype-shape-mismatch",
        "trailing-gap",
        "leading-gap",
        "reversed",
        "unknown-dtype",
        "negative-dim",
        "metadata-not-strings",
        "entry-not-object",
    ],
)
def test_hostile_headers_are_unsafe(scan, rule_ids, header, data_size: int, rule: str) -> None:
    result = scan(_file(header, bytes(data_size)))
    assert result.status is ScanStatus.UNSAFE
    assert rule in rule_ids(result)


def test_huge_header_length_is_a_limit_not_an_allocation(scan, rule_ids) -> None:
    data = struct.pack("<Q", 1 << 40) + b'{"a": 1}'
    result = scan(data)
    assert result.format == "safetensors"
    assert "SCAN-LIMIT-HEADER" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_header_past_the_end(scan, rule_ids) -> None:
    data = struct.pack("<Q", 4096) + b'{"a": {}}'
    result = scan(data)
    assert "SAFETENSORS-MALFORMED" in rule_ids(result)


def test_invalid_json_fails_closed(scan, rule_ids) -> None:
    result = scan(_file('{"a": {"dtype": "F32",', bytes(4)))
    assert result.status is ScanStatus.UNSAFE
    assert "SAFETENSORS-MALFORMED" in rule_ids(result)


def test_duplicate_keys_are_reported(scan, rule_ids) -> None:
    text = (
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    )
    result = scan(_file(text, bytes(4)))
    assert "SAFETENSORS-DUPLICATE-KEY" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


@pytest.mark.parametrize("header", ["[1, 2, 3]", ' {"a": {}}'], ids=["array", "leading-space"])
def test_header_that_is_not_an_object_is_still_safetensors(scan, rule_ids, header: str) -> None:
    result = scan(_file(header, b""))
    assert result.format == "safetensors"
    assert result.status is ScanStatus.UNSAFE
    assert "SAFETENSORS-MALFORMED" in rule_ids(result)
