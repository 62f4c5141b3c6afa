"""Executors: serial, process pool and Ray give the same shadow models for the same seed."""

from __future__ import annotations

import operator
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bastion.assess.parallel import (
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    make_executor,
)
from bastion.assess.privacy.membership import ShadowOutputs, SklearnShadowTrainer, train_shadows
from bastion.assess.privacy.roc import roc_curve, tpr_at_fpr
from bastion.errors import AssessmentError


def _shadows(executor: object, progress: list[tuple[int, int]] | None = None) -> ShadowOutputs:
    digits = load_digits()
    x = np.asarray(digits.data[:300], dtype=np.float64) / 16.0
    y = np.asarray(digits.target[:300], dtype=np.int64)
    return train_shadows(
        SklearnShadowTrainer(LogisticRegression(C=1.0, max_iter=500)),
        x,
        y,
        n_classes=10,
        n_shadows=4,
        seed=7,
        executor=executor,  # type: ignore[arg-type]
        progress=None if progress is None else lambda d, t: progress.append((d, t)),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """Two cores shared by everyone: multithreaded BLAS on small fits is 50x slower, not faster."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def serial() -> ShadowOutputs:
    return _shadows(SerialExecutor())


def test_serial_reports_progress() -> None:
    seen: list[tuple[int, int]] = []
    outputs = _shadows(SerialExecutor(), seen)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert outputs.executor == "serial"


def test_process_pool_matches_serial(serial: ShadowOutputs) -> None:
    seen: list[tuple[int, int]] = []
    outputs = _shadows(ProcessExecutor(workers=2), seen)
    np.testing.assert_array_equal(outputs.keep, serial.keep)
    np.testing.assert_array_equal(outputs.probs, serial.probs)
    assert sorted(seen) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert outputs.executor == "process:2"


def test_ray_matches_serial(serial: ShadowOutputs) -> None:
    """A real local Ray instance (2 CPUs), started and shut down by the executor; a failing
    task comes back as an AssessmentError naming the task's own error."""
    import ray

    seen: list[tuple[int, int]] = []
    outputs = _shadows(RayExecutor(num_cpus=2), seen)
    np.testing.assert_array_equal(outputs.keep, serial.keep)
    np.testing.assert_array_equal(outputs.probs, serial.probs)
    assert [d for d, _ in seen] == [1, 2, 3, 4]
    assert outputs.executor == "ray:local"
    assert not ray.is_initialized()  # it started Ray, so it shut it down


def test_task_errors_become_assessment_errors() -> None:
    # Task functions must be importable in a fresh process, so library functions stand in for
    # failing tasks: 1 / 0, and an FPR outside [0, 1] (bastion's own AssessmentError).
    executor = ProcessExecutor(workers=1)
    with pytest.raises(AssessmentError, match="a process task failed: ZeroDivisionError"):
        executor.map(operator.truediv, 1.0, [1.0, 0.0])
    curve = roc_curve([1.0, 0.0], [True, False])
    with pytest.raises(AssessmentError, match="false-positive rate must lie in"):
        executor.map(tpr_at_fpr, curve, [1.5])


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        (None, "serial"),
        ("serial", "serial"),
        ("process:3", "process:3"),
        ("ray", "ray:local"),
        ("auto", "ray:local"),  # Ray is installed with the dev extra
        ("ray:auto", "ray:auto"),
        ("ray:ray://head:10001", "ray:ray://head:10001"),
    ],
)
def test_make_executor(spec: str | None, name: str) -> None:
    assert make_executor(spec).name == name


@pytest.mark.parametrize("spec", ["gpu", "process:0", "process:x"])
def test_make_executor_rejects(spec: str) -> None:
    with pytest.raises(AssessmentError):
        make_executor(spec)


def test_empty_work_starts_nothing() -> None:
    assert ProcessExecutor().map(operator.truediv, 1.0, []) == []
    assert RayExecutor().map(operator.truediv, 1.0, []) == []
