"""Detection benchmark: bastion scan vs picklescan, modelscan and fickling on the attack corpus.

Builds the corpus of ``tests/corpus/generate.py`` (or reuses one with ``--corpus``), scans every
file with each tool, and prints, per tool and per class, how many malicious files it flagged and
how many benign files it flagged by mistake, then every file bastion got wrong.

Verdicts are normalised to ``unsafe`` (the tool reported a problem), ``clean`` (it did not),
``skipped`` (it did not examine the file), ``error`` (it crashed or gave up) and ``timeout``.
The headline rates count only ``unsafe`` as a detection; the "fail-closed" line also counts
errors, timeouts and skips. The anchors run one file at a time in a worker process with a
memory cap and a per-file timeout, so bombs cannot take the benchmark down.

How each anchor is asked:
    picklescan: ``picklescan.scanner.scan_file_path`` (dangerous globals -> unsafe,
                scan_err -> error).
    modelscan:  ``ModelScan().scan(path)`` (any issue -> unsafe, errors -> error, nothing scanned
                -> skipped). modelscan picks files by extension, by design.
    fickling:   the logic of ``fickling --huggingface``: zips through ``scan_zip_archive``,
                pickles (by content or a pickle extension) through ``scan_file``, severity above
                LIKELY_SAFE -> unsafe; 7z/tar/NumPy are skipped as fickling does.

Usage:
    python benchmarks/scan_detection.py [--corpus DIR] [--timeout 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tests" / "corpus" / "generate.py"
ANCHORS = ("picklescan", "modelscan", "fickling")
VERDICTS = ("unsafe", "clean", "skipped", "error", "timeout")


def _generator() -> ModuleType:
    name = "bastion_corpus_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---- anchors, run inside a worker process -------------------------------------------------------


def _picklescan(path: str) -> tuple[str, str]:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(path)
    dangerous = [f"{g.module}.{g.name}" for g in result.globals if g.safety.value == "dangerous"]
    if result.issues_count > 0 or result.infected_files > 0:
        return "unsafe", ", ".join(dangerous[:3])
    if result.scan_err:
        return "error", "scan error"
    return "clean", ""


def _modelscan(path: str) -> tuple[str, str]:
    from modelscan.modelscan import ModelScan

    result = ModelScan().scan(path)
    issues = result.get("issues", [])
    if issues:
        first = issues[0]
        return "unsafe", f"{first.get('module')}.{first.get('operator')}"
    if result.get("errors"):
        return "error", str(result["errors"][0])[:120]
    if not result.get("summary", {}).get("scanned", {}).get("total_scanned"):
        return "skipped", "not scanned"
    return "clean", ""


def _fickling(path: str) -> tuple[str, str]:
    from fickling.loader import scan_file, scan_zip_archive
    from fickling.polyglot import find_file_properties

    props = find_file_properties(path)
    ext = Path(path).suffix.lower()
    if props.get("is_torch_zip") or props.get("is_standard_zip") or ext in (".pt", ".pth"):
        results = list(scan_zip_archive(path, graceful=True).values())
    elif props.get("is_valid_pickle") or ext in (".bin", ".pkl", ".pickle"):
        results = [scan_file(path, graceful=True)]
    elif props.get("is_7z") or props.get("is_tar") or props.get("is_numpy_pickle"):
        return "skipped", "7z/tar/NumPy not supported"
    else:
        return "skipped", "not a pickle"
    if not results:
        return "skipped", "no pickle members"
    bad = [r for r in results if not r.is_safe]
    if bad:
        return "unsafe", bad[0].severity.name
    if any(r.errors for r in results):
        return "error", results[0].errors[0][:120] if results[0].errors else "error"
    return "clean", ""


_TOOLS = {"picklescan": _picklescan, "modelscan": _modelscan, "fickling": _fickling}


def _worker(tool: str, memory_mb: int) -> int:
    """Read paths on stdin, answer one JSON line each: {"verdict", "detail"}."""
    import logging
    import resource
    import warnings

    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    devnull = Path(os.devnull).open("w")  # noqa: SIM115 - the anchors print; keep stdout clean
    real_stdout = sys.stdout
    sys.stdout = devnull
    sys.setrecursionlimit(20000)
    fn = _TOOLS[tool]
    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            verdict, detail = fn(path)
        except BaseException as exc:  # a crash is the anchor's verdict
            verdict, detail = "error", f"{type(exc).__name__}: {str(exc)[:120]}"
        real_stdout.write(json.dumps({"verdict": verdict, "detail": detail}) + "\n")
        real_stdout.flush()
    return 0


class _Runner:
    """One anchor worker process; restarted after a timeout or a crash."""

    def __init__(self, tool: str, timeout: float, memory_mb: int) -> None:
        self.tool = tool
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            self.tool,
            "--memory-mb",
            str(self.memory_mb),
        ]
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def scan(self, path: Path) -> dict[str, str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc = None
            return {"verdict": "error", "detail": "worker died"}
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            return {"verdict": "timeout", "detail": f">{self.timeout:.0f}s"}
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return {"verdict": "error", "detail": "worker died (memory cap or crash)"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# ---- bastion ----------------------------------------------------------------------------------


def _bastion(files: Path) -> tuple[dict[str, dict[str, str]], float]:
    from bastion.artifacts import scan_paths

    started = time.monotonic()
    report = scan_paths([files])
    seconds = time.monotonic() - started
    out: dict[str, dict[str, str]] = {}
    for r in report.results:
        rel = Path(r.path).relative_to(files).as_posix()
        detail = r.skip_reason or "; ".join(
            f"{f.rule_id}/{f.severity.label}" for f in r.findings[:2]
        )
        verdict = {"unsafe": "unsafe", "clean": "clean", "skipped": "skipped"}[r.status.value]
        out[rel] = {"verdict": verdict, "detail": detail}
    return out, seconds


# ---- report -------------------------------------------------------------------------------------


def _table(
    entries: list[Any], results: dict[str, dict[str, dict[str, str]]], tools: list[str]
) -> str:
    classes = sorted({e.cls for e in entries})
    head = f"{'class':18}" + "".join(f" | {t:>10} mal  {t[:5]:>5} fp" for t in tools)
    lines = [head, "-" * len(head)]

    def cell(tool: str, group: list[Any], verdicts: tuple[str, ...]) -> str:
        if not group:
            return "     -"
        hit = sum(1 for e in group if results[tool].get(e.path, {}).get("verdict") in verdicts)
        return f"{hit:>3}/{len(group):<3}"

    for cls in classes:
        mal = [e for e in entries if e.cls == cls and e.expected == "unsafe"]
        ben = [e for e in entries if e.cls == cls and e.expected == "clean"]
        row = f"{cls:18}"
        for t in tools:
            row += f" |     {cell(t, mal, ('unsafe',)):>9}  {cell(t, ben, ('unsafe',)):>8}"
        lines.append(row)
    mal = [e for e in entries if e.expected == "unsafe"]
    ben = [e for e in entries if e.expected == "clean"]
    lines.append("-" * len(head))
    for label, verdicts in (
        ("detected (unsafe)", ("unsafe",)),
        ("fail-closed", ("unsafe", "error", "timeout", "skipped")),
    ):
        row = f"{label:18}"
        for t in tools:
            d = sum(1 for e in mal if results[t].get(e.path, {}).get("verdict") in verdicts)
            f = sum(1 for e in ben if results[t].get(e.path, {}).get("verdict") in verdicts)
            row += f" | {100 * d / len(mal):6.1f}% det {100 * f / len(ben):5.1f}% fp"
        lines.append(row)
    row = f"{'errors/timeouts':18}"
    for t in tools:
        n = sum(
            1 for e in entries if results[t].get(e.path, {}).get("verdict") in ("error", "timeout")
        )
        row += f" | {n:>10} files        "
    lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, help="existing corpus folder (manifest.json + files/)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per file for anchors")
    parser.add_argument("--memory-mb", type=int, default=6144, help="memory cap of anchor workers")
    parser.add_argument("--tools", nargs="*", default=list(ANCHORS), choices=ANCHORS)
    parser.add_argument("--json", type=Path, help="write every verdict here")
    parser.add_argument("--worker", choices=ANCHORS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.memory_mb)

    gen = _generator()
    with tempfile.TemporaryDirectory(prefix="bastion-corpus-") as tmp:
        root = args.corpus or Path(tmp)
        if args.corpus and (root / "manifest.json").exists():
            entries = gen.load_manifest(root)
        else:
            started = time.monotonic()
            entries = gen.build_corpus(root)
            print(f"corpus built in {time.monotonic() - started:.1f}s: {len(entries)} files")
        files = root / "files"
        scanned = [e for e in entries if e.expected != "aux"]
        results: dict[str, dict[str, dict[str, str]]] = {}
        results["bastion"], seconds = _bastion(files)
        print(f"bastion: {seconds:.1f}s")
        for tool in args.tools:
            runner = _Runner(tool, args.timeout, args.memory_mb)
            started = time.monotonic()
            results[tool] = {e.path: runner.scan(files / e.path) for e in scanned}
            runner.close()
            print(f"{tool}: {time.monotonic() - started:.1f}s")
        tools = ["bastion", *args.tools]
        print()
        counts = defaultdict(int)
        for e in scanned:
            counts[e.expected] += 1
        print(
            f"{counts['unsafe']} malicious, {counts['clean']} benign files "
            "(mal = malicious flagged unsafe, fp = benign flagged unsafe)\n"
        )
        print(_table(scanned, results, tools))
        print("\nbastion misses (malicious not unsafe):")
        for e in scanned:
            r = results["bastion"].get(e.path, {"verdict": "missing", "detail": ""})
            if e.expected == "unsafe" and r["verdict"] != "unsafe":
                print(f"  {e.path} <{e.cls}> {r['verdict']}: {r['detail'][:100]}  -- {e.technique}")
        print("\nbastion false positives (benign not clean):")
        for e in scanned:
            r = results["bastion"].get(e.path, {"verdict": "missing", "detail": ""})
            if e.expected == "clean" and r["verdict"] != "clean":
                print(f"  {e.path} <{e.cls}> {r['verdict']}: {r['detail'][:100]}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "entries": [
                            e.__dict__
                            if hasattr(e, "__dict__")
                            else {f: getattr(e, f) for f in e.__slots__}
                            for e in entries
                        ],
                        "results": results,
                    },
                    indent=1,
                )
                + "\n",
                encoding="utf-8",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
