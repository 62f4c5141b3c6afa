"""The demo library: every step holds, and the malicious sample is what it claims to be.

The whole demo runs once (about 10 s); its serving act is checked from what each step shows,
the reports it wrote, and the workspace's audit log read back afterwards.
"""

from __future__ import annotations

import json
import pickletools
import re
from collections import Counter
from pathlib import Path

import pytest

from bastion.core.workspace import find_workspace
from bastion.demo import DemoStep, malicious_pickle, run_demo
from bastion.demo_gateway import DEMO_PER_KEY_PER_MINUTE, report_path
from bastion.errors import BastionError
from bastion.gateway.audit import request_entries


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoStep]]:
    workdir = tmp_path_factory.mktemp("demo") / "d"
    steps: list[DemoStep] = []
    assert run_demo(workdir, on_step=steps.append, environ={})
    return workdir, steps


def _step(steps: list[DemoStep], start: str) -> DemoStep:
    return next(s for s in steps if s.title.startswith(start))


def test_every_step_holds(demo: tuple[Path, list[DemoStep]]) -> None:
    _, steps = demo
    assert [s.ok for s in steps] == [True] * len(steps)
    titles = " ".join(s.title for s in steps)
    for word in ("workspace", "safetensors", "Scanned", "Signed", "Verified", "Flipped", "audit"):
        assert word in titles
    tamper = next(s for s in steps if s.title.startswith("Flipped"))
    assert "modified: model.safetensors" in tamper.details
    refused = next(s for s in steps if "approve a version he had registered" in s.title)
    assert len(refused.details) == 2
    assert all("refused:" in line for line in refused.details)
    promoted = next(s for s in steps if "promoted it to production" in s.title)
    assert promoted.details[-1].startswith("stage production by sam")
    log = steps[-1]
    assert any("workspace.init" in line for line in log.details)
    for action in ("keys.create", "registry.add", "registry.approve.refused", "registry.promote"):
        assert any(action in line for line in log.details), action
    assert log.details[-1].endswith("chain verified")
    # The serving act comes after the promotion and before the audit log's checkpoint.
    titles = [s.title for s in steps]
    assert titles.index(promoted.title) < titles.index(
        _step(steps, "Started the gateway on http://127.0.0.1:").title
    )
    assert titles[-2] == "Stopped the gateway gracefully and read its audit trail"
    for action in ("gateway.start", "gateway.requests", "assess.run", "gateway.stop"):
        assert any(action in line for line in log.details), action


def test_the_gateway_answers_each_caller_as_it_should(demo: tuple[Path, list[DemoStep]]) -> None:
    _, steps = demo
    answer = _step(steps, "The client application asked for a prediction")
    client = next(line for line in answer.details if "client sees" in line)
    label, score = re.search(r"digit (\d), score (0\.\d\d);", client).groups()  # type: ignore[union-attr]
    full = next(line for line in answer.details if "sre sees" in line).split(":")[1].split(",")
    assert len(full) == 10
    assert int(label) == max(range(10), key=lambda i: float(full[i]))
    assert abs(float(score) - float(full[int(label)])) <= 0.005

    unauthenticated = _step(steps, "Called without a key")
    assert [line.split()[-2] for line in unauthenticated.details[:3]] == ["401"] * 3
    assert len({line.split("  ")[-1] for line in unauthenticated.details[:3]}) == 1
    assert unauthenticated.details[-1] == "identical bodies"

    forbidden = _step(steps, "The client's key asked for another model")
    assert all('  403  {"error":"forbidden"}' in line for line in forbidden.details)

    invalid = _step(steps, "Sent a NaN")
    bodies = [line[line.index(" 422  ") :] for line in invalid.details]
    assert len(bodies) == 3
    assert all(b.startswith(' 422  {"error":') for b in bodies)
    # Generic messages: nothing of the input or the model's range comes back.
    assert not any(word in b for b in bodies for word in ("NaN", "255", "63", "16", "pixels"))

    burst = _step(steps, "Sent a burst from the client's key")
    answered = int(burst.details[0].split()[0])
    assert 0 < answered <= DEMO_PER_KEY_PER_MINUTE
    assert re.search(r"429 .* Retry-After: [1-9][0-9]* s$", burst.details[0])


def test_the_assessment_through_the_gateway(demo: tuple[Path, list[DemoStep]]) -> None:
    workdir, steps = demo
    step = _step(steps, "Assessed the served model through the gateway")
    html = report_path(workdir)
    assert html.is_file()
    assert f"html report  {html}" in step.details
    assert "<svg" in html.read_text(encoding="utf-8")
    report = json.loads((html.parent / "report.json").read_text(encoding="utf-8"))
    assert report["target"]["kind"] == "remote"
    assert report["target"]["name"].startswith("http://127.0.0.1:")
    assert report["target"]["digest"].startswith("sha256:")
    metrics = {
        (m["name"], m["at"]): m["value"] for family in report["families"] for m in family["metrics"]
    }
    # The SRE's scores (4 decimals) still give the linear model away.
    assert metrics[("extraction.equation_solving.fidelity", 65.0)] >= 0.99
    assert metrics[("extraction.substitute_probabilities.fidelity", 200.0)] >= 0.9
    # Batched: thousands of queries in a few dozen requests.
    assert report["queries"]["used"] >= 20 * report["queries"]["requests"]
    assert any("cannot run on top-1 answers" in line for line in step.details)


def test_the_audit_log_holds_the_gateway_and_the_assessment(
    demo: tuple[Path, list[DemoStep]],
) -> None:
    workdir, steps = demo
    workspace = find_workspace(environ={"BASTION_HOME": str(workdir / "workspace")})
    try:
        audit = workspace.audit()
        requests = request_entries(audit.events(action="gateway.requests"))
        refused = audit.events(action="gateway.requests.refused")
        assessed = audit.events(action="assess.run")
        loaded = audit.events(action="gateway.model.loaded")
    finally:
        workspace.close()
    statuses = Counter(e.details["status"] for e in requests)
    assert (statuses[401], statuses[403], statuses[422]) == (3, 3, 3)
    assert statuses[200] > DEMO_PER_KEY_PER_MINUTE
    reasons = {e.details.get("reason", "") for e in requests}
    # The details the clients did not get are in the audit log.
    assert any("NaN" in r for r in reasons)
    assert any("outside [0, 16]" in r for r in reasons)
    assert any("out of scope" in r for r in reasons)
    assert sum(e.details["count"] for e in refused) >= 1
    assert all(e.details["status"] == 429 for e in refused)
    assert len(assessed) == 1
    # Linked to the digest of the version the gateway served (from the registry).
    assert assessed[0].subject == loaded[0].details["digest"]
    assert assessed[0].subject.startswith("sha256:")
    assert assessed[0].details["reports"]["html"] == str(report_path(workdir))
    trail = steps[-2]
    assert trail.details[-1].startswith(
        f"{len(requests) + sum(e.details['count'] for e in refused)} requests sent"
    )


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
