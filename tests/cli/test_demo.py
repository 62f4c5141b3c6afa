"""``bastion demo``: text and JSON output, exit codes, refusal of a used folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def test_json_output_matches_schema(cli: Any, tmp_path: Path, check_schema: Any) -> None:
    result = cli("demo", "--workdir", tmp_path / "d", "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("demo", document)
    assert document["ok"] is True
    assert all(step["ok"] for step in document["steps"])
    titles = [step["title"] for step in document["steps"]]
    assert titles[0] == "Created a workspace"
    assert titles[-1].startswith("Checkpointed and verified the audit log")
    assert document["report"] == str(tmp_path / "d" / "assessment" / "report.html")
    assert Path(document["report"]).is_file()


def test_text_output_says_what_each_step_proved(cli: Any, tmp_path: Path) -> None:
    result = cli("demo", "--workdir", tmp_path / "d")
    assert result.code == 0, result.err
    headers = re.findall(r"(?m)^(\d+)\. .*  ok$", result.out)
    assert headers == [str(i) for i in range(1, len(headers) + 1)]
    assert result.out.count("proved:") == len(headers) > 10
    assert "every step held" in result.out
    assert "Started the gateway on http://127.0.0.1:" in result.out
    # The text ends with the HTML report of the assessment through the gateway.
    last = result.out.rstrip().splitlines()[-1]
    report = tmp_path / "d" / "assessment" / "report.html"
    assert last == f"Assessment report (HTML): {report}"
    assert report.is_file()


def test_used_folder_is_refused_with_one_line(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    result = cli("demo", "--workdir", tmp_path / "d")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert "not empty" in result.err
