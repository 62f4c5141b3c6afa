"""The static model-file scanner: walk, detect, dispatch, budget, report (stable API).

:func:`scan_paths` is the whole of ``bastion scan``: it walks the paths (:func:`collect_targets`),
scans every file in worker processes (:func:`scan_targets`) and returns a
:class:`~bastion.artifacts.findings.ScanReport`. Nothing it scans is imported, unpickled or
loaded: each format has its own bounded reader in :mod:`bastion.artifacts.scanners`.

Budgets. Each file gets ``scan.timeout_seconds`` and ``scan.memory_mb``:

- Files are scanned in forked worker processes, reused from file to file (no fork per file,
  no interpreter start: a run over one file forks one worker, a few milliseconds). A worker
  caps its heap with ``RLIMIT_DATA`` (not ``RLIMIT_AS``: files are read through read-only
  shared memory maps, which should not count against the budget while their pages are only
  cached copies of the disk), so a hostile file ends in ``MemoryError`` inside that worker;
  the worker reports it and is replaced.
- Time is enforced twice: cooperatively (every reader checks the deadline, and the pickle
  analyser gets it as ``PickleLimits.deadline``), and by the parent, which kills a worker still
  busy past the deadline plus a grace period and starts a new one.
- A worker that dies (killed, crashed, out of memory) costs only its file, which is reported
  unsafe; the scan goes on.

Verdicts. A file is ``unsafe`` when a finding reaches ``fail_on`` (HIGH by default); limits
and parse failures of known formats are HIGH findings ("could not be fully analysed: treated
as unsafe"), and so is a file named like a model (``.pt``, ``.safetensors``, ...) whose
content is no format bastion reads. Any other file no scanner recognises is ``skipped`` with
its reason, never ``clean``; so
are special files (FIFOs, devices: never opened), unreadable files and broken links. Symlinks
found while walking a folder are not followed; one that leaves the folder is a HIGH finding.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import gc
import json
import logging
import mmap
import os
import resource
import selectors
import signal
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion.artifacts.findings import Atlas, FileResult, Finding, ScanReport, ScanStatus, Severity
from bastion.artifacts.report import result_from_dict, result_to_dict
from bastion.artifacts.scanners import SCANNERS, BudgetExceeded, ScanContext, Scanner
from bastion.artifacts.scanners.interface import INCOMPLETE_SUFFIX, NeedsIsolation
from bastion.config import ScanSettings
from bastion.errors import ScanError

__all__ = [
    "ScanTarget",
    "collect_targets",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "scan_targets",
]

logger = logging.getLogger(__name__)

#: What a caller may pass to observe progress: called once per finished file.
Progress = Callable[[FileResult], None]

UNKNOWN_FORMAT = "unknown"
#: Names that only model formats bastion reads use: such a file whose content matches none of
#: them is a known format that failed to parse (``.bin`` and ``.data`` also name raw tensor
#: data, so they are not here).
MODEL_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".pt",
        ".pth",
        ".ckpt",
        ".pkl",
        ".pickle",
        ".joblib",
        ".npy",
        ".npz",
        ".onnx",
        ".keras",
        ".h5",
        ".hdf5",
    }
)
_UNRECOGNISED = "format not recognised: not a model format bastion reads"
_LIMIT_REMEDIATION = (
    "Raise the [scan] limit in bastion.toml only if the file comes from a trusted source; "
    "otherwise treat it as hostile."
)


@dataclass(frozen=True, slots=True)
class _Precheck:
    """A verdict reached without opening the file (links, special files)."""

    format: str
    findings: tuple[Finding, ...] = ()
    skip_reason: str = ""


@dataclass(frozen=True, slots=True)
class ScanTarget:
    """One file to scan, as found by :func:`collect_targets`.

    Attributes:
        path: where the file is, as reported.
        follow: whether a symlink at ``path`` may be followed (only for paths named by the
            caller; links found while walking a folder are never followed).
        precheck: the verdict when it was reached without opening the file.
    """

    path: str
    follow: bool = True
    precheck: _Precheck | None = field(default=None, repr=False)


# -- walking -----------------------------------------------------------------------------


def collect_targets(paths: Iterable[str | os.PathLike[str]]) -> list[ScanTarget]:
    """Expand files and folders into the files to scan, in a stable order.

    Folders are walked without following symlinks: a link whose target lies inside the folder
    is covered by the target's own entry; a link that leaves it is reported, not followed.

    Raises:
        ScanError: a path does not exist or cannot be examined at all.
    """
    targets: list[ScanTarget] = []
    seen: set[str] = set()
    for raw in paths:
        path = os.fspath(raw)
        try:
            info = Path(path).stat()
        except FileNotFoundError as exc:
            raise ScanError(f"{path}: no such file or directory") from exc
        except OSError as exc:
            raise ScanError(f"{path}: {exc.strerror or exc}") from exc
        found = _walk(path) if stat.S_ISDIR(info.st_mode) else [ScanTarget(path, follow=True)]
        for target in found:
            key = target.path if target.precheck else os.path.realpath(target.path)
            if key not in seen:
                seen.add(key)
                targets.append(target)
    return targets


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk(root: str) -> list[ScanTarget]:
    real_root = os.path.realpath(root)
    found: list[ScanTarget] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.append(_skip(folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for entry in entries:
            if entry.is_symlink():
                found.extend(_link(entry.path, real_root))
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                found.append(ScanTarget(entry.path, follow=False))
            else:
                found.append(
                    _skip(entry.path, "not a regular file (FIFO, device or socket): not opened")
                )
        stack.extend(reversed(subfolders))
    return sorted(found, key=lambda t: t.path)


def _skip(path: str, reason: str, fmt: str = UNKNOWN_FORMAT) -> ScanTarget:
    return ScanTarget(path, follow=False, precheck=_Precheck(fmt, skip_reason=reason))


def _link(path: str, real_root: str) -> list[ScanTarget]:
    target = os.path.realpath(path)
    if not _inside(target, real_root):
        finding = Finding(
            rule_id="SYMLINK-ESCAPE",
            severity=Severity.HIGH,
            message=f"symlink leaves the scanned folder (it resolves to {target}); not "
            "followed: loaders that open it read a file outside the model",
            path=path,
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Replace the link with the file it should be, or remove it.",
        )
        return [ScanTarget(path, follow=False, precheck=_Precheck("symlink", (finding,)))]
    if not os.path.lexists(target) or not Path(path).exists():
        return [_skip(path, "broken symlink", "symlink")]
    return []  # the target is inside the folder and is scanned under its own name


# -- scanning one file --------------------------------------------------------------------


def _verdict(
    path: str,
    fmt: str,
    findings: Iterable[Finding],
    fail_on: Severity,
    *,
    skip_reason: str = "",
    size: int = 0,
    seconds: float = 0.0,
) -> FileResult:
    ordered = tuple(
        sorted(
            findings,
            key=lambda f: (-f.severity, f.member, -1 if f.offset is None else f.offset, f.rule_id),
        )
    )
    if any(f.severity >= fail_on for f in ordered):
        status = ScanStatus.UNSAFE
        skip_reason = ""
    elif skip_reason:
        status = ScanStatus.SKIPPED
    else:
        status = ScanStatus.CLEAN
    return FileResult(
        path=path,
        format=fmt,
        status=status,
        findings=ordered,
        skip_reason=skip_reason,
        bytes_scanned=size,
        seconds=round(seconds, 6),
    )


def _limit_finding(path: str, kind: str, what: str) -> Finding:
    return Finding(
        rule_id=f"SCAN-LIMIT-{kind.upper()}",
        severity=Severity.HIGH,
        message=f"{what}: {INCOMPLETE_SUFFIX}",
        path=path,
        atlas=Atlas.DENIAL_OF_SERVICE,
        remediation=_LIMIT_REMEDIATION,
    )


def _scan_view(
    view: memoryview,
    path: str,
    settings: ScanSettings,
    fail_on: Severity,
    *,
    disk_path: Path | None,
    started: float,
    scanners: tuple[Scanner, ...],
    native: bool = True,
) -> FileResult:
    ctx = ScanContext(
        path,
        settings,
        scanners,
        disk_path=disk_path,
        deadline=started + settings.timeout_seconds,
        native=native,
    )
    labels: list[str] = []
    try:
        labels = ctx.scan_content(view)
    except BudgetExceeded:
        ctx.add_finding(
            _limit_finding(path, "time", f"scan took longer than {settings.timeout_seconds:g} s")
        )
    except MemoryError:
        ctx.add_finding(
            _limit_finding(path, "memory", f"scan needed more than {settings.memory_mb} MiB")
        )
        raise _WorkerSpent(ctx, labels) from None
    except RecursionError:
        ctx.add_finding(_limit_finding(path, "depth", "structures nested too deeply"))
    if ctx.dropped_findings:
        ctx.add(
            "SCAN-FINDINGS-TRUNCATED",
            Severity.INFO,
            f"{ctx.dropped_findings} more findings were dropped (per-file cap)",
        )
    if not labels and disk_path is not None and disk_path.suffix.lower() in MODEL_SUFFIXES:
        ctx.add(
            "FORMAT-MISMATCH",
            Severity.HIGH,
            f"named like a {disk_path.suffix} model but its content is no format bastion "
            f"reads (corrupt, or disguised): {INCOMPLETE_SUFFIX}",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Obtain the file again from a trusted source.",
        )
    fmt = "+".join(labels) if labels else UNKNOWN_FORMAT
    reason = "" if labels else _UNRECOGNISED
    if ctx.findings and not labels:
        fmt = UNKNOWN_FORMAT
    return _verdict(
        path,
        fmt,
        ctx.findings,
        fail_on,
        skip_reason=reason,
        size=len(view),
        seconds=time.monotonic() - started,
    )


class _WorkerSpent(Exception):  # noqa: N818 - carries a partial result out of a dying worker
    def __init__(self, ctx: ScanContext, labels: list[str]) -> None:
        super().__init__("memory budget exceeded")
        self.ctx = ctx
        self.labels = labels


def scan_file(
    path: str | os.PathLike[str],
    settings: ScanSettings | None = None,
    *,
    fail_on: Severity = Severity.HIGH,
    follow: bool = True,
    scanners: tuple[Scanner, ...] = SCANNERS,
) -> FileResult:
    """Scan one file in this process, with cooperative limits only.

    The time budget is kept by the readers' own deadline checks and the memory budget by the
    caps on every buffer they build; nothing can kill a reader stuck in C code or a memory
    blow-up the caps do not foresee. :func:`scan_paths` runs this in worker processes that
    enforce both budgets; call it directly only on files you already trust to be small.

    Args:
        path: the file.
        settings: limits; the defaults when None.
        fail_on: the lowest severity that makes the file unsafe.
        follow: whether a symlink at ``path`` may be followed.
        scanners: the formats to recognise.
    """
    settings = settings or ScanSettings()
    shown = os.fspath(path)
    started = time.monotonic()
    try:
        return _scan_path(shown, settings, fail_on, follow, started, scanners)
    except _WorkerSpent as spent:
        return _verdict(
            shown,
            "+".join(spent.labels) or UNKNOWN_FORMAT,
            spent.ctx.findings,
            fail_on,
            seconds=time.monotonic() - started,
        )
    except Exception as exc:  # a scanner bug: reported as a finding, never lost
        logger.debug("scanner failed on %s", shown, exc_info=True)
        return _verdict(shown, UNKNOWN_FORMAT, (_internal_error(shown, exc),), fail_on)


def _scan_path(
    path: str,
    settings: ScanSettings,
    fail_on: Severity,
    follow: bool,
    started: float,
    scanners: tuple[Scanner, ...],
    *,
    in_process: bool = False,
) -> FileResult:
    """Open and scan one file.

    A large file is mapped in a worker (read lazily, never copied); a small one, and any file
    in this process (the single-file fast path), is read into memory instead, so a file
    truncated under the scan cannot raise SIGBUS here. In this process native parsers are
    refused (:class:`NeedsIsolation`).
    """
    try:
        info = Path(path).stat() if follow else Path(path).lstat()
    except OSError as exc:
        return _verdict(path, UNKNOWN_FORMAT, (), fail_on, skip_reason=_os_reason(exc))
    if not stat.S_ISREG(info.st_mode):
        reason = "not a regular file (FIFO, device or socket): not opened"
        if stat.S_ISLNK(info.st_mode):
            reason = "symlink found while walking a folder: not followed"
        return _verdict(path, UNKNOWN_FORMAT, (), fail_on, skip_reason=reason)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return _verdict(path, UNKNOWN_FORMAT, (), fail_on, skip_reason=_os_reason(exc))
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            info.st_dev,
            info.st_ino,
        ):
            return _verdict(
                path, UNKNOWN_FORMAT, (), fail_on, skip_reason="file changed while opening it"
            )
        size = opened.st_size
        if size == 0:
            return _verdict(path, UNKNOWN_FORMAT, (), fail_on, skip_reason="empty file")
        if size > settings.max_file_bytes:
            finding = _limit_finding(
                path, "size", f"file of {size} bytes, more than {settings.max_file_bytes}"
            )
            return _verdict(path, UNKNOWN_FORMAT, (finding,), fail_on, size=size)
        try:
            if in_process or size <= _READ_MAX_BYTES:
                mapped: mmap.mmap | bytes = _read_all(fd, size)
            else:
                mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            return _verdict(path, UNKNOWN_FORMAT, (), fail_on, skip_reason=_os_reason(exc))
    finally:
        os.close(fd)
    view = memoryview(mapped)
    try:
        return _scan_view(
            view,
            path,
            settings,
            fail_on,
            disk_path=Path(path),
            started=started,
            scanners=scanners,
            native=not in_process,
        )
    finally:
        view.release()
        # Slices still referenced (by a traceback being unwound) keep the map alive; it is
        # unmapped when the last of them goes.
        if isinstance(mapped, mmap.mmap):
            with contextlib.suppress(BufferError):
                mapped.close()


#: Files up to this size are read rather than mapped: cheaper than mapping and unmapping.
_READ_MAX_BYTES = 4 * 2**20


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "cannot read: permission denied"
        if exc.errno == errno.ENOENT:
            return "file vanished before it could be read"
        if exc.errno == errno.ELOOP:
            return "symlink found while walking a folder: not followed"
        return f"cannot read: {exc.strerror or exc}"
    return f"cannot read: {exc}"


def scan_bytes(
    data: bytes | bytearray | memoryview,
    *,
    name: str,
    settings: ScanSettings | None = None,
    fail_on: Severity = Severity.HIGH,
    scanners: tuple[Scanner, ...] = SCANNERS,
) -> FileResult:
    """Scan content held in memory (an upload, a fuzzer's input) in this process.

    Same cooperative limits as :func:`scan_file`; checks that need the file's folder (ONNX
    external data symlinks) only look at the path text.
    """
    settings = settings or ScanSettings()
    started = time.monotonic()
    view = memoryview(data).cast("B")
    if not len(view):
        return _verdict(name, UNKNOWN_FORMAT, (), fail_on, skip_reason="empty file")
    try:
        return _scan_view(
            view,
            name,
            settings,
            fail_on,
            disk_path=None,
            started=started,
            scanners=scanners,
        )
    except _WorkerSpent as spent:
        return _verdict(name, UNKNOWN_FORMAT, spent.ctx.findings, fail_on)
    except Exception as exc:  # a scanner bug: reported as a finding, never lost
        logger.debug("scanner failed on %s", name, exc_info=True)
        return _verdict(name, UNKNOWN_FORMAT, (_internal_error(name, exc),), fail_on)


# -- worker processes ---------------------------------------------------------------------


def _vm_data() -> int:
    """This process's data segment size in bytes (what RLIMIT_DATA limits), 0 if unknown."""
    try:
        with Path("/proc/self/status").open("rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


#: Tasks handed to a worker ahead of the one it is on, so it never waits for the parent.
_PREFETCH = 2


@dataclass
class _Worker:
    pid: int
    tasks: int  # write end: task lines to the worker
    results: int  # read end: result lines from the worker
    buffer: bytearray = field(default_factory=bytearray)
    queue: deque[int] = field(default_factory=deque)  # tasks sent; the first is in hand
    started: float = 0.0  # when the task in hand started

    @property
    def busy(self) -> int | None:
        """The index of the task in hand, if any."""
        return self.queue[0] if self.queue else None


class _Pool:
    """Forked scanner processes, reused across files, replaced only when one dies.

    Messages are JSON lines over pipes (no pickle anywhere in bastion): a task is the file's
    index and path, a result is :func:`~bastion.artifacts.report.result_to_dict` output.
    """

    def __init__(self, settings: ScanSettings, fail_on: Severity, size: int) -> None:
        _reap()
        self.settings = settings
        self.fail_on = fail_on
        self.size = size
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        timeout = settings.timeout_seconds
        self.hard_limit = timeout + max(0.5, min(5.0, 0.1 * timeout))

    def spawn(self) -> _Worker:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        inherited = [fd for w in self.workers for fd in (w.tasks, w.results)]
        # Objects that exist now stay out of the child's garbage collector, which would
        # otherwise write to (and so copy) every page holding one (gc.freeze docs).
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as exc:
            gc.unfreeze()
            for fd in (task_r, task_w, result_r, result_w):
                os.close(fd)
            raise ScanError(f"cannot start a scanner process: {exc.strerror or exc}") from exc
        if pid == 0:  # pragma: no cover - runs in the child; its effects are tested
            code = 0
            try:
                os.close(task_w)
                os.close(result_r)
                for fd in inherited:
                    os.close(fd)
                _worker_main(task_r, result_w, self.settings, self.fail_on)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        gc.unfreeze()
        os.close(task_r)
        os.close(result_w)
        os.set_blocking(result_r, False)
        worker = _Worker(pid=pid, tasks=task_w, results=result_r)
        self.workers.append(worker)
        self.selector.register(result_r, selectors.EVENT_READ, worker)
        return worker

    def retire(self, worker: _Worker, *, kill: bool) -> int | None:
        """Close a worker's pipes, kill it if asked, reap it; return its wait status."""
        self.workers.remove(worker)
        self.selector.unregister(worker.results)
        for fd in (worker.tasks, worker.results):
            with contextlib.suppress(OSError):
                os.close(fd)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        _, status = os.waitpid(worker.pid, 0)
        return status

    def send(self, worker: _Worker, index: int, target: ScanTarget) -> None:
        line = json.dumps({"i": index, "path": target.path, "follow": target.follow}) + "\n"
        _write_all(worker.tasks, line.encode())
        worker.queue.append(index)
        if len(worker.queue) == 1:
            worker.started = time.monotonic()

    def close(self) -> None:
        """Stop every worker: idle ones leave at the end of their task pipe, busy ones are
        killed (an interrupted scan does not wait for a slow file). Exits are reaped without
        waiting for them (here, or when the next pool starts)."""
        for worker in list(self.workers):
            self.workers.remove(worker)
            with contextlib.suppress(OSError):
                os.close(worker.tasks)
            if worker.busy is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.results)
            with contextlib.suppress(OSError):
                os.close(worker.results)
            _EXITING.add(worker.pid)
        self.selector.close()
        _reap()


