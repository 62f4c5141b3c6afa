"""Fixtures of the registry tests: a team of API keys, signed demo models, the registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bastion.artifacts.signing import sign
from bastion.core.keys import PrivateKey
from bastion.core.principals import KeyStore, Principal, Role
from bastion.core.workspace import Workspace
from bastion.demo_model import DemoModel, write_model_folder
from bastion.registry import Registry

#: The team: who holds which role (two ml-engineers, so that one can approve the other's work).
TEAM = {
    "alice": Role.DATA_SCIENTIST,
    "bob": Role.ML_ENGINEER,
    "carol": Role.ML_ENGINEER,
    "dave": Role.SRE,
    "erin": Role.ADMIN,
    "frank": Role.CLIENT,
}


@pytest.fixture
def team(workspace: Workspace) -> dict[str, Principal]:
    """One API key per member of :data:`TEAM`, made by the workspace's key store."""
    store = KeyStore(workspace.database, workspace.audit())
    return {
        name: store.create(name, role, actor="operator").key.principal()
        for name, role in TEAM.items()
    }


@pytest.fixture
def registry(workspace: Workspace) -> Registry:
    return Registry(workspace)


SignedModel = Callable[..., Path]


@pytest.fixture
def signed_model(workspace: Workspace, tmp_path: Path) -> SignedModel:
    """``signed_model(name="demo", seed=0, key=None) -> folder``: a demo model folder (random
    weights: the registry does not care about accuracy), signed (``FOLDER.sig``) by ``key`` or
    the workspace key."""

    def make(name: str = "demo", *, seed: int = 0, key: PrivateKey | None = None) -> Path:
        rng = np.random.default_rng(seed)
        model = DemoModel(
            weight=rng.normal(size=(10, 64)).astype(np.float32),
            bias=rng.normal(size=10).astype(np.float32),
            test_accuracy=0.5,
        )
        folder = write_model_folder(model, tmp_path / "models" / name)
        sign(folder, key or workspace.signing_key(), actor="trainer")
        return folder

    return make
