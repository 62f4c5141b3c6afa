"""The content-addressed artifact store: staging, atomic read-only blobs, verified exports."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from bastion.core.keys import generate_key, key_id, public_pem
from bastion.errors import RegistryError, VerificationError
from bastion.registry.store import (
    ArtifactStore,
    StoredFile,
    check_digest,
    digest_of_files,
    verify_file,
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w" * 1000)
    (folder / "sub" / "config.json").write_bytes(b"{}")
    (folder / "copy.bin").write_bytes(b"w" * 1000)  # same content: one blob
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_bytes(b"ref")
    return folder


def test_stage_commit_and_export_round_trip(
    store: ArtifactStore, model: Path, tmp_path: Path
) -> None:
    with store.scratch() as scratch:
        staged = store.stage(model, scratch / "m", ignore_paths=(".git",))
        assert not staged.single_file
        assert [f.path for f in staged.files] == ["copy.bin", "sub/config.json", "weights.bin"]
        assert staged.files[2] == StoredFile("weights.bin", sha(b"w" * 1000), 1000)
        store.commit(staged)
    assert not scratch.exists()  # the scratch folder is gone
    blobs = sorted((store.root / "sha256").iterdir())
    assert [b.name for b in blobs] == sorted({sha(b"w" * 1000)[7:], sha(b"{}")[7:]})
    for blob in blobs:
        assert stat.S_IMODE(blob.stat().st_mode) == 0o444
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == "sha256:" + blob.name
    out = tmp_path / "out"
    store.export_into(staged.files, out, single_file=False)
    assert (out / "sub" / "config.json").read_bytes() == b"{}"
    assert (out / "copy.bin").read_bytes() == b"w" * 1000
    assert not (out / ".git").exists()
    for item in staged.files:
        verify_file(out / item.path, item)


def test_single_file_models(store: ArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx bytes")
    with store.scratch() as scratch:
        staged = store.stage(path, scratch)
        assert staged.single_file
        assert staged.files == (StoredFile("model.onnx", sha(b"onnx bytes"), 10),)
        assert staged.folder == scratch
        store.commit(staged)
    store.export_into(staged.files, tmp_path / "copy.onnx", single_file=True)
    assert (tmp_path / "copy.onnx").read_bytes() == b"onnx bytes"


def test_a_tampered_blob_is_named_and_nothing_is_exported(
    store: ArtifactStore, model: Path, tmp_path: Path
) -> None:
    with store.scratch() as scratch:
        staged = store.stage(model, scratch / "m", ignore_paths=(".git",))
        store.commit(staged)
    blob = store.blob_path(sha(b"{}"))
    blob.chmod(0o644)
    blob.write_bytes(b"[]")
    with pytest.raises(VerificationError, match=r"sub/config\.json does not match") as caught:
        store.export_into(staged.files, tmp_path / "out", single_file=False)
    assert caught.value.problems == ("modified: sub/config.json",)
    with pytest.raises(VerificationError, match="does not match"):
        store.verify(staged.files[1])
    blob.unlink()
    with pytest.raises(VerificationError, match="missing from the store"):
        store.verify(staged.files[1])
    with pytest.raises(VerificationError, match="missing from the store"):
        store.export_into(staged.files, tmp_path / "out2", single_file=False)


def test_commit_replaces_a_damaged_blob(store: ArtifactStore, model: Path) -> None:
    with store.scratch() as scratch:
        staged = store.stage(model, scratch / "m", ignore_paths=(".git",))
        store.commit(staged)
    blob = store.blob_path(sha(b"{}"))
    blob.chmod(0o644)
    blob.write_bytes(b"damaged")
    with store.scratch() as scratch:
        store.commit(store.stage(model, scratch / "m", ignore_paths=(".git",)))
    assert blob.read_bytes() == b"{}"


@pytest.mark.parametrize(
    "digest",
    ["", "sha256:", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:../../etc/passwd", 7],
)
def test_malformed_digests_are_refused(store: ArtifactStore, digest: object) -> None:
    with pytest.raises(VerificationError, match="malformed digest"):
        store.blob_path(digest)  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        check_digest(digest)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "a\\b", ""])
def test_recorded_names_never_leave_the_export(
    store: ArtifactStore, tmp_path: Path, name: str
) -> None:
    item = StoredFile(name, sha(b"x"), 1)
    with pytest.raises(VerificationError, match="recorded file name"):
        store.export_into([item], tmp_path / "out", single_file=False)
    assert not (tmp_path / "escape").exists()


def test_staging_refuses_links_special_files_and_limits(
    store: ArtifactStore, model: Path, tmp_path: Path
) -> None:
    (model / "link").symlink_to(tmp_path / "elsewhere")
    with store.scratch() as scratch, pytest.raises(RegistryError, match="symlink refused: link"):
        store.stage(model, scratch / "m")
    (model / "link").unlink()
    os.mkfifo(model / "fifo")
    with store.scratch() as scratch, pytest.raises(RegistryError, match="not a regular file"):
        store.stage(model, scratch / "m")
    (model / "fifo").unlink()
    with store.scratch() as scratch, pytest.raises(RegistryError, match="larger than the scan"):
        store.stage(model, scratch / "m", max_file_bytes=999)
    empty = tmp_path / "empty"
    empty.mkdir()
    with store.scratch() as scratch, pytest.raises(RegistryError, match="holds no file"):
        store.stage(empty, scratch / "m")
    with store.scratch() as scratch, pytest.raises(RegistryError, match="cannot read"):
        store.stage(tmp_path / "missing", scratch / "m")


def test_scratch_is_removed_when_the_work_fails(store: ArtifactStore) -> None:
    seen: list[Path] = []

    def work() -> None:
        with store.scratch() as scratch:
            seen.append(scratch)
            (scratch / "half").write_bytes(b"partial")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        work()
    assert not seen[0].exists()


def test_keys_are_kept_under_their_id(store: ArtifactStore) -> None:
    key = generate_key().public_key()
    identifier = store.save_key(key)
    assert identifier == key_id(key)
    assert key_id(store.load_key(identifier)) == identifier
    path = store.root / "keys" / f"{identifier}.pub"
    path.chmod(0o644)
    other = generate_key().public_key()
    path.write_bytes(public_pem(other))
    with pytest.raises(VerificationError, match="was replaced"):
        store.load_key(identifier)
    with pytest.raises(VerificationError, match="missing from the store"):
        store.load_key("0" * 64)
    with pytest.raises(VerificationError, match="malformed signer key id"):
        store.load_key("../../keys/workspace")


def test_version_digest_is_order_independent_and_covers_every_field() -> None:
    a = StoredFile("a", sha(b"1"), 1)
    b = StoredFile("b", sha(b"2"), 1)
    assert digest_of_files([a, b]) == digest_of_files([b, a])
    assert digest_of_files([a, b]) != digest_of_files([a, StoredFile("c", sha(b"2"), 1)])
    assert digest_of_files([a, b]) != digest_of_files([a, StoredFile("b", sha(b"2"), 2)])
    assert digest_of_files([a]).startswith("sha256:")
