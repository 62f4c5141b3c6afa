"""Generate the signing compatibility files of bastion's first signature format (run once).

Writes ``tests/compat/signing_v1/``: a small model folder, the public keys, and signatures of it
made by this release of bastion (Ed25519 with SHA-256 shards, ECDSA P-256 with SHA-256 whole
files, Ed25519 with BLAKE3) and by OpenSSF model-signing 1.1.1 (ECDSA P-256). The private keys
are thrown away. ``test_signing_compat.py`` verifies every signature with the current code, so
a change that breaks signatures people already hold fails the suite. Never regenerate these
files to make that test pass: add a ``signing_v2`` beside them instead.

    .venv/bin/python tests/compat/generate_signing_v1.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from bastion.artifacts.manifest import SerializationMethod
from bastion.artifacts.signing import SignOptions, sign
from bastion.core.digests import HashAlgorithm
from bastion.core.keys import KeyAlgorithm, generate_key, public_pem, write_keypair

HERE = Path(__file__).parent / "signing_v1"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def build_model(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    weights = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100))
    (folder / "weights.bin").write_bytes(weights)  # 3200 bytes: 4 shards of 1024
    (folder / "config.json").write_text('{"architecture": "mlp", "hidden": 16}\n')
    (folder / "sub" / "vocab-ü.txt").write_text("hello\nworld\n", encoding="utf-8")
    (folder / "empty.txt").write_bytes(b"")


def main() -> None:
    if HERE.exists():
        shutil.rmtree(HERE)
    HERE.mkdir()
    os.chdir(HERE)
    model = HERE / "model"
    build_model(model)
    ed = generate_key(KeyAlgorithm.ED25519)
    ec = generate_key(KeyAlgorithm.ECDSA_P256)
    (HERE / "ed25519.pub").write_bytes(public_pem(ed))
    (HERE / "ecdsa-p256.pub").write_bytes(public_pem(ec))
    common = {
        "actor": "compat-generator",
        "code_revision": "0123456789abcdef0123456789abcdef01234567",
        "parameters": [("epochs", "3"), ("lr", "0.01")],
        "training_data": [Path("model/config.json")],  # recorded as given: relative
        "now": NOW,
    }
    sign(
        model,
        ed,
        output=HERE / "model.ed25519-sha256-shards.sig",
        options=SignOptions(shard_bytes=1024),
        **common,  # type: ignore[arg-type]
    )
    sign(
        model,
        ec,
        output=HERE / "model.ecdsa-p256-sha256-files.sig",
        options=SignOptions(method=SerializationMethod.FILES),
        **common,  # type: ignore[arg-type]
    )
    sign(
        model,
        ed,
        output=HERE / "model.ed25519-blake3-files.sig",
        options=SignOptions(hash_algorithm=HashAlgorithm.BLAKE3),
        **common,  # type: ignore[arg-type]
    )
    sign(
        model / "weights.bin",
        ec,
        output=HERE / "weights.bin.ecdsa-p256-sha256-shards.sig",
        options=SignOptions(shard_bytes=1024),
        **common,  # type: ignore[arg-type]
    )

    import model_signing

    private, _ = write_keypair(HERE / "throwaway", ec)
    try:
        model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
            model, HERE / "model.model-signing-1.1.1.sig"
        )
    finally:
        private.unlink()
        (HERE / "throwaway.pub").unlink()


if __name__ == "__main__":
    main()
