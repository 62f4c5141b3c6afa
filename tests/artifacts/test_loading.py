"""Loading verified model folders for serving: safetensors (linear, MLP), ONNX, opt-in pickles.

Predictions are checked against an independent computation (NumPy, scikit-learn or
onnxruntime's own output); every folder that is not exactly one loadable model is refused.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from bastion.artifacts.loading import ModelFormat, detect_format, load_model
from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.demo_model import DemoModel, load_model_folder, write_model_folder
from bastion.errors import RegistryError, VerificationError

RNG = np.random.default_rng(7)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_demo(tmp_path: Path, name: str = "demo") -> tuple[Path, DemoModel]:
    model = DemoModel(
        weight=RNG.normal(size=(10, 64)).astype(np.float32) * 0.1,
        bias=RNG.normal(size=10).astype(np.float32),
        test_accuracy=0.5,
    )
    return write_model_folder(model, tmp_path / name), model


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "architecture": "mlp",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}],
        "input_range": [0, 16],
        "classes": [str(c) for c in range(10)],
    }
    base.update(overrides)
    return base


def write_mlp(folder: Path, layers: list[tuple[np.ndarray, np.ndarray]], **cfg: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, (w, b) in enumerate(layers):
        tensors[f"weight_{i}"] = np.ascontiguousarray(w)
        tensors[f"bias_{i}"] = np.ascontiguousarray(b)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config(**cfg)))
    return folder


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target)


# -- safetensors -----------------------------------------------------------------------------


def test_demo_folder_loads_as_a_served_model(tmp_path: Path) -> None:
    folder, demo = random_demo(tmp_path)
    assert detect_format(folder) is ModelFormat.SAFETENSORS
    model = load_model(folder)
    assert isinstance(model, ServedModel)
    assert model.platform == "bastion-safetensors"
    assert model.inputs == (TensorSpec("pixels", "FP32", (-1, 64)),)
    assert model.outputs == (TensorSpec("scores", "FP32", (-1, 10)),)
    assert model.classes == tuple(str(c) for c in range(10))
    assert model.input_range == (0.0, 16.0)
    x = RNG.uniform(0, 16, size=(5, 64))
    scores = model.predict(x)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, softmax(demo.logits(x)), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    # A batch of 8x8 images is flattened to the declared 64 values.
    np.testing.assert_allclose(model.predict(x.reshape(5, 8, 8)), scores)


def test_agrees_with_the_demo_models_own_loader(tmp_path: Path) -> None:
    folder, _ = random_demo(tmp_path)
    own = load_model_folder(folder)
    x = RNG.uniform(0, 16, size=(50, 64))
    np.testing.assert_array_equal(load_model(folder).predict(x).argmax(axis=1), own.predict(x))


def test_mlp_matches_scikit_learn(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deliberately short fit
        mlp = MLPClassifier((16, 12), max_iter=30, random_state=0).fit(x[:400], y[:400])
    layers = [
        (w.T.astype(np.float32), b.astype(np.float32))
        for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)
    ]
    folder = write_mlp(tmp_path / "mlp", layers, activation="relu")
    model = load_model(folder)
    np.testing.assert_allclose(model.predict(x[:50]), mlp.predict_proba(x[:50]), atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda cfg, t: cfg.update(architecture="resnet"), "architecture"),
        (lambda cfg, t: cfg.pop("architecture"), "names no architecture"),
        (lambda cfg, t: cfg.pop("classes"), "must declare"),
        (lambda cfg, t: cfg.update(classes=["a"] * 10), "class names repeat"),
        (lambda cfg, t: cfg.update(classes=["a", "b"]), "declares 10 outputs and 2 classes"),
        (lambda cfg, t: cfg.update(input_range=[16, 0]), "low < high"),
        (lambda cfg, t: cfg.update(surprise=True), "surprise"),
        (
            lambda cfg, t: cfg.update(inputs=[{"name": "x", "datatype": "FP32", "shape": [1, 64]}]),
            r"shape \[-1, n\]",
        ),
        (
            lambda cfg, t: cfg.update(
                inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 63]}]
            ),
            "do not take 63 inputs",
        ),
        (lambda cfg, t: cfg["inputs"][0].update(datatype="BYTES"), "datatype"),
        (lambda cfg, t: t.update(extra=np.zeros(1, np.float32)), "unexpected: extra"),
        (lambda cfg, t: t.pop("bias_1"), "missing or unexpected: bias_1"),
        (lambda cfg, t: t.update(weight_0=np.full((16, 64), np.nan, np.float32)), "NaN"),
        (lambda cfg, t: t.update(bias_0=np.zeros(15, np.float32)), "do not take"),
        (lambda cfg, t: t.update(weight_0=np.zeros((16, 64), np.int32)), "not floats"),
    ],
)
def test_safetensors_declarations_must_match_the_weights(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    tensors = {
        "weight_0": RNG.normal(size=(16, 64)).astype(np.float32),
        "bias_0": np.zeros(16, np.float32),
        "weight_1": RNG.normal(size=(10, 16)).astype(np.float32),
        "bias_1": np.zeros(10, np.float32),
    }
    cfg = config()
    mutate(cfg, tensors)
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RegistryError, match=message):
        load_model(folder)


def test_hostile_config_and_weights_files(tmp_path: Path) -> None:
    folder, _ = random_demo(tmp_path)
    (folder / "config.json").write_text(" " * (2**20 + 1))
    with pytest.raises(RegistryError, match="larger than"):
        load_model(folder)
    (folder / "config.json").write_text("[" * 10_000)
    with pytest.raises(RegistryError, match="invalid"):
        load_model(folder)
    (folder / "config.json").unlink()
    with pytest.raises(RegistryError, match=r"no config\.json"):
        load_model(folder)
    folder, _ = random_demo(tmp_path, "truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RegistryError, match=r"cannot read model\.safetensors"):
        load_model(folder)


def test_predict_refuses_a_batch_of_the_wrong_width(tmp_path: Path) -> None:
    model = load_model(random_demo(tmp_path)[0])
    with pytest.raises(RegistryError, match="64 values"):
        model.predict(np.zeros((2, 63)))


# -- ONNX ------------------------------------------------------------------------------------


def write_onnx(
    folder: Path, weight: np.ndarray, bias: np.ndarray, *, softmax_output: bool, cfg: Any = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("MatMul", ["pixels", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
    ]
    output = "logits"
    if softmax_output:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        output = "probabilities"
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    if cfg is not None:
        (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("softmax_output", [True, False])
def test_onnx_probabilities_and_logits(tmp_path: Path, softmax_output: bool) -> None:
    weight = RNG.normal(size=(64, 10)).astype(np.float32) * 0.1
    bias = RNG.normal(size=10).astype(np.float32)
    cfg = {"classes": [f"c{i}" for i in range(10)], "input_range": [0, 16]}
    folder = write_onnx(tmp_path / "m", weight, bias, softmax_output=softmax_output, cfg=cfg)
    assert detect_format(folder) is ModelFormat.ONNX
    model = load_model(folder)
    assert model.platform == "onnxruntime"
    assert model.inputs == (TensorSpec("pixels", "FP32", (-1, 64)),)
    name = "probabilities" if softmax_output else "logits"
    assert model.outputs == (TensorSpec(name, "FP32", (-1, 10)),)
    assert model.classes == tuple(f"c{i}" for i in range(10))
    assert model.input_range == (0.0, 16.0)
    x = RNG.uniform(0, 16, size=(6, 64))
    expected = softmax(x.astype(np.float32) @ weight + bias)
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-5)


def test_onnx_without_config_and_declared_logits(tmp_path: Path) -> None:
    weight = RNG.normal(size=(64, 10)).astype(np.float32)
    bias = np.zeros(10, np.float32)
    folder = write_onnx(tmp_path / "m", weight, bias, softmax_output=False)
    model = load_model(folder)
    assert model.classes == tuple(str(i) for i in range(10))
    assert model.input_range is None
    # Declared "probabilities" is taken at its word (no softmax applied).
    (folder / "config.json").write_text(json.dumps({"scores": "probabilities"}))
    x = RNG.uniform(0, 1, size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(load_model(folder).predict(x), x @ weight + bias, rtol=1e-5)


def test_onnx_refusals(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(RegistryError, match="onnxruntime cannot load"):
        load_model(tmp_path / "bad")
    weight = np.zeros((64, 10), np.float32)
    bias = np.zeros(10, np.float32)
    folder = write_onnx(
        tmp_path / "m", weight, bias, softmax_output=True, cfg={"classes": ["a", "b"]}
    )
    with pytest.raises(RegistryError, match="10 scores but"):
        load_model(folder)
    (folder / "config.json").write_text(
        json.dumps({"inputs": [{"name": "other", "datatype": "FP32", "shape": [-1, 64]}]})
    )
    with pytest.raises(RegistryError, match="'other'"):
        load_model(folder)


# -- pickles ---------------------------------------------------------------------------------


def write_sklearn(folder: Path, digits: tuple[np.ndarray, np.ndarray], suffix: str) -> Any:
    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = LogisticRegression(max_iter=50).fit(x[:300] / 16, y[:300])
    folder.mkdir(parents=True, exist_ok=True)
    if suffix == ".joblib":
        joblib.dump(estimator, folder / f"model{suffix}")
    else:
        (folder / f"model{suffix}").write_bytes(pickle.dumps(estimator, protocol=5))
    return estimator


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_sklearn_pickles_load_only_with_the_opt_in(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray], suffix: str
) -> None:
    folder = tmp_path / "m"
    estimator = write_sklearn(folder, digits, suffix)
    assert detect_format(folder) is ModelFormat.PICKLE
    with pytest.raises(RegistryError, match="explicit opt-in"):
        load_model(folder)
    (folder / "config.json").write_text(
        json.dumps({"input_range": [0, 1], "classes": list("abcdefghij")})
    )
    model = load_model(folder, allow_pickle=True)
    assert model.platform == "sklearn"
    assert model.inputs == (TensorSpec("input", "FP64", (-1, 64)),)
    assert model.outputs == (TensorSpec("probabilities", "FP64", (-1, 10)),)
    assert model.classes == tuple("abcdefghij")
    assert model.input_range == (0.0, 1.0)
    x = digits[0][:7] / 16
    np.testing.assert_array_equal(model.predict(x), estimator.predict_proba(x))


def test_a_malicious_pickle_is_refused_even_with_the_opt_in(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    payload = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."
    (folder / "model.pkl").write_bytes(payload)
    with pytest.raises(VerificationError, match="not on the allowlist"):
        load_model(folder, allow_pickle=True)


def test_a_pickle_that_is_not_a_classifier_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps({"weights": [1.0]}))
    with pytest.raises(RegistryError, match="not a scikit-learn classifier"):
        load_model(folder, allow_pickle=True)
    (folder / "model.pkl").write_bytes(pickle.dumps(LogisticRegression()))
    with pytest.raises(RegistryError, match="not fitted"):
        load_model(folder, allow_pickle=True)


# -- detection -------------------------------------------------------------------------------


def test_unknown_or_ambiguous_folders_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="no model file"):
        load_model(empty)
    (empty / "README.md").write_text("a model, promise")
    (empty / "weights.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(RegistryError, match="no model file"):
        load_model(empty)
    folder, _ = random_demo(tmp_path)
    (folder / "model.onnx").write_bytes(b"")
    with pytest.raises(RegistryError, match="several model files"):
        load_model(folder)
    with pytest.raises(RegistryError, match="not a model folder"):
        load_model(folder / "config.json")
    with pytest.raises(RegistryError, match="not a model folder"):
        load_model(tmp_path / "missing")


def test_a_model_file_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    folder, _ = random_demo(tmp_path)
    target = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(target)
    (folder / "model.safetensors").symlink_to(target)
    with pytest.raises(RegistryError, match="no model file"):
        load_model(folder)
