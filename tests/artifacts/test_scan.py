"""The scan driver: walking, special files, budgets enforced by worker processes, verdicts."""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import struct
import time
from pathlib import Path

import pytest

import bastion.artifacts.scan as scan_module
from bastion.artifacts.findings import FileResult, ScanStatus, Severity
from bastion.artifacts.scan import (
    collect_targets,
    scan_bytes,
    scan_paths,
)
from bastion.config import ScanSettings
from bastion.errors import ScanError

#: os.system('true'), opcode by opcode; never loaded.
PAYLOAD = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
FAST = ScanSettings(workers=2)


def _by_name(results: tuple[FileResult, ...]) -> dict[str, FileResult]:
    return {Path(r.path).name: r for r in results}


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "clean.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (folder / "sub" / "evil.bin").write_bytes(PAYLOAD)
    (folder / "notes.txt").write_text("hello\n")
    return folder


def test_folder_is_walked_and_each_file_gets_a_verdict(model_folder: Path) -> None:
    seen: list[str] = []
    report = scan_paths([model_folder], FAST, progress=lambda r: seen.append(r.path))
    results = _by_name(report.results)
    assert set(results) == {"clean.pkl", "evil.bin", "notes.txt"}
    assert results["clean.pkl"].status is ScanStatus.CLEAN
    assert results["evil.bin"].status is ScanStatus.UNSAFE
    assert results["notes.txt"].status is ScanStatus.SKIPPED
    assert "not recognised" in results["notes.txt"].skip_reason
    assert sorted(seen) == sorted(r.path for r in report.results)
    assert [r.path for r in report.results] == sorted(r.path for r in report.results)


def test_in_process_and_isolated_scans_agree(model_folder: Path) -> None:
    isolated = scan_paths([model_folder], FAST)
    in_process = scan_paths([model_folder], FAST, isolate=False)
    assert [(r.path, r.status, r.format) for r in isolated.results] == [
        (r.path, r.status, r.format) for r in in_process.results
    ]


def test_symlink_leaving_the_folder_is_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(PAYLOAD)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.pkl").symlink_to(outside)
    report = scan_paths([folder], FAST)
    (result,) = report.results
    assert result.status is ScanStatus.UNSAFE
    assert [f.rule_id for f in result.findings] == ["SYMLINK-ESCAPE"]  # payload never read


def test_symlink_inside_the_folder_is_scanned_once(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "real.pkl").write_bytes(pickle.dumps([1]))
    (folder / "alias.pkl").symlink_to(folder / "real.pkl")
    (folder / "dangling.pkl").symlink_to(folder / "missing.pkl")
    results = _by_name(scan_paths([folder], FAST).results)
    assert set(results) == {"real.pkl", "dangling.pkl"}
    assert results["dangling.pkl"].skip_reason == "broken symlink"


@pytest.mark.timeout(60)
def test_fifo_and_device_are_skipped_without_opening(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    os.mkfifo(folder / "pipe")  # opening it for reading would block forever
    started = time.monotonic()
    report = scan_paths([folder, folder / "pipe", "/dev/null"], FAST)
    assert time.monotonic() - started < 30
    assert [r.status for r in report.results] == [ScanStatus.SKIPPED, ScanStatus.SKIPPED]
    assert all("not a regular file" in r.skip_reason for r in report.results)


def test_unreadable_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.pkl"
    path.write_bytes(pickle.dumps(1))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user
        real_open = os.open

        def refusing_open(name: str, flags: int, *args: int) -> int:
            if str(name) == str(path):
                raise PermissionError(13, "Permission denied", str(name))
            return real_open(name, flags, *args)

        monkeypatch.setattr(os, "open", refusing_open)
    (result,) = scan_paths([path], FAST).results
    assert result.status is ScanStatus.SKIPPED
    assert result.skip_reason == "cannot read: permission denied"


def test_empty_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (result,) = scan_paths([tmp_path / "empty.pt"], FAST).results
    assert result.status is ScanStatus.SKIPPED
    assert result.skip_reason == "empty file"


def test_missing_path_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="no such file"):
        collect_targets([tmp_path / "absent"])


