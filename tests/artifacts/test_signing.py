"""Signing: files, folders, provenance, atomic writes, --reuse; model-signing verifies it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.artifacts.manifest import SerializationMethod
from bastion.artifacts.signing import SignOptions, model_name, sign
from bastion.artifacts.verification import verify
from bastion.core.digests import HashAlgorithm
from bastion.core.keys import KeyAlgorithm, PrivateKey, generate_key, key_id, write_keypair
from bastion.errors import SigningError

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def ed_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ED25519)


@pytest.fixture(scope="module")
def ec_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ECDSA_P256)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "layers" / "0").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden": 8}')
    (folder / "layers" / "0" / "weights.safetensors").write_bytes(os.urandom(1000))
    (folder / "layers" / "bias.bin").write_bytes(os.urandom(37))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "модель-权重 ü.bin").write_bytes(b"unicode")
    return folder


def statement(signature: Path) -> dict[str, Any]:
    bundle = json.loads(signature.read_bytes())
    document: dict[str, Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return document


OPTIONS = {
    "shards-sha256": SignOptions(shard_bytes=64),
    "files-sha256": SignOptions(method=SerializationMethod.FILES),
    "files-blake3": SignOptions(hash_algorithm=HashAlgorithm.BLAKE3),
}


@pytest.mark.parametrize("label", sorted(OPTIONS))
@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_sign_and_verify_folder(model: Path, label: str, algorithm: KeyAlgorithm) -> None:
    key = generate_key(algorithm)
    result = sign(model, key, options=OPTIONS[label], actor="tester", now=NOW)
    assert result.signature == model.with_name("model.sig")
    assert result.files == 5
    assert result.hashed_files == 5
    assert result.reused_files == 0
    verified = verify(model, key.public_key())
    assert verified.statement.subject_digest.hex() == result.subject_digest
    assert verified.statement.provenance == result.provenance


@pytest.mark.parametrize("content", [b"", b"x", os.urandom(200)], ids=["empty", "byte", "200"])
def test_sign_single_file(tmp_path: Path, ed_key: PrivateKey, content: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    result = sign(path, ed_key, options=SignOptions(shard_bytes=64), actor="tester")
    assert result.signature == tmp_path / "model.bin.sig"
    document = statement(result.signature)
    assert document["subject"][0]["name"] == "model.bin"
    names = [r["name"] for r in document["predicate"]["resources"]]
    assert names == [f".:{s}:{min(s + 64, len(content))}" for s in range(0, len(content), 64)]
    assert document["predicate"]["bastion"]["files"][0]["name"] == "."
    verify(path, ed_key.public_key())


def test_statement_layout(model: Path, ed_key: PrivateKey) -> None:
    (model / ".gitattributes").write_text("*.bin filter=lfs")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main")
    result = sign(
        model,
        ed_key,
        options=SignOptions(shard_bytes=512),
        actor="alice@host",
        code_revision="a" * 40,
        parameters=[("lr", "0.01"), ("epochs", "3")],
        now=NOW,
    )
    document = statement(result.signature)
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["predicateType"] == "https://model_signing/signature/v1.0"
    assert document["subject"] == [{"name": "model", "digest": {"sha256": result.subject_digest}}]
    predicate = document["predicate"]
    assert predicate["serialization"] == {
        "method": "shards",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "shard_size": 512,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore"],
    }
    weights = (model / "layers" / "0" / "weights.safetensors").read_bytes()
    by_name = {r["name"]: r for r in predicate["resources"]}
    assert by_name["layers/0/weights.safetensors:512:1000"] == {
        "name": "layers/0/weights.safetensors:512:1000",
        "algorithm": "sha256-sharded-512",
        "digest": hashlib.sha256(weights[512:]).hexdigest(),
    }
    assert not [n for n in by_name if n.startswith("empty.txt")]  # no shard for an empty file
    files = {f["name"]: f for f in predicate["bastion"]["files"]}
    assert sorted(files) == sorted(
        [
            "config.json",
            "layers/0/weights.safetensors",
            "layers/bias.bin",
            "empty.txt",
            "модель-权重 ü.bin",
        ]
    )
    info = (model / "layers" / "bias.bin").stat()
    assert files["layers/bias.bin"] == {
        "name": "layers/bias.bin",
        "size": 37,
        "mtime_ns": info.st_mtime_ns,
        "ctime_ns": info.st_ctime_ns,
    }
    assert predicate["bastion"]["provenance"] == {
        "signer": {"key_id": key_id(ed_key), "algorithm": "ed25519", "actor": "alice@host"},
        "signed_at": "2026-03-04T05:06:07Z",
        "code_revision": "a" * 40,
        "training_data": [],
        "parameters": {"epochs": "3", "lr": "0.01"},
    }


def test_training_data_digests(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "split").mkdir(parents=True)
    (data / "train.csv").write_text("x,y\n1,2\n")
    (data / "split" / "test.csv").write_text("x,y\n3,4\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    result = sign(model, ed_key, actor="t", training_data=[data, labels])
    folder, single = result.provenance.training_data
    listing = "".join(
        f"{hashlib.sha256((data / name).read_bytes()).hexdigest()}  {name}\n"
        for name in sorted(["train.csv", "split/test.csv"])
    )
    assert (folder.kind, folder.files, folder.bytes) == ("folder", 2, 16)
    assert folder.digest == hashlib.sha256(listing.encode()).hexdigest()  # sha256sum | sha256sum
    assert single.kind == "file"
    assert single.digest == hashlib.sha256(b"cat\ndog\n").hexdigest()
    with pytest.raises(SigningError, match="cannot read data"):
        sign(model, ed_key, actor="t", training_data=[tmp_path / "missing"])


def test_output_inside_the_folder_is_left_out(model: Path, ec_key: PrivateKey) -> None:
    output = model / "model.sig"
    sign(model, ec_key, output=output, actor="t")
    sign(model, ec_key, output=output, actor="t")  # signing again: the old .sig is not a file
    assert ".sig" not in json.dumps(statement(output)["predicate"]["resources"])
    assert "model.sig" in statement(output)["predicate"]["serialization"]["ignore_paths"]
    verify(model, ec_key.public_key(), output)


def test_symlinks_and_special_files_are_refused(model: Path, ed_key: PrivateKey) -> None:
    (model / "link").symlink_to(model / "config.json")
    with pytest.raises(SigningError, match="symlink refused: link"):
        sign(model, ed_key, actor="t")
    assert not model.with_name("model.sig").exists()
    (model / "link").unlink()
    os.mkfifo(model / "fifo")
    with pytest.raises(SigningError, match="not a regular file: fifo"):
        sign(model, ed_key, actor="t")


def test_missing_model(tmp_path: Path, ed_key: PrivateKey) -> None:
    with pytest.raises(SigningError, match="cannot read"):
        sign(tmp_path / "missing", ed_key, actor="t")


def test_blake3_shards_are_refused(model: Path, ed_key: PrivateKey) -> None:
    options = SignOptions(hash_algorithm=HashAlgorithm.BLAKE3, method=SerializationMethod.SHARDS)
    with pytest.raises(SigningError, match="BLAKE3 signs whole files"):
        sign(model, ed_key, options=options, actor="t")


def test_write_is_atomic(model: Path, ed_key: PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    first = sign(model, ed_key, actor="t").signature
    before = first.read_bytes()
    (model / "config.json").write_text('{"hidden": 9}')

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SigningError, match="No space left on device"):
        sign(model, ed_key, actor="t")
    assert first.read_bytes() == before  # the old signature is whole
    assert sorted(p.name for p in model.parent.iterdir()) == ["model", "model.sig"]  # no temp
    monkeypatch.undo()
    sign(model, ed_key, actor="t")
    assert first.read_bytes() != before
    assert oct(first.stat().st_mode & 0o777) == "0o644"


def test_unwritable_output(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="cannot write"):
        sign(model, ed_key, output=tmp_path / "no" / "such" / "x.sig", actor="t")


def test_model_name() -> None:
    assert model_name(Path("a/b")) == "b"
    assert model_name(Path("a/b/")) == "b"
    assert model_name(Path()) == Path.cwd().name


# -- --reuse ---------------------------------------------------------------------------------


def test_reuse_unchanged_files(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    first = sign(model, ed_key, options=SignOptions(shard_bytes=256), actor="t")
    previous = tmp_path / "previous.sig"
    first.signature.rename(previous)
    again = sign(model, ed_key, options=SignOptions(shard_bytes=256), actor="t", reuse=previous)
    assert (again.reused_files, again.hashed_files) == (5, 0)
    assert again.subject_digest == first.subject_digest
    verify(model, ed_key.public_key())


def test_reuse_rehashes_a_touched_file(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    previous = sign(model, ed_key, actor="t", output=tmp_path / "p.sig").signature
    path = model / "config.json"
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    again = sign(model, ed_key, actor="t", reuse=previous)
    assert (again.reused_files, again.hashed_files) == (4, 1)
    verify(model, ed_key.public_key())


def test_reuse_rehashes_a_file_whose_size_changed_with_mtime_preserved(
    model: Path, ed_key: PrivateKey, tmp_path: Path
) -> None:
    previous = sign(model, ed_key, actor="t", output=tmp_path / "p.sig").signature
    path = model / "layers" / "bias.bin"
    info = path.stat()
    path.write_bytes(os.urandom(40))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_mtime_ns == info.st_mtime_ns
    again = sign(model, ed_key, actor="t", reuse=previous)
    assert (again.reused_files, again.hashed_files) == (4, 1)
    verify(model, ed_key.public_key())


def test_reuse_rehashes_same_size_same_mtime_content_change(
    model: Path, ed_key: PrivateKey, tmp_path: Path
) -> None:
    """mtime can be set back by the file's owner; ctime cannot, so it catches this."""
    previous = sign(model, ed_key, actor="t", output=tmp_path / "p.sig").signature
    path = model / "config.json"
    info = path.stat()
    path.write_text('{"hidden": 1}')  # same size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    again = sign(model, ed_key, actor="t", reuse=previous)
    assert again.hashed_files == 1
    verify(model, ed_key.public_key())


