"""Provenance values: parameters, times, the git revision, training-data digests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import blake3
import pytest

from bastion.artifacts.provenance import (
    digest_data,
    format_time,
    git_head,
    parse_parameters,
    parse_time,
)
from bastion.core.digests import HashAlgorithm
from bastion.errors import SigningError


def test_parameters_are_sorted_pairs() -> None:
    assert parse_parameters(["lr=0.1", "arch=resnet=50", "empty="]) == (
        ("arch", "resnet=50"),
        ("empty", ""),
        ("lr", "0.1"),
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["novalue"], "not of the form name=value"),
        (["=x"], "must be 1-200"),
        (["bad name=1"], "must be 1-200"),
        (["a=1", "a=2"], "given twice"),
        (["a=" + "x" * 5000], "longer than"),
    ],
)
def test_bad_parameters(items: list[str], message: str) -> None:
    with pytest.raises(SigningError, match=message):
        parse_parameters(items)


def test_times_round_trip() -> None:
    moment = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert format_time(moment) == "2026-05-06T07:08:09.123456Z"
    assert parse_time(format_time(moment)) == moment
    east = datetime(2026, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(east) == "2026-05-06T07:08:09Z"
    assert parse_time("2026-05-06T07:08:09.123456789Z").microsecond == 123456
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))
    for bad in ("2026-05-06 07:08:09Z", "2026-05-06T07:08:09+00:00", "yesterday"):
        with pytest.raises(ValueError, match="not an RFC 3339"):
            parse_time(bad)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_head(tmp_path: Path) -> None:
    assert git_head(tmp_path) is None
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    assert git_head(tmp_path) is None  # no commit yet
    (tmp_path / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "train.py"], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "m"], check=True, env=env)
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    (tmp_path / "sub").mkdir()
    assert git_head(tmp_path / "sub") == head


def test_git_head_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert git_head(tmp_path) is None


def test_data_digests_with_blake3(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"bb")
    (tmp_path / "d" / "a").write_bytes(b"a")
    (item,) = digest_data([tmp_path / "d"], HashAlgorithm.BLAKE3)
    listing = (
        f"{blake3.blake3(b'a').hexdigest()}  a\n{blake3.blake3(b'bb').hexdigest()}  b\n"
    ).encode()
    assert item.digest == blake3.blake3(listing).hexdigest()
    assert (item.kind, item.files, item.bytes, item.algorithm) == (
        "folder",
        2,
        3,
        HashAlgorithm.BLAKE3,
    )
    assert hashlib.sha256(listing).hexdigest() != item.digest


def test_data_with_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/hostname")
    with pytest.raises(SigningError, match="symlink refused: link"):
        digest_data([tmp_path / "d"], HashAlgorithm.SHA256)