def test_file_over_the_size_limit_is_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(list(range(1000))))
    (result,) = scan_paths([path], ScanSettings(max_file_bytes=100)).results
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].rule_id == "SCAN-LIMIT-SIZE"


def test_cooperative_time_budget(tmp_path: Path) -> None:
    # Two million NONE/POP pairs: cheap to write, slow to walk.
    path = tmp_path / "slow.pkl"
    path.write_bytes(b"\x80\x04" + b"N0" * 2_000_000 + b"N.")
    settings = ScanSettings(timeout_seconds=0.05, max_pickle_opcodes=10**8)
    (result,) = scan_paths([path], settings).results
    assert result.status is ScanStatus.UNSAFE
    assert {f.rule_id for f in result.findings} & {"SCAN-LIMIT-TIME", "PICKLE-LIMIT"}


def _sabotage(monkeypatch: pytest.MonkeyPatch, name: str, action) -> None:
    """Make the worker misbehave on files called ``name`` (workers are forked after this)."""
    real = scan_module._scan_path

    def wrapped(path: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).name == name:
            action()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "_scan_path", wrapped)


def test_stuck_worker_is_killed_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader stuck in C code never checks its deadline: the parent kills the worker.
    _sabotage(monkeypatch, "stuck.pkl", lambda: time.sleep(60))
    for name in ("a.pkl", "stuck.pkl", "b.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(name))
    started = time.monotonic()
    report = scan_paths([tmp_path], ScanSettings(timeout_seconds=0.3, workers=1))
    assert time.monotonic() - started < 20
    results = _by_name(report.results)
    assert results["stuck.pkl"].status is ScanStatus.UNSAFE
    assert results["stuck.pkl"].findings[0].rule_id == "SCAN-LIMIT-TIME"
    assert "killed" in results["stuck.pkl"].findings[0].message
    assert results["a.pkl"].status is ScanStatus.CLEAN
    assert results["b.pkl"].status is ScanStatus.CLEAN


def test_crashed_worker_costs_only_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sabotage(monkeypatch, "crash.pkl", lambda: os.kill(os.getpid(), signal.SIGSEGV))
    for name in ("crash.pkl", "z.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(name))
    results = _by_name(scan_paths([tmp_path], ScanSettings(workers=1)).results)
    crashed = results["crash.pkl"]
    assert crashed.status is ScanStatus.UNSAFE
    assert crashed.findings[0].rule_id == "SCAN-WORKER-CRASHED"
    assert f"signal {int(signal.SIGSEGV)}" in crashed.findings[0].message
    assert results["z.pkl"].status is ScanStatus.CLEAN


def test_memory_budget_is_enforced_in_the_worker(tmp_path: Path) -> None:
    # A 24 MB safetensors header that parses into a list of 12 million ints (~100 MB of Python
    # objects) under a 64 MiB budget: MemoryError in the worker, which is then replaced.
    numbers = b"0," * 12_000_000
    header = b'{"a": [' + numbers + b"0]}"
    header += b" " * (-len(header) % 8)
    (tmp_path / "hog.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (tmp_path / "next.pkl").write_bytes(pickle.dumps(1))
    settings = ScanSettings(memory_mb=64, workers=1)
    results = _by_name(scan_paths([tmp_path], settings).results)
    hog = results["hog.safetensors"]
    assert hog.status is ScanStatus.UNSAFE
    assert [f.rule_id for f in hog.findings] == ["SCAN-LIMIT-MEMORY"]
    assert results["next.pkl"].status is ScanStatus.CLEAN


def test_workers_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = _count_spawns(monkeypatch)
    for i in range(12):
        (tmp_path / f"m{i}.pkl").write_bytes(pickle.dumps(i))
    report = scan_paths([tmp_path], ScanSettings(workers=2))
    assert len(report.results) == 12
    assert len(spawned) == 2


def _count_spawns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    spawned: list[int] = []
    real_spawn = scan_module._Pool.spawn

    def counting(self):  # type: ignore[no-untyped-def]
        worker = real_spawn(self)
        spawned.append(worker.pid)
        return worker

    monkeypatch.setattr(scan_module._Pool, "spawn", counting)
    return spawned


def test_one_small_file_is_scanned_without_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned = _count_spawns(monkeypatch)
    # In-process scanning is only chosen in a single-threaded process (its memory cap is
    # process-wide); an xdist worker may hold threads left by earlier tests (torch, Ray).
    monkeypatch.setattr(scan_module.threading, "active_count", lambda: 1)
    path = tmp_path / "m.pkl"
    path.write_bytes(PAYLOAD)
    (result,) = scan_paths([path]).results
    assert result.status is ScanStatus.UNSAFE
    assert spawned == []


def test_one_small_file_still_has_a_memory_budget(tmp_path: Path) -> None:
    numbers = b"0," * 7_000_000  # 14 MB of JSON, ~60 MB once parsed, under a 64 MiB budget
    header = b'{"a": [' + numbers + b"0]}"
    header += b" " * (-len(header) % 8)
    path = tmp_path / "hog.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert path.stat().st_size <= scan_module.IN_PROCESS_MAX_BYTES
    (result,) = scan_paths([path], ScanSettings(memory_mb=64)).results
    assert [f.rule_id for f in result.findings] == ["SCAN-LIMIT-MEMORY"]
    assert bytearray(100 * 2**20)  # and the limit is lifted afterwards


def test_native_parsers_run_only_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h5py = importlib.import_module("h5py")
    spawned = _count_spawns(monkeypatch)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = [1, 2, 3]
    (result,) = scan_paths([path]).results
    assert result.format == "hdf5"
    assert len(spawned) == 1


def test_one_small_file_is_quick(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"w": [0.5] * 100}))
    started = time.monotonic()
    (result,) = scan_paths([path]).results
    assert result.status is ScanStatus.CLEAN
    assert time.monotonic() - started < 2


def test_fail_on_decides_the_verdict() -> None:
    # An unknown global that is only referenced is LOW; it fails only at --fail-on low.
    data = b"\x80\x02cmypkg.layers\nBlock\nq\x00."
    assert scan_bytes(data, name="m.pkl").status is ScanStatus.CLEAN
    assert scan_bytes(data, name="m.pkl", fail_on=Severity.LOW).status is ScanStatus.UNSAFE


def test_scan_bytes_reports_under_the_given_name() -> None:
    result = scan_bytes(PAYLOAD, name="upload.bin")
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].path == "upload.bin"
    assert scan_bytes(b"", name="x").skip_reason == "empty file"


