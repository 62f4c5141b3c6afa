"""The inversion family: MI-Face on a white-box target, refused on a black box."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from bastion.assess.data import Dataset
from bastion.assess.families.interface import RunContext
from bastion.assess.families.inversion import INVERSION, InversionConfig
from bastion.assess.plots import ImageGrid, render_svg
from bastion.assess.targets.interface import Access, OutputKind, TargetInfo
from bastion.errors import AssessmentError

importlib.import_module("torch")


def test_reconstructs_every_class(mlp_target: Any, digits: Any) -> None:
    x_train, y_train, x_test, y_test = digits
    context = RunContext(
        mlp_target,
        Dataset(x_test, y_test, "test", ""),
        aux={"members": Dataset(x_train, y_train, "train", "")},
    )
    config = InversionConfig()
    result = INVERSION.run(context, config)
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == INVERSION.metric_names(config)
    assert values["inversion.mi_face.identification_rate"] >= 0.8
    assert values["inversion.mi_face.confidence"] >= 0.99
    assert result.details["reference"] == "train"
    assert len(result.details["classes"]) == 10
    grid = result.charts[0]
    assert isinstance(grid, ImageGrid)
    assert len(grid.images) == 10
    assert render_svg(grid).startswith("<svg")
    assert result.queries > 0  # gradient steps are forward passes of the target


class _LabelsOnly:
    info = TargetInfo("remote", "http://127.0.0.1:1", Access.LABELS, OutputKind.LABELS, ("a", "b"))


def test_needs_gradients(digits: Any) -> None:
    _, _, x_test, y_test = digits
    context = RunContext(_LabelsOnly(), Dataset(x_test, y_test, "test", ""))  # type: ignore[arg-type]
    with pytest.raises(AssessmentError, match="MI-Face needs gradients"):
        INVERSION.run(context, InversionConfig())
