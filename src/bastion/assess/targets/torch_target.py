"""PyTorch targets: a factory plus safetensors weights, a TorchScript file, or a module.

White box: :meth:`TorchTarget.torch_model` gives attacks a differentiable module from raw
inputs to logits, with the domain's normalisation in front, the model in eval mode and its
parameters frozen (attacks never train it; gradients flow to the input only).

Loading:

- ``TorchTarget.from_factory("pkg.models:make_net", weights=Path("model.safetensors"), ...)``
  imports ``pkg.models`` (code the user names and trusts, like a plugin), calls ``make_net()``
  for an ``nn.Module`` and loads the weights from safetensors, strictly. No pickle.
- ``TorchTarget.from_torchscript(path, ...)`` loads a TorchScript archive only after bastion's
  scanner passes it (the archive holds pickled constants).
- ``TorchTarget.from_module(module, domain)`` wraps a module already in memory (tests, API).

A model whose output is probabilities (a softmax at the end) is detected on a probe batch and
its output log-transformed for attacks (``softmax(log p) = p``, so losses see logits).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.assess.targets._files import (
    ScanGate,
    combined_digest,
    file_digest,
    require_clean_scan,
)
from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryCounter,
    TargetBase,
    TargetInfo,
    check_batch,
    class_names,
    detect_output,
)
from bastion.errors import AssessmentError

__all__ = ["AffineModule", "CountedModule", "TorchTarget"]

logger = logging.getLogger(__name__)


class CountedModule(torch.nn.Module):
    """Raw input -> (normalise) -> model -> logits, one query charged per sample."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        module: torch.nn.Module,
        domain: InputDomain,
        counter: QueryCounter,
        log_output: bool,
    ) -> None:
        super().__init__()
        self.net = module
        self.counter = counter
        self.log_output = log_output
        self.normalise = domain.normalised
        if domain.normalised:
            shape = domain.stats_shape()
            mean = torch.tensor(domain.mean, dtype=torch.float32).reshape(shape)
            std = torch.tensor(domain.std, dtype=torch.float32).reshape(shape)
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", 1.0 / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter.charge(int(x.shape[0]))
        if self.normalise:
            x = (x - self.mean) * self.inv_std
        out: torch.Tensor = self.net(x)
        if self.log_output:
            out = torch.log(out.clamp_min(1e-30))
        return out