#: Workers told to leave whose exit has not been collected yet.
_EXITING: set[int] = set()


def _reap() -> None:
    """Collect the exit of every worker that has left (never blocks)."""
    for pid in list(_EXITING):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _EXITING.discard(pid)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _worker_main(
    task_fd: int, result_fd: int, settings: ScanSettings, fail_on: Severity
) -> None:  # pragma: no cover - child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    faulthandler.disable()  # a crash is reported as a finding, not dumped on the terminal
    logging.disable(logging.CRITICAL)  # a lock held by another thread at fork may never free
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    budget = settings.memory_mb * 2**20
    baseline = _vm_data()
    if baseline:
        with contextlib.suppress(ValueError, OSError):
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            limit = baseline + budget
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    with os.fdopen(task_fd, "rb") as tasks, os.fdopen(result_fd, "wb") as results:
        for line in tasks:
            task = json.loads(line)
            spent = False
            try:
                result = _scan_path(
                    task["path"],
                    settings,
                    fail_on,
                    bool(task["follow"]),
                    time.monotonic(),
                    SCANNERS,
                )
            except _WorkerSpent as exc:
                spent = True
                result = _verdict(
                    task["path"],
                    "+".join(exc.labels) or UNKNOWN_FORMAT,
                    exc.ctx.findings,
                    fail_on,
                )
            except MemoryError:
                spent = True
                finding = _limit_finding(
                    task["path"], "memory", f"scan needed more than {settings.memory_mb} MiB"
                )
                result = _verdict(task["path"], UNKNOWN_FORMAT, (finding,), fail_on)
            except Exception as exc:  # a scanner bug: reported as a finding, never lost
                result = _verdict(
                    task["path"], UNKNOWN_FORMAT, (_internal_error(task["path"], exc),), fail_on
                )
            # Memory a file left fragmented is not given back: start afresh past half the budget.
            leaving = spent or bool(baseline and _vm_data() > baseline + budget // 2)
            payload = {"i": task["i"], "result": result_to_dict(result), "leaving": leaving}
            results.write(json.dumps(payload).encode() + b"\n")
            results.flush()
            if leaving:
                return


def _internal_error(path: str, exc: BaseException) -> Finding:
    return Finding(
        rule_id="SCAN-INTERNAL-ERROR",
        severity=Severity.HIGH,
        message=f"the scanner failed on this file ({type(exc).__name__}: {exc}): "
        f"{INCOMPLETE_SUFFIX}",
        path=path,
        atlas=Atlas.SUPPLY_CHAIN_MODEL,
        remediation="Report this to the bastion maintainers with the file if you can share it.",
    )


def _died(path: str, status: int | None, *, timed_out: bool, settings: ScanSettings) -> Finding:
    if timed_out:
        return _limit_finding(
            path, "time", f"scan took longer than {settings.timeout_seconds:g} s and was killed"
        )
    how = "ended"
    if status is not None and os.WIFSIGNALED(status):
        how = f"was killed by signal {os.WTERMSIG(status)}"
    elif status is not None and os.WIFEXITED(status):
        how = f"exited with status {os.WEXITSTATUS(status)}"
    return Finding(
        rule_id="SCAN-WORKER-CRASHED",
        severity=Severity.HIGH,
        message=f"the scanner process for this file {how} (a crash or the memory budget): "
        f"{INCOMPLETE_SUFFIX}",
        path=path,
        atlas=Atlas.DENIAL_OF_SERVICE,
        remediation="Treat the file as hostile.",
    )


def _run_pool(
    targets: Sequence[ScanTarget],
    indices: Sequence[int],
    settings: ScanSettings,
    fail_on: Severity,
    workers: int,
    on_result: Callable[[int, FileResult], None],
) -> None:
    pending = deque(indices)
    pool = _Pool(settings, fail_on, workers)

    def lost(worker: _Worker, status: int | None, *, timed_out: bool, in_hand: bool = True) -> None:
        """A worker is gone: its task in hand fails, the tasks queued behind it go back."""
        index = worker.queue.popleft() if worker.queue and in_hand else None
        pending.extendleft(reversed(worker.queue))
        worker.queue.clear()
        if index is not None:
            path = targets[index].path
            finding = _died(path, status, timed_out=timed_out, settings=settings)
            on_result(index, _verdict(path, UNKNOWN_FORMAT, (finding,), fail_on))

    try:
        while pending or any(w.queue for w in pool.workers):
            while pending and len(pool.workers) < pool.size:
                _assign(pool, pool.spawn(), pending, targets, lost)
            for worker in list(pool.workers):
                while pending and worker in pool.workers and len(worker.queue) < _PREFETCH:
                    _assign(pool, worker, pending, targets, lost)
            busy = [w for w in pool.workers if w.queue]
            now = time.monotonic()
            wait = max(0.0, min(w.started + pool.hard_limit for w in busy) - now) if busy else 0
            for key, _ in pool.selector.select(timeout=wait):
                _drain(pool, key.data, on_result, lost)
            now = time.monotonic()
            for worker in [w for w in pool.workers if w.queue]:
                if now > worker.started + pool.hard_limit:
                    status = pool.retire(worker, kill=True)
                    lost(worker, status, timed_out=True)
    finally:
        pool.close()


def _assign(
    pool: _Pool,
    worker: _Worker,
    pending: deque[int],
    targets: Sequence[ScanTarget],
    lost: Callable[..., None],
) -> None:
    index = pending.popleft()
    try:
        pool.send(worker, index, targets[index])
    except OSError:  # it died between tasks: replace it, keep the file
        pending.appendleft(index)
        status = pool.retire(worker, kill=True)
        lost(worker, status, timed_out=False)


def _drain(
    pool: _Pool,
    worker: _Worker,
    on_result: Callable[[int, FileResult], None],
    lost: Callable[..., None],
) -> None:
    try:
        chunk = os.read(worker.results, 1 << 16)
    except BlockingIOError:
        return
    if chunk:
        worker.buffer += chunk
        while b"\n" in worker.buffer:
            line, _, rest = bytes(worker.buffer).partition(b"\n")
            worker.buffer = bytearray(rest)
            message = json.loads(line)
            index = int(message["i"])
            if index in worker.queue:
                worker.queue.remove(index)
            worker.started = time.monotonic()
            on_result(index, result_from_dict(message["result"]))
            if message.get("leaving"):
                pool.retire(worker, kill=False)
                lost(worker, None, timed_out=False, in_hand=False)  # requeue the rest
                return
        return
    # End of file: the worker is gone (it left on purpose after a heavy file, or it died).
    status = pool.retire(worker, kill=True)
    lost(worker, status, timed_out=False)


# -- the single small file fast path -------------------------------------------------------

#: A run over one file no larger than this scans it in this process (no worker to start).
IN_PROCESS_MAX_BYTES = 16 * 2**20


@contextlib.contextmanager
def _data_limit(budget: int) -> Iterator[None]:
    """Lower this process's RLIMIT_DATA to its current size plus ``budget``, then restore."""
    baseline = _vm_data()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    except (ValueError, OSError):
        baseline = 0
    if not baseline:
        yield
        return
    limit = baseline + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _scan_small_in_process(
    target: ScanTarget, settings: ScanSettings, fail_on: Severity
) -> FileResult | None:
    """Scan one small file here, with the budgets enforced; None: it needs a worker.

    Starting a worker costs a fork, and forking a process that has loaded large libraries
    (torch) takes tens of milliseconds: for a single small file that dominates. The file is
    scanned here only when the budgets still hold:

    - memory: this process's RLIMIT_DATA is lowered to its current size plus the budget for
      the scan (and restored), which is safe only while no other thread allocates, so the
      fast path is taken only in a single-threaded process;
    - time: every reader here is pure Python and checks the deadline, and the file is small;
      readers that call native parsers (HDF5) raise :class:`NeedsIsolation` and the file
      goes to a worker, which can be killed;
    - crashes: the file is read into memory, not mapped (no SIGBUS if it is truncated
      meanwhile), and no native parser runs here.
    """
    if threading.active_count() != 1:
        return None
    try:
        info = Path(target.path).stat() if target.follow else Path(target.path).lstat()
    except OSError:
        return None  # the worker reports why
    if not stat.S_ISREG(info.st_mode) or info.st_size > IN_PROCESS_MAX_BYTES:
        return None
    started = time.monotonic()
    try:
        with _data_limit(settings.memory_mb * 2**20):
            return _scan_path(
                target.path,
                settings,
                fail_on,
                target.follow,
                started,
                SCANNERS,
                in_process=True,
            )
    except NeedsIsolation:
        return None
    except _WorkerSpent as spent:
        return _verdict(
            target.path,
            "+".join(spent.labels) or UNKNOWN_FORMAT,
            spent.ctx.findings,
            fail_on,
            seconds=time.monotonic() - started,
        )
    except Exception as exc:  # a scanner bug: reported as a finding, never lost
        logger.debug("scanner failed on %s", target.path, exc_info=True)
        finding = _internal_error(target.path, exc)
        return _verdict(target.path, UNKNOWN_FORMAT, (finding,), fail_on)


# -- the driver ---------------------------------------------------------------------------


def scan_targets(
    targets: Sequence[ScanTarget],
    settings: ScanSettings | None = None,
    *,
    fail_on: Severity = Severity.HIGH,
    progress: Progress | None = None,
    isolate: bool = True,
) -> ScanReport:
    """Scan collected targets; results come back in the targets' order.

    Args:
        targets: from :func:`collect_targets`.
        settings: limits and the number of workers (``workers = 0``: one per core).
        fail_on: the lowest severity that makes a file unsafe.
        progress: called with each file's result as it finishes (in the calling thread).
        isolate: scan in worker processes that enforce the time and memory budgets (the
            default). False scans in this process with cooperative limits only, for fuzzing
            and debugging.
    """
    settings = settings or ScanSettings()
    results: list[FileResult | None] = [None] * len(targets)

    def done(index: int, result: FileResult) -> None:
        results[index] = result
        if progress is not None:
            progress(result)

    to_scan = []
    for index, target in enumerate(targets):
        if target.precheck is not None:
            check = target.precheck
            done(
                index,
                _verdict(
                    target.path,
                    check.format,
                    check.findings,
                    fail_on,
                    skip_reason=check.skip_reason,
                ),
            )
        else:
            to_scan.append(index)
    if len(to_scan) == 1 and isolate:
        index = to_scan[0]
        result = _scan_small_in_process(targets[index], settings, fail_on)
        if result is not None:
            done(index, result)
            to_scan = []
    if to_scan and isolate:
        workers = min(settings.workers or os.cpu_count() or 1, len(to_scan))
        _run_pool(targets, to_scan, settings, fail_on, workers, done)
    else:
        for index in to_scan:
            target = targets[index]
            done(index, scan_file(target.path, settings, fail_on=fail_on, follow=target.follow))
    return ScanReport(results=tuple(r for r in results if r is not None))


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    settings: ScanSettings | None = None,
    *,
    fail_on: Severity = Severity.HIGH,
    progress: Progress | None = None,
    isolate: bool = True,
) -> ScanReport:
    """Scan files and folders: :func:`collect_targets` then :func:`scan_targets`.

    Raises:
        ScanError: a path does not exist or cannot be examined at all.
    """
    return scan_targets(
        collect_targets(paths), settings, fail_on=fail_on, progress=progress, isolate=isolate
    )
