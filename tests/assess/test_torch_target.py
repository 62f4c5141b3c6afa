"""PyTorch targets: factory + safetensors, TorchScript behind the scanner, preprocessing,
probability outputs, query counting and budgets."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.assess.domain import InputDomain
from bastion.assess.targets import TargetOptions, open_target
from bastion.assess.targets.interface import Access, OutputKind, QueryBudgetError
from bastion.assess.targets.torch_target import TorchTarget
from bastion.errors import AssessmentError

torch = importlib.import_module("torch")

FACTORY = """
import torch


def make():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def make_softmax():
    return torch.nn.Sequential(make(), torch.nn.Softmax(dim=1))


def not_a_module():
    return 42


def broken():
    raise RuntimeError("no GPU here")
"""


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlp_module: Any) -> Path:
    from safetensors.torch import save_file

    (tmp_path / "tiny_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 64, generator=generator)
    save_file({"1.weight": weight, "1.bias": torch.zeros(10)}, str(tmp_path / "w.safetensors"))
    save_file({"other.weight": weight}, str(tmp_path / "wrong.safetensors"))
    return tmp_path


DOMAIN = InputDomain((1, 8, 8), 0.0, 1.0)


def test_factory_with_safetensors(factory: Path, digits: Any):
    target = open_target(
        "torch:tiny_factory:make", DOMAIN, TargetOptions(weights=factory / "w.safetensors")
    )
    info = target.info
    assert (info.kind, info.access, info.output) == ("torch", Access.GRADIENTS, OutputKind.LOGITS)
    assert info.classes == tuple(str(i) for i in range(10))
    assert [Path(p).name for p, _ in info.files] == ["tiny_factory.py", "w.safetensors"]
    assert info.digest.startswith("sha256:")
    x = digits[2][:7]
    weight = torch.randn(10, 64, generator=torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(target.predict_scores(x), x.reshape(7, 64) @ weight.T, atol=1e-4)
    assert target.queries.used == 7


@pytest.mark.parametrize(
    ("spec", "weights", "message"),
    [
        ("torch:tiny_factory:make", "wrong.safetensors", "do not fit the model"),
        ("torch:tiny_factory:not_a_module", None, "not a Module"),
        ("torch:tiny_factory:broken", None, "no GPU here"),
        ("torch:tiny_factory:missing", None, "has no 'missing'"),
        ("torch:tiny_factory", None, "must be 'module:callable'"),
        ("torch:tiny_factory:make", "absent.safetensors", "not a readable safetensors"),
    ],
)
def test_factory_errors(factory: Path, spec: str, weights: str | None, message: str):
    options = TargetOptions(weights=factory / weights if weights else None)
    with pytest.raises(AssessmentError, match=message):
        open_target(spec, DOMAIN, options)


def test_torchscript_only_after_the_scan(tmp_path: Path, mlp_module: Any, digits: Any):
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still used
        torch.jit.trace(mlp_module, torch.zeros(1, 1, 8, 8)).save(str(path))
    scanned: list[Sequence[Path]] = []

    def refuse(paths: Sequence[Path]) -> None:
        scanned.append(paths)
        raise AssessmentError("the model scan did not pass: unsafe")

    with pytest.raises(AssessmentError, match="scan did not pass"):
        open_target(str(path), DOMAIN, TargetOptions(scan=refuse))
    assert scanned == [[path]]
    target = open_target(f"torchscript:{path}", DOMAIN)  # bastion's real scanner passes it
    assert target.info.kind == "torchscript"
    x = digits[2][:20]
    with torch.no_grad():
        expected = mlp_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(target.predict_scores(x), expected, atol=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(AssessmentError):
        open_target(str(tmp_path / "junk.pt"), DOMAIN)


def test_normalisation_is_inside_the_target(mlp_module: Any, digits: Any):
    """Raw [0, 255] inputs; the model was trained on [0, 1]: preprocessing divides by 255."""
    domain = InputDomain((1, 8, 8), 0.0, 255.0, mean=(0.0,), std=(255.0,))
    target = TorchTarget.from_module(mlp_module, domain)
    x = digits[2][:10]
    with torch.no_grad():
        expected = mlp_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(target.predict_scores(x * 255.0), expected, atol=1e-4)
    flat = (x * 255.0).reshape(10, 64)  # flat rows of the right size are accepted
    np.testing.assert_allclose(target.predict_scores(flat), expected, atol=1e-4)
    with pytest.raises(AssessmentError, match="does not fit"):
        target.predict_scores(np.zeros((2, 3), np.float32))


def test_probability_outputs_become_log_probabilities(mlp_module: Any, digits: Any):
    model = torch.nn.Sequential(mlp_module, torch.nn.Softmax(dim=1)).eval()
    target = TorchTarget.from_module(model, DOMAIN)
    assert target.info.output is OutputKind.PROBABILITIES
    x = digits[2][:10]
    probabilities = target.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    with torch.no_grad():
        logits = target.torch_model()(torch.from_numpy(x))
        reference = torch.log_softmax(mlp_module(torch.from_numpy(x)), dim=1)
    np.testing.assert_allclose(logits.numpy(), reference.numpy(), atol=1e-4)
    np.testing.assert_array_equal(target.predict_labels(x), probabilities.argmax(1))


def test_query_budget_and_classes(mlp_module: Any, digits: Any):
    target = TorchTarget.from_module(
        mlp_module, DOMAIN, max_queries=15, classes=[f"digit {i}" for i in range(10)]
    )
    assert target.info.classes[3] == "digit 3"
    target.predict_labels(digits[2][:10])
    assert target.queries.remaining == 5
    with pytest.raises(QueryBudgetError, match="exhausted"):
        target.predict_labels(digits[2][:10])
    assert target.queries.used == 10
    with pytest.raises(AssessmentError, match="3 class names"):
        TorchTarget.from_module(mlp_module, DOMAIN, classes=["a", "b", "c"])


def test_models_that_are_not_classifiers(mlp_module: Any):
    with pytest.raises(AssessmentError, match="one score per class"):
        TorchTarget.from_module(torch.nn.Flatten(), InputDomain((1,), 0.0, 1.0))
    with pytest.raises(AssessmentError, match="fails on inputs of shape"):
        TorchTarget.from_module(mlp_module, InputDomain((3, 5), 0.0, 1.0))
