"""``bastion scan``: exit codes, text, JSON (against its schema), SARIF (against OASIS's)."""

from __future__ import annotations

import json
import pickle
import zipfile
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from bastion.cli.context import Context
from bastion.core.workspace import Workspace

PAYLOAD = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
SARIF_SCHEMA = Path(__file__).parents[1] / "artifacts" / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "clean.pkl").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    (folder / "evil [1].bin").write_bytes(PAYLOAD)  # brackets: no rich markup in paths
    (folder / "notes.txt").write_text("hello\n")
    return folder


def test_clean_file_exits_0(cli, files: Path) -> None:
    result = cli("scan", files / "clean.pkl")
    assert result.code == 0
    assert "1 clean" in result.out
    assert result.err == ""


def test_unsafe_file_exits_1_with_a_readable_block(cli, files: Path) -> None:
    result = cli("scan", files)
    assert result.code == 1
    assert f"UNSAFE {files / 'evil [1].bin'}" in result.out
    assert "PICKLE-DANGEROUS-GLOBAL" in result.out
    assert "os.system" in result.out
    assert "AML.T0011.000" in result.out
    assert "SKIPPED" in result.out
    assert "1 unsafe, 1 clean, 1 skipped" in result.out


def test_missing_path_exits_2_with_one_line(cli, tmp_path: Path) -> None:
    result = cli("scan", tmp_path / "absent.pt")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "no such file or directory" in result.err
    assert "Traceback" not in result.err


def test_strict_fails_on_skipped_files(cli, files: Path) -> None:
    assert cli("scan", files / "notes.txt").code == 0
    assert cli("scan", "--strict", files / "notes.txt").code == 1


def test_fail_on_lowers_the_threshold(cli, tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(b"\x80\x02cmypkg.layers\nBlock\nq\x00.")  # an unknown global: LOW
    assert cli("scan", path).code == 0
    assert cli("scan", "--fail-on", "low", path).code == 1


def test_invalid_option_value_exits_2(cli, files: Path) -> None:
    result = cli("scan", "--timeout", "0", files)
    assert result.code == 2
    assert "--timeout" in result.err


def test_json_output_matches_its_schema(cli, files: Path) -> None:
    result = cli("scan", "--format", "json", files)
    assert result.code == 1
    document = json.loads(result.out)
    schema = json.loads(resources.files("bastion").joinpath("schemas/scan.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema, format_checker=jsonschema.FormatChecker())
    assert document["schema_version"] == "1.0"
    by_name = {Path(r["path"]).name: r for r in document["results"]}
    assert len(document["results"]) == 3
    assert by_name["evil [1].bin"]["status"] == "unsafe"
    assert by_name["evil [1].bin"]["max_severity"] == "critical"
    finding = by_name["evil [1].bin"]["findings"][0]
    assert finding["symbol"] == "os.system"
    assert finding["offset"] is not None
    assert by_name["notes.txt"]["skip_reason"]
    assert document["summary"]["unsafe"] == 1


def test_sarif_output_validates_against_the_oasis_schema(cli, files: Path, tmp_path) -> None:
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        archive.writestr("inner/data.pkl", PAYLOAD)
    result = cli("scan", "--format", "sarif", files, nested)
    assert result.code == 1
    log = json.loads(result.out)
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "bastion"
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert "PICKLE-DANGEROUS-GLOBAL" in rule_ids
    levels = {r["level"] for r in run["results"]}
    assert "error" in levels
    members = [
        loc["logicalLocations"][0]["fullyQualifiedName"]
        for r in run["results"]
        for loc in r["locations"]
        if "logicalLocations" in loc
    ]
    assert "inner/data.pkl" in members
    notifications = run["invocations"][0]["toolExecutionNotifications"]
    assert any("not recognised" in n["message"]["text"] for n in notifications)


def test_scan_is_recorded_in_the_audit_log(cli, workspace: Workspace, files: Path) -> None:
    assert cli("scan", files).code == 1
    (event,) = workspace.audit().events(action="scan")
    assert event.subject == str(files)
    assert event.details["unsafe"] == 1
    assert event.details["files"] == 3
    assert event.details["unsafe_paths"] == [str(files / "evil [1].bin")]


def test_no_workspace_is_needed(cli, bastion_home: Path, files: Path) -> None:
    assert not bastion_home.exists()
    assert cli("scan", files / "clean.pkl").code == 0
    assert not bastion_home.exists()


def test_progress_bar_on_a_terminal(cli, files: Path, monkeypatch) -> None:
    monkeypatch.setattr(Context, "show_progress", lambda self: True)
    result = cli("scan", files)
    assert result.code == 1
    assert "UNSAFE" in result.out