class AffineModule(torch.nn.Module):
    """``x * scale + shift`` per feature (a scaler of a scikit-learn pipeline)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: NDArray[Any], shift: NDArray[Any]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, dtype=np.float32)))
        self.register_buffer("shift", torch.from_numpy(np.asarray(shift, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class TorchTarget(TargetBase):
    """A PyTorch classifier (white box). See the module docstring for the ways to load one."""

    def __init__(
        self,
        module: torch.nn.Module,
        domain: InputDomain,
        *,
        kind: str = "torch",
        name: str = "module",
        classes: Sequence[Any] | None = None,
        files: Sequence[tuple[str, str]] = (),
        device: str = "cpu",
        batch_size: int = 512,
        max_queries: int | None = None,
        output: OutputKind | None = None,
    ) -> None:
        self._domain = domain
        self._queries = QueryCounter(limit=max_queries)
        self._batch_size = max(1, batch_size)
        try:
            self._device = torch.device(device)
            module = module.to(self._device).eval()
        except (RuntimeError, TypeError) as exc:
            raise AssessmentError(f"cannot use device {device!r}: {exc}") from exc
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        probe = self._probe(module)
        if probe.ndim != 2 or probe.shape[1] < 2:
            raise AssessmentError(
                f"the model returns shape {tuple(probe.shape[1:])} per sample; a classifier "
                "with one score per class (at least 2) is needed"
            )
        self._output = output or detect_output(probe)
        if self._output is OutputKind.LABELS:
            raise AssessmentError("a PyTorch target must return scores, not labels")
        self._model = CountedModule(
            module, domain, self._queries, log_output=self._output is OutputKind.PROBABILITIES
        ).to(self._device)
        count = int(probe.shape[1])
        names = class_names(classes, count)
        if len(names) != count:
            raise AssessmentError(f"{len(names)} class names for a model with {count} outputs")
        self._info = TargetInfo(
            kind=kind,
            name=name,
            access=Access.GRADIENTS,
            output=self._output,
            classes=names,
            digest=combined_digest(files) if files else "",
            files=tuple(files),
        )

    def _probe(self, module: torch.nn.Module) -> NDArray[np.float64]:
        """Outputs on a few points of the domain (not charged: set-up, not an attack)."""
        rng = np.random.default_rng(0)
        x = rng.uniform(self._domain.lower, self._domain.upper, (4, *self._domain.shape))
        batch = torch.from_numpy(self._domain.preprocess(x)).to(self._device)
        try:
            with torch.inference_mode():
                out = module(batch)
        except Exception as exc:  # any failure of user code on a valid input
            raise AssessmentError(
                f"the model fails on inputs of shape {self._domain.shape}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise AssessmentError(f"the model returns {type(out).__name__}, not a tensor")
        return np.asarray(out.detach().cpu().double().numpy())

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        domain: InputDomain,
        **options: Any,
    ) -> TorchTarget:
        """Wrap an in-memory module (its digest is unknown: pass ``files`` if you have them)."""
        return cls(module, domain, **options)

    @classmethod
    def from_factory(
        cls,
        factory: str,
        domain: InputDomain,
        *,
        weights: Path | None = None,
        **options: Any,
    ) -> TorchTarget:
        """Build the module with ``module:callable`` and load safetensors ``weights``.

        Raises:
            AssessmentError: the factory cannot be imported or called, does not return a
                module, or the weights do not load (missing, unexpected or misshaped keys).
        """
        module_name, _, attribute = factory.partition(":")
        if not module_name or not attribute:
            raise AssessmentError(f"factory {factory!r} must be 'module:callable'")
        try:
            imported = importlib.import_module(module_name)
        except Exception as exc:  # user code: any import failure is reported, not raised
            raise AssessmentError(f"cannot import {module_name!r}: {exc}") from exc
        target: Any = imported
        for part in attribute.split("."):
            target = getattr(target, part, None)
            if target is None:
                raise AssessmentError(f"{module_name!r} has no {attribute!r}")
        if not callable(target):
            raise AssessmentError(f"{factory!r} is not callable")
        logger.info("building the model with %s", factory)
        try:
            module = target()
        except Exception as exc:  # user code
            raise AssessmentError(f"{factory}() failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(module, torch.nn.Module):
            raise AssessmentError(f"{factory}() returned {type(module).__name__}, not a Module")
        files: list[tuple[str, str]] = []
        source = getattr(imported, "__file__", None)
        if source:
            files.append((str(source), file_digest(Path(source))))
        if weights is not None:
            _load_safetensors(module, weights)
            files.append((str(weights), file_digest(weights)))
        options.setdefault("name", factory)
        return cls(module, domain, kind="torch", files=files, **options)

    @classmethod
    def from_torchscript(
        cls,
        path: Path,
        domain: InputDomain,
        *,
        scan: ScanGate = require_clean_scan,
        **options: Any,
    ) -> TorchTarget:
        """Load a TorchScript archive after the scanner passes it.

        Raises:
            AssessmentError: the scan fails, or the file is not TorchScript.
        """
        digest = file_digest(path)
        scan([path])
        device = options.get("device", "cpu")
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.export, and still what many
                # deployed models are; the warning says nothing about this file.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError) as exc:
            raise AssessmentError(f"{path} is not a loadable TorchScript file: {exc}") from exc
        options.setdefault("name", str(path))
        return cls(module, domain, kind="torchscript", files=[(str(path), digest)], **options)

    @property
    def device(self) -> torch.device:
        device: torch.device = self._device
        return device

    def torch_model(self) -> torch.nn.Module:
        return self._model

    def predict_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        batch = check_batch(self._domain, x)
        outputs = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self._batch_size):
                chunk = torch.from_numpy(batch[start : start + self._batch_size]).to(self._device)
                outputs.append(self._model(chunk).double().cpu().numpy())
        if not outputs:
            return np.zeros((0, self._info.num_classes))
        scores = np.concatenate(outputs)
        if self._output is OutputKind.PROBABILITIES:
            return np.asarray(np.exp(scores))
        return np.asarray(scores)

    def predict_labels(self, x: NDArray[np.float32]) -> NDArray[np.int64]:
        return np.asarray(self.predict_scores(x).argmax(axis=1), dtype=np.int64)

    def close(self) -> None:
        """Nothing to release."""


def _load_safetensors(module: torch.nn.Module, weights: Path) -> None:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors is a dependency
        raise AssessmentError("loading weights needs safetensors") from exc
    try:
        state = load_file(str(weights))
    except (OSError, RuntimeError, ValueError) as exc:
        raise AssessmentError(f"{weights} is not a readable safetensors file: {exc}") from exc
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise AssessmentError(f"the weights in {weights} do not fit the model: {detail}") from exc
