"""Coverage-guided fuzzing of the static pickle analyser with atheris (run by hand).

Usage:
    .venv/bin/python scripts/fuzz_pickle.py [atheris/libFuzzer options] [CORPUS_DIR ...]
    e.g. .venv/bin/python scripts/fuzz_pickle.py -max_total_time=600 -rss_limit_mb=2048

Properties checked on every input (the same as tests/artifacts/test_pickle_fuzz.py):
no exception escapes ``analyze_pickle``; an incomplete analysis always carries a HIGH finding;
a stream that ``pickletools`` rejects is never reported clean. The first run seeds itself with
pickles of the real pickler (protocols 0-5) when no corpus folder is given.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import sys

import atheris

with atheris.instrument_imports():
    from bastion.artifacts.findings import Severity
    from bastion.artifacts.pickle_scan import PickleLimits, analyze_pickle, looks_like_pickle

LIMITS = PickleLimits(max_opcodes=200_000, max_memo=10_000, max_stack=10_000)


def _rejected_by_pickletools(data: bytes) -> bool:
    try:
        ops = list(pickletools.genops(data))
        if not ops or ops[-1][0].name != "STOP" or ops[-1][2] + 1 != len(data):
            return True
        pickletools.dis(data, out=io.StringIO())
    except Exception:
        return True
    return False


def test_one_input(data: bytes) -> None:
    """One fuzz iteration."""
    looks_like_pickle(data[:64])
    analysis = analyze_pickle(data, path="fuzz.pkl", limits=LIMITS)
    worst = max((f.severity for f in analysis.findings), default=None)
    if not analysis.complete and (worst is None or worst < Severity.HIGH):
        raise AssertionError("incomplete analysis without a HIGH finding")
    clean = worst is None or worst < Severity.HIGH
    if clean and b"NumpyArrayWrapper" not in data and _rejected_by_pickletools(data):
        raise AssertionError("pickletools rejects the stream but it was reported clean")


def _seed_corpus() -> list[bytes]:
    obj = {"a": [1, 2.5, None, "x", b"y"], "t": (1, (2,)), "s": {3}, "big": 2**80}
    return [pickle.dumps(obj, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]


def main() -> None:
    args = sys.argv
    if not any(not a.startswith("-") for a in args[1:]):
        for seed in _seed_corpus():  # a quick sanity pass over real pickles first
            test_one_input(seed)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
