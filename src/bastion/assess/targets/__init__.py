"""Assessment targets, one module each, listed in :data:`TARGETS` (stable API).

A target is named by a *spec*:

=========================  ================================================  ===========
spec                       what                                              access
=========================  ================================================  ===========
``torch:pkg.mod:factory``  ``factory()`` -> ``nn.Module``, ``--weights`` a    gradients
                           safetensors file
``torchscript:model.pt``   a TorchScript archive (scanned first)             gradients
``sklearn:model.joblib``   a pickled estimator (``--allow-pickle``, scanned)  gradients
                                                                             or scores
``onnx:model.onnx``        an ONNX graph run by onnxruntime (scanned first)  scores
``http(s)://.../v2/models/NAME``  an Open Inference Protocol v2 endpoint     scores/labels
=========================  ================================================  ===========

A bare path is recognised by its suffix (``.onnx``; ``.pt``/``.pth``/``.ts`` TorchScript;
``.joblib``/``.pkl``/``.pickle`` scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.assess.domain import InputDomain
from bastion.assess.targets._files import ScanGate, require_clean_scan
from bastion.assess.targets.interface import (
    Access,
    OutputKind,
    QueryBudgetError,
    QueryCounter,
    Target,
    TargetInfo,
)
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "TARGETS",
    "Access",
    "OutputKind",
    "QueryBudgetError",
    "QueryCounter",
    "Target",
    "TargetInfo",
    "TargetKind",
    "TargetOptions",
    "open_target",
]


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """Everything a target may need besides its spec and domain."""

    weights: Path | None = None
    allow_pickle: bool = False
    device: str = "cpu"
    batch_size: int = 256
    max_queries: int | None = None
    api_key: str | None = None
    api_key_header: str = "Authorization"
    model_name: str | None = None
    output: OutputKind | None = None
    classes: tuple[str, ...] | None = None
    scan: ScanGate = require_clean_scan
    transport: httpx.BaseTransport | None = field(default=None)


def _path(spec: str) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise AssessmentError(f"model file {spec} does not exist")
    return path


def _torch(spec: str, domain: InputDomain, o: TargetOptions) -> Target:
    from bastion.assess.targets.torch_target import TorchTarget

    return TorchTarget.from_factory(
        spec,
        domain,
        weights=o.weights,
        device=o.device,
        batch_size=o.batch_size,
        max_queries=o.max_queries,
        classes=o.classes,
        output=o.output,
    )


def _torchscript(spec: str, domain: InputDomain, o: TargetOptions) -> Target:
    from bastion.assess.targets.torch_target import TorchTarget

    return TorchTarget.from_torchscript(
        _path(spec),
        domain,
        scan=o.scan,
        device=o.device,
        batch_size=o.batch_size,
        max_queries=o.max_queries,
        classes=o.classes,
        output=o.output,
    )


def _sklearn(spec: str, domain: InputDomain, o: TargetOptions) -> Target:
    from bastion.assess.targets.sklearn_target import SklearnTarget

    return SklearnTarget.load(
        _path(spec), domain, allow_pickle=o.allow_pickle, scan=o.scan, max_queries=o.max_queries
    )


def _onnx(spec: str, domain: InputDomain, o: TargetOptions) -> Target:
    from bastion.assess.targets.onnx_target import OnnxTarget

    return OnnxTarget(
        _path(spec),
        domain,
        scan=o.scan,
        max_queries=o.max_queries,
        batch_size=o.batch_size,
        classes=list(o.classes) if o.classes else None,
        output=o.output,
    )


def _remote(spec: str, domain: InputDomain, o: TargetOptions) -> Target:
    from bastion.assess.targets.remote_target import RemoteTarget

    return RemoteTarget(
        spec,
        domain,
        model=o.model_name,
        api_key=o.api_key,
        api_key_header=o.api_key_header,
        transport=o.transport,
        batch_size=o.batch_size,
        max_queries=o.max_queries,
        output=o.output,
        classes=list(o.classes) if o.classes else None,
    )


@dataclass(frozen=True, slots=True)
class TargetKind:
    """One way to reach a model: spec prefix, file suffixes, and how to open it."""

    name: str
    summary: str
    suffixes: tuple[str, ...]
    opener: Callable[[str, InputDomain, TargetOptions], Target]


#: Every kind of target, in the order the CLI lists them.
TARGETS: tuple[TargetKind, ...] = (
    TargetKind("torch", "PyTorch factory module:callable (+ --weights safetensors)", (), _torch),
    TargetKind("torchscript", "TorchScript archive", (".pt", ".pth", ".ts"), _torchscript),
    TargetKind(
        "sklearn", "pickled scikit-learn estimator", (".joblib", ".pkl", ".pickle"), _sklearn
    ),
    TargetKind("onnx", "ONNX graph (onnxruntime)", (".onnx",), _onnx),
    TargetKind("remote", "Open Inference Protocol v2 endpoint URL", (), _remote),
)


def open_target(spec: str, domain: InputDomain, options: TargetOptions | None = None) -> Target:
    """Open the target a spec names (see the module docstring).

    Raises:
        AssessmentError: the spec names no known kind, or the target cannot be opened.
    """
    opts = options or TargetOptions()
    by_name = {kind.name: kind for kind in TARGETS}
    if spec.startswith(("http://", "https://")):
        return by_name["remote"].opener(spec, domain, opts)
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in by_name and prefix != "remote":
        return by_name[prefix].opener(rest, domain, opts)
    suffix = Path(spec).suffix.lower()
    for kind in TARGETS:
        if suffix and suffix in kind.suffixes:
            return kind.opener(spec, domain, opts)
    known = ", ".join(f"{k.name}:" for k in TARGETS if k.name != "remote")
    raise AssessmentError(
        f"cannot tell what kind of model {spec!r} is: prefix it with one of {known} "
        "or give an http(s) endpoint URL"
    )
