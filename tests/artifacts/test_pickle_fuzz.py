"""Bounded mutation fuzzing of the pickle analyser (hypothesis; a few seconds).

Seeds are benign pickles written by the real pickler (protocols 0-5, a torch ``data.pkl``, a
joblib file) and malicious ones built opcode by opcode; hypothesis flips, truncates, inserts,
deletes and duplicates bytes. Properties:

- no exception ever escapes ``analyze_pickle`` and it returns well-formed values;
- it ends within its limits (time per input is bounded);
- a stream that ``pickletools`` rejects (``genops`` fails, or ``dis`` finds a stack, mark or
  memo error) is never reported clean: at least one finding of severity HIGH.

Longer runs: ``scripts/fuzz_pickle.py`` (atheris).
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
import time
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.artifacts.findings import Finding, Severity
from bastion.artifacts.pickle_scan import PickleLimits, analyze_pickle, looks_like_pickle

torch = importlib.import_module("torch")
joblib = importlib.import_module("joblib")


def _seeds() -> list[bytes]:
    obj = {
        "w": [1.5, -2, 2**70, None, True],
        "s": "t\u00e9xt",
        "b": b"\x00\x01",
        "t": (1, (2, 3)),
        "set": {1, 2},
        "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    seeds = [pickle.dumps(obj, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    buf = io.BytesIO()
    torch.save({"weight": torch.ones(2, 2), "step": 3}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        seeds.append(z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))
    jb = io.BytesIO()
    joblib.dump({"a": np.ones(5), "o": np.array([1, "x"], dtype=object)}, jb)
    seeds.append(jb.getvalue())
    seeds += [
        b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.",
        b"cos\nsystem\n(S'id'\ntR.",
        b"(S'id'\nios\nsystem\n.",
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93\x8c\x02id\x85R.",
        b"\x80\x04\x8c\x08argparse\x8c\tNamespace\x93)\x81N}\x8c\x0c__setstate__\x8c\x02os"
        b"\x8c\x06system\x93s\x86b\x8c\x02idb.",
    ]
    return seeds


SEEDS = _seeds()
LIMITS = PickleLimits(max_opcodes=200_000, max_memo=10_000, max_stack=10_000)

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("dup"), st.integers(0, 1 << 16), st.integers(1, 32)),
)


def _mutate(data: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in ops:
        if not buf:
            break
        i = where % (len(buf) + 1)
        if kind == "flip" and i < len(buf):
            assert isinstance(arg, int)
            buf[i] ^= arg
        elif kind == "cut":
            del buf[i:]
        elif kind == "insert":
            assert isinstance(arg, bytes)
            buf[i:i] = arg
        elif kind == "delete":
            assert isinstance(arg, int)
            del buf[i : i + arg]
        elif kind == "dup":
            assert isinstance(arg, int)
            buf[i:i] = buf[i : i + arg]
    return bytes(buf)


def _pickletools_rejects(data: bytes) -> bool:
    """Whether the stdlib's own pickle tooling finds the stream malformed."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:
        return True
    if not ops or ops[-1][0].name != "STOP":
        return True
    end = ops[-1][2] + 1
    if end != len(data):
        return True  # trailing bytes: analysed with allow_trailing=False
    try:
        pickletools.dis(data, out=io.StringIO())
    except Exception:
        return True
    return False


def _check(data: bytes) -> None:
    start = time.perf_counter()
    a = analyze_pickle(data, path="fuzz.pkl", limits=LIMITS)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert 0 <= a.end <= len(data)
    assert all(isinstance(f, Finding) for f in a.findings)
    assert all(isinstance(g, str) for g in a.globals)
    worst = max((f.severity for f in a.findings), default=None)
    if not a.complete:
        assert worst is not None
        assert worst >= Severity.HIGH
    # joblib interleaves raw array bytes with the opcodes: pickletools is no oracle there
    if b"NumpyArrayWrapper" not in data and _pickletools_rejects(data):
        assert worst is not None, "malformed stream reported clean"
        assert worst >= Severity.HIGH
    looks_like_pickle(data[:64])


@settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.sampled_from(SEEDS), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_pickles(seed: bytes, ops: list[tuple[str, int, object]]) -> None:
    _check(_mutate(seed, ops))


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    _check(data)


def test_every_seed_truncation_and_single_flip() -> None:
    """Exhaustive over the small seeds: every prefix, and every byte set to 0xff."""
    for seed in SEEDS:
        if len(seed) > 400:
            continue
        for cut in range(len(seed)):
            _check(seed[:cut])
        for i in range(len(seed)):
            _check(seed[:i] + b"\xff" + seed[i + 1 :])


def test_seeds_are_what_they_claim(tmp_path: Path) -> None:
    for seed in SEEDS[:6]:
        pickle.loads(seed)
    assert analyze_pickle(SEEDS[-1], path="x").findings
