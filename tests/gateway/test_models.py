"""What the gateway serves: signature checks, the model set, production versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.artifacts.signing import sign
from bastion.core.principals import KeyStore, Role
from bastion.core.workspace import Workspace
from bastion.demo_model import DemoModel, write_model_folder
from bastion.errors import GatewayError, RegistryError
from bastion.gateway.models import ModelSet, ServedEntry, load_production_models
from bastion.registry import Registry


class _Model:
    platform = "test"
    input_range: tuple[float, float] | None = (0.0, 1.0)
    classes: tuple[str, ...] = ("a", "b")

    def __init__(self, inputs: Any = None, outputs: Any = None, **attributes: Any) -> None:
        self.inputs = inputs or (TensorSpec("x", "FP32", (-1, 4)),)
        self.outputs = outputs or (TensorSpec("scores", "FP32", (-1, 2)),)
        for name, value in attributes.items():
            setattr(self, name, value)

    def predict(self, batch: Any) -> Any:
        return np.full((batch.shape[0], 2), 0.5)


def test_entry_derives_the_checks(demo_model: ServedModel) -> None:
    entry = ServedEntry.build("digits", "3", demo_model, digest="sha256:" + "a" * 64)
    assert entry.dtype == np.float32
    assert entry.fixed == ((1, 64),)
    assert (entry.low, entry.high) == (0.0, 16.0)
    assert entry.classes == tuple(str(c) for c in range(10))
    probe = entry.probe(3)
    assert probe.shape == (3, 64)
    assert probe.dtype == np.float32
    metadata = entry.metadata()
    assert metadata["versions"] == ["3"]
    assert metadata["parameters"]["digest"] == "sha256:" + "a" * 64


def test_without_a_range_the_dtype_bounds_apply() -> None:
    entry = ServedEntry.build("m", "1", _Model(input_range=None))
    assert entry.high == float(np.finfo(np.float32).max)
    ints = ServedEntry.build(
        "i", "1", _Model(inputs=(TensorSpec("x", "UINT8", (-1, 4)),), input_range=(-5.0, 300.0))
    )
    assert (ints.low, ints.high) == (0.0, 255.0)  # the narrower of the two


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Model(inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2)))),
         "one input and one output"),
        (_Model(inputs=(TensorSpec("x", "BYTES", (-1, 4)),)), "unknown datatype"),
        (_Model(inputs=(TensorSpec("x", "BOOL", (-1, 4)),)), "BOOL inputs"),
        (_Model(inputs=(TensorSpec("x", "FP32", (-1, 0)),)), "invalid shape"),
        (_Model(inputs=(TensorSpec("", "FP32", (-1, 4)),)), "invalid tensor name"),
        (_Model(outputs=(TensorSpec("s", "FP32", (-1, 3)),)), "one score per class"),
        (_Model(classes=()), "one score per class"),
        (_Model(input_range=(1.0, 0.0)), "invalid input range"),
        (_Model(input_range=(0.0, float("inf"))), "invalid input range"),
    ],
)  # fmt: skip
def test_signatures_the_gateway_cannot_check_are_refused(model: Any, message: str) -> None:
    with pytest.raises(GatewayError, match=message):
        ServedEntry.build("m", "1", model)


@pytest.mark.parametrize(("name", "version"), [("Bad", "1"), ("ok", ""), ("ok", "v" * 101)])
def test_names_and_versions_are_checked(name: str, version: str) -> None:
    with pytest.raises(GatewayError):
        ServedEntry.build(name, version, _Model())


def test_model_set() -> None:
    models = ModelSet.of({"a": _Model(), "b": _Model()}, version="2")
    assert list(models) == ["a", "b"]
    assert len(models) == 2
    assert models["a"].version == "2"
    assert models.get("c") is None
    with pytest.raises(GatewayError, match="listed twice"):
        ModelSet([models["a"], models["a"]])


# ----------------------------------------------------------------------------- the registry


@pytest.fixture
def team(workspace: Workspace) -> dict[str, Any]:
    store = KeyStore(workspace.database, workspace.audit())
    return {
        name: store.create(name, role, actor="operator").key.principal()
        for name, role in (
            ("dana", Role.DATA_SCIENTIST),
            ("eli", Role.ML_ENGINEER),
            ("sam", Role.SRE),
        )
    }


def _promote(workspace: Workspace, team: dict[str, Any], name: str, folder: Path) -> str:
    registry = Registry(workspace)
    version = registry.add(name, folder, principal=team["dana"]).version
    registry.promote(name, version, to="staging", principal=team["eli"])
    registry.approve(name, version, principal=team["eli"])
    registry.promote(name, version, to="production", principal=team["sam"])
    return version


def _folder(workspace: Workspace, tmp_path: Path, name: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder = write_model_folder(
        DemoModel(
            rng.normal(scale=0.05, size=(10, 64)).astype(np.float32),
            rng.normal(size=10).astype(np.float32),
            0.5,
        ),
        tmp_path / name,
    )
    sign(folder, workspace.signing_key(), actor="trainer")
    return folder


def test_production_versions_are_loaded_and_failures_refused(
    workspace: Workspace, team: dict[str, Any], tmp_path: Path
) -> None:
    for n, name in enumerate(("alpha", "beta")):
        _promote(workspace, team, name, _folder(workspace, tmp_path, name, n))
    registry = Registry(workspace)
    registry.add("gamma", _folder(workspace, tmp_path, "gamma", 2), principal=team["dana"])
    audit = workspace.audit()
    every, refused = load_production_models(registry, audit=audit)
    assert list(every) == ["alpha", "beta"]  # gamma is only registered
    assert refused == []
    assert every["alpha"].digest.startswith("sha256:")
    assert every["alpha"].model.platform == "bastion-safetensors"

    def failing(folder: Path, *, allow_pickle: bool = False) -> ServedModel:
        raise RegistryError("cannot load model.safetensors: corrupt")

    models, refusals = load_production_models(
        registry, ["beta", "gamma", "alpha"], load=failing, audit=audit
    )
    assert list(models) == []
    assert [(r.name, r.version) for r in refusals] == [
        ("beta", "1"),
        ("gamma", None),
        ("alpha", "1"),
    ]
    assert refusals[0].reason == "cannot load model.safetensors: corrupt"
    assert refusals[1].reason == "no production version"
    events = [e for e in audit.events() if e.action.startswith("gateway.model.")]
    assert [(e.action, e.subject) for e in events] == [
        ("gateway.model.loaded", "model:alpha"),
        ("gateway.model.loaded", "model:beta"),
        ("gateway.model.refused", "model:beta"),
        ("gateway.model.refused", "model:gamma"),
        ("gateway.model.refused", "model:alpha"),
    ]
