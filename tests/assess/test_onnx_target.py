"""ONNX targets through onnxruntime: output selection, reshaping, fixed batch sizes, scanning."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.assess.attacks import SquareAttack
from bastion.assess.domain import InputDomain
from bastion.assess.targets import TargetOptions, open_target
from bastion.assess.targets.interface import Access, OutputKind
from bastion.errors import AssessmentError

onnx = importlib.import_module("onnx")
importlib.import_module("onnxruntime")

IMAGE = InputDomain((1, 8, 8), 0.0, 1.0)


def _graph(path: Path, model: Any, outputs: Sequence[str], batch: int | str = "N") -> Path:
    """softmax(x @ W + b) as a hand-built ONNX graph; outputs among logits/probabilities/label."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.ascontiguousarray(model.coef_.T, dtype=np.float32)
    bias = np.ascontiguousarray(model.intercept_, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["pixels", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    shapes = {"logits": [batch, 10], "probabilities": [batch, 10], "label": [batch]}
    kinds = {
        "logits": TensorProto.FLOAT,
        "probabilities": TensorProto.FLOAT,
        "label": TensorProto.INT64,
    }
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info(o, kinds[o], shapes[o]) for o in outputs],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_probabilities_preferred_and_inputs_reshaped(
    tmp_path: Path, logistic_model: Any, digits: Any
):
    path = _graph(tmp_path / "m.onnx", logistic_model, ["label", "probabilities"])
    target = open_target(str(path), IMAGE)  # the real scanner passes the file first
    info = target.info
    assert (info.kind, info.access, info.output) == (
        "onnx",
        Access.SCORES,
        OutputKind.PROBABILITIES,
    )
    x = digits[2][:50]
    expected = logistic_model.predict_proba(x.reshape(50, 64))
    np.testing.assert_allclose(target.predict_proba(x), expected, atol=1e-5)
    assert target.queries.used == 50
    with pytest.raises(AssessmentError, match="black box"):
        target.torch_model()


def test_logits_output_and_fixed_batch(tmp_path: Path, logistic_model: Any, digits: Any):
    path = _graph(tmp_path / "m.onnx", logistic_model, ["logits"], batch=4)
    target = open_target(f"onnx:{path}", IMAGE)
    assert target.info.output is OutputKind.LOGITS
    x = digits[2][:10]
    np.testing.assert_array_equal(
        target.predict_labels(x), logistic_model.predict(x.reshape(10, 64))
    )
    assert target.queries.used == 10
    assert target.queries.requests == 3  # 4 + 4 + 2 (padded)


def test_labels_only_needs_class_names(tmp_path: Path, logistic_model: Any, digits: Any):
    path = _graph(tmp_path / "m.onnx", logistic_model, ["label"])
    with pytest.raises(AssessmentError, match="labels only"):
        open_target(str(path), IMAGE)
    names = tuple(str(i) for i in range(10))
    target = open_target(str(path), IMAGE, TargetOptions(classes=names))
    assert target.info.access is Access.LABELS
    with pytest.raises(AssessmentError, match="labels only"):
        target.predict_proba(digits[2][:2])


def test_black_box_attack_runs(tmp_path: Path, logistic_model: Any, digits: Any):
    target = open_target(str(_graph(tmp_path / "m.onnx", logistic_model, ["logits"])), IMAGE)
    x, y = digits[2][:40], digits[3][:40]
    adv = SquareAttack(max_queries=100).perturb(target, x, y, 0.15, rng=np.random.default_rng(0))
    assert np.abs(adv - x).max() <= 0.15 + 1e-6
    assert (target.predict_labels(adv) == y).mean() < (target.predict_labels(x) == y).mean()


def test_refusals(tmp_path: Path, logistic_model: Any):
    path = _graph(tmp_path / "m.onnx", logistic_model, ["logits"])
    with pytest.raises(AssessmentError, match=r"\(64 values\); the input domain has 128"):
        open_target(str(path), InputDomain((2, 8, 8), 0.0, 1.0))

    def refuse(paths: Sequence[Path]) -> None:
        raise AssessmentError("the model scan did not pass")

    with pytest.raises(AssessmentError, match="scan did not pass"):
        open_target(str(path), IMAGE, TargetOptions(scan=refuse))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x01junk")
    with pytest.raises(AssessmentError):
        open_target(str(tmp_path / "junk.onnx"), IMAGE)
