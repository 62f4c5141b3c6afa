"""``bastion assess``: end to end through ``main``, exit codes 0/1/2, JSON Schema, reports,
and the audit-log record linked to the model's digest."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.core.workspace import Workspace

torch = importlib.import_module("torch")

Cli = Callable[..., Any]
CheckSchema = Callable[[str, dict[str, Any]], None]  # the `check_schema` fixture

FACTORY = """
import torch


def make():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A softmax-linear digits model as a torch factory + safetensors, a joblib file of the
    same scikit-learn model, and 150 held-out points (flat rows in [0, 1])."""
    import joblib
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("assess-cli")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x[:1200], y[:1200])
    (folder / "digits_factory.py").write_text(FACTORY, encoding="utf-8")
    save_file(
        {
            "1.weight": torch.from_numpy(np.ascontiguousarray(model.coef_, dtype=np.float32)),
            "1.bias": torch.from_numpy(model.intercept_.astype(np.float32)),
        },
        str(folder / "weights.safetensors"),
    )
    joblib.dump(model, folder / "model.joblib")
    np.savez(folder / "test.npz", x=x[1200:1350], y=y[1200:1350])
    return folder


@pytest.fixture
def factory_path(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(model_dir))
    return model_dir


def _policy(folder: Path, body: str) -> Path:
    path = folder / "policy.toml"
    path.write_text(body, encoding="utf-8")
    return path


def _target(folder: Path) -> list[str]:
    return [
        "--target",
        "torch:digits_factory:make",
        "--weights",
        str(folder / "weights.safetensors"),
        "--data",
        str(folder / "test.npz"),
        "--shape",
        "1,8,8",
    ]


POLICY = """
version = 1
samples = 100
[evasion]
attacks = [{name = "pgd", steps = 10}]
eps = ["0.05", "0.2"]
[[require]]
metric = "evasion.clean.accuracy"
min = 0.8
[[require]]
metric = "evasion.pgd_linf.success_rate"
at = 0.05
max = {bound}
"""


def test_policy_met_writes_reports_and_audits(
    cli: Cli, factory_path: Path, workspace: Workspace, tmp_path: Path, check_schema: CheckSchema
):
    policy = _policy(tmp_path, POLICY.replace("{bound}", "1.0"))
    result = cli(
        "assess",
        "run",
        *_target(factory_path),
        "--policy",
        policy,
        "--report-dir",
        tmp_path / "out",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("assess", document)
    assert document["verdict"] == "met"
    assert document["data"]["samples"] == 100
    assert document["target"]["digest"].startswith("sha256:")
    saved = json.loads((tmp_path / "out" / "report.json").read_text("utf-8"))
    check_schema("assess", saved)
    html = (tmp_path / "out" / "report.html").read_text("utf-8")
    assert "<svg" in html
    assert "policy met" in html
    assert "policy met" in (tmp_path / "out" / "summary.md").read_text("utf-8")
    events = workspace.audit().events(action="assess.run")
    assert len(events) == 1
    assert events[0].subject == document["target"]["digest"]
    assert events[0].details["verdict"] == "met"


def test_policy_not_met_exits_1(cli: Cli, factory_path: Path, tmp_path: Path):
    policy = _policy(tmp_path, POLICY.replace("{bound}", "0.0"))
    result = cli("assess", "run", *_target(factory_path), "--policy", policy)
    assert result.code == 1, result.err
    assert "policy NOT met" in result.out
    assert "violates evasion.pgd_linf.success_rate@0.05 <= 0" in result.out


def test_empty_policy_cannot_run(cli: Cli, factory_path: Path, tmp_path: Path):
    policy = _policy(tmp_path, "version = 1\n[evasion]\nattacks = ['fgsm']\n")
    result = cli("assess", "run", *_target(factory_path), "--policy", policy)
    assert result.code == 2
    assert "empty policy cannot be met" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_family_subcommand_without_policy(cli: Cli, factory_path: Path, check_schema: CheckSchema):
    result = cli(
        "assess",
        "evasion",
        *_target(factory_path),
        "--attack",
        "fgsm",
        "--eps",
        "1/10",
        "--samples",
        "40",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("assess", document)
    assert document["verdict"] == "no_policy"
    names = {m["name"] for m in document["families"][0]["metrics"]}
    assert names == {
        "evasion.clean.accuracy",
        "evasion.fgsm_linf.success_rate",
        "evasion.fgsm_linf.robust_accuracy",
    }


def test_family_subcommand_checks_its_rules(cli: Cli, factory_path: Path, tmp_path: Path):
    policy = _policy(tmp_path, POLICY.replace("{bound}", "0.0"))
    result = cli("assess", "evasion", *_target(factory_path), "--policy", policy)
    assert result.code == 1


def test_pickled_model_needs_allow_pickle(cli: Cli, model_dir: Path):
    common = [
        "--target",
        f"sklearn:{model_dir / 'model.joblib'}",
        "--data",
        str(model_dir / "test.npz"),
        "--attack",
        "fgsm",
        "--samples",
        "30",
    ]
    refused = cli("assess", "evasion", *common)
    assert refused.code == 2
    assert "--allow-pickle" in refused.err
    allowed = cli("assess", "evasion", *common, "--allow-pickle", "--format", "json")
    assert allowed.code == 0, allowed.err
    document = json.loads(allowed.out)
    assert document["target"]["access"] == "gradients"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "nonsense"], "cannot tell what kind of model"),
        (["--target", "torch:no_such_module_xyz:make"], "cannot import"),
        (["--bounds", "0,0.5"], "outside the declared bounds"),
        (["--shape", "3,8,8"], "the input domain declares (3, 8, 8)"),
    ],
)
def test_cannot_run_exits_2(cli: Cli, factory_path: Path, argv: list[str], message: str):
    base = _target(factory_path)
    args = list(base)
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = cli("assess", "evasion", *args, "--attack", "fgsm")
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err
