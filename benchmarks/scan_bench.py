"""Benchmark ``bastion scan`` against picklescan on PyTorch checkpoints.

Usage::

    python benchmarks/scan_bench.py [--size-gb 1.0] [--small-files 200] [--repeat 5]

Two cases, built in a temporary folder (never committed) and removed afterwards:

- ``large``: one PyTorch zip checkpoint of ``--size-gb`` (many 4 MiB tensors), written by
  ``torch.save``;
- ``small``: ``--small-files`` small checkpoints (a few tensors each) in one folder.

Each tool runs as a library call and as its command line, on a warm page cache (one untimed
run first), ``--repeat`` times; the table shows the median and bastion's time divided by
picklescan's. What each covers differs, and the table says so: picklescan (1.0.x) opens every
zip member, reads its first 8 bytes, and unpickle-scans the members whose name ends in a pickle
extension or that start with a pickle protocol header; bastion sniffs every member by content
for every format it knows (so a renamed, headerless or nested payload is found), checks the zip
structure itself (duplicate names, local entries missing from the directory, data before the
archive, bombs), and runs each file in a worker process with time and memory budgets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_TENSOR_MIB = 4


def _build_large(folder: Path, size_gb: float) -> Path:
    import torch

    count = max(1, int(size_gb * 1024 / _TENSOR_MIB))
    elements = _TENSOR_MIB * 2**20 // 4
    generator = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.rand(elements, generator=generator) for i in range(count)}
    path = folder / "large.pt"
    torch.save(state, path)
    return path


def _build_small(folder: Path, count: int) -> Path:
    import torch

    target = folder / "small"
    target.mkdir()
    generator = torch.Generator().manual_seed(1)
    for i in range(count):
        state = {
            "conv.weight": torch.rand(16, 3, 3, 3, generator=generator),
            "conv.bias": torch.rand(16, generator=generator),
            "fc.weight": torch.rand(10, 64, generator=generator),
        }
        torch.save(state, target / f"model_{i:04d}.pt")
    return target


def _median(run: Callable[[], object], repeat: int) -> float:
    run()  # warm the page cache and the imports
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _bastion_library(target: Path) -> Callable[[], object]:
    from bastion.artifacts.findings import ScanStatus
    from bastion.artifacts.scan import scan_paths

    def run() -> object:
        report = scan_paths([target])
        assert all(r.status is ScanStatus.CLEAN for r in report.results), report
        return report

    return run


def _picklescan_library(target: Path) -> Callable[[], object]:
    from picklescan.scanner import scan_directory_path, scan_file_path

    def run() -> object:
        result = scan_directory_path(target) if target.is_dir() else scan_file_path(target)
        assert result.infected_files == 0, result
        return result

    return run


def _command(argv: list[str]) -> Callable[[], object]:
    def run() -> object:
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode not in (0,):
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-500:]!r}")
        return done

    return run


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = candidate if candidate.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (pip install -e '.[bench]')")
    return str(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="large checkpoint size")
    parser.add_argument("--small-files", type=int, default=200, help="number of small files")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.build is not None:  # the child that writes the samples (see below)
        _build_large(args.build, args.size_gb)
        _build_small(args.build, args.small_files)
        return 0

    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        folder = Path(tmp)
        print(f"building samples in {folder} ...", flush=True)
        # Built by a child process: importing torch here would make every fork this process
        # does (bastion's workers) copy torch's page tables, which a user's shell does not.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--build",
                str(folder),
                "--size-gb",
                str(args.size_gb),
                "--small-files",
                str(args.small_files),
            ],
            check=True,
        )
        large = folder / "large.pt"
        small = folder / "small"
        size = large.stat().st_size
        print(f"large: {size / 2**30:.2f} GiB, {size // (_TENSOR_MIB * 2**20)} tensors")
        print(f"small: {args.small_files} checkpoints in {small}")
        print(f"cores: {os.cpu_count()}, repeat: {args.repeat} (median of warm runs)\n")
        bastion = [sys.executable, "-m", "bastion", "scan"]
        picklescan = [_bin("picklescan"), "-p"]
        for case, target in (("large", large), ("small", small)):
            lib_b = _median(_bastion_library(target), args.repeat)
            lib_p = _median(_picklescan_library(target), args.repeat)
            cli_b = _median(_command([*bastion, str(target)]), args.repeat)
            cli_p = _median(_command([*picklescan, str(target)]), args.repeat)
            rows.append((case, "library", lib_b, lib_p))
            rows.append((case, "command line", cli_b, cli_p))
        startup_b = _median(_command([sys.executable, "-m", "bastion", "--version"]), 3)
        startup_p = _median(_command([*picklescan[:1], "--help"]), 3)
    rows.append(("start-up only", "command line", startup_b, startup_p))

    header = f"{'case':<14} {'mode':<13} {'bastion s':>10} {'picklescan s':>13} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for case, mode, b, p in rows:
        print(f"{case:<14} {mode:<13} {b:>10.3f} {p:>13.3f} {b / p:>7.2f}")
    print(
        "\nratio = bastion / picklescan (below 1: bastion faster)."
        "\nCoverage differs: picklescan unpickle-scans only zip members named like pickles or"
        "\nstarting with a protocol header, reading 8 bytes of the others; bastion sniffs every"
        "\nmember for every format, checks the archive's structure, and isolates each file in a"
        "\nbudgeted worker process."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