def test_model_name_with_unrecognised_content_is_unsafe(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(bytes(8) + b'{"w": {}}')
    (tmp_path / "weights.bin").write_bytes(bytes(8) + b'{"w": {}}')  # raw data: just skipped
    results = _by_name(scan_paths([tmp_path], FAST).results)
    assert results["model.safetensors"].status is ScanStatus.UNSAFE
    assert results["model.safetensors"].findings[0].rule_id == "FORMAT-MISMATCH"
    assert results["weights.bin"].status is ScanStatus.SKIPPED


def test_exported_names() -> None:
    import bastion.artifacts
    import bastion.artifacts.scanners as scanners

    for module in (bastion.artifacts, scanners):
        # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
        style = sorted(module.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
        assert list(module.__all__) == style
        assert all(hasattr(module, name) for name in module.__all__)
    assert set(bastion.artifacts._EXPORTS) == set(bastion.artifacts.__all__)
    scan_api = {"collect_targets", "scan_bytes", "scan_file", "scan_paths", "scan_targets"}
    assert scan_api <= set(bastion.artifacts.__all__)
    names = [s.name for s in scanners.SCANNERS]
    assert len(names) == len(set(names))
    for scanner in scanners.SCANNERS:
        assert isinstance(scanner.strong, bool)
        assert callable(scanner.matches)
        assert callable(scanner.scan)
