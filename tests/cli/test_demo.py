"""``bastion demo``: text and JSON output, exit codes, refusal of a used folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_json_output_matches_schema(cli: Any, tmp_path: Path, check_schema: Any) -> None:
    result = cli("demo", "--workdir", tmp_path / "d", "--format", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    check_schema("demo", document)
    assert document["ok"] is True
    assert len(document["steps"]) == 8


def test_text_output_says_what_each_step_proved(cli: Any, tmp_path: Path) -> None:
    result = cli("demo", "--workdir", tmp_path / "d")
    assert result.code == 0, result.err
    assert result.out.count("proved:") == 8
    assert "every step held" in result.out


def test_used_folder_is_refused_with_one_line(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    result = cli("demo", "--workdir", tmp_path / "d")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert "not empty" in result.err
