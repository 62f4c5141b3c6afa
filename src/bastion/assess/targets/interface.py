"""What every assessment target offers: predictions on raw inputs, counted (stable API).

A *target* is the model under assessment, reached one of several ways (a PyTorch module, a
scikit-learn estimator, an ONNX graph, a remote Open Inference Protocol endpoint). Attacks see
only this interface. Inputs are always raw (see :mod:`bastion.assess.domain`): the target
applies the model's preprocessing itself.

Every sample a target is asked about is one *query*, counted by :class:`QueryCounter` (a
white-box forward pass counts too), and a counter with a limit refuses to go past it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Access",
    "OutputKind",
    "QueryBudgetError",
    "QueryCounter",
    "Target",
    "TargetInfo",
    "softmax",
]

logger = logging.getLogger(__name__)


class Access(StrEnum):
    """How much of the model an attacker reaches, from most to least."""

    GRADIENTS = "gradients"  #: white box: a differentiable model (``Target.torch_model``)
    SCORES = "scores"  #: per-class scores (probabilities or logits)
    LABELS = "labels"  #: the decision only

    @property
    def rank(self) -> int:
        """2 for gradients, 1 for scores, 0 for labels: ``a.rank >= b.rank`` if a covers b."""
        return {Access.GRADIENTS: 2, Access.SCORES: 1, Access.LABELS: 0}[self]


class OutputKind(StrEnum):
    """What the model returns per sample."""

    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    LABELS = "labels"


class QueryBudgetError(AssessmentError):
    """A target was asked more queries than its budget allows."""


@dataclass(slots=True)
class QueryCounter:
    """Counts queries (one per sample asked about) against an optional limit.

    Attributes:
        limit: the most queries allowed, or None for no limit.
        used: queries made so far.
        requests: model invocations (forward passes, HTTP requests) so far.
    """

    limit: int | None = None
    used: int = 0
    requests: int = 0

    @property
    def remaining(self) -> int | None:
        """Queries left, or None without a limit."""
        return None if self.limit is None else max(0, self.limit - self.used)

    def charge(self, n: int, requests: int = 1) -> None:
        """Count ``n`` queries made in ``requests`` invocations, before they are made.

        Raises:
            QueryBudgetError: they would go past the limit (nothing is counted then).
        """
        if self.limit is not None and self.used + n > self.limit:
            raise QueryBudgetError(
                f"query budget of {self.limit} exhausted ({self.used} used, {n} more asked)"
            )
        self.used += n
        self.requests += requests


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """Who the target is, for reports and the audit log.

    Attributes:
        kind: ``torch``, ``torchscript``, ``sklearn``, ``onnx`` or ``remote``.
        name: the model file, factory or endpoint URL.
        access: what an attacker reaches (see :class:`Access`).
        output: what the model returns (see :class:`OutputKind`).
        classes: the class names, in output order; labels are indices into it.
        digest: ``sha256:<hex>`` of the model file (or of the list of its files' digests when
            there are several); empty when unknown (a remote model that publishes none).
        files: ``(path, sha256:<hex>)`` of each model file read.
    """

    kind: str
    name: str
    access: Access
    output: OutputKind
    classes: tuple[str, ...]
    digest: str = ""
    files: tuple[tuple[str, str], ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "kind": self.kind,
            "name": self.name,
            "access": self.access.value,
            "output": self.output.value,
            "classes": list(self.classes),
            "digest": self.digest,
            "files": [{"path": p, "digest": d} for p, d in self.files],
        }


@runtime_checkable
class Target(Protocol):
    """A classifier under assessment.

    Implementations: :mod:`bastion.assess.targets` (``TARGETS``). All methods take raw inputs
    of shape ``(n, *domain.shape)`` and charge ``n`` queries to :attr:`queries`.
    """

    @property
    def info(self) -> TargetInfo:
        """Identity, access level and classes."""
        ...

    @property
    def domain(self) -> InputDomain:
        """The input domain; budgets are in its raw units."""
        ...

    @property
    def queries(self) -> QueryCounter:
        """The query counter (with its budget)."""
        ...

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Per-class scores ``(n, classes)`` as the model gives them (see ``info.output``);
        a label-only model gives one-hot rows."""
        ...

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Per-class probabilities in float64 (logits go through a softmax).

        Raises:
            AssessmentError: the target gives labels only.
        """
        ...

    def predict_labels(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        """Predicted class indices ``(n,)``."""
        ...

    def torch_model(self) -> torch.nn.Module:
        """A differentiable module from raw inputs to logits, preprocessing included.

        Its forward passes charge the query counter. The module is in eval mode and its
        parameters do not require gradients.

        Raises:
            AssessmentError: the target has no gradients (``info.access`` is not GRADIENTS).
        """
        ...

    def close(self) -> None:
        """Release what the target holds (sessions, connections)."""
        ...


class TargetBase:
    """What the targets bastion ships share: the three properties of :class:`Target` kept as
    attributes, and ``predict_proba`` from ``predict_scores`` and the output kind.

    Subclasses set ``_info``, ``_domain``, ``_queries`` and ``_output`` and define
    ``predict_scores``.
    """

    _info: TargetInfo
    _domain: InputDomain
    _queries: QueryCounter
    _output: OutputKind

    @property
    def info(self) -> TargetInfo:
        return self._info

    @property
    def domain(self) -> InputDomain:
        return self._domain

    @property
    def queries(self) -> QueryCounter:
        return self._queries

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        raise NotImplementedError

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        return to_probabilities(self.predict_scores(x), self._output)


def softmax(scores: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Row-wise softmax in float64, stable for large logits."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    result: NDArray[np.float64] = z
    return result


def one_hot(labels: NDArray[np.int64], classes: int) -> NDArray[np.float64]:
    """One-hot rows for label-only outputs."""
    out = np.zeros((labels.shape[0], classes), dtype=np.float64)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def detect_output(scores: NDArray[np.floating[Any]]) -> OutputKind:
    """Guess whether float scores are probabilities (rows of non-negatives summing to 1)."""
    if scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return OutputKind.PROBABILITIES
    return OutputKind.LOGITS


def to_probabilities(scores: NDArray[np.floating[Any]], output: OutputKind) -> NDArray[np.float64]:
    """Probabilities from scores of the given kind.

    Raises:
        AssessmentError: the output is labels only.
    """
    if output is OutputKind.LABELS:
        raise AssessmentError("the target gives labels only, not probabilities")
    if output is OutputKind.LOGITS:
        return softmax(scores)
    return np.asarray(scores, dtype=np.float64)


def check_batch(domain: InputDomain, x: NDArray[Any]) -> NDArray[np.float32]:
    """The batch as C-contiguous float32 of the domain's shape (a flat row is reshaped).

    Raises:
        AssessmentError: the batch does not fit the domain's shape.
    """
    batch = np.ascontiguousarray(x, dtype=np.float32)
    if batch.ndim >= 1 and batch.shape[1:] != domain.shape:
        if batch.ndim == 2 and batch.shape[1] == domain.size:
            return batch.reshape((batch.shape[0], *domain.shape))
        raise AssessmentError(
            f"a batch of shape {batch.shape[1:]} per sample does not fit the input domain "
            f"{domain.shape}"
        )
    return batch


def class_names(classes: Sequence[Any] | None, count: int) -> tuple[str, ...]:
    """Class names as strings (``"0"``.. when the model names none)."""
    if classes is None:
        return tuple(str(i) for i in range(count))
    return tuple(str(c) for c in classes)
