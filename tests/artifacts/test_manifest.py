"""Walking a model folder without leaving it; names from signatures; model-signing's order."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.artifacts.manifest import (
    GIT_PATHS,
    SINGLE_FILE_NAME,
    ModelSource,
    Resource,
    Serialization,
    SerializationMethod,
    is_ignored,
    name_problem,
    sort_key,
)
from bastion.core.digests import HashAlgorithm


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("../etc/passwd", "'..' component"),
        ("a/../../b", "'..' component"),
        ("/etc/passwd", "absolute path"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control character"),
        ("a//b", "'(empty)' component"),
        ("a/", "'(empty)' component"),
        ("./a", "'.' component"),
        (".", "'.' component"),
        ("x" * 5000, "longer than"),
        ("bad\udcffname", "not valid UTF-8"),
    ],
)
def test_bad_names(name: str, problem: str) -> None:
    assert problem in (name_problem(name) or "")


@pytest.mark.parametrize("name", ["a", "a/b/c.bin", ".hidden", "модель/веса.bin", "x:0:4", "a b"])
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


def test_ignored_paths_cover_their_subtrees() -> None:
    assert is_ignored(".git", GIT_PATHS)
    assert is_ignored(".git/config", GIT_PATHS)
    assert not is_ignored(".gitx", GIT_PATHS)
    assert not is_ignored("a/.git", GIT_PATHS)


@given(st.lists(st.text(alphabet="ab./-", min_size=1, max_size=6), min_size=1, max_size=8))
def test_sort_key_is_model_signings_path_order(names: list[str]) -> None:
    valid = {n for n in names if name_problem(n) is None}
    ours = sorted(valid, key=sort_key)
    theirs = [str(p) for p in sorted(pathlib.PurePosixPath(n) for n in valid)]
    assert ours == theirs


def test_listing_a_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub" / "deeper").mkdir(parents=True)
    (model / "a.bin").write_bytes(b"a")
    (model / "sub" / "deeper" / "b.bin").write_bytes(b"bb")
    (model / "empty").write_bytes(b"")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref")
    with ModelSource(model) as source:
        listing = source.list(GIT_PATHS)
    assert not listing.is_file
    assert [e.name for e in listing.entries] == ["a.bin", "empty", "sub/deeper/b.bin"]
    assert listing.total_bytes == 3
    assert listing.problems == ()


def test_single_file_model(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights")
    with ModelSource(path) as source:
        listing = source.list()
        (entry,) = listing.entries
        assert listing.is_file
        assert entry.name == SINGLE_FILE_NAME
        assert entry.size == 7
        fd = source.open_file(entry)
        try:
            assert os.read(fd, 100) == b"weights"
        finally:
            os.close(fd)


def test_links_and_special_files_are_refused_never_opened(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    model = tmp_path / "model"
    model.mkdir()
    (model / "ok").write_text("ok")
    (model / "file-link").symlink_to(outside / "secret")
    (model / "dir-link").symlink_to(outside)
    (model / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(model / "fifo")
    with ModelSource(model) as source:
        listing = source.list()
    assert [e.name for e in listing.entries] == ["ok"]
    assert listing.problems == (
        "not a regular file: fifo",
        "symlink refused: dangling",
        "symlink refused: dir-link",
        "symlink refused: file-link",
    )


def test_open_file_refuses_a_file_replaced_after_listing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "w").write_text("original")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w").write_text("outside")
    with ModelSource(model) as source:
        (entry,) = source.list().entries
        (model / "sub" / "w").rename(tmp_path / "kept")  # keeps the inode in use
        (model / "sub" / "w").write_text("replaced")
        with pytest.raises(OSError, match="replaced after it was listed"):
            source.open_file(entry)
        # A folder swapped for a link: the walk beneath the root refuses to follow it.
        (model / "sub" / "w").unlink()
        (model / "sub").rmdir()
        (model / "sub").symlink_to(tmp_path / "outside")
        with pytest.raises(OSError, match=r"Not a directory|Too many levels"):
            source.open_file(entry)


def test_missing_or_special_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelSource(tmp_path / "missing")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="neither a regular file nor a folder"):
        ModelSource(tmp_path / "fifo")


def test_serialization_and_resources() -> None:
    shards = Serialization(SerializationMethod.SHARDS, HashAlgorithm.SHA256, shard_size=4)
    assert shards.resource_algorithm == "sha256-sharded-4"
    assert shards.to_json() == {
        "method": "shards",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "shard_size": 4,
    }
    files = Serialization(SerializationMethod.FILES, HashAlgorithm.BLAKE3, ignore_paths=(".git",))
    assert files.to_json()["ignore_paths"] == [".git"]
    with pytest.raises(ValueError, match="shard_size"):
        Serialization(SerializationMethod.SHARDS, HashAlgorithm.SHA256)
    with pytest.raises(ValueError, match="positive"):
        Serialization(SerializationMethod.SHARDS, HashAlgorithm.SHA256, shard_size=0)
    assert Resource("a", 0, 4, "x", b"").name == "a:0:4"
    assert Resource("a", None, None, "x", b"").name == "a"
