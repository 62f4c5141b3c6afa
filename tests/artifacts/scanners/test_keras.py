"""Keras: ``.keras`` zips (Keras 3) and HDF5 ``.h5`` models (Keras 2), built by hand as Keras
writes them (TensorFlow is not installed)."""

from __future__ import annotations

import base64
import io
import json
import marshal
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from bastion.artifacts.findings import ScanStatus, Severity


def _layer(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dense() -> dict[str, Any]:
    init = {
        "module": "keras.initializers",
        "class_name": "GlorotUniform",
        "config": {"seed": None},
        "registered_name": None,
    }
    return _layer(
        "Dense",
        {
            "name": "dense",
            "trainable": True,
            "units": 2,
            "activation": "relu",
            "use_bias": True,
            "kernel_initializer": init,
        },
    ) | {"build_config": {"input_shape": [None, 4]}}


def _model_config(*layers: dict[str, Any]) -> dict[str, Any]:
    first = _layer("InputLayer", {"batch_shape": [None, 4], "dtype": "float32", "name": "input"})
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "trainable": True, "layers": [first, *layers]},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": None,
    }


def _weights_h5() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        group = handle.create_group("layers/dense/vars")
        group["0"] = np.ones((4, 2), dtype=np.float32)
        group["1"] = np.zeros(2, dtype=np.float32)
    return buffer.getvalue()


def _keras_file(path: Path, config: dict[str, Any]) -> Path:
    # keras/src/saving/saving_lib.py: metadata.json, config.json, model.weights.h5, stored.
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "metadata.json",
            json.dumps({"keras_version": "3.6.0", "date_saved": "2025-01-01@00:00:00"}),
        )
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", _weights_h5())
    return path


def _lambda_code() -> str:
    return base64.b64encode(marshal.dumps((lambda x: x + 1).__code__)).decode()


def test_keras_zip_is_clean(scan, tmp_path: Path) -> None:
    path = _keras_file(tmp_path / "model.keras", _model_config(_dense()))
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("config.json"))["class_name"] == "Sequential"
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
            assert weights["layers/dense/vars/0"].shape == (4, 2)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "keras"
    assert result.findings == ()


def test_keras3_lambda_bytecode_is_critical(scan, tmp_path: Path) -> None:
    function = {
        "class_name": "__lambda__",
        "config": {"code": _lambda_code(), "defaults": None, "closure": None},
    }
    lam = _layer("Lambda", {"name": "lambda", "function": function, "arguments": {}})
    result = scan(_keras_file(tmp_path / "m.keras", _model_config(_dense(), lam)))
    assert result.status is ScanStatus.UNSAFE
    finding = result.findings[0]
    assert finding.rule_id == "KERAS-LAMBDA-BYTECODE"
    assert finding.severity is Severity.CRITICAL
    assert finding.member == "config.json"


@pytest.mark.parametrize(
    ("module", "severity"),
    [
        ("os", Severity.CRITICAL),
        ("subprocess", Severity.CRITICAL),
        ("my_company.layers", Severity.HIGH),
    ],
)
def test_objects_outside_keras(scan, tmp_path: Path, module: str, severity: Severity) -> None:
    custom = _layer("Block", {"name": "b"}, module=module) | {"registered_name": "Custom>Block"}
    result = scan(_keras_file(tmp_path / "m.keras", _model_config(custom)))
    finding = result.findings[0]
    assert finding.severity is severity
    assert finding.symbol == f"{module}.Block"
    assert result.status is ScanStatus.UNSAFE


def _function(module: str, name: str) -> dict[str, Any]:
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


def test_function_objects_outside_activations_are_calls(scan, rule_ids, tmp_path: Path) -> None:
    # CVE-2025-8747: a "function" resolved under the trusted keras.* prefix.
    dense = _dense()
    dense["config"]["activation"] = _function("keras.utils", "get_file")
    result = scan(_keras_file(tmp_path / "m.keras", _model_config(dense)))
    assert rule_ids(result) == {"KERAS-FUNCTION-CALL"}
    assert result.status is ScanStatus.UNSAFE
    dense["config"]["activation"] = _function("keras.activations", "relu")
    assert scan(_keras_file(tmp_path / "ok.keras", _model_config(dense))).findings == ()


