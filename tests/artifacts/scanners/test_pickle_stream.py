"""Raw pickles, joblib files (plain and compressed) and PyTorch legacy checkpoints."""

from __future__ import annotations

import bz2
import gzip
import lzma
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from bastion.artifacts.findings import ScanStatus, Severity
from bastion.artifacts.pickle_scan import analyze_pickle

Scan = Callable[..., object]


@pytest.mark.parametrize("protocol", range(6))
def test_benign_pickle_is_clean_in_every_protocol(scan, protocol: int) -> None:
    result = scan(pickle.dumps({"weights": [1.0, 2.0], "name": "m"}, protocol=protocol))
    assert result.status is ScanStatus.CLEAN
    assert result.format == "pickle"


@pytest.mark.parametrize("protocol", range(6))
def test_payload_is_unsafe_in_every_protocol(scan, payloads, rule_ids, protocol: int) -> None:
    result = scan(payloads[protocol])
    assert result.status is ScanStatus.UNSAFE
    assert result.max_severity is Severity.CRITICAL
    finding = result.findings[0]
    assert finding.symbol == "os.system"
    assert finding.offset is not None
    assert finding.path.endswith("sample.bin")


def test_headerless_protocol_0_is_recognised_by_content(scan, payloads) -> None:
    # No PROTO opcode, no extension: detection is by the opcodes themselves.
    result = scan(payloads[0], name="weights.txt")
    assert result.format == "pickle"
    assert result.status is ScanStatus.UNSAFE


def test_second_pickle_after_a_benign_one_is_scanned(scan, payloads) -> None:
    result = scan(pickle.dumps([1, 2, 3], protocol=2) + payloads[2])
    assert result.status is ScanStatus.UNSAFE
    assert any(f.symbol == "os.system" and f.offset and f.offset > 0 for f in result.findings)


def test_trailing_bytes_after_stop_are_reported(scan, rule_ids) -> None:
    result = scan(pickle.dumps({"a": 1}, protocol=4) + b"\x00\x01junk-that-is-no-pickle")
    assert "PICKLE-TRAILING-DATA" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_truncated_pickle_fails_closed(scan, rule_ids) -> None:
    data = pickle.dumps({"key": list(range(50))}, protocol=4)
    result = scan(data[: len(data) // 2])
    assert result.status is ScanStatus.UNSAFE
    assert "PICKLE-TRUNCATED" in rule_ids(result)


# -- joblib ---------------------------------------------------------------------------------

COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz"]


@pytest.mark.parametrize("compress", [None, *COMPRESSORS])
def test_joblib_dump_is_clean_and_loads(scan, tmp_path: Path, compress: str | None) -> None:
    path = tmp_path / "model.joblib"
    value = {"coef": np.arange(1000, dtype=np.float64), "bias": np.ones(3), "n": 3}
    joblib.dump(value, path, compress=compress or 0)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    expected = "joblib" if compress is None else f"{compress}:joblib"
    assert result.format == expected
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded["coef"], value["coef"])


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "zlib":
        return zlib.compress(data)
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    return lzma.compress(data, format=lzma.FORMAT_XZ)


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_joblib_compressed_payload_is_unsafe(scan, payloads, kind: str) -> None:
    # joblib.load picks the decompressor by these magic bytes and unpickles the result.
    result = scan(_compress(kind, payloads[4]), name="model.joblib")
    assert result.status is ScanStatus.UNSAFE
    assert result.format == f"{kind}:pickle"
    critical = [f for f in result.findings if f.severity is Severity.CRITICAL]
    assert critical
    assert critical[0].member == f"[{kind}]"


def test_joblib_pre_0_10_zfile_payload_is_unsafe(scan, payloads) -> None:
    body = zlib.compress(payloads[2])
    header = b"ZF" + hex(len(payloads[2])).encode().ljust(19)
    result = scan(header + body)
    assert result.status is ScanStatus.UNSAFE
    assert result.format.startswith("joblib-zf:")


# -- PyTorch legacy -------------------------------------------------------------------------


def _legacy_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    state = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "bias": torch.ones(3)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state


def test_torch_legacy_checkpoint_is_clean_and_loads(scan, tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    state = _legacy_checkpoint(path)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "pytorch-legacy"
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["weight"], state["weight"])


def _pickle_spans(data: bytes, count: int) -> list[tuple[int, int]]:
    spans = []
    offset = 0
    for _ in range(count):
        end = analyze_pickle(data, path="x", start=offset, allow_trailing=True).end
        spans.append((offset, end))
        offset = end
    return spans


@pytest.mark.parametrize("which", range(5))
def test_torch_legacy_payload_in_each_of_the_five_pickles(
    scan, payloads, tmp_path: Path, which: int
) -> None:
    # torch.load unpickles magic number, protocol, sys_info, the object and the storage keys
    # in turn, each before checking its value: a payload in any of them runs.
    path = tmp_path / "legacy.bin"
    _legacy_checkpoint(path)
    data = path.read_bytes()
    start, end = _pickle_spans(data, 5)[which]
    crafted = data[:start] + payloads[2] + data[end:]
    result = scan(crafted)
    assert result.status is ScanStatus.UNSAFE
    hits = [f for f in result.findings if f.symbol == "os.system"]
    assert hits
    assert hits[0].offset is not None
    assert start <= hits[0].offset < start + len(payloads[2])


def test_torch_legacy_missing_pickles_fail_closed(scan, rule_ids, tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    _legacy_checkpoint(path)
    data = path.read_bytes()
    _, end = _pickle_spans(data, 2)[1]
    result = scan(data[:end])
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_pickle_with_leftovers_on_the_stack_is_still_sniffed(scan) -> None:
    # CPython's STOP pops one item and returns: marks and items left behind do not matter, and
    # protocol 4 opcodes run without a PROTO header.
    data = b"(N2U\x00" + b"\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    result = scan(data)
    assert result.format == "pickle"
    assert result.status is ScanStatus.UNSAFE


def test_python_source_is_not_taken_for_a_pickle(scan) -> None:
    result = scan(b"class TinyNet(Module):\n  __parameters__ = []\n  def forward(self):\n")
    assert result.status is ScanStatus.SKIPPED
