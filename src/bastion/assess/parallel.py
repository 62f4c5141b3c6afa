"""Fan-out of independent batch work (shadow models, large evaluations) (stable API).

Batch work that outgrows one process runs through an :class:`Executor`: the same call on one
core (:class:`SerialExecutor`), on a local process pool (:class:`ProcessExecutor`), or on Ray
(:class:`RayExecutor`), locally by default or on a cluster when an address is given. The work
function and its arguments must be picklable (a module-level function, arrays, estimators);
each task returns a value and has no side effects, so the executors give identical results
for identical seeds and differ only in speed.

Each task gets the same ``shared`` payload (the training data, typically) plus its own item (a
seed and a membership mask, typically). The payload is sent once per worker, not once per
task: through the pool initializer for processes and the object store for Ray.

Ray is an optional dependency (``pip install 'bastion[ray]'``). Against a cluster, every node
needs bastion installed in the same version: tasks are pickled by reference to bastion's
modules.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bastion.errors import AssessmentError, BastionError

__all__ = [
    "Executor",
    "ProcessExecutor",
    "Progress",
    "RayExecutor",
    "SerialExecutor",
    "make_executor",
]

logger = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: Progress callback: ``(done, total)`` after each finished task, in completion order.
Progress = Callable[[int, int], None]


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item and returns the results in item order."""

    @property
    def name(self) -> str:
        """A short description for reports (``"serial"``, ``"process:2"``, ``"ray:local"``)."""
        ...

    def map(
        self,
        fn: Callable[[S, T], R],
        shared: S,
        items: Sequence[T],
        progress: Progress | None = None,
    ) -> list[R]:
        """Run every task; raise :class:`AssessmentError` if one fails."""
        ...


def _limit_threads() -> None:
    # Each task is one unit of parallelism; BLAS/OpenMP threads inside it would oversubscribe
    # the cores the executor is already filling. The variables reach libraries imported later
    # (torch reads OMP_NUM_THREADS when it loads); threadpoolctl and set_num_threads reach
    # those already loaded (a reused Ray worker).
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    threadpool_limits(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _task_failed(exc: BaseException, where: str) -> BastionError:
    """A task's own BastionError passes through; anything else becomes an AssessmentError."""
    if isinstance(exc, BastionError):
        return exc
    return AssessmentError(f"a {where} task failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class SerialExecutor:
    """Runs the tasks one after another in this process (the default; no dependencies)."""

    @property
    def name(self) -> str:
        return "serial"

    def map(
        self,
        fn: Callable[[S, T], R],
        shared: S,
        items: Sequence[T],
        progress: Progress | None = None,
    ) -> list[R]:
        results: list[R] = []
        for done, item in enumerate(items, start=1):
            results.append(fn(shared, item))
            if progress is not None:
                progress(done, len(items))
        return results


_WORKER_SHARED: Any = None


def _init_worker(shared: object) -> None:
    global _WORKER_SHARED  # the pool initializer's only way to hand data on
    _WORKER_SHARED = shared
    _limit_threads()


def _run_in_worker(fn: Callable[[Any, Any], Any], item: object) -> Any:
    return fn(_WORKER_SHARED, item)


@dataclass(frozen=True, slots=True)
class ProcessExecutor:
    """A local pool of ``workers`` processes (started with ``spawn``: safe with torch).

    Attributes:
        workers: how many processes; defaults to the CPUs this process may use.
    """

    workers: int | None = None

    @property
    def name(self) -> str:
        return f"process:{self._workers()}"

    def _workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, len(os.sched_getaffinity(0)))

    def map(
        self,
        fn: Callable[[S, T], R],
        shared: S,
        items: Sequence[T],
        progress: Progress | None = None,
    ) -> list[R]:
        if not items:
            return []
        workers = min(self._workers(), len(items))
        results: list[Any] = [None] * len(items)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(shared,)
        ) as pool:
            futures = {pool.submit(_run_in_worker, fn, item): i for i, item in enumerate(items)}
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                try:
                    results[futures[future]] = future.result()
                except concurrent.futures.process.BrokenProcessPool as exc:
                    raise AssessmentError(f"a worker process died: {exc}") from exc
                except Exception as exc:
                    for other in futures:
                        other.cancel()
                    raise _task_failed(exc, "process") from exc
                if progress is not None:
                    progress(done, len(items))
        return results


def _ray_task(fn: Callable[[Any, Any], Any], shared: object, item: object) -> Any:
    _limit_threads()
    return fn(shared, item)


@dataclass(frozen=True, slots=True)
class RayExecutor:
    """Runs the tasks on Ray: a local instance by default, a cluster when ``address`` is set.

    If Ray is already initialised in this process, that instance is used and left running;
    otherwise one is started for the call and shut down after it.

    Attributes:
        address: a cluster address (``"ray://head:10001"``, ``"auto"``), or None for a local
            instance started just for this call.
        num_cpus: CPUs for a local instance (ignored with an address).
    """

    address: str | None = None
    num_cpus: int | None = None

    @property
    def name(self) -> str:
        return f"ray:{self.address or 'local'}"

    def map(
        self,
        fn: Callable[[S, T], R],
        shared: S,
        items: Sequence[T],
        progress: Progress | None = None,
    ) -> list[R]:
        try:
            import ray
        except ImportError as exc:
            raise AssessmentError("the Ray executor needs Ray: pip install 'bastion[ray]'") from exc
        if not items:
            return []
        started = False
        if not ray.is_initialized():
            # Ray must not configure logging (the CLI does) nor print its workers' logs.
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if self.address is None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
                raise AssessmentError(
                    f"could not start or reach Ray at {self.address or 'local'}: {exc}"
                ) from exc
            started = True
        try:
            shared_ref = ray.put(shared)
            remote = ray.remote(num_cpus=1)(_ray_task)
            refs = [remote.remote(fn, shared_ref, item) for item in items]
            index = {ref: i for i, ref in enumerate(refs)}
            results: list[Any] = [None] * len(items)
            pending = list(refs)
            done = 0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        results[index[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise _task_failed(exc.cause, "Ray") from exc
                    except ray.exceptions.RayError as exc:
                        raise AssessmentError(f"a Ray task failed: {exc}") from exc
                    done += 1
                    if progress is not None:
                        progress(done, len(items))
            return results
        finally:
            if started:
                ray.shutdown()


def make_executor(spec: str | None) -> Executor:
    """An executor from a short spec, as given on the command line or in the config.

    ``None``/``"serial"``: one process. ``"process"`` or ``"process:N"``: a local pool.
    ``"ray"``: Ray: a local instance, or the cluster that ``RAY_ADDRESS`` names (Ray's own
    convention). ``"ray:ADDRESS"`` (``"ray:auto"``, ``"ray:ray://head:10001"``): that cluster.
    ``"auto"``: ``"ray"`` when Ray is installed, else ``"serial"``.

    Raises:
        AssessmentError: the spec is not one of these.
    """
    if spec is None or spec == "serial":
        return SerialExecutor()
    if spec == "auto":
        return RayExecutor() if importlib.util.find_spec("ray") is not None else SerialExecutor()
    kind, _, rest = spec.partition(":")
    if kind == "process":
        if not rest:
            return ProcessExecutor()
        if not rest.isdigit() or int(rest) < 1:
            raise AssessmentError(f"process executor needs a positive worker count, got {rest!r}")
        return ProcessExecutor(workers=int(rest))
    if kind == "ray":
        return RayExecutor(address=rest or None)
    raise AssessmentError(f"unknown executor {spec!r} (auto, serial, process[:N], ray[:ADDRESS])")
