"""The registry: separation of duties end to end, every refusal, verified pulls, audit trail.

The team (tests/registry/conftest.py): alice (data-scientist), bob and carol (ml-engineers),
dave (sre), erin (admin), frank (client); each holds a key made by the workspace's key store.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from bastion.artifacts.loading import load_model
from bastion.artifacts.signing import sign
from bastion.artifacts.verification import verify
from bastion.core.keys import generate_key, key_id
from bastion.core.principals import KeyStore, Principal, Role
from bastion.core.registry_schema import registry_versions
from bastion.core.workspace import Workspace, init_workspace
from bastion.errors import (
    AuditError,
    AuthorizationError,
    RegistryError,
    SignatureError,
    VerificationError,
)
from bastion.registry import ModelVersion, Registry, Stage

SignedModel = Callable[..., Path]


def registry_events(workspace: Workspace) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (e.action, e.actor, dict(e.details)) for e in workspace.audit().events(action="registry.*")
    ]


def actions(workspace: Workspace) -> list[str]:
    return [a for a, _, _ in registry_events(workspace)]


def to_production(
    registry: Registry, team: dict[str, Principal], name: str, version: str, approver: str = "bob"
) -> ModelVersion:
    registry.promote(name, version, to=Stage.STAGING, principal=team["bob"])
    registry.approve(name, version, principal=team[approver], comment="looks good")
    return registry.promote(name, version, to=Stage.PRODUCTION, principal=team["dave"])


def stored_blobs(workspace: Workspace) -> list[Path]:
    folder = workspace.store_path / "sha256"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# -- the whole flow --------------------------------------------------------------------------


def test_separation_of_duties_from_registration_to_production(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    alice, bob, dave = team["alice"], team["bob"], team["dave"]
    v1 = registry.add("digits", signed_model("v1"), principal=alice)
    assert (v1.version, v1.stage, v1.format) == ("1", Stage.REGISTERED, "safetensors")
    assert v1.registered_by == alice.actor
    assert v1.signer_key_id == key_id(workspace.public_key())
    assert [f.path for f in v1.files] == ["config.json", "model.safetensors"]
    assert registry.production() == []

    # The data scientist can neither promote nor approve; the SRE cannot approve.
    with pytest.raises(AuthorizationError, match=r"does not have permission model\.promote"):
        registry.promote("digits", "1", to="staging", principal=alice)
    with pytest.raises(AuthorizationError, match=r"model\.approve"):
        registry.approve("digits", "1", principal=alice)
    with pytest.raises(AuthorizationError, match=r"model\.approve"):
        registry.approve("digits", "1", principal=dave)

    registry.promote("digits", "1", to="staging", principal=bob)
    with pytest.raises(RegistryError, match="needs an approval"):
        registry.promote("digits", "1", to="production", principal=dave)
    with pytest.raises(AuthorizationError, match=r"model\.promote\.production"):
        registry.promote("digits", "1", to="production", principal=bob)
    approved = registry.approve("digits", "1", principal=bob, comment="metrics reviewed")
    assert [(a.approver, a.role, a.comment) for a in approved.approvals] == [
        (bob.actor, "ml-engineer", "metrics reviewed")
    ]
    with pytest.raises(RegistryError, match="already approved"):
        registry.approve("digits", "1", principal=bob)
    live = registry.promote("digits", "1", to="production", principal=dave)
    assert live.stage is Stage.PRODUCTION
    assert live.stage_changed_by == dave.actor
    assert [v.version for v in registry.production()] == ["1"]

    # Version 2 replaces it: version 1 is archived in the same transaction.
    v2 = registry.add("digits", signed_model("v2", seed=1), principal=alice)
    assert v2.version == "2"
    assert v2.digest != v1.digest
    to_production(registry, team, "digits", "2", approver="carol")
    assert [(v.version, v.stage) for v in registry.list("digits")] == [
        ("1", Stage.ARCHIVED),
        ("2", Stage.PRODUCTION),
    ]
    assert [v.version for v in registry.production()] == ["2"]
    assert registry.show("digits", "latest").version == "2"

    assert actions(workspace) == [
        "registry.add",
        "registry.promote.refused",
        "registry.approve.refused",
        "registry.approve.refused",
        "registry.promote",
        "registry.promote.refused",
        "registry.promote.refused",
        "registry.approve",
        "registry.approve.refused",
        "registry.promote",
        "registry.add",
        "registry.promote",
        "registry.approve",
        "registry.promote",
        "registry.archive",
    ]
    events = registry_events(workspace)
    assert events[0][1] == alice.actor
    assert events[0][2]["version"] == "1"
    assert events[0][2]["digest"] == v1.digest
    assert events[1][1] == alice.actor
    assert "role lacks model.promote.staging" in events[1][2]["reason"]
    assert events[-2][2] == {"version": "2", "from": "staging", "to": "production"}
    assert events[-1][1] == dave.actor
    assert events[-1][2] == {"version": "1", "from": "production", "replaced_by": "2"}
    workspace.audit().verify()


def test_the_gateway_path_checkout_then_load(
    registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    registry.add("digits", signed_model(), principal=team["alice"])
    to_production(registry, team, "digits", "1")
    (live,) = registry.production()
    folder = registry.checkout(live.name, live.version)
    model = load_model(folder, allow_pickle=live.allow_pickle)
    scores = model.predict(np.zeros((3, 64)))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert registry.checkout("digits", "1") == folder  # the cache is reused, re-verified
    assert registry.production_versions() == registry.production()


# -- separation of duties --------------------------------------------------------------------


def test_self_approval_is_refused_by_key_name_and_by_key_id(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    bob = team["bob"]
    registry.add("digits", signed_model(), principal=bob)  # an ml-engineer may register
    with pytest.raises(AuthorizationError, match="someone else must approve"):
        registry.approve("digits", "1", principal=bob)
    # A new key under the same name (the old one revoked) is still bob.
    keys = KeyStore(workspace.database, workspace.audit())
    keys.revoke("bob", actor="operator")
    new_bob = keys.create("bob", Role.ML_ENGINEER, actor="operator").key.principal()
    assert new_bob.key_id != bob.key_id
    with pytest.raises(AuthorizationError, match="someone else must approve"):
        registry.approve("digits", "1", principal=new_bob)
    # The same key under another name (a rotated or renamed key keeps its id) is still bob.
    renamed = Principal(key_id=bob.key_id, name="robert", role=Role.ML_ENGINEER)
    with pytest.raises(AuthorizationError, match="someone else must approve"):
        registry.approve("digits", "1", principal=renamed)
    refusals = [d for a, _, d in registry_events(workspace) if a == "registry.approve.refused"]
    assert len(refusals) == 3
    assert all("self-approval" in d["reason"] for d in refusals)
    registry.approve("digits", "1", principal=team["carol"])
    # The registrant cannot put it in production either, whatever role its key claims.
    registry.promote("digits", "1", to="staging", principal=team["carol"])
    registrant_as_sre = Principal(key_id=bob.key_id, name="bob", role=Role.SRE)
    with pytest.raises(AuthorizationError, match="someone else must put it in production"):
        registry.promote("digits", "1", to="production", principal=registrant_as_sre)
    registry.promote("digits", "1", to="production", principal=team["dave"])


def test_stage_transitions(
    registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    registry.add("digits", signed_model(), principal=team["alice"])
    registry.approve("digits", "1", principal=team["bob"])
    with pytest.raises(RegistryError, match="cannot move from registered to production"):
        registry.promote("digits", "1", to="production", principal=team["dave"])
    with pytest.raises(RegistryError, match="cannot be moved back to registered"):
        registry.promote("digits", "1", to="registered", principal=team["dave"])
    with pytest.raises(RegistryError, match="unknown stage"):
        registry.promote("digits", "1", to="live", principal=team["dave"])
    registry.promote("digits", "1", to="staging", principal=team["bob"])
    with pytest.raises(RegistryError, match="already in staging"):
        registry.promote("digits", "1", to="staging", principal=team["dave"])
    with pytest.raises(AuthorizationError, match=r"model\.archive"):
        registry.promote("digits", "1", to="archived", principal=team["bob"])
    archived = registry.promote("digits", "1", to="archived", principal=team["dave"])
    assert archived.stage is Stage.ARCHIVED
    for stage in ("staging", "production"):
        with pytest.raises(RegistryError, match="cannot move from archived"):
            registry.promote("digits", "1", to=stage, principal=team["dave"])
    with pytest.raises(RegistryError, match="archived: it cannot be approved"):
        registry.approve("digits", "1", principal=team["carol"])
    # Archiving the production version leaves the model with none.
    registry.add("digits", signed_model("b", seed=1), principal=team["alice"])
    to_production(registry, team, "digits", "2")
    registry.promote("digits", "2", to="archived", principal=team["dave"])
    assert registry.production() == []


@pytest.mark.parametrize(
    ("who", "step"),
    [
        ("frank", "add"),  # a client calls models, nothing else
        ("erin", "add"),  # an admin manages keys, not models
        ("dave", "add"),  # an SRE deploys, does not register
        ("alice", "staging"),
        ("frank", "approve"),
        ("erin", "approve"),
        ("carol", "production"),
        ("alice", "allow-pickle"),
    ],
)
def test_each_role_is_held_to_its_permissions(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    who: str,
    step: str,
) -> None:
    folder = signed_model()
    if step != "add":
        registry.add("digits", folder, principal=team["bob"])
        registry.promote("digits", "1", to="staging", principal=team["bob"])
        registry.approve("digits", "1", principal=team["carol"])
    principal = team[who]
    steps: dict[str, Callable[[], object]] = {
        "add": lambda: registry.add("digits", folder, principal=principal),
        "staging": lambda: registry.promote("digits", "1", to="staging", principal=principal),
        "approve": lambda: registry.approve("digits", "1", principal=principal),
        "production": lambda: registry.promote("digits", "1", to="production", principal=principal),
        "allow-pickle": lambda: registry.allow_pickle("digits", principal=principal),
    }
    with pytest.raises(AuthorizationError, match="does not have permission"):
        steps[step]()
    last = registry_events(workspace)[-1]
    assert last[0].endswith(".refused")
    assert last[1] == principal.actor


def test_keys_limited_to_other_models_are_refused(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    keys = KeyStore(workspace.database, workspace.audit())
    scoped = keys.create(
        "scoped", Role.ML_ENGINEER, actor="operator", models=["other"]
    ).key.principal()
    folder = signed_model()
    with pytest.raises(AuthorizationError, match="not allowed to use model 'digits'"):
        registry.add("digits", folder, principal=scoped)
    registry.add("digits", folder, principal=team["alice"])
    with pytest.raises(AuthorizationError, match="not allowed to use model 'digits'"):
        registry.approve("digits", "1", principal=scoped)
    with pytest.raises(AuthorizationError, match="not allowed"):
        registry.pull("digits", "1", Path("out"), principal=scoped)
    registry.add("other", folder, principal=scoped)
    assert [v.name for v in registry.list()] == ["digits", "other"]
    reasons = [d["reason"] for a, _, d in registry_events(workspace) if a.endswith(".refused")]
    assert reasons == [f"{scoped.actor}: model 'digits' out of scope"] * 3


# -- what may enter ----------------------------------------------------------------------------


def test_an_unsigned_model_is_refused_and_nothing_is_stored(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    folder = signed_model()
    folder.with_name(folder.name + ".sig").unlink()
    with pytest.raises(SignatureError, match="no readable signature"):
        registry.add("digits", folder, principal=team["alice"])
    assert stored_blobs(workspace) == []
    with pytest.raises(RegistryError, match="no model named 'digits'"):
        registry.list("digits")
    assert actions(workspace) == ["registry.add.refused"]


def test_a_signed_malicious_pickle_is_refused_by_the_scan(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], tmp_path: Path
) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    # os.system("id") as GLOBAL + REDUCE: the scanner's first rule (never loaded here).
    (folder / "model.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.")
    sign(folder, workspace.signing_key(), actor="attacker")
    with pytest.raises(VerificationError, match="did not pass the scan") as caught:
        registry.add("digits", folder, principal=team["alice"])
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert problem.startswith(str(folder / "model.pkl"))  # the source, not a staging path
    assert "os.system" in problem or "posix.system" in problem
    assert stored_blobs(workspace) == []
    (event,) = registry_events(workspace)
    assert event[0] == "registry.add.refused"
    assert event[2]["error"] == "VerificationError"
    assert event[2]["problems"] == list(caught.value.problems)


def test_a_model_changed_after_signing_or_signed_by_another_key_is_refused(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    tmp_path: Path,
) -> None:
    folder = signed_model()
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    with pytest.raises(SignatureError, match="does not match its signature") as caught:
        registry.add("digits", folder, principal=team["alice"])
    (problem,) = caught.value.problems
    assert problem.startswith("modified: config.json")
    other = generate_key()
    stranger = signed_model("stranger", key=other)
    with pytest.raises(SignatureError, match="different key"):
        registry.add("digits", stranger, principal=team["alice"])
    assert stored_blobs(workspace) == []
    # With that key named explicitly it verifies; the key is kept for re-verification.
    version = registry.add(
        "digits", stranger, principal=team["alice"], public_key=other.public_key()
    )
    assert version.signer_key_id == key_id(other)
    assert (workspace.store_path / "keys" / f"{key_id(other)}.pub").is_file()
    registry.pull("digits", "1", tmp_path / "out")
    verify(tmp_path / "out" / "digits", other.public_key())


def test_a_bundle_elsewhere_and_a_single_file_model(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], tmp_path: Path
) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    weight = np.eye(4, 3, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    save(model, str(path))
    bundle = tmp_path / "signatures" / "tiny.bundle"
    bundle.parent.mkdir()
    sign(path, workspace.signing_key(), actor="trainer", output=bundle)
    version = registry.add("tiny", path, principal=team["alice"], bundle=bundle)
    assert version.format == "onnx"
    assert [f.path for f in version.files] == ["tiny.onnx"]
    pulled = registry.pull("tiny", "1", tmp_path / "out")
    assert pulled == tmp_path / "out" / "tiny.onnx"
    verify(pulled, workspace.public_key())  # its signature is written beside it
    loaded = load_model(registry.checkout("tiny", "1"))
    assert loaded.platform == "onnxruntime"
    np.testing.assert_allclose(loaded.predict(np.eye(4)[:3]).sum(axis=1), 1.0, rtol=1e-6)


def test_a_folder_with_no_loadable_model_is_refused(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("weights to follow")
    sign(folder, workspace.signing_key(), actor="trainer")
    with pytest.raises(RegistryError, match="no model file"):
        registry.add("digits", folder, principal=team["alice"])
    assert stored_blobs(workspace) == []


@pytest.mark.parametrize(
    "name",
    ["../digits", "a/b", "..", ".hidden", "Digits", "a" * 101, "a\x00b", "x\u202ey", "", 7],
)
def test_hostile_model_names_are_refused(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    name: Any,
) -> None:
    folder = signed_model()
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.add(name, folder, principal=team["alice"])
    (event,) = registry_events(workspace)
    assert event[0] == "registry.add.refused"
    assert "\x00" not in json.dumps(event)
    assert "\u202e" not in json.dumps(event, ensure_ascii=False)
    assert stored_blobs(workspace) == []
    with pytest.raises(RegistryError):
        registry.show(name, "1")


@pytest.mark.parametrize(
    "version", ["../1", "1/2", "..", "a..b", ".1", "latest", "", "1" * 65, "1\n", "v\u202e1", 2]
)
def test_hostile_versions_are_refused(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    version: Any,
) -> None:
    with pytest.raises(RegistryError, match="invalid version"):
        registry.add("digits", signed_model(), principal=team["alice"], version=version)
    assert stored_blobs(workspace) == []
    assert actions(workspace) == ["registry.add.refused"]


def test_hostile_bundles_comments_and_oversized_files(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    tmp_path: Path,
) -> None:
    folder = signed_model()
    signature = folder.with_name(folder.name + ".sig")
    good = signature.read_bytes()
    signature.write_bytes(b"{" * 1000)
    with pytest.raises(SignatureError, match="not a valid bundle"):
        registry.add("digits", folder, principal=team["alice"])
    with signature.open("wb") as handle:
        handle.truncate(16 * 2**20 + 1)
    with pytest.raises(SignatureError, match="larger than"):
        registry.add("digits", folder, principal=team["alice"])
    signature.write_bytes(good)
    settings = workspace.settings
    workspace.settings = settings.model_copy(
        update={"scan": settings.scan.model_copy(update={"max_file_bytes": 1000})}
    )
    with pytest.raises(RegistryError, match="larger than the scan limit"):
        registry.add("digits", folder, principal=team["alice"])
    workspace.settings = settings
    assert stored_blobs(workspace) == []
    (folder / "link").symlink_to(tmp_path)
    with pytest.raises(RegistryError, match="symlink refused"):
        registry.add("digits", folder, principal=team["alice"])
    (folder / "link").unlink()
    registry.add("digits", folder, principal=team["alice"])
    for comment in ("x" * 2001, "evil\x1b[2J", "rtl\u202etxt", 42):
        with pytest.raises(RegistryError, match="a comment is text"):
            registry.approve("digits", "1", principal=team["bob"], comment=comment)


def test_versions_are_numbered_and_unique(
    registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    folder = signed_model()
    alice = team["alice"]
    assert registry.add("digits", folder, principal=alice).version == "1"
    assert registry.add("digits", folder, principal=alice, version="5").version == "5"
    assert registry.add("digits", folder, principal=alice, version="2024.1-rc+b").version
    assert registry.add("digits", folder, principal=alice).version == "6"
    with pytest.raises(RegistryError, match="already has a version '5'"):
        registry.add("digits", folder, principal=alice, version="5")
    assert [v.version for v in registry.list("digits")] == ["1", "5", "2024.1-rc+b", "6"]
    assert registry.show("digits", "latest").version == "6"
    with pytest.raises(RegistryError, match="has no version '7'"):
        registry.show("digits", "7")
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        registry.show("nope", "1")
    # Identical files are stored once.
    assert len({v.digest for v in registry.list("digits")}) == 1


# -- what may leave ----------------------------------------------------------------------------


def test_pull_writes_verified_files_with_their_signature(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    tmp_path: Path,
) -> None:
    source = signed_model()
    registry.add("digits", source, principal=team["alice"])
    out = tmp_path / "pulled"
    path = registry.pull("digits", "1", out, principal=team["dave"])
    assert path == out / "digits"
    for name in ("config.json", "model.safetensors"):
        assert (path / name).read_bytes() == (source / name).read_bytes()
    verified = verify(path, workspace.public_key())
    assert verified.files == 2
    with pytest.raises(RegistryError, match="exists: refusing to overwrite"):
        registry.pull("digits", "1", out)
    assert sorted(p.name for p in out.iterdir()) == ["digits", "digits.sig"]
    with pytest.raises(AuthorizationError, match=r"model\.pull"):
        registry.pull("digits", "1", tmp_path / "other", principal=team["frank"])
    pulls = [(actor, d) for a, actor, d in registry_events(workspace) if a == "registry.pull"]
    assert pulls == [
        (
            team["dave"].actor,
            {
                "version": "1",
                "digest": registry.show("digits", "1").digest,
                "destination": str(path),
            },
        )
    ]


def _tamper_blob(registry: Registry, version: ModelVersion, path: str, data: bytes) -> None:
    item = next(f for f in version.files if f.path == path)
    blob = registry.store.blob_path(item.digest)
    blob.chmod(0o644)
    blob.write_bytes(data)


def test_a_tampered_store_fails_pull_and_checkout_naming_the_file(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    tmp_path: Path,
) -> None:
    version = registry.add("digits", signed_model(), principal=team["alice"])
    to_production(registry, team, "digits", "1")
    original = registry.store.blob_path(version.files[1].digest).read_bytes()
    _tamper_blob(registry, version, "model.safetensors", original[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(VerificationError, match=r"model\.safetensors does not match") as caught:
        registry.pull("digits", "1", tmp_path / "out")
    assert caught.value.problems == ("modified: model.safetensors",)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    with pytest.raises(VerificationError, match=r"model\.safetensors"):
        registry.checkout("digits", "1")
    assert not (workspace.root / "checkouts" / version.digest[7:]).exists()
    registry.store.blob_path(version.files[0].digest).unlink()
    with pytest.raises(VerificationError, match="missing from the store"):
        registry.checkout("digits", "1")
    refused = [(a, d["error"]) for a, _, d in registry_events(workspace) if "refused" in a]
    assert refused == [
        ("registry.pull.refused", "VerificationError"),
        ("registry.checkout.refused", "VerificationError"),
        ("registry.checkout.refused", "VerificationError"),
    ]
    workspace.audit().verify()


def test_tampered_records_fail_the_signature(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    tmp_path: Path,
) -> None:
    version = registry.add("digits", signed_model(), principal=team["alice"])
    where = sa.and_(registry_versions.c.model == "digits", registry_versions.c.version == "1")
    with workspace.database.begin() as conn:
        bundle = conn.execute(sa.select(registry_versions.c.bundle).where(where)).scalar_one()
    # 1. The recorded bundle itself is altered: its signature no longer verifies.
    document = json.loads(bundle)
    document["dsseEnvelope"]["signatures"][0]["sig"] = "A" * 88
    with workspace.database.begin() as conn:
        conn.execute(registry_versions.update().where(where).values(bundle=json.dumps(document)))
    with pytest.raises(SignatureError, match="does not verify"):
        registry.pull("digits", "1", tmp_path / "a")
    with pytest.raises(SignatureError):
        registry.checkout("digits", "1")
    assert not (tmp_path / "a").exists()
    # 2. A blob is swapped and the recorded digest rewritten to match: the signature catches it.
    with workspace.database.begin() as conn:
        conn.execute(registry_versions.update().where(where).values(bundle=bundle))
    forged = b'{"architecture": "softmax-linear", "classes": []}'
    forged_digest = "sha256:" + hashlib.sha256(forged).hexdigest()
    registry.store.blob_path(forged_digest).write_bytes(forged)
    files = [f.to_dict() for f in version.files]
    files[0].update(digest=forged_digest, size=len(forged))
    with workspace.database.begin() as conn:
        conn.execute(registry_versions.update().where(where).values(files=json.dumps(files)))
    with pytest.raises(SignatureError, match="does not match its recorded signature") as caught:
        registry.pull("digits", "1", tmp_path / "b")
    assert [p.split(" (")[0] for p in caught.value.problems] == ["modified: config.json"]
    assert ".tmp" not in str(caught.value)
    assert not (tmp_path / "b" / "digits").exists()


def test_checkout_rebuilds_a_tampered_cache_from_the_store(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    registry.add("digits", signed_model(), principal=team["alice"])
    folder = registry.checkout("digits", "1")
    config = folder / "config.json"
    good = config.read_bytes()
    config.chmod(0o644)
    config.write_bytes(good.replace(b"16.0", b"99.0"))
    assert registry.checkout("digits", "1") == folder
    assert config.read_bytes() == good
    (folder / "extra.py").write_text("import os")
    registry.checkout("digits", "1")
    assert not (folder / "extra.py").exists()


def test_an_external_signing_key_replaced_in_the_store_fails(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    other = generate_key()
    registry.add(
        "digits", signed_model(key=other), principal=team["alice"], public_key=other.public_key()
    )
    assert registry.checkout("digits", "1").is_dir()
    saved = workspace.store_path / "keys" / f"{key_id(other)}.pub"
    saved.chmod(0o644)
    saved.write_bytes(workspace.public_key_path.read_bytes())
    shutil.rmtree(workspace.root / "checkouts")
    with pytest.raises(VerificationError, match="was replaced"):
        registry.checkout("digits", "1")


# -- pickle opt-in -----------------------------------------------------------------------------


def test_pickle_models_need_the_reviewed_opt_in(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], tmp_path: Path
) -> None:
    digits = load_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = LogisticRegression(max_iter=30).fit(digits.data[:200], digits.target[:200])
    folder = tmp_path / "sk"
    folder.mkdir()
    joblib.dump(estimator, folder / "model.joblib")
    sign(folder, workspace.signing_key(), actor="trainer")
    with pytest.raises(AuthorizationError, match=r"model\.approve"):
        registry.add("sk", folder, principal=team["alice"], allow_pickle=True)
    version = registry.add("sk", folder, principal=team["alice"])
    assert (version.format, version.allow_pickle) == ("pickle", False)
    with pytest.raises(RegistryError, match="explicit opt-in"):
        load_model(registry.checkout("sk", "1"), allow_pickle=version.allow_pickle)
    assert registry.allow_pickle("sk", principal=team["bob"]) is True
    opted = registry.show("sk", "1")
    assert opted.allow_pickle
    model = load_model(registry.checkout("sk", "1"), allow_pickle=opted.allow_pickle)
    x = digits.data[:5]
    np.testing.assert_array_equal(model.predict(x), estimator.predict_proba(x))
    registry.allow_pickle("sk", principal=team["carol"], allowed=False)
    assert not registry.show("sk", "1").allow_pickle
    # An ml-engineer may register with the opt-in in one step.
    (folder / "model.joblib").unlink()
    (folder / "model.pkl").write_bytes(pickle.dumps(estimator))
    sign(folder, workspace.signing_key(), actor="trainer")
    assert registry.add("sk", folder, principal=team["bob"], allow_pickle=True).allow_pickle
    with pytest.raises(RegistryError, match="no model named"):
        registry.allow_pickle("missing", principal=team["bob"])
    assert [(a, d.get("allowed")) for a, _, d in registry_events(workspace)] == [
        ("registry.add.refused", None),
        ("registry.add", None),
        ("registry.allow_pickle", True),
        ("registry.allow_pickle", False),
        ("registry.add", None),
        ("registry.allow_pickle", True),
        ("registry.allow_pickle.refused", None),
    ]


# -- changes that cannot be audited ----------------------------------------------------------


def test_a_change_that_cannot_be_audited_is_undone(
    workspace: Workspace,
    registry: Registry,
    team: dict[str, Principal],
    signed_model: SignedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = signed_model()
    registry.add("digits", folder, principal=team["alice"])
    to_production(registry, team, "digits", "1")
    registry.add("digits", folder, principal=team["alice"])
    registry.promote("digits", "2", to="staging", principal=team["bob"])
    before = registry.list("digits")
    real_log = Registry._log

    def failing_log(self: Registry, records: Any, actor: str) -> None:
        if any(not action.endswith(".refused") for action, _, _ in records):
            raise AuditError("the audit log is unreachable")
        real_log(self, records, actor)

    monkeypatch.setattr(Registry, "_log", failing_log)
    with pytest.raises(AuditError):
        registry.approve("digits", "2", principal=team["carol"])
    with pytest.raises(AuditError):
        registry.add("digits", folder, principal=team["alice"], version="3")
    with pytest.raises(AuditError):
        registry.add("fresh", folder, principal=team["alice"])
    with pytest.raises(AuditError):
        registry.allow_pickle("digits", principal=team["bob"])
    monkeypatch.setattr(Registry, "_log", real_log)
    registry.approve("digits", "2", principal=team["carol"])
    monkeypatch.setattr(Registry, "_log", failing_log)
    with pytest.raises(AuditError):
        registry.promote("digits", "2", to="production", principal=team["dave"])
    monkeypatch.setattr(Registry, "_log", real_log)
    after = registry.list("digits")
    assert [(v.version, v.stage, v.stage_changed_at) for v in after] == [
        (v.version, v.stage, v.stage_changed_at) for v in before
    ]
    assert [len(v.approvals) for v in after] == [1, 1]
    assert not after[0].allow_pickle
    with pytest.raises(RegistryError, match="no model named 'fresh'"):
        registry.list("fresh")


# -- several writers ---------------------------------------------------------------------------


def test_concurrent_promotions_leave_one_production_version(
    workspace: Workspace, registry: Registry, team: dict[str, Principal], signed_model: SignedModel
) -> None:
    folder = signed_model()
    for _ in range(4):
        version = registry.add("digits", folder, principal=team["alice"]).version
        registry.promote("digits", version, to="staging", principal=team["bob"])
        registry.approve("digits", version, principal=team["carol"])
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            Registry(workspace).promote("digits", version, to="production", principal=team["dave"])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(str(v),)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stages = [v.stage for v in registry.list("digits")]
    assert stages.count(Stage.PRODUCTION) == 1
    assert stages.count(Stage.ARCHIVED) == 3
    assert actions(workspace).count("registry.archive") == 3


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.services
def test_the_core_flow_on_postgresql(
    postgres_url: str,
    bastion_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", postgres_url)
    workspace, _ = init_workspace()
    try:
        assert workspace.database.dialect == "postgresql"
        keys = KeyStore(workspace.database, workspace.audit())
        team = {
            n: keys.create(n, r, actor="operator").key.principal()
            for n, r in (("alice", "data-scientist"), ("bob", "ml-engineer"), ("dave", "sre"))
        }
        from bastion.demo_model import DemoModel, write_model_folder

        rng = np.random.default_rng(0)
        model = DemoModel(
            rng.normal(size=(10, 64)).astype(np.float32), np.zeros(10, np.float32), 0.5
        )
        folder = write_model_folder(model, tmp_path / "demo")
        sign(folder, workspace.signing_key(), actor="trainer")
        registry = Registry(workspace)
        registry.add("digits", folder, principal=team["alice"])
        registry.add("digits", folder, principal=team["alice"])
        with pytest.raises(AuthorizationError):
            registry.approve("digits", "1", principal=team["alice"])
        for version in ("1", "2"):
            registry.promote("digits", version, to="staging", principal=team["bob"])
            registry.approve("digits", version, principal=team["bob"])
            registry.promote("digits", version, to="production", principal=team["dave"])
        assert [(v.version, v.stage) for v in registry.list("digits")] == [
            ("1", Stage.ARCHIVED),
            ("2", Stage.PRODUCTION),
        ]
        (live,) = registry.production()
        assert load_model(registry.checkout("digits", live.version)).platform
        registry.pull("digits", "2", tmp_path / "out")
        assert verify(tmp_path / "out" / "digits", workspace.public_key()).files == 2
        assert actions(workspace) == [
            "registry.add",
            "registry.add",
            "registry.approve.refused",
            "registry.promote",
            "registry.approve",
            "registry.promote",
            "registry.promote",
            "registry.approve",
            "registry.promote",
            "registry.archive",
            "registry.pull",
        ]
        workspace.audit().verify()
    finally:
        workspace.close()
