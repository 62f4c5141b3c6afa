"""ONNX targets, run by onnxruntime on the CPU: black box (scores, or labels only).

The file is scanned by bastion's scanner before onnxruntime parses it. The graph must have
one input; its per-sample shape is read from the graph and raw batches (after the domain's
preprocessing) are reshaped to it when the sizes agree, so a model taking flat vectors can be
assessed with an image-shaped domain. Among the outputs, a float tensor ``(n, classes)`` is
preferred (probabilities or logits, told apart on a probe batch), then a sequence of
per-class maps (skl2onnx's ZipMap), then an integer label vector (labels only). A graph with a
fixed batch size is run in chunks of that size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.assess.targets._files import ScanGate, file_digest, require_clean_scan
from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryCounter,
    TargetBase,
    TargetInfo,
    check_batch,
    class_names,
    detect_output,
    one_hot,
)
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import torch

__all__ = ["OnnxTarget"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


class OnnxTarget(TargetBase):
    """An ONNX classifier (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        domain: InputDomain,
        *,
        scan: ScanGate = require_clean_scan,
        max_queries: int | None = None,
        batch_size: int = 1024,
        classes: list[str] | None = None,
        output: OutputKind | None = None,
    ) -> None:
        try:
            import onnxruntime  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise AssessmentError("ONNX targets need onnxruntime: pip install onnxruntime") from exc
        digest = file_digest(path)
        scan([path])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AssessmentError(f"onnxruntime cannot load {path}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise AssessmentError(f"{path} has {len(inputs)} inputs; one is supported")
        self._input = inputs[0]
        if self._input.type not in _FLOAT_TYPES:
            raise AssessmentError(f"{path} takes {self._input.type}; a float input is needed")
        self._dtype = _FLOAT_TYPES[self._input.type]
        dims = list(self._input.shape)
        self._fixed_batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        sample = dims[1:]
        if all(isinstance(d, int) and d > 0 for d in sample):
            if math.prod(sample) != domain.size:
                raise AssessmentError(
                    f"{path} takes {sample} per sample ({math.prod(sample)} values); the input "
                    f"domain has {domain.size}"
                )
            self._sample_shape: tuple[int, ...] = tuple(int(d) for d in sample)
        else:
            self._sample_shape = domain.shape
        self._domain = domain
        self._queries = QueryCounter(limit=max_queries)
        self._batch_size = self._fixed_batch or max(1, batch_size)
        rng = np.random.default_rng(0)
        probe = rng.uniform(domain.lower, domain.upper, (4, *domain.shape)).astype(np.float32)
        self._output_name, kind, count, names = self._choose_output(self._run(probe), classes)
        self._output = output or kind
        self._info = TargetInfo(
            kind="onnx",
            name=str(path),
            access=Access.LABELS if self._output is OutputKind.LABELS else Access.SCORES,
            output=self._output,
            classes=class_names(classes or names, count),
            digest=digest,
            files=((str(path), digest),),
        )

    def _run(self, batch: NDArray[np.float32]) -> dict[str, Any]:
        feed = self._domain.preprocess(batch).astype(self._dtype)
        feed = feed.reshape((feed.shape[0], *self._sample_shape))
        outputs = self._session.get_outputs()
        try:
            values = self._session.run(None, {self._input.name: feed})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AssessmentError(f"onnxruntime failed on a batch: {exc}") from exc
        return {o.name: v for o, v in zip(outputs, values, strict=True)}

    def _choose_output(
        self, results: dict[str, Any], classes: list[str] | None
    ) -> tuple[str, OutputKind, int, list[str] | None]:
        for name, value in results.items():
            array = np.asarray(value) if not isinstance(value, list) else None
            if (
                array is not None
                and array.dtype.kind == "f"
                and array.ndim == 2
                and array.shape[1] >= 2
            ):
                return name, detect_output(array), int(array.shape[1]), None
        for name, value in results.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                keys = list(value[0])
                return name, OutputKind.PROBABILITIES, len(keys), [str(k) for k in keys]
        for name, value in results.items():
            array = np.asarray(value) if not isinstance(value, list) else None
            if array is not None and array.dtype.kind in "iu" and array.ndim in (1, 2):
                if not classes:
                    raise AssessmentError(
                        f"the ONNX model gives labels only ({name!r}): name its classes"
                    )
                return name, OutputKind.LABELS, len(classes), None
        raise AssessmentError("the ONNX model has no output of class scores or labels")

    def _outputs(self, x: NDArray[np.float32]) -> NDArray[Any]:
        batch = check_batch(self._domain, x)
        self._queries.charge(batch.shape[0], requests=0)
        parts = []
        for start in range(0, batch.shape[0], self._batch_size):
            chunk = batch[start : start + self._batch_size]
            real = chunk.shape[0]
            if self._fixed_batch and real < self._fixed_batch:
                pad = np.repeat(chunk[-1:], self._fixed_batch - real, axis=0)
                chunk = np.concatenate([chunk, pad])
            self._queries.requests += 1
            value = self._run(chunk)[self._output_name]
            if isinstance(value, list):
                keys = list(value[0])
                value = np.asarray([[row[k] for k in keys] for row in value])
            parts.append(np.asarray(value)[:real])
        return np.concatenate(parts) if parts else np.zeros((0,))

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        values = self._outputs(x)
        if self._output is OutputKind.LABELS:
            return one_hot(values.reshape(-1).astype(np.int64), self._info.num_classes)
        return np.asarray(values, dtype=np.float64)

    def predict_labels(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        values = self._outputs(x)
        if self._output is OutputKind.LABELS:
            return np.asarray(values.reshape(-1), dtype=np.int64)
        return np.asarray(np.asarray(values).argmax(axis=1), dtype=np.int64)

    def torch_model(self) -> torch.nn.Module:
        raise AssessmentError("an ONNX target is a black box: it has no gradients")

    def close(self) -> None:
        """Drop the session."""
        self._session = None