def test_layers_that_load_other_artifacts(scan, rule_ids, tmp_path: Path) -> None:
    tfsm = _layer("TFSMLayer", {"name": "t", "filepath": "/tmp/attacker_savedmodel"})
    result = scan(_keras_file(tmp_path / "m.keras", _model_config(tfsm)))
    assert "KERAS-EXTERNAL-LOAD" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_torch_module_wrapper_payload_is_scanned(scan, rule_ids, payloads, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payloads[2])
    encoded = base64.b64encode(buffer.getvalue()).decode()
    wrapper = _layer("TorchModuleWrapper", {"name": "w", "module": encoded})
    result = scan(_keras_file(tmp_path / "m.keras", _model_config(wrapper)))
    assert "KERAS-TORCH-MODULE" in rule_ids(result)
    hit = next(f for f in result.findings if f.symbol == "os.system")
    assert hit.member == "config.json!TorchModuleWrapper.module!archive/data.pkl"


def test_config_found_by_content_under_any_name(scan, payloads, zip_builder, zip_member) -> None:
    function = {"class_name": "__lambda__", "config": {"code": _lambda_code()}}
    config = json.dumps(_model_config(_layer("Lambda", {"function": function}))).encode()
    result = scan(zip_builder([zip_member("assets/notes.json", config)]))
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].member == "assets/notes.json"


def _keras2_h5(path: Path, layers: list[dict[str, Any]]) -> Path:
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    with h5py.File(path, "w") as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["model_config"] = json.dumps(config)
        handle.attrs["training_config"] = json.dumps(
            {"loss": "mse", "optimizer_config": {"class_name": "Adam", "config": {}}}
        )
        handle.create_group("model_weights/dense").create_dataset("kernel", data=np.ones((4, 2)))
    return path


def test_keras2_h5_is_clean(scan, tmp_path: Path) -> None:
    dense = {"class_name": "Dense", "config": {"name": "dense", "units": 2}}
    path = _keras2_h5(tmp_path / "model.h5", [dense])
    with h5py.File(path, "r") as handle:
        assert json.loads(handle.attrs["model_config"])["class_name"] == "Sequential"
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "keras-h5"


def test_keras2_h5_lambda_is_critical(scan, tmp_path: Path) -> None:
    lam = {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "function": [_lambda_code(), None, None],
            "function_type": "lambda",
            "module": "__main__",
            "arguments": {},
        },
    }
    result = scan(_keras2_h5(tmp_path / "model.h5", [lam]))
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].rule_id == "KERAS-LAMBDA-BYTECODE"


def test_keras2_h5_named_function_lambda_is_high(scan, tmp_path: Path) -> None:
    lam = {
        "class_name": "Lambda",
        "config": {"function": "shutil_rmtree", "function_type": "function", "module": "helpers"},
    }
    result = scan(_keras2_h5(tmp_path / "model.h5", [lam]))
    assert result.findings[0].rule_id == "KERAS-LAMBDA-FUNCTION"
    assert result.status is ScanStatus.UNSAFE


def test_plain_hdf5_without_a_model_is_clean(scan, tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.arange(5)
    result = scan(path)
    assert result.format == "hdf5"
    assert result.status is ScanStatus.CLEAN


def test_truncated_hdf5_fails_closed(scan, rule_ids, tmp_path: Path) -> None:
    path = _keras2_h5(tmp_path / "model.h5", [])
    data = path.read_bytes()
    result = scan(data[:600], name="cut.h5")
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_hdf5_external_references_that_leave_the_folder(scan, tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("weights", shape=(4,), dtype="u1", external=[("/etc/passwd", 0, 4)])
        handle["model_weights/dense"] = h5py.ExternalLink("../../../tmp/attacker.h5", "/w")
        handle["local"] = h5py.ExternalLink("sibling.h5", "/w")
    result = scan(path)
    assert result.status is ScanStatus.UNSAFE
    found = {(f.message.split(" ")[0], f.severity) for f in result.findings}
    assert ("/weights", Severity.HIGH) in found
    assert ("/model_weights/dense", Severity.HIGH) in found
    assert ("/local", Severity.LOW) in found  # missing file next to the model: noted
