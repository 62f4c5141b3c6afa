"""Signing keys: generation, storage and raw signatures (stable API).

Ed25519 is the default; ECDSA over P-256 with SHA-256 is offered for interoperability
(OpenSSF model-signing, Sigstore). Private keys are PKCS#8 PEM files written with mode 0600,
optionally encrypted with a passphrase; public keys are SubjectPublicKeyInfo PEM files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.errors import KeyMaterialError, SignatureError

__all__ = [
    "KeyAlgorithm",
    "PrivateKey",
    "PublicKey",
    "algorithm_of",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_pem",
    "sign_bytes",
    "verify_bytes",
    "write_keypair",
]

logger = logging.getLogger(__name__)

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

#: Largest key file bastion reads; real PEM keys are a few hundred bytes.
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyAlgorithm(StrEnum):
    """Signature algorithms bastion produces and accepts."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"


def generate_key(algorithm: KeyAlgorithm = KeyAlgorithm.ED25519) -> PrivateKey:
    """Return a new private key of ``algorithm``."""
    if algorithm is KeyAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def algorithm_of(key: PrivateKey | PublicKey) -> KeyAlgorithm:
    """Return the algorithm of a key, refusing curves other than P-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    if isinstance(key.curve, ec.SECP256R1):
        return KeyAlgorithm.ECDSA_P256
    raise KeyMaterialError(f"unsupported elliptic curve {key.curve.name}: use P-256 or Ed25519")


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """Return the SubjectPublicKeyInfo PEM of a key (of its public half for a private key)."""
    public = (
        key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        else key
    )
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PrivateKey | PublicKey) -> str:
    """Return a stable identifier of a key: SHA-256 over its DER SubjectPublicKeyInfo, hex."""
    public = (
        key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        else key
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def write_keypair(
    prefix: Path, key: PrivateKey, passphrase: bytes | None = None, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600, created so, never widened) and ``PREFIX.pub``.

    Raises:
        KeyMaterialError: a file exists and ``overwrite`` is false, or it cannot be written.
    """
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    # O_NOFOLLOW: --force must not truncate whatever a planted link points at.
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_NOFOLLOW
        | os.O_CLOEXEC
        | (os.O_TRUNC if overwrite else os.O_EXCL)
    )
    try:
        fd = os.open(private_path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyMaterialError(f"{private_path} exists: refusing to overwrite a key") from exc
    except OSError as exc:
        raise KeyMaterialError(f"cannot write {private_path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    try:
        public_fd = os.open(
            public_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        with os.fdopen(public_fd, "wb") as handle:
            handle.write(public_pem(key))
    except OSError as exc:
        raise KeyMaterialError(f"cannot write {public_path}: {exc.strerror}") from exc
    return private_path, public_path


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyMaterialError(f"cannot read key {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyMaterialError(f"{path} is too large to be a key file")
    return data


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key, decrypting it with ``passphrase`` when it is encrypted.

    Raises:
        KeyMaterialError: unreadable, not a key, wrong or missing passphrase, or an
            unsupported algorithm.
    """
    data = _read_key_file(path)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        logger.warning("private key %s is readable by group or others", path)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        if passphrase:
            raise KeyMaterialError(f"{path} is not encrypted but a passphrase was given") from exc
        raise KeyMaterialError(
            f"{path} is encrypted: set BASTION_KEY_PASSPHRASE to its passphrase"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(
            f"{path} is not a readable private key (or the passphrase is wrong)"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(f"{path}: only Ed25519 and ECDSA P-256 keys are supported")
    algorithm_of(key)
    return key


def load_public_key(path: Path) -> PublicKey:
    """Load a PEM public key (SubjectPublicKeyInfo).

    Raises:
        KeyMaterialError: unreadable, not a public key, or an unsupported algorithm.
    """
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"{path} is not a readable public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise KeyMaterialError(f"{path}: only Ed25519 and ECDSA P-256 keys are supported")
    algorithm_of(key)
    return key


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data``: raw Ed25519, or DER-encoded ECDSA over SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, data: bytes, signature: bytes) -> None:
    """Verify a signature made by :func:`sign_bytes`.

    Raises:
        SignatureError: the signature does not verify under ``key``.
    """
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify with the given key") from exc
