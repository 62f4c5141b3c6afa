"""Run every benchmark, each side by side with its anchor, one after another (`make bench`).

Each script prints its own table and ratios; extra arguments after ``--`` are passed to all.
The list is explicit: a new benchmark is added here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS: tuple[str, ...] = (
    "scan_detection.py",  # detection / false positives vs picklescan, modelscan, fickling
    "scan_bench.py",  # scan speed vs picklescan on a >=1 GB checkpoint and many small files
    "sign_bench.py",  # signing speed vs model-signing and hashlib on a >=1 GB file
    "pgd_bench.py",  # PGD-40 time vs the 40 forward+backward bound, torchattacks, ART
    "gateway_bench.py",  # gateway (every guard on, replica mode) vs a bare Starlette app
    "remote_bench.py",  # remote target: requests and time per 1,000 queries vs one per query
    "extraction_gateway.py",  # extraction through the gateway, with and without hardening
)


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(here / name)])
        print(f"=== {name}: exit {code} in {time.monotonic() - started:.0f} s ===", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
