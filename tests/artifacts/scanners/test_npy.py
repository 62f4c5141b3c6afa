"""NumPy ``.npy`` arrays and ``.npz`` archives."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from bastion.artifacts.findings import ScanStatus, Severity


def _object_npy(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|O", "fortran_order": False, "shape": (1,)}
    )
    return buffer.getvalue() + payload


@pytest.mark.parametrize(
    "array",
    [np.arange(10, dtype=np.int64), np.ones((3, 4), dtype=np.float32), np.zeros(0)],
    ids=["int64", "float32-2d", "empty"],
)
def test_numeric_array_is_clean_and_loads(scan, tmp_path: Path, array) -> None:
    path = tmp_path / "a.npy"
    np.save(path, array)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN
    assert result.findings == ()
    np.testing.assert_array_equal(np.load(path), array)


def test_structured_dtype_is_clean(scan, tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")]))
    assert scan(path).status is ScanStatus.CLEAN


def test_benign_object_array_is_noted_and_loads(scan, rule_ids, tmp_path: Path) -> None:
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"label": 1}, "text"], dtype=object), allow_pickle=True)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN
    assert rule_ids(result) == {"NPY-OBJECT-ARRAY"}
    assert np.load(path, allow_pickle=True)[0] == {"label": 1}


def test_object_array_payload_is_unsafe(scan, payloads) -> None:
    data = _object_npy(payloads[2])
    result = scan(data, name="embeddings.npy")
    assert result.status is ScanStatus.UNSAFE
    hit = next(f for f in result.findings if f.symbol == "os.system")
    assert hit.offset is not None
    assert hit.offset >= len(data) - len(payloads[2])


def test_truncated_array_fails_closed(scan, rule_ids, tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(100, dtype=np.float64))
    data = path.read_bytes()
    result = scan(data[:-8])
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_header_that_is_not_a_literal_fails_closed(scan, rule_ids) -> None:
    header = b"{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': ()}"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    result = scan(data)
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_trailing_bytes_are_noted(scan, rule_ids, tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(4))
    result = scan(path.read_bytes() + b"extra")
    assert "NPY-TRAILING-DATA" in rule_ids(result)
    assert result.status is ScanStatus.CLEAN


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_is_clean_and_loads(scan, tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "arrays.npz"
    (np.savez_compressed if compressed else np.savez)(path, a=np.arange(1000), b=np.eye(3))
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "npz"
    with np.load(path) as loaded:
        np.testing.assert_array_equal(loaded["b"], np.eye(3))


def test_npz_member_payload_is_unsafe(scan, payloads, zip_builder, zip_member) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    data = zip_builder(
        [zip_member("a.npy", buffer.getvalue()), zip_member("b.npy", _object_npy(payloads[4]))]
    )
    result = scan(data, name="arrays.npz")
    assert result.status is ScanStatus.UNSAFE
    assert result.format == "npz"
    critical = [f for f in result.findings if f.severity is Severity.CRITICAL]
    assert critical[0].member == "b.npy"
