"""Load a verified model folder into a :class:`~bastion.artifacts.served_model.ServedModel`.

Only call :func:`load_model` on files that were scanned and whose signature verified: the
registry's :meth:`bastion.registry.Registry.checkout` hands out such folders. The format is
decided by the files in the folder, never guessed, in this order of preference:

1. **safetensors** (``*.safetensors`` with a ``config.json``): tensors only, no code. Two
   architectures, named by ``config.json``'s ``architecture``:

   * ``softmax-linear``: ``weight`` ``[classes, features]`` and ``bias`` ``[classes]`` (the
     demo model, :mod:`bastion.demo_model`);
   * ``mlp``: ``weight_0``/``bias_0`` ... ``weight_{n-1}``/``bias_{n-1}`` (each weight
     ``[out, in]``), ReLU between layers.

   Scores are the softmax of the last layer. ``config.json`` declares ``inputs`` and
   ``outputs`` (one tensor each, shape ``[-1, n]``), ``classes`` and ``input_range``.
2. **ONNX** (one ``*.onnx``), run by onnxruntime on the CPU. The signature comes from the
   graph (one float input; the first float output of shape ``(batch, classes)``); an optional
   ``config.json`` gives ``classes``, ``input_range`` and ``scores`` (``probabilities`` or
   ``logits``; without it, a probe batch tells them apart).
3. **pickle / joblib** scikit-learn classifiers (one ``*.pkl``, ``*.pickle`` or ``*.joblib``),
   only with ``allow_pickle=True`` (the registry's audited per-model opt-in), and only through
   :mod:`bastion.artifacts.unpickler`, which resolves nothing outside the scanner's allowlist.

A folder with no model file, with several, or with a file these readers reject raises
:class:`~bastion.errors.RegistryError`. The API is stable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.errors import BastionError, RegistryError

__all__ = [
    "CONFIG_NAME",
    "MAX_CONFIG_BYTES",
    "ModelFormat",
    "detect_format",
    "load_model",
    "model_files",
]

logger = logging.getLogger(__name__)

#: The file beside the weights that declares the signature, classes and input range.
CONFIG_NAME = "config.json"
#: Largest ``config.json`` read.
MAX_CONFIG_BYTES = 1 * 2**20
#: Most layers of an ``mlp`` model, most classes of any model.
MAX_LAYERS = 64
MAX_CLASSES = 100_000


class ModelFormat(StrEnum):
    """How a model's weights are stored, in order of preference."""

    SAFETENSORS = "safetensors"
    ONNX = "onnx"
    PICKLE = "pickle"


_SUFFIXES: dict[str, ModelFormat] = {
    ".safetensors": ModelFormat.SAFETENSORS,
    ".onnx": ModelFormat.ONNX,
    ".pkl": ModelFormat.PICKLE,
    ".pickle": ModelFormat.PICKLE,
    ".joblib": ModelFormat.PICKLE,
}

# -- config.json ------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Tensor(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$")
    datatype: Literal["FP16", "FP32", "FP64"]
    shape: list[int] = Field(min_length=2, max_length=2)


_ClassName = Annotated[str, Field(min_length=1, max_length=200)]


class _Config(_Wire):
    # Lax numbers: JSON has one number type (input_range may be written 0 or 0.0).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    architecture: Literal["softmax-linear", "mlp"] | None = None
    inputs: list[_Tensor] | None = Field(default=None, min_length=1, max_length=1)
    outputs: list[_Tensor] | None = Field(default=None, min_length=1, max_length=1)
    input_range: tuple[float, float] | None = None
    classes: list[_ClassName] | None = Field(default=None, min_length=1, max_length=MAX_CLASSES)
    scores: Literal["probabilities", "logits"] | None = None
    activation: Literal["relu"] | None = None
    test_accuracy: float | None = None
    training_data: str | None = Field(default=None, max_length=1000)
    description: str | None = Field(default=None, max_length=4000)


