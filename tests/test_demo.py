"""The demo library: every step holds, and the malicious sample is what it claims to be."""

from __future__ import annotations

import pickletools
from pathlib import Path

import pytest

from bastion.demo import DemoStep, malicious_pickle, run_demo
from bastion.errors import BastionError


def test_every_step_holds(tmp_path: Path) -> None:
    steps: list[DemoStep] = []
    assert run_demo(tmp_path / "demo", on_step=steps.append, environ={})
    assert [s.ok for s in steps] == [True] * len(steps)
    titles = " ".join(s.title for s in steps)
    for word in ("workspace", "safetensors", "Scanned", "Signed", "Verified", "Flipped", "audit"):
        assert word in titles
    tamper = next(s for s in steps if s.title.startswith("Flipped"))
    assert "modified: model.safetensors" in tamper.details
    log = steps[-1]
    assert any("workspace.init" in line for line in log.details)
    assert log.details[-1].endswith("chain verified")


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BastionError, match="not empty"):
        run_demo(tmp_path, on_step=lambda _s: None, environ={})
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_malicious_sample_calls_os_system() -> None:
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(malicious_pickle("true"))]
    assert ("GLOBAL", "os system") in ops
    assert ops[-2:] == [("REDUCE", None), ("STOP", None)]
    with pytest.raises(BastionError):
        malicious_pickle("x" * 300)
