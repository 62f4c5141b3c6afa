"""The models a gateway serves, with the signature checks derived from them (API not yet stable).

A :class:`ServedEntry` is one production model version ready to serve: its
:class:`~bastion.artifacts.served_model.ServedModel` and everything the request validator needs,
worked out once at load time (NumPy dtype, fixed dimensions, value range, class count). A
:class:`ModelSet` is the immutable set the gateway routes to.

Only models the gateway can validate completely are accepted: one input and one output tensor,
Open Inference Protocol datatypes, an output whose last dimension matches the class names.
Anything else is refused with a :class:`~bastion.errors.GatewayError` naming the problem
(fail closed: a request is never passed to a model whose signature the gateway cannot check).

Where the entries come from is a seam: tests and benchmarks build them from in-memory models;
:func:`load_production_models` takes the production version of each registered model from the
registry, through verified checkout and safe loading.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.artifacts.served_model import OIP_DATATYPES, ServedModel, TensorSpec
from bastion.core.principals import check_model_name
from bastion.errors import BastionError, GatewayError

if TYPE_CHECKING:
    from bastion.core.audit import AuditLog

__all__ = [
    "ModelSet",
    "Refusal",
    "ServedEntry",
    "load_production_models",
]

logger = logging.getLogger(__name__)

_MAX_TENSOR_NAME = 256


@dataclass(frozen=True, slots=True)
class ServedEntry:
    """One model version as the gateway serves it.

    Build one with :meth:`build`, which checks the model's declared signature.

    Attributes:
        name: the model's registry name (the ``{name}`` of the routes).
        version: the version served (the production one).
        model: the loaded model.
        digest: the version's content digest, shown in metadata (``parameters.digest``).
        input: the input tensor's declaration.
        output: the output tensor's declaration (class scores).
        dtype: the NumPy dtype requests are decoded to.
        fixed: ``(axis, size)`` of every dimension the declaration fixes (not ``-1``).
        low: the lowest input value accepted (the training range, or the dtype's).
        high: the highest input value accepted.
        classes: the class names, in score order.
    """

    name: str
    version: str
    model: ServedModel
    digest: str
    input: TensorSpec
    output: TensorSpec
    dtype: np.dtype[Any]
    fixed: tuple[tuple[int, int], ...]
    low: float
    high: float
    classes: tuple[str, ...]

    @classmethod
    def build(cls, name: str, version: str, model: ServedModel, *, digest: str = "") -> ServedEntry:
        """Check ``model``'s declaration and derive the validation data.

        Raises:
            GatewayError: the name is invalid, or the signature is one the gateway cannot
                validate (not one input and one output, an unknown datatype, class names that
                do not match the output, an empty or inverted input range).
        """
        try:
            check_model_name(name)
        except BastionError as exc:
            raise GatewayError(str(exc)) from exc
        if not isinstance(version, str) or not version or len(version) > 100:
            raise GatewayError(f"model {name}: invalid version {version!r}")
        inputs, outputs = tuple(model.inputs), tuple(model.outputs)
        if len(inputs) != 1 or len(outputs) != 1:
            raise GatewayError(
                f"model {name}: the gateway serves one input and one output tensor, not "
                f"{len(inputs)} and {len(outputs)}"
            )
        spec, out = inputs[0], outputs[0]
        for tensor in (spec, out):
            _check_tensor(name, tensor)
        if spec.datatype == "BOOL":
            raise GatewayError(f"model {name}: BOOL inputs are not served")
        if not spec.shape:
            raise GatewayError(f"model {name}: input {spec.name} has no batch dimension")
        classes = tuple(str(c) for c in model.classes)
        if not classes or len(out.shape) != 2 or out.shape[-1] not in (-1, len(classes)):
            raise GatewayError(
                f"model {name}: output {out.name} {list(out.shape)} does not hold one score per "
                f"class ({len(classes)} classes)"
            )
        dtype = np.dtype(OIP_DATATYPES[spec.datatype])
        if dtype.kind == "f":
            limit = float(np.finfo(dtype).max)
            low, high = -limit, limit
        else:
            info = np.iinfo(dtype)
            low, high = float(info.min), float(info.max)
        declared = model.input_range
        if declared is not None:
            lo, hi = (float(v) for v in declared)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise GatewayError(f"model {name}: invalid input range {declared!r}")
            low, high = max(low, lo), min(high, hi)
        fixed = tuple((axis, size) for axis, size in enumerate(spec.shape) if size != -1)
        return cls(
            name=name,
            version=version,
            model=model,
            digest=digest,
            input=spec,
            output=out,
            dtype=dtype,
            fixed=fixed,
            low=low,
            high=high,
            classes=classes,
        )

    def probe(self, rows: int) -> np.ndarray[Any, Any]:
        """A valid batch of ``rows`` samples (every value the in-range one nearest zero)."""
        shape = tuple(rows if axis == 0 and size == -1 else max(size, 1) for axis, size in
                      enumerate(self.input.shape))  # fmt: skip
        value = min(max(0.0, self.low), self.high)
        return np.full(shape, value, dtype=self.dtype)

    def metadata(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata (outputs as the model declares them)."""
        parameters: dict[str, Any] = {"classes": list(self.classes)}
        if self.digest:
            parameters["digest"] = self.digest
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.model.platform,
            "inputs": [self.input.to_dict()],
            "outputs": [self.output.to_dict()],
            "parameters": parameters,
        }


