"""Reports: the JSON document validates against the committed schema, the HTML page is
self-contained and escaped, the Markdown summary fits a pull-request comment."""

from __future__ import annotations

import importlib
import json
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bastion.assess.data import Dataset
from bastion.assess.domain import InputDomain
from bastion.assess.families.evasion import EvasionConfig
from bastion.assess.policy import parse_policy
from bastion.assess.report import to_html, to_json_document, to_markdown, write_reports
from bastion.assess.runner import Assessment, run_assessment
from bastion.errors import AssessmentError

importlib.import_module("torch")

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def assessment(logistic_model: Any, flat_digits: Dataset) -> Assessment:
    from bastion.assess.targets.sklearn_target import SklearnTarget

    target = SklearnTarget(logistic_model, InputDomain((64,), 0.0, 1.0), name=HOSTILE)
    policy = parse_policy(
        {
            "require": [
                {"metric": "evasion.fgsm_linf.success_rate", "at": 0.1, "max": 0.01},
                {"metric": "evasion.clean.accuracy", "min": 0.5, "why": HOSTILE},
            ]
        }
    )
    config = EvasionConfig.model_validate(
        {"attacks": ["fgsm", {"name": "cw", "steps": 20, "binary_steps": 2}], "eps": [0.05, 0.1]}
    )
    return run_assessment(target, flat_digits, {"evasion": config}, policy=policy, samples=40)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]


def test_json_document_matches_the_schema(assessment: Assessment):
    schema = json.loads((files("bastion") / "schemas" / "assess.json").read_text("utf-8"))
    document = json.loads(json.dumps(to_json_document(assessment)))  # strict JSON round trip
    jsonschema.Draft202012Validator(schema).validate(document)
    assert document["verdict"] == "not_met"
    assert [r["met"] for r in document["policy"]["rules"]] == [False, True]
    evasion = document["families"][0]
    cw = next(a for a in evasion["details"]["attacks"] if a["id"] == "cw_l2")
    assert cw["bounded"] is False
    assert cw["median_norm"] > 0


def test_html_is_self_contained_and_escaped(assessment: Assessment):
    html = to_html(assessment)
    collector = _Collector()
    collector.feed(html)
    assert "script" not in collector.tags
    assert collector.links == []
    assert HOSTILE not in html
    assert "&lt;script&gt;" in html
    assert collector.tags.count("svg") == 2  # robust accuracy vs eps, L-infinity and L2
    assert "policy NOT met" in html


def test_markdown_summary(assessment: Assessment):
    text = to_markdown(assessment)
    assert text.startswith("### ❌ bastion assess: policy NOT met")
    assert "| `evasion.fgsm_linf.success_rate@0.1 <= 0.01` |" in text
    assert "**not met**" in text
    assert "- clean accuracy" in text


def test_write_reports(assessment: Assessment, tmp_path: Path):
    written = write_reports(
        assessment, json_path=tmp_path / "a" / "r.json", markdown_path=tmp_path / "s.md"
    )
    assert set(written) == {"json", "markdown"}
    assert json.loads((tmp_path / "a" / "r.json").read_text())["schema_version"] == "1.0"
    (tmp_path / "file").write_text("")
    with pytest.raises(AssessmentError, match="cannot write the html report"):
        write_reports(assessment, html_path=tmp_path / "file" / "r.html")