def _read_config(folder: Path, *, required: bool) -> _Config:
    path = folder / CONFIG_NAME
    if not path.is_file():
        if required:
            raise RegistryError(f"{folder}: no {CONFIG_NAME} beside the weights")
        return _Config()
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise RegistryError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = _Config.model_validate_json(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise RegistryError(f"{path} is invalid: {where}: {error['msg']}") from exc
    if config.input_range is not None:
        low, high = config.input_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise RegistryError(f"{path}: input_range must be two finite numbers, low < high")
    for tensor in (*(config.inputs or ()), *(config.outputs or ())):
        if tensor.shape[0] != -1 or tensor.shape[1] < 1:
            raise RegistryError(
                f"{path}: tensor {tensor.name!r} must have shape [-1, n] (a batch of vectors)"
            )
    if config.classes is not None and len(set(config.classes)) != len(config.classes):
        raise RegistryError(f"{path}: class names repeat")
    return config


# -- detection ---------------------------------------------------------------------------------


def model_files(folder: Path) -> dict[ModelFormat, list[Path]]:
    """The model files in ``folder`` (not its sub-folders), by format, sorted by name.

    Raises:
        RegistryError: ``folder`` is not a readable folder.
    """
    if not folder.is_dir():
        raise RegistryError(f"{folder} is not a model folder")
    found: dict[ModelFormat, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise RegistryError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    for entry in entries:
        fmt = _SUFFIXES.get(entry.suffix.lower())
        if fmt is not None and entry.is_file() and not entry.is_symlink():
            found.setdefault(fmt, []).append(entry)
    return found


def detect_format(folder: Path) -> ModelFormat:
    """The format of the one model file in ``folder``.

    Raises:
        RegistryError: there is no model file, or several.
    """
    found = model_files(folder)
    every = [p.name for paths in found.values() for p in paths]
    if not every:
        raise RegistryError(
            f"{folder} holds no model file bastion loads (*.safetensors with config.json, "
            "*.onnx, or a *.pkl/*.joblib scikit-learn model)"
        )
    if len(every) > 1:
        raise RegistryError(
            f"{folder} holds several model files ({', '.join(sorted(every)[:5])}): one per version"
        )
    return next(iter(found))


# -- the models ------------------------------------------------------------------------------


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted: NDArray[np.float64] = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _as_batch(batch: NDArray[Any], features: int) -> NDArray[np.float64]:
    x = np.asarray(batch, dtype=np.float64)
    if x.ndim < 1:
        raise RegistryError("a batch must have a first (batch) dimension")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != features:
        raise RegistryError(f"each input must have {features} values, not {x.shape[1]}")
    return x


class _Declared:
    """The declared signature of a loaded model: the properties of :class:`ServedModel`
    that every loader fills in the same way."""

    __slots__ = ("_classes", "_inputs", "_outputs", "_range")

    _inputs: tuple[TensorSpec, ...]
    _outputs: tuple[TensorSpec, ...]
    _classes: tuple[str, ...]
    _range: tuple[float, float] | None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def input_range(self) -> tuple[float, float] | None:
        return self._range

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes


class _LayeredModel(_Declared):
    """Dense layers (ReLU between them) and a softmax: ``softmax-linear`` and ``mlp``."""

    __slots__ = ("_biases", "_weights")

    def __init__(
        self,
        layers: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
        inputs: TensorSpec,
        outputs: TensorSpec,
        classes: tuple[str, ...],
        input_range: tuple[float, float] | None,
    ) -> None:
        # Stored transposed and contiguous: x @ W.T costs a copy per call otherwise.
        self._weights = tuple(np.ascontiguousarray(w.T) for w, _ in layers)
        self._biases = tuple(b for _, b in layers)
        self._inputs = (inputs,)
        self._outputs = (outputs,)
        self._classes = classes
        self._range = input_range

    @property
    def platform(self) -> str:
        return "bastion-safetensors"

    def predict(self, batch: NDArray[np.floating]) -> NDArray[np.float64]:
        """Class probabilities: softmax of the last layer."""
        x = _as_batch(batch, self._weights[0].shape[0])
        last = len(self._weights) - 1
        for index, (weight, bias) in enumerate(zip(self._weights, self._biases, strict=True)):
            x = x @ weight
            x += bias
            if index < last:
                np.maximum(x, 0.0, out=x)
        return _softmax(x)


def _load_safetensors(folder: Path, path: Path) -> ServedModel:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config = _read_config(folder, required=True)
    if config.architecture is None:
        raise RegistryError(f"{folder / CONFIG_NAME} names no architecture (softmax-linear, mlp)")
    if config.inputs is None or config.outputs is None or config.classes is None:
        raise RegistryError(f"{folder / CONFIG_NAME} must declare inputs, outputs and classes")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path.name}: {exc}") from exc
    if config.architecture == "softmax-linear":
        names = [("weight", "bias")]
    else:
        count = sum(1 for n in tensors if n.startswith("weight_"))
        if not 1 <= count <= MAX_LAYERS:
            raise RegistryError(f"{path.name}: an mlp needs 1 to {MAX_LAYERS} weight_i tensors")
        names = [(f"weight_{i}", f"bias_{i}") for i in range(count)]
    expected = {n for pair in names for n in pair}
    if set(tensors) != expected:
        unexpected = sorted(set(tensors) ^ expected)[:5]
        raise RegistryError(
            f"{path.name}: tensors do not match a {config.architecture} model "
            f"(missing or unexpected: {', '.join(unexpected)})"
        )
    layers = []
    width = config.inputs[0].shape[1]
    for weight_name, bias_name in names:
        weight, bias = tensors[weight_name], tensors[bias_name]
        if weight.dtype.kind != "f" or bias.dtype.kind != "f":
            raise RegistryError(f"{path.name}: {weight_name}/{bias_name} are not floats")
        if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
            raise RegistryError(
                f"{path.name}: {weight_name} {list(weight.shape)} / {bias_name} "
                f"{list(bias.shape)} do not take {width} inputs"
            )
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise RegistryError(f"{path.name}: {weight_name}/{bias_name} hold NaN or infinity")
        layers.append((weight.astype(np.float64), bias.astype(np.float64)))
        width = weight.shape[0]
    if width != config.outputs[0].shape[1] or width != len(config.classes):
        raise RegistryError(
            f"{path.name}: the model gives {width} scores; {CONFIG_NAME} declares "
            f"{config.outputs[0].shape[1]} outputs and {len(config.classes)} classes"
        )
    return _LayeredModel(
        layers,
        _spec(config.inputs[0]),
        _spec(config.outputs[0]),
        tuple(config.classes),
        config.input_range,
    )


def _spec(tensor: _Tensor) -> TensorSpec:
    return TensorSpec(tensor.name, tensor.datatype, tuple(tensor.shape))


_ONNX_TYPES = {"tensor(float)": ("FP32", np.float32), "tensor(double)": ("FP64", np.float64)}


class _OnnxModel(_Declared):
    """An ONNX classifier run by onnxruntime (CPU, one thread per call)."""

    __slots__ = ("_dtype", "_feed", "_logits", "_output_name", "_session")

    def __init__(self, folder: Path, path: Path) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        config = _read_config(folder, required=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RegistryError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        graph_inputs = self._session.get_inputs()
        if len(graph_inputs) != 1 or graph_inputs[0].type not in _ONNX_TYPES:
            raise RegistryError(f"{path.name}: one float input is needed")
        graph_input = graph_inputs[0]
        datatype, self._dtype = _ONNX_TYPES[graph_input.type]
        dims = list(graph_input.shape)
        if len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 1:
            raise RegistryError(f"{path.name}: the input must be (batch, features), not {dims}")
        if isinstance(dims[0], int) and dims[0] != -1:
            raise RegistryError(f"{path.name}: a fixed batch size ({dims[0]}) is not supported")
        self._feed = graph_input.name
        graph_in = TensorSpec(graph_input.name, datatype, (-1, int(dims[1])))
        self._inputs = (graph_in,)
        self._range = config.input_range
        probe = self._probe(int(dims[1]))
        self._output_name, scores = self._choose_output(probe, path)
        count = scores.shape[1]
        if config.classes is not None and len(config.classes) != count:
            raise RegistryError(
                f"{path.name}: {count} scores but {CONFIG_NAME} names {len(config.classes)} classes"
            )
        self._classes = tuple(config.classes or (str(i) for i in range(count)))
        self._logits = (config.scores or _score_kind(scores)) == "logits"
        output_type = next(
            o.type for o in self._session.get_outputs() if o.name == self._output_name
        )
        graph_out = TensorSpec(self._output_name, _ONNX_TYPES[output_type][0], (-1, count))
        self._outputs = (graph_out,)
        for declared, actual in ((config.inputs, graph_in), (config.outputs, graph_out)):
            if declared is not None and declared[0].name != actual.name:
                raise RegistryError(
                    f"{CONFIG_NAME} names tensor {declared[0].name!r}; the graph has "
                    f"{actual.name!r}"
                )

    def _probe(self, features: int) -> dict[str, Any]:
        low, high = self._range or (0.0, 1.0)
        batch = np.random.default_rng(0).uniform(low, high, (4, features)).astype(self._dtype)
        try:
            values = self._session.run(None, {self._feed: batch})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RegistryError(f"the ONNX model fails on a probe batch: {exc}") from exc
        return {o.name: v for o, v in zip(self._session.get_outputs(), values, strict=True)}

    def _choose_output(self, results: Mapping[str, Any], path: Path) -> tuple[str, NDArray[Any]]:
        for o in self._session.get_outputs():
            value = results[o.name]
            if (
                o.type in _ONNX_TYPES
                and isinstance(value, np.ndarray)
                and value.ndim == 2
                and value.shape[1] >= 2
            ):
                return o.name, value
        raise RegistryError(f"{path.name}: no float output of shape (batch, classes)")

    @property
    def platform(self) -> str:
        return "onnxruntime"

    def predict(self, batch: NDArray[np.floating]) -> NDArray[np.float64]:
        """Class probabilities (softmax of the output when the model gives logits)."""
        x = _as_batch(batch, self._inputs[0].shape[1]).astype(self._dtype)
        (value,) = self._session.run([self._output_name], {self._feed: x})
        scores: NDArray[np.float64] = np.asarray(value, dtype=np.float64)
        if self._logits:
            return _softmax(scores)
        return scores


def _score_kind(scores: NDArray[Any]) -> Literal["probabilities", "logits"]:
    values = np.asarray(scores, dtype=np.float64)
    if (
        np.isfinite(values).all()
        and (values >= 0).all()
        and np.allclose(values.sum(axis=1), 1.0, atol=1e-4)
    ):
        return "probabilities"
    return "logits"


class _SklearnModel(_Declared):
    """A scikit-learn classifier with ``predict_proba``, loaded by the restricted unpickler."""

    __slots__ = ("_estimator", "_features")

    def __init__(self, folder: Path, path: Path) -> None:
        from bastion.artifacts.unpickler import load_pickle_file

        config = _read_config(folder, required=False)
        logger.warning(
            "loading pickle-based model %s through the restricted unpickler (per-model opt-in)",
            path,
        )
        estimator = load_pickle_file(path)
        module = type(estimator).__module__
        if not module.startswith("sklearn.") or not callable(
            getattr(estimator, "predict_proba", None)
        ):
            raise RegistryError(
                f"{path.name} holds a {type(estimator).__name__}, not a scikit-learn classifier "
                "with predict_proba"
            )
        features = getattr(estimator, "n_features_in_", None)
        labels = getattr(estimator, "classes_", None)
        if not isinstance(features, int) or features < 1 or labels is None:
            raise RegistryError(f"{path.name}: the classifier is not fitted")
        names = tuple(str(c) for c in np.asarray(labels).tolist())
        if config.classes is not None and len(config.classes) != len(names):
            raise RegistryError(
                f"{path.name}: {len(names)} classes but {CONFIG_NAME} names {len(config.classes)}"
            )
        self._estimator = estimator
        self._features = features
        self._classes = tuple(config.classes or names)
        self._range = config.input_range
        input_name = config.inputs[0].name if config.inputs else "input"
        output_name = config.outputs[0].name if config.outputs else "probabilities"
        self._inputs = (TensorSpec(input_name, "FP64", (-1, features)),)
        self._outputs = (TensorSpec(output_name, "FP64", (-1, len(names))),)

    @property
    def platform(self) -> str:
        return "sklearn"

    def predict(self, batch: NDArray[np.floating]) -> NDArray[np.float64]:
        """``predict_proba`` of the estimator."""
        x = _as_batch(batch, self._features)
        return np.asarray(self._estimator.predict_proba(x), dtype=np.float64)


def load_model(folder: Path, *, allow_pickle: bool = False) -> ServedModel:
    """Load the verified model in ``folder`` (see the module docstring).

    Args:
        folder: a folder whose files were scanned and verified against their signature.
        allow_pickle: the model's opt-in to pickle-based loading (restricted unpickler).

    Raises:
        RegistryError: no model file, several, an unknown architecture, a pickle without the
            opt-in, or weights that do not match their declaration.
        VerificationError: the restricted unpickler refused the pickle.
    """
    folder = Path(folder)
    fmt = detect_format(folder)
    (path,) = model_files(folder)[fmt]
    try:
        if fmt is ModelFormat.SAFETENSORS:
            return _load_safetensors(folder, path)
        if fmt is ModelFormat.ONNX:
            return _OnnxModel(folder, path)
        if not allow_pickle:
            raise RegistryError(
                f"{path.name} is a pickle-based model: it loads only with the model's explicit "
                "opt-in ('bastion registry allow-pickle NAME')"
            )
        return _SklearnModel(folder, path)
    except BastionError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RegistryError(f"cannot load {path.name}: {exc}") from exc