def _check_tensor(name: str, tensor: TensorSpec) -> None:
    if not isinstance(tensor.name, str) or not 0 < len(tensor.name) <= _MAX_TENSOR_NAME:
        raise GatewayError(f"model {name}: invalid tensor name {tensor.name!r}")
    if tensor.datatype not in OIP_DATATYPES:
        raise GatewayError(f"model {name}: tensor {tensor.name} has unknown datatype")
    if not all(isinstance(d, int) and (d == -1 or d >= 1) for d in tensor.shape):
        raise GatewayError(f"model {name}: tensor {tensor.name} has an invalid shape")


class ModelSet(Mapping[str, ServedEntry]):
    """The models a gateway serves, by name (immutable).

    Args:
        entries: the entries; two with one name are an error.

    Raises:
        GatewayError: two entries share a name.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[ServedEntry] = ()) -> None:
        table: dict[str, ServedEntry] = {}
        for entry in entries:
            if entry.name in table:
                raise GatewayError(f"model {entry.name} is listed twice")
            table[entry.name] = entry
        self._entries = table

    @classmethod
    def of(cls, models: Mapping[str, ServedModel], *, version: str = "1") -> ModelSet:
        """A set from in-memory models, every one at ``version`` (tests, benchmarks)."""
        return cls(ServedEntry.build(name, version, model) for name, model in models.items())

    def __getitem__(self, name: str) -> ServedEntry:
        return self._entries[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The entry named ``name``, or ``default`` (one dict lookup)."""
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A model the gateway refused to serve, and why (for the operator and the audit log)."""

    name: str
    version: str | None
    reason: str


def load_production_models(
    registry: Any,
    names: Sequence[str] | None = None,
    *,
    load: Callable[..., ServedModel] | None = None,
    audit: AuditLog | None = None,
) -> tuple[ModelSet, list[Refusal]]:
    """The production version of each registered model, verified and loaded.

    Each version is checked out through the registry (digests and signature re-verified), then
    loaded with :func:`bastion.artifacts.loading.load_model` (pickle only with the version's
    ``allow_pickle`` opt-in) and its signature checked by :meth:`ServedEntry.build`. A model
    that fails any step is refused: logged, recorded as ``gateway.model.refused`` in the audit
    log, and not served. A name asked for that has no production version is refused too.

    Args:
        registry: a :class:`bastion.registry.Registry` (``production()``, ``checkout()``).
        names: the models to serve; None for every model with a production version.
        load: the loader (``load_model`` by default; tests inject one).
        audit: where refusals and loads are recorded.

    Returns:
        The models served and the refusals.
    """
    if load is None:
        from bastion.artifacts.loading import load_model

        load = load_model
    production = {v.name: v for v in registry.production()}
    wanted = list(dict.fromkeys(names)) if names is not None else sorted(production)
    entries: list[ServedEntry] = []
    refusals: list[Refusal] = []
    for name in wanted:
        version = production.get(name)
        if version is None:
            refusals.append(Refusal(name, None, "no production version"))
            continue
        try:
            folder: Path = registry.checkout(name, version.version)
            model = load(folder, allow_pickle=bool(getattr(version, "allow_pickle", False)))
            entries.append(
                ServedEntry.build(
                    name, str(version.version), model, digest=str(getattr(version, "digest", ""))
                )
            )
        except BastionError as exc:
            refusals.append(Refusal(name, str(version.version), str(exc)))
    for refusal in refusals:
        # INFO: the caller reports refusals its own way (bastion serve: a warning or an error).
        logger.info(
            "not serving model %s%s: %s",
            refusal.name,
            f" version {refusal.version}" if refusal.version else "",
            refusal.reason,
        )
        if audit is not None:
            audit.append(
                "gateway.model.refused",
                f"model:{refusal.name}",
                {"version": refusal.version, "reason": refusal.reason[:1000]},
            )
    if audit is not None:
        for entry in entries:
            audit.append(
                "gateway.model.loaded",
                f"model:{entry.name}",
                {
                    "version": entry.version,
                    "digest": entry.digest,
                    "platform": entry.model.platform,
                },
            )
    return ModelSet(entries), refusals
