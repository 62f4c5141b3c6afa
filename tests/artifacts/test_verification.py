"""Verification: every tamper case names its file; hostile bundles never reach outside files."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bastion.artifacts.bundle import encode_bundle
from bastion.artifacts.manifest import SerializationMethod
from bastion.artifacts.signing import SignOptions, sign
from bastion.artifacts.verification import verify
from bastion.core.keys import KeyAlgorithm, PrivateKey, generate_key, write_keypair
from bastion.errors import BastionError, SignatureError

SMALL_SHARDS = SignOptions(shard_bytes=4)


@pytest.fixture(scope="module")
def ed_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ED25519)


@pytest.fixture(scope="module")
def ec_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ECDSA_P256)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "sub" / "tokenizer.txt").write_text("a b c\n")
    (folder / "sub" / "deeper" / "extra.bin").write_bytes(b"\x00\x01")
    (folder / "empty").write_bytes(b"")
    return folder


def signed(model: Path, key: PrivateKey, options: SignOptions = SMALL_SHARDS) -> Path:
    return sign(model, key, options=options, actor="tester").signature


def problems_of(model: Path, key: PrivateKey, signature: Path | None = None) -> list[str]:
    with pytest.raises(SignatureError) as caught:
        verify(model, key.public_key(), signature)
    return list(caught.value.problems)


def test_untouched_model_verifies(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    verified = verify(model, ed_key.public_key())
    assert verified.signature == signature
    assert verified.files == 5
    assert verified.bytes == model.joinpath("weights.bin").stat().st_size + 13 + 6 + 2


def test_modified_same_size(model: Path, ed_key: PrivateKey) -> None:
    signed(model, ed_key)
    data = bytearray((model / "weights.bin").read_bytes())
    data[500] ^= 1
    (model / "weights.bin").write_bytes(bytes(data))
    assert problems_of(model, ed_key) == ["modified: weights.bin"]


def test_modified_size(model: Path, ed_key: PrivateKey) -> None:
    signed(model, ed_key)
    (model / "sub" / "tokenizer.txt").write_text("a b c d\n")
    assert problems_of(model, ed_key) == ["modified: sub/tokenizer.txt (8 bytes, signed 6)"]


@pytest.mark.parametrize("options", [SMALL_SHARDS, SignOptions(method=SerializationMethod.FILES)])
def test_added_removed_renamed_in_one_report(
    model: Path, ed_key: PrivateKey, options: SignOptions
) -> None:
    signed(model, ed_key, options)
    (model / "sub" / "tokenizer.txt").rename(model / "sub" / "vocab.txt")
    (model / "config.json").unlink()
    (model / "sub" / "deeper" / "payload.py").write_text("import os")
    (model / "empty").write_bytes(b"x")
    assert problems_of(model, ed_key) == [
        "removed: config.json",
        "modified: empty (1 bytes, signed 0)",
        "added: sub/deeper/payload.py",
        "renamed: sub/tokenizer.txt -> sub/vocab.txt",
    ]


def test_added_empty_file_is_caught(model: Path, ed_key: PrivateKey) -> None:
    signed(model, ed_key)  # shards: empty files have no shard; the file list covers them
    (model / "sub" / "__init__.py").write_bytes(b"")
    assert problems_of(model, ed_key) == ["added: sub/__init__.py"]
    (model / "sub" / "__init__.py").unlink()
    (model / "empty").unlink()
    assert problems_of(model, ed_key) == ["removed: empty"]


def test_swapped_signature(model: Path, ed_key: PrivateKey, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"layers": 3}')
    other_signature = signed(other, ed_key)
    signed(model, ed_key)
    problems = problems_of(model, ed_key, other_signature)
    assert "modified: config.json" in problems
    assert "added: weights.bin" in problems


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_wrong_key(model: Path, ed_key: PrivateKey, algorithm: KeyAlgorithm) -> None:
    signature = signed(model, ed_key)
    other = generate_key(algorithm)
    with pytest.raises(SignatureError, match="signed by a different key"):
        verify(model, other.public_key(), signature)


def test_other_algorithm_key_with_hint_removed(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    document = json.loads(signature.read_bytes())
    document["verificationMaterial"]["publicKey"] = {}
    signature.write_text(json.dumps(document))
    with pytest.raises(SignatureError, match="does not verify"):
        verify(model, generate_key(KeyAlgorithm.ECDSA_P256).public_key(), signature)
    verify(model, ed_key.public_key(), signature)


def test_corrupted_base64(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    document = json.loads(signature.read_bytes())
    document["dsseEnvelope"]["payload"] = "!" + document["dsseEnvelope"]["payload"][1:]
    signature.write_text(json.dumps(document))
    with pytest.raises(SignatureError, match="not valid base64"):
        verify(model, ed_key.public_key())


def test_flipped_payload_byte(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    document = json.loads(signature.read_bytes())
    payload = bytearray(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload[payload.index(b"tester")] ^= 0x20  # 'tester' -> 'Tester'
    document["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    signature.write_text(json.dumps(document))
    with pytest.raises(SignatureError, match="does not verify"):
        verify(model, ed_key.public_key())


def test_truncated_json(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    signature.write_bytes(signature.read_bytes()[:-10])
    with pytest.raises(SignatureError, match="not a valid bundle"):
        verify(model, ed_key.public_key())


def test_huge_bundle_is_refused_without_reading_it(model: Path, ed_key: PrivateKey) -> None:
    signature = model.with_name("model.sig")
    with signature.open("wb") as handle:
        handle.truncate(100 * 2**20)  # 100 MB, sparse
    reads: list[int] = []
    real_open = io.open

    class Counting:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            data: bytes = self.handle.read(size)
            return data

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        return Counting(handle) if Path(str(file)) == signature else handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "open", counting_open)
        with pytest.raises(SignatureError, match="larger than 16777216 bytes"):
            verify(model, ed_key.public_key())
    assert reads == [16 * 2**20 + 1]


def test_deeply_nested_bundle(model: Path, ed_key: PrivateKey) -> None:
    model.with_name("model.sig").write_bytes(b'{"mediaType":' + b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(SignatureError, match="not a valid bundle"):
        verify(model, ed_key.public_key())


def test_missing_signature_or_model_could_not_run(model: Path, ed_key: PrivateKey) -> None:
    with pytest.raises(BastionError, match="cannot read signature") as caught:
        verify(model, ed_key.public_key())
    assert caught.value.exit_code == 2
    signature = signed(model, ed_key)
    with pytest.raises(BastionError, match="cannot read") as caught:
        verify(model.with_name("gone"), ed_key.public_key(), signature)
    assert caught.value.exit_code == 2


def test_single_file_and_folder_are_not_interchangeable(model: Path, ed_key: PrivateKey) -> None:
    file_signature = signed(model / "weights.bin", ed_key)
    with pytest.raises(SignatureError, match=r"for a single file but .* is a folder"):
        verify(model, ed_key.public_key(), file_signature)
    folder_signature = signed(model, ed_key)
    with pytest.raises(SignatureError, match=r"for a folder but .* is a file"):
        verify(model / "weights.bin", ed_key.public_key(), folder_signature)


def test_fifo_in_model_is_refused_not_opened(model: Path, ed_key: PrivateKey) -> None:
    signed(model, ed_key)
    os.mkfifo(model / "pipe")  # opening it for reading would block forever
    assert problems_of(model, ed_key) == ["not a regular file: pipe"]


# -- validly signed, hostile statements: the outside file is never opened ----------------------


def craft(key: PrivateKey, items: list[tuple[str, bytes]], *, model_name: str = "model") -> bytes:
    """A signature, valid under ``key``, that lists whatever names and digests it is given."""
    hasher = hashlib.sha256()
    for _, digest in items:
        hasher.update(digest)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": model_name, "digest": {"sha256": hasher.hexdigest()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": True},
            "resources": [
                {"name": name, "algorithm": "sha256", "digest": digest.hex()}
                for name, digest in items
            ],
        },
    }
    return encode_bundle(json.dumps(statement).encode(), key)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"secret")
    return folder


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file this process opens during the test, resolved through /proc/self/fd."""
    paths: list[str] = []
    real_os_open = os.open
    real_io_open = io.open

    def record(fd: int) -> None:
        paths.append(str(Path(f"/proc/self/fd/{fd}").readlink()))

    def os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_os_open(path, flags, mode, dir_fd=dir_fd)
        record(fd)
        return fd

    def io_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        handle = real_io_open(file, *args, **kwargs)
        if isinstance(file, str | os.PathLike):
            record(handle.fileno())
        return handle

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    return paths


