"""scikit-learn targets: a pickled estimator, loaded only after bastion's scanner passes it.

A scikit-learn model file is a pickle (or joblib) file, and unpickling runs code. So loading
takes both gates, in order: ``allow_pickle=True`` (the CLI's ``--allow-pickle``; refused
otherwise, with a warning logged at every use) and a clean ``bastion scan`` of the file.

Access: estimators whose decision function is differentiable and readable from their
weights get an equivalent PyTorch module, checked against the estimator on a probe batch, so
gradient attacks run on them: linear classifiers (``LogisticRegression``, ``LinearSVC``,
``SGDClassifier``, ``RidgeClassifier``, ``Perceptron``), ``MLPClassifier``, and ``Pipeline``s
of ``StandardScaler``/``MinMaxScaler`` before one of those. Others are black box: scores
from ``predict_proba`` (or ``decision_function``), else labels from ``predict``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.assess.targets._files import ScanGate, combined_digest, file_digest, require_clean_scan
from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryCounter,
    TargetBase,
    TargetInfo,
    check_batch,
    class_names,
    one_hot,
    to_probabilities,
)
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import torch

__all__ = ["SklearnTarget", "to_torch"]

logger = logging.getLogger(__name__)

_LINEAR = ("LogisticRegression", "LinearSVC", "SGDClassifier", "RidgeClassifier", "Perceptron")


class SklearnTarget(TargetBase):
    """A scikit-learn classifier (see the module docstring)."""

    def __init__(
        self,
        estimator: Any,
        domain: InputDomain,
        *,
        name: str = "estimator",
        files: Sequence[tuple[str, str]] = (),
        max_queries: int | None = None,
        gradients: bool = True,
    ) -> None:
        if not hasattr(estimator, "predict") or not hasattr(estimator, "classes_"):
            raise AssessmentError(
                f"{name} holds a {type(estimator).__name__}, not a fitted scikit-learn classifier"
            )
        self._estimator = estimator
        self._domain = domain
        self._queries = QueryCounter(limit=max_queries)
        classes = list(estimator.classes_)
        if hasattr(estimator, "predict_proba"):
            output = OutputKind.PROBABILITIES
        elif hasattr(estimator, "decision_function"):
            output = OutputKind.LOGITS
        else:
            output = OutputKind.LABELS
        self._output = output
        self._module: torch.nn.Module | None = None
        if gradients:
            self._module = self._differentiable()
        access = (
            Access.GRADIENTS
            if self._module is not None
            else (Access.LABELS if output is OutputKind.LABELS else Access.SCORES)
        )
        self._info = TargetInfo(
            kind="sklearn",
            name=name,
            access=access,
            output=output,
            classes=class_names(classes, len(classes)),
            digest=combined_digest(files) if files else "",
            files=tuple(files),
        )

    @classmethod
    def load(
        cls,
        path: Path,
        domain: InputDomain,
        *,
        allow_pickle: bool = False,
        scan: ScanGate = require_clean_scan,
        **options: Any,
    ) -> SklearnTarget:
        """Load a pickled estimator: ``allow_pickle`` first, then the scan, then the load.

        Raises:
            AssessmentError: pickle not allowed, the scan did not pass, or the file does not
                load as a fitted classifier.
        """
        if not allow_pickle:
            raise AssessmentError(
                f"{path} is a pickle-based scikit-learn model; loading it runs code from the "
                "file. Pass --allow-pickle (it is loaded only if 'bastion scan' passes it)"
            )
        digest = file_digest(path)
        scan([path])
        logger.warning("loading pickle-based model %s (allow_pickle, scan passed)", path)
        try:
            import joblib

            estimator = joblib.load(path)
        except Exception as exc:  # a pickle can fail in any way; the scan already passed it
            raise AssessmentError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
        options.setdefault("name", str(path))
        return cls(estimator, domain, files=[(str(path), digest)], **options)

    @property
    def estimator(self) -> Any:
        """The estimator itself (read it, do not query it: its calls are not counted)."""
        return self._estimator

    def _flat(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        batch = self._domain.preprocess(check_batch(self._domain, x))
        return batch.reshape(batch.shape[0], -1)

    def _scores(self, flat: NDArray[np.float32]) -> NDArray[np.float64]:
        estimator = self._estimator
        if self._output is OutputKind.PROBABILITIES:
            return np.asarray(estimator.predict_proba(flat), dtype=np.float64)
        if self._output is OutputKind.LOGITS:
            scores = np.asarray(estimator.decision_function(flat), dtype=np.float64)
            if scores.ndim == 1:
                scores = np.stack([np.zeros_like(scores), scores], axis=1)
            return scores
        labels = self._labels(flat)
        return one_hot(labels, self._info.num_classes)

    def _labels(self, flat: NDArray[np.float32]) -> NDArray[np.int64]:
        predicted = np.asarray(self._estimator.predict(flat))
        index = {c: i for i, c in enumerate(self._estimator.classes_.tolist())}
        return np.asarray([index[p] for p in predicted.tolist()], dtype=np.int64)

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        flat = self._flat(x)
        self._queries.charge(flat.shape[0])
        return self._scores(flat)

    def predict_labels(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        flat = self._flat(x)
        self._queries.charge(flat.shape[0])
        if self._output is OutputKind.LABELS:
            return self._labels(flat)
        return np.asarray(self._scores(flat).argmax(axis=1), dtype=np.int64)

    def torch_model(self) -> torch.nn.Module:
        if self._module is None:
            raise AssessmentError(
                f"{type(self._estimator).__name__} has no gradients bastion can read; "
                "use a score- or decision-based attack"
            )
        return self._module

    def close(self) -> None:
        """Nothing to release."""

    def _differentiable(self) -> torch.nn.Module | None:
        """The estimator as a counted torch module, if it converts and agrees on a probe."""
        try:
            import torch
        except ImportError:  # pragma: no cover - torch comes with the dev extra
            return None
        from bastion.assess.targets.torch_target import CountedModule

        network = to_torch(self._estimator)
        if network is None:
            return None
        rng = np.random.default_rng(0)
        probe = rng.uniform(self._domain.lower, self._domain.upper, (64, *self._domain.shape))
        flat = self._flat(probe.astype(np.float32))
        with torch.no_grad():
            logits = network(torch.from_numpy(flat)).double().numpy()
        expected = self._scores(flat)
        if self._output is OutputKind.PROBABILITIES:
            agree = np.allclose(to_probabilities(logits, OutputKind.LOGITS), expected, atol=1e-4)
        else:
            agree = bool((logits.argmax(1) == expected.argmax(1)).all())
        if not agree:
            logger.warning(
                "the PyTorch copy of %s disagrees with it; treating it as a black box",
                type(self._estimator).__name__,
            )
            return None
        module: torch.nn.Module = CountedModule(
            torch.nn.Sequential(torch.nn.Flatten(), network), self._domain, self._queries, False
        )
        return module


def to_torch(estimator: Any) -> torch.nn.Module | None:
    """An equivalent PyTorch module (flat input -> logits), or None when there is none."""
    import torch

    nn = torch.nn
    kind = type(estimator).__name__
    if kind == "Pipeline":
        layers: list[torch.nn.Module] = []
        for _, step in estimator.steps[:-1]:
            layer = _scaler(step)
            if layer is None:
                return None
            layers.append(layer)
        last = to_torch(estimator.steps[-1][1])
        return None if last is None else nn.Sequential(*layers, last)
    if kind in _LINEAR:
        return _linear(estimator.coef_, estimator.intercept_)
    if kind == "MLPClassifier":
        activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid}
        layers = []
        count = len(estimator.coefs_)
        for i, (weight, bias) in enumerate(
            zip(estimator.coefs_, estimator.intercepts_, strict=True)
        ):
            if i == count - 1:
                layers.append(_linear(weight.T, bias))
            else:
                layers.append(_dense(weight.T, bias))
                if estimator.activation != "identity":
                    if estimator.activation not in activations:
                        return None
                    layers.append(activations[estimator.activation]())
        return nn.Sequential(*layers)
    return None


def _dense(weight: NDArray[Any], bias: NDArray[Any]) -> torch.nn.Module:
    import torch

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        layer.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32).reshape(-1)))
    layer.requires_grad_(False)
    return layer


def _linear(weight: NDArray[Any], bias: NDArray[Any]) -> torch.nn.Module:
    """Class scores from a linear decision function; one row (binary) becomes ``[0, z]``."""
    import torch

    weight = np.atleast_2d(np.asarray(weight, dtype=np.float32))
    bias = np.asarray(bias, dtype=np.float32).reshape(-1)
    if weight.shape[0] == 1:
        weight = np.concatenate([np.zeros_like(weight), weight])
        bias = np.concatenate([np.zeros_like(bias), bias])
    return _dense(weight, bias) if weight.shape[0] > 1 else torch.nn.Identity()


def _scaler(step: Any) -> torch.nn.Module | None:
    from bastion.assess.targets.torch_target import AffineModule

    kind = type(step).__name__
    if kind == "StandardScaler":
        size = step.n_features_in_
        mean = np.broadcast_to(np.asarray(step.mean_ if step.with_mean else 0.0), (size,))
        scale = np.broadcast_to(np.asarray(step.scale_ if step.with_std else 1.0), (size,))
        return AffineModule(1.0 / scale, -mean / scale)
    if kind == "MinMaxScaler" and not getattr(step, "clip", False):
        return AffineModule(np.asarray(step.scale_), np.asarray(step.min_))
    return None
