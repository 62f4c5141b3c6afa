"""ONNX models: external data paths, custom operator domains, subgraphs and functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bastion.artifacts.findings import ScanStatus, Severity


def _model(nodes=None, initializers=(), functions=(), opsets=None) -> onnx.ModelProto:
    nodes = nodes or [helper.make_node("Add", ["x", "w"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=list(initializers),
    )
    return helper.make_model(
        graph, functions=list(functions), opset_imports=opsets or [helper.make_opsetid("", 17)]
    )


def _external(name: str, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _write(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_model_is_clean_and_checks(scan, tmp_path: Path) -> None:
    model = _model(initializers=[numpy_helper.from_array(np.ones(4, np.float32), "w")])
    onnx.checker.check_model(model)
    result = scan(_write(tmp_path / "m.onnx", model))
    assert result.status is ScanStatus.CLEAN
    assert result.format == "onnx"
    assert result.findings == ()


def test_external_data_inside_the_folder_is_clean(scan, tmp_path: Path) -> None:
    model = _model(initializers=[numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert (tmp_path / "weights.bin").exists()
    onnx.checker.check_model(str(path))
    assert numpy_helper.to_array(onnx.load(path).graph.initializer[0]).tolist() == [0, 1, 2, 3]
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings


@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "..\\..\\x.bin"]
)
def test_external_data_outside_the_folder(scan, tmp_path: Path, location: str) -> None:
    path = _write(tmp_path / "m.onnx", _model(initializers=[_external("w", location)]))
    result = scan(path)
    assert result.status is ScanStatus.UNSAFE
    finding = result.findings[0]
    assert finding.rule_id == "ONNX-EXTERNAL-DATA-PATH"
    assert finding.severity is Severity.HIGH


def test_external_data_symlink_escape(scan, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").symlink_to("/etc/passwd")
    path = _write(folder / "m.onnx", _model(initializers=[_external("w", "weights.bin")]))
    result = scan(path)
    assert result.status is ScanStatus.UNSAFE
    assert "symlink" in result.findings[0].message


def test_missing_external_file_is_noted(scan, rule_ids, tmp_path: Path) -> None:
    path = _write(tmp_path / "m.onnx", _model(initializers=[_external("w", "absent.bin")]))
    result = scan(path)
    assert result.status is ScanStatus.CLEAN
    assert rule_ids(result) == {"ONNX-EXTERNAL-DATA-PATH"}
    assert result.max_severity is Severity.LOW


def test_external_data_in_a_nested_subgraph(scan, tmp_path: Path) -> None:
    inner = helper.make_graph(
        [helper.make_node("Identity", ["w2"], ["z"])],
        "then",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
        initializer=[_external("w2", "../../../secret")],
    )
    outer = helper.make_graph(
        [helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=inner)],
        "loop_body",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
    )
    node = helper.make_node("Loop", ["n", "c"], ["z"], body=outer)
    result = scan(_write(tmp_path / "m.onnx", _model(nodes=[node])))
    assert result.status is ScanStatus.UNSAFE
    assert "secret" in result.findings[0].message


def test_custom_domain_is_reported_and_local_functions_are_not(
    scan, rule_ids, tmp_path: Path
) -> None:
    function = helper.make_function(
        "local.fns",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Evil", ["a"], ["b"], domain="com.vendor.ops")],
        [helper.make_opsetid("", 17), helper.make_opsetid("com.vendor.ops", 1)],
    )
    nodes = [
        helper.make_node("Double", ["x"], ["t"], domain="local.fns"),
        helper.make_node("Add", ["t", "x"], ["y"]),
    ]
    opsets = [
        helper.make_opsetid("", 17),
        helper.make_opsetid("local.fns", 1),
        helper.make_opsetid("com.vendor.ops", 1),
    ]
    path = _write(tmp_path / "m.onnx", _model(nodes=nodes, functions=[function], opsets=opsets))
    result = scan(path)
    assert rule_ids(result) == {"ONNX-CUSTOM-DOMAIN"}
    finding = result.findings[0]
    assert "com.vendor.ops" in finding.message
    assert "Evil" in finding.message
    assert finding.severity is Severity.HIGH
    assert result.status is ScanStatus.UNSAFE


def test_onnx_runtime_contrib_ops_are_only_noted(scan, tmp_path: Path) -> None:
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    result = scan(_write(tmp_path / "m.onnx", _model(nodes=[node], opsets=opsets)))
    assert result.status is ScanStatus.CLEAN
    assert result.max_severity is Severity.LOW


def test_onnx_that_is_also_a_pickle(scan, tmp_path: Path) -> None:
    # model_version (tag 0x28 = MARK, value 0x4E = NONE) and doc_string (tag 0x32 = DUP,
    # length 0x55 = SHORT_BINSTRING) open a pickle that the doc string's bytes finish: every
    # pickle loader (torch.load's legacy path, np.load, joblib.load) runs it.
    doc = b"\x00" + b"1cos\nsystem\n(S'true'\ntR."
    doc += b" " * (0x55 - len(doc))
    model = _model(initializers=[numpy_helper.from_array(np.ones(4, np.float32), "w")])
    data = b"\x28\x4e\x32\x55" + doc + model.SerializeToString()
    parsed = onnx.load_from_string(data)
    onnx.checker.check_model(parsed)
    assert parsed.model_version == 0x4E
    result = scan(data, name="model.onnx")
    assert result.format == "onnx+pickle"
    assert result.status is ScanStatus.UNSAFE
    assert any(f.symbol == "os.system" for f in result.findings)


def test_truncated_model_fails_closed(scan, rule_ids, tmp_path: Path) -> None:
    model = _model(initializers=[numpy_helper.from_array(np.ones(64, np.float32), "w")])
    data = model.SerializeToString()
    result = scan(data[: len(data) - 40])
    assert result.format == "onnx"
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)
