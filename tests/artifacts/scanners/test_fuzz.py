"""Property tests: hostile bytes never break the scanner, they become verdicts.

Seeds are real files of every format (written by their libraries); hypothesis flips bytes,
splices and truncates them. Whatever comes out, the scan must return a result without an
internal error (an exception in a scanner is a bug even though the driver fails closed on it).
HDF5 is left out here: its parser is the native HDF5 library, which only ever runs in a
worker process that can be killed.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.artifacts.findings import ScanStatus
from bastion.artifacts.scan import scan_bytes
from bastion.artifacts.scanners import SCANNERS, Hdf5Scanner
from bastion.config import ScanSettings

PURE_PYTHON = tuple(s for s in SCANNERS if not isinstance(s, Hdf5Scanner))
LIMITS = ScanSettings(timeout_seconds=5, memory_mb=256)


def _seeds() -> list[bytes]:
    import torch
    from onnx import helper

    seeds = []
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, buffer)
    seeds.append(buffer.getvalue())
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer, _use_new_zipfile_serialization=False)
    seeds.append(buffer.getvalue())
    seeds.append(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=0))
    seeds.append(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=5))
    buffer = io.BytesIO()
    np.save(buffer, np.arange(8, dtype=np.int32))
    seeds.append(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, a=np.arange(50), b=np.eye(2))
    seeds.append(buffer.getvalue())
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    seeds.append(struct.pack("<Q", len(header)) + header + bytes(8))
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=helper.make_graph([], "t", [], []))],
        "g",
        [],
        [],
    )
    seeds.append(helper.make_model(graph).SerializeToString())
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("m.pkl")
        data = pickle.dumps([1, 2])
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    seeds.append(gzip.compress(tar.getvalue()))
    keras = io.BytesIO()
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
    seeds.append(keras.getvalue())
    return seeds


SEEDS = _seeds()


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        other = draw(st.sampled_from(SEEDS))
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + other + data[cut:]
    return bytes(data)


def _check(data: bytes) -> None:
    result = scan_bytes(data, name="fuzz.bin", settings=LIMITS, scanners=PURE_PYTHON)
    internal = [f for f in result.findings if f.rule_id == "SCAN-INTERNAL-ERROR"]
    assert not internal, internal[0].message
    assert result.status in (ScanStatus.CLEAN, ScanStatus.UNSAFE, ScanStatus.SKIPPED)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutated_model_files_never_break_the_scanner(data: bytes) -> None:
    _check(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_break_the_scanner(data: bytes) -> None:
    _check(data)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_seeds_are_clean(seed: int) -> None:
    result = scan_bytes(SEEDS[seed], name="seed.bin", settings=LIMITS, scanners=PURE_PYTHON)
    assert result.status is ScanStatus.CLEAN, result.findings
