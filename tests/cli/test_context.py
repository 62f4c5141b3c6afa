"""``Context.principal``: the CLI's check of ``$BASTION_API_KEY``. Every refusal is an
``access.denied`` audit event whose reason the user is not told."""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.cli.context import Context
from bastion.core.principals import CreatedKey, KeyStore, Permission, Role, api_keys
from bastion.core.workspace import Workspace
from bastion.errors import AccessError, AuthenticationError, AuthorizationError


def context(bastion_home: Path, key: str | None) -> Context:
    environ = dict(os.environ)
    environ.pop("BASTION_API_KEY", None)
    if key is not None:
        environ["BASTION_API_KEY"] = key
    return Context(args=argparse.Namespace(), environ=environ, cwd=bastion_home.parent)


def store(workspace: Workspace) -> KeyStore:
    return KeyStore(workspace.database, workspace.audit())


def denials(workspace: Workspace) -> list[dict[str, Any]]:
    return [
        {"subject": e.subject, **e.details}
        for e in workspace.audit().events()
        if e.action == "access.denied"
    ]


@pytest.fixture
def sre(workspace: Workspace) -> CreatedKey:
    return store(workspace).create("ops", Role.SRE, actor="tester", models=["digits"])


def refuse(
    bastion_home: Path, key: str | None, permission: Permission, model: str | None = None
) -> AccessError:
    ctx = context(bastion_home, key)
    try:
        with pytest.raises(AccessError) as info:
            ctx.principal(permission, model)
    finally:
        ctx.close()
    return info.value


def test_a_good_key_returns_its_principal_and_records_nothing(
    workspace: Workspace, bastion_home: Path, sre: CreatedKey
) -> None:
    ctx = context(bastion_home, sre.secret)
    try:
        principal = ctx.principal(Permission.MODEL_PROMOTE_PRODUCTION, "digits")
        assert principal == sre.key.principal()
        assert ctx.principal(Permission.GATEWAY_OPERATE).name == "ops"
    finally:
        ctx.close()
    assert denials(workspace) == []


@pytest.mark.parametrize("key", [None, ""])
def test_no_key_is_refused_with_a_hint(
    workspace: Workspace, bastion_home: Path, key: str | None
) -> None:
    error = refuse(bastion_home, key, Permission.KEYS_MANAGE)
    assert isinstance(error, AuthenticationError)
    assert str(error) == (
        "this needs an API key with permission keys.manage: set BASTION_API_KEY "
        "(see 'bastion keys create')"
    )
    assert denials(workspace) == [
        {
            "subject": "workspace",
            "permission": "keys.manage",
            "reason": "no key given",
            "via": "cli",
        }
    ]


def test_bad_keys_are_refused_alike(
    workspace: Workspace, bastion_home: Path, sre: CreatedKey
) -> None:
    keys_store = store(workspace)
    expired = keys_store.create("old", Role.ADMIN, actor="tester", expires_in=timedelta(seconds=1))
    revoked = keys_store.create("gone", Role.ADMIN, actor="tester")
    keys_store.revoke("gone", actor="tester")
    # Rewind the expiry rather than wait.
    with workspace.database.begin() as conn:
        conn.execute(
            api_keys.update()
            .where(api_keys.c.key_id == expired.key.key_id)
            .values(expires_at="2000-01-01T00:00:00.000000Z")
        )
    wrong = sre.secret[:-1] + ("A" if sre.secret[-1] != "A" else "B")
    cases = {
        "not-a-key": "malformed key",
        sre.secret + "\x00": "malformed key",
        "x" * 10_000: "key too long",
        wrong: f"wrong secret for key {sre.key.key_id}",
        expired.secret: f"expired key {expired.key.key_id}",
        revoked.secret: f"revoked key {revoked.key.key_id}",
    }
    for key in cases:
        error = refuse(bastion_home, key, Permission.KEYS_MANAGE)
        assert isinstance(error, AuthenticationError)
        assert str(error) == "invalid API key"  # never which of them it was
    reasons = [d["reason"] for d in denials(workspace)]
    assert reasons == list(cases.values())
    recorded = json.dumps([e.to_dict() for e in workspace.audit().events()])
    for secret in (sre.secret, expired.secret, revoked.secret):
        assert secret[len("bst_000000000000_") :] not in recorded


def test_a_key_whose_role_lacks_the_permission_is_refused(
    workspace: Workspace, bastion_home: Path, sre: CreatedKey
) -> None:
    error = refuse(bastion_home, sre.secret, Permission.KEYS_MANAGE)
    assert isinstance(error, AuthorizationError)
    assert str(error) == "role sre does not have permission keys.manage"
    (denial,) = denials(workspace)
    assert denial == {
        "subject": "workspace",
        "permission": "keys.manage",
        "reason": f"ops (key {sre.key.key_id}, sre): role lacks keys.manage",
        "via": "cli",
    }


def test_a_model_outside_the_key_scope_is_refused(
    workspace: Workspace, bastion_home: Path, sre: CreatedKey
) -> None:
    error = refuse(bastion_home, sre.secret, Permission.MODEL_PROMOTE_PRODUCTION, "fraud")
    assert isinstance(error, AuthorizationError)
    assert str(error) == "key 'ops' is not allowed to use model 'fraud'"
    (denial,) = denials(workspace)
    assert denial["subject"] == "model:fraud"
    assert denial["reason"].endswith("model 'fraud' out of scope")
