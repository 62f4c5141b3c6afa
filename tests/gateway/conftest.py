"""Fixtures of the gateway tests: a served model, API keys of every kind, a gateway factory.

The model is the demo's architecture (softmax-linear in safetensors, loaded by the real
loader) with nearest-centroid weights computed from scikit-learn's digits, so that no test
pays for training. Keys live in a real SQLite key store; the gateway gets its snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tests.gateway.support import GatewayFactory, Keys, MemorySink, SlowModel, settings

from bastion.artifacts.served_model import ServedModel
from bastion.core.principals import KeyStore, Role
from bastion.core.storage import open_database, sqlite_url
from bastion.gateway.app import Gateway, create_app
from bastion.gateway.models import ModelSet, ServedEntry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="session")
def digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)


@pytest.fixture(scope="session")
def demo_folder(
    tmp_path_factory: pytest.TempPathFactory,
    digits: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> Path:
    """A demo-architecture model folder (nearest-centroid weights: no training)."""
    from bastion.demo_model import DemoModel, write_model_folder

    x, y = digits
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    # Softmax of -0.0025 * squared distance to each centroid: confident, not saturated.
    weight = (0.005 * centroids).astype(np.float32)
    bias = (-0.0025 * (centroids**2).sum(axis=1)).astype(np.float32)
    return write_model_folder(
        DemoModel(weight, bias, 0.0), tmp_path_factory.mktemp("model") / "digits"
    )


@pytest.fixture(scope="session")
def demo_model(demo_folder: Path) -> ServedModel:
    from bastion.artifacts.loading import load_model

    return load_model(demo_folder)


@pytest.fixture
def sample(digits: tuple[NDArray[np.float64], NDArray[np.int64]]) -> Callable[[int], list[float]]:
    """``sample(i)``: the i-th digit as 64 floats."""
    x, _ = digits
    return lambda i: [float(v) for v in x[i]]


@pytest.fixture
def slow_model() -> SlowModel:
    return SlowModel(delay=2.0, fast_calls=6)  # the probe at startup makes 6 quick calls


# ----------------------------------------------------------------------------- keys


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    """Keys named after what they are: one per role, scoped, expired, revoked, many clients."""
    database = open_database(sqlite_url(tmp_path_factory.mktemp("keys") / "keys.db"))
    store = KeyStore(database, None)
    secrets: dict[str, str] = {}
    ids: dict[str, str] = {}

    def create(name: str, role: Role, **kwargs: Any) -> None:
        created = store.create(name, role, actor="tests", **kwargs)
        secrets[name] = created.secret
        ids[name] = created.key.key_id

    for role in Role:
        create(role.value, role)
    create("scoped", Role.CLIENT, models=["other-model"])
    create("digits-only", Role.CLIENT, models=["digits"])
    create(
        "expired",
        Role.CLIENT,
        expires_in=timedelta(hours=1),
        now=datetime.now(UTC) - timedelta(hours=2),
    )
    create("revoked", Role.CLIENT)
    store.revoke("revoked", actor="tests")
    for n in range(8):
        create(f"client-{n}", Role.CLIENT)
    yield Keys(store.snapshot(), secrets, ids, store)
    database.dispose()


# ----------------------------------------------------------------------------- audit sinks


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


# ----------------------------------------------------------------------------- gateways


@pytest.fixture
def make_gateway(demo_model: ServedModel, keys: Keys, sink: MemorySink) -> GatewayFactory:
    """``make_gateway(models=, audit=, key_source=, monitor=, **settings)``: not started."""

    def build(
        *,
        models: dict[str, ServedModel] | ModelSet | None = None,
        audit: Any = None,
        key_source: Any = None,
        monitor: Any = None,
        **overrides: Any,
    ) -> Gateway:
        if models is None:
            models = {"digits": demo_model}
        model_set = (
            models
            if isinstance(models, ModelSet)
            else ModelSet(ServedEntry.build(n, "1", m, digest="sha256:" + "0" * 64)
                          for n, m in models.items())
        )  # fmt: skip
        return create_app(
            settings(**overrides),
            key_source if key_source is not None else keys.table,
            model_set,
            audit if audit is not None else sink,
            extraction=monitor,
            rng=np.random.default_rng(0),
        )

    return build