def test_reuse_new_and_removed_files(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    previous = sign(model, ed_key, actor="t", output=tmp_path / "p.sig").signature
    (model / "config.json").unlink()
    (model / "new.bin").write_bytes(b"new")
    again = sign(model, ed_key, actor="t", reuse=previous)
    assert (again.files, again.reused_files, again.hashed_files) == (5, 4, 1)
    verify(model, ed_key.public_key())


def test_reuse_refuses_another_keys_signature(
    model: Path, ed_key: PrivateKey, tmp_path: Path
) -> None:
    other = generate_key(KeyAlgorithm.ED25519)
    previous = sign(model, other, actor="t", output=tmp_path / "p.sig").signature
    with pytest.raises(SigningError, match=r"refusing to reuse .*signed by a different key"):
        sign(model, ed_key, actor="t", reuse=previous)
    data = json.loads(previous.read_bytes())
    data["verificationMaterial"]["publicKey"] = {}  # no hint: the signature check refuses it
    previous.write_text(json.dumps(data))
    with pytest.raises(SigningError, match=r"refusing to reuse .*does not verify"):
        sign(model, ed_key, actor="t", reuse=previous)


def test_reuse_refuses_other_hashing(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    previous = sign(model, ed_key, actor="t", output=tmp_path / "p.sig").signature
    with pytest.raises(SigningError, match=r"cannot reuse .*shards/sha256"):
        sign(
            model,
            ed_key,
            actor="t",
            reuse=previous,
            options=SignOptions(hash_algorithm=HashAlgorithm.BLAKE3),
        )
    with pytest.raises(SigningError, match="cannot reuse"):
        sign(model, ed_key, actor="t", reuse=tmp_path / "missing.sig")


def test_reuse_refuses_a_signature_without_file_times(
    model: Path, ec_key: PrivateKey, tmp_path: Path
) -> None:
    import model_signing

    private, _ = write_keypair(tmp_path / "ec", ec_key)
    previous = tmp_path / "ms.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        model_signing.hashing.Config().use_file_serialization()
    ).sign(model, previous)
    with pytest.raises(SigningError, match="records no file sizes and times"):
        sign(
            model,
            ec_key,
            actor="t",
            reuse=previous,
            options=SignOptions(method=SerializationMethod.FILES),
        )


# -- model-signing verifies what bastion signs ------------------------------------------------


@pytest.mark.parametrize("label", sorted(OPTIONS))
def test_model_signing_verifies_bastion_signatures(
    model: Path, ec_key: PrivateKey, tmp_path: Path, label: str
) -> None:
    import model_signing

    _, public = write_keypair(tmp_path / "ec", ec_key)
    (model / ".gitignore").write_text("*.tmp\n")  # model-signing always leaves git files out
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public)
    for target in (model, model / "config.json"):
        signature = sign(
            target,
            ec_key,
            options=OPTIONS[label],
            actor="t",
            training_data=[model / "config.json"],
            parameters=[("lr", "0.1")],
        ).signature
        verifier.verify(target, signature)
    (model / "config.json.sig").unlink()
    verifier.verify(model, model.with_name("model.sig"))
    (model / "config.json").write_text("tampered")
    with pytest.raises(ValueError, match=r"Signature mismatch: .*config.json"):
        verifier.verify(model, model.with_name("model.sig"))


def test_root_digest_is_model_signings(model: Path, ec_key: PrivateKey, tmp_path: Path) -> None:
    import model_signing

    for options, hashing in [
        (SignOptions(method=SerializationMethod.FILES), model_signing.hashing.Config()),
        (
            SignOptions(shard_bytes=100),
            model_signing.hashing.Config().use_shard_serialization(shard_size=100),
        ),
    ]:
        ours = sign(model, ec_key, options=options, actor="t")
        manifest = hashing.hash(model)
        theirs = model_signing._signing.signing.Payload(manifest).statement.pb
        assert theirs.subject[0].digest["sha256"] == ours.subject_digest
