"""What the gateway serves: a loaded model behind one small interface (stable API).

A :class:`ServedModel` is produced by :mod:`bastion.artifacts.loading` from files that were
scanned and whose signature verified. It declares its signature (named input and output
tensors with shape and Open Inference Protocol datatype), the value range its inputs were
trained on, and its class names, and predicts class scores for a batch. The gateway validates
every request against the declaration before ``predict`` sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["OIP_DATATYPES", "ServedModel", "TensorSpec"]

#: Open Inference Protocol v2 datatypes and the NumPy dtype each is decoded to.
OIP_DATATYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor of a model's signature.

    Attributes:
        name: the tensor's name in requests and responses.
        datatype: an Open Inference Protocol datatype (a key of :data:`OIP_DATATYPES`).
        shape: the shape; ``-1`` marks a free dimension (the batch, usually the first).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        """The tensor as the Open Inference Protocol's model metadata describes it."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@runtime_checkable
class ServedModel(Protocol):
    """A model ready to serve: a declared signature and a batch ``predict``."""

    @property
    def platform(self) -> str:
        """What runs it, e.g. ``bastion-safetensors``, ``onnxruntime``, ``sklearn``."""
        ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The input tensors (one for every loader bastion ships)."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The output tensors."""
        ...

    @property
    def input_range(self) -> tuple[float, float] | None:
        """The range of input values seen in training; values outside it are refused."""
        ...

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in score order."""
        ...

    def predict(self, batch: NDArray[np.floating]) -> NDArray[np.float64]:
        """Class scores (probabilities, rows summing to 1) for a validated batch."""
        ...
