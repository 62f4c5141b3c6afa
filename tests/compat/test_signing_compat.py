"""Signatures of bastion's first released format (and model-signing 1.1.1's) still verify.

The files beside this test were made once by ``generate_signing_v1.py`` and are never
regenerated; see its docstring.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.artifacts.verification import verify
from bastion.core.keys import load_public_key
from bastion.errors import SignatureError

HERE = Path(__file__).parent / "signing_v1"

CASES = [
    ("model", "model.ed25519-sha256-shards.sig", "ed25519.pub", "shards", "sha256"),
    ("model", "model.ecdsa-p256-sha256-files.sig", "ecdsa-p256.pub", "files", "sha256"),
    ("model", "model.ed25519-blake3-files.sig", "ed25519.pub", "files", "blake3"),
    (
        "model/weights.bin",
        "weights.bin.ecdsa-p256-sha256-shards.sig",
        "ecdsa-p256.pub",
        "shards",
        "sha256",
    ),
    ("model", "model.model-signing-1.1.1.sig", "ecdsa-p256.pub", "files", "sha256"),
]


@pytest.mark.parametrize(("model", "signature", "key", "method", "hash_type"), CASES)
def test_kept_signatures_verify(
    model: str, signature: str, key: str, method: str, hash_type: str
) -> None:
    verified = verify(HERE / model, load_public_key(HERE / key), HERE / signature)
    statement = verified.statement
    assert statement.serialization.method.value == method
    assert statement.serialization.hash_type.value == hash_type
    if "model-signing" in signature:
        assert statement.provenance is None
        return
    provenance = statement.provenance
    assert provenance is not None
    assert provenance.actor == "compat-generator"
    assert provenance.signed_at == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert provenance.code_revision == "0123456789abcdef0123456789abcdef01234567"
    assert provenance.parameters == (("epochs", "3"), ("lr", "0.01"))
    assert [d.path for d in provenance.training_data] == ["model/config.json"]


@pytest.mark.parametrize(("model", "signature", "key", "method", "hash_type"), CASES)
def test_kept_signatures_still_catch_tampering(
    tmp_path: Path, model: str, signature: str, key: str, method: str, hash_type: str
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(HERE / "model", copy)
    target = tmp_path / model
    (copy / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(SignatureError) as caught:
        verify(target, load_public_key(HERE / key), HERE / signature)
    assert any("weights.bin" in p or "(the file)" in p for p in caught.value.problems)


@pytest.mark.parametrize("signature", [c[1] for c in CASES if c[2] == "ecdsa-p256.pub"])
def test_model_signing_verifies_the_kept_ecdsa_signatures(signature: str) -> None:
    import model_signing

    target = HERE / ("model/weights.bin" if signature.startswith("weights") else "model")
    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=HERE / "ecdsa-p256.pub"
    ).verify(target, HERE / signature)