def assert_never_opened(opened: list[str], outside: Path) -> None:
    assert opened, "the recorder saw nothing: it is not wired in"
    assert not [p for p in opened if p.startswith(str(outside))]


SECRET = hashlib.sha256(b"secret").digest()


@pytest.mark.parametrize(
    "name",
    ["../outside/secret", "sub/../../outside/secret", "/OUTSIDE/secret", "..\\outside\\secret"],
)
def test_names_outside_the_folder_fail_and_are_never_opened(
    tmp_path: Path, ed_key: PrivateKey, outside: Path, opened: list[str], name: str
) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "ok").write_bytes(b"ok")
    signature = tmp_path / "model.sig"
    name = name.replace("/OUTSIDE", str(outside))
    signature.write_bytes(craft(ed_key, [("ok", hashlib.sha256(b"ok").digest()), (name, SECRET)]))
    with pytest.raises(SignatureError) as caught:
        verify(model, ed_key.public_key(), signature)
    assert "refusing a path outside the model" in " ".join(caught.value.problems)
    assert_never_opened(opened, outside)


def test_symlink_escape_fails_and_is_never_opened(
    tmp_path: Path, ed_key: PrivateKey, outside: Path, opened: list[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").symlink_to(outside / "secret")
    (model / "data").symlink_to(outside)
    signature = tmp_path / "model.sig"
    signature.write_bytes(craft(ed_key, [("data/secret", SECRET), ("weights", SECRET)]))
    with pytest.raises(SignatureError) as caught:
        verify(model, ed_key.public_key(), signature)
    assert caught.value.problems == (
        "symlink refused: data",
        "symlink refused: weights",
        "removed: data/secret",
        "removed: weights",
    )
    assert_never_opened(opened, outside)


def test_outside_fifo_through_a_link_is_never_opened(
    tmp_path: Path, ed_key: PrivateKey, opened: list[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "pipe")  # a blocking open would hang the test
    model = tmp_path / "model"
    model.mkdir()
    (model / "pipe").symlink_to(outside / "pipe")
    signature = tmp_path / "model.sig"
    signature.write_bytes(craft(ed_key, [("pipe", SECRET)]))
    with pytest.raises(SignatureError) as caught:
        verify(model, ed_key.public_key(), signature)
    assert caught.value.problems == ("symlink refused: pipe", "removed: pipe")
    assert_never_opened(opened, outside)


def test_model_root_may_be_a_link_but_nothing_inside(model: Path, ed_key: PrivateKey) -> None:
    signature = signed(model, ed_key)
    link = model.with_name("latest")
    link.symlink_to(model)
    verify(link, ed_key.public_key(), signature)


# -- model-signing signs, bastion verifies ----------------------------------------------------


@pytest.fixture
def ec_key_files(tmp_path: Path, ec_key: PrivateKey) -> tuple[Path, Path]:
    return write_keypair(tmp_path / "ec", ec_key)


def ms_sign(model: Path, private: Path, signature: Path, hashing: Any = None) -> None:
    import model_signing

    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
    if hashing is not None:
        config.set_hashing_config(hashing)
    config.sign(model, signature)


def test_model_signing_signatures_verify_here(
    model: Path, ec_key: PrivateKey, ec_key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    import model_signing

    private, _ = ec_key_files
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")  # left out by both tools
    (model / "empty").unlink()  # model-signing's shards do not record empty files
    configs = {
        "files-sha256": None,
        "shards-sha256": model_signing.hashing.Config().use_shard_serialization(shard_size=64),
        "files-blake3": model_signing.hashing.Config().use_file_serialization(
            hashing_algorithm="blake3"
        ),
    }
    for label, hashing in configs.items():
        for target in (model, model / "weights.bin"):
            signature = tmp_path / f"{label}-{target.name}.sig"
            ms_sign(target, private, signature, hashing)
            verified = verify(target, ec_key.public_key(), signature)
            assert verified.statement.provenance is None
            assert verified.statement.files is None
    signature = tmp_path / "files-sha256-model.sig"
    (model / "sub" / "tokenizer.txt").write_text("tampered")
    (model / "added.bin").write_bytes(b"x")
    assert problems_of(model, ec_key, signature) == [
        "added: added.bin",
        "modified: sub/tokenizer.txt",
    ]


def test_model_signing_shards_do_not_cover_empty_files(
    model: Path, ec_key: PrivateKey, ec_key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    import model_signing

    signature = tmp_path / "ms.sig"
    hashing = model_signing.hashing.Config().use_shard_serialization(shard_size=64)
    ms_sign(model, ec_key_files[0], signature, hashing)
    assert problems_of(model, ec_key, signature) == [
        "added: empty (empty: model-signing's shard serialization does not record empty files)"
    ]
