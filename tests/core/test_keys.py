"""Key generation, storage with 0600 and passphrases, raw signatures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bastion.core.keys import (
    KeyAlgorithm,
    algorithm_of,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    sign_bytes,
    verify_bytes,
    write_keypair,
)
from bastion.errors import KeyMaterialError, SignatureError


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_round_trip_sign_and_verify(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    key = generate_key(algorithm)
    private_path, public_path = write_keypair(tmp_path / "k", key)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    loaded = load_private_key(private_path)
    public = load_public_key(public_path)
    assert algorithm_of(loaded) is algorithm
    assert key_id(loaded) == key_id(public) == key_id(key)
    signature = sign_bytes(loaded, b"message")
    verify_bytes(public, b"message", signature)
    with pytest.raises(SignatureError):
        verify_bytes(public, b"messagE", signature)


def test_passphrase_encrypts_and_is_required(tmp_path: Path) -> None:
    private_path, _ = write_keypair(tmp_path / "k", generate_key(), b"s3cret")
    assert b"ENCRYPTED" in private_path.read_bytes()
    load_private_key(private_path, b"s3cret")
    with pytest.raises(KeyMaterialError, match="BASTION_KEY_PASSPHRASE"):
        load_private_key(private_path)
    with pytest.raises(KeyMaterialError, match="passphrase is wrong"):
        load_private_key(private_path, b"wrong")


def test_passphrase_given_for_plain_key(tmp_path: Path) -> None:
    private_path, _ = write_keypair(tmp_path / "k", generate_key())
    with pytest.raises(KeyMaterialError, match="not encrypted"):
        load_private_key(private_path, b"unneeded")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_keypair(tmp_path / "k", generate_key())
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(KeyMaterialError, match="refusing to overwrite"):
        write_keypair(tmp_path / "k", generate_key())
    assert (tmp_path / "k.key").read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_malformed_private_key(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError):
        load_private_key(path)


def test_oversized_key_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.pub"
    path.write_bytes(b"A" * (1024 * 1024))
    with pytest.raises(KeyMaterialError, match="too large"):
        load_public_key(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="cannot read"):
        load_public_key(tmp_path / "absent.pub")


def test_public_key_given_as_private(tmp_path: Path) -> None:
    _, public_path = write_keypair(tmp_path / "k", generate_key())
    with pytest.raises(KeyMaterialError):
        load_private_key(public_path)


def test_unsupported_algorithms_refused(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pub"
    path.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyMaterialError, match="only Ed25519 and ECDSA P-256"):
        load_public_key(path)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    path.write_bytes(
        p384.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyMaterialError, match="P-256"):
        load_public_key(path)
