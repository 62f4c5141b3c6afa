"""Output hardening per role: label only, top-k, rounding, noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.gateway.support import GatewayFactory, Keys, infer_body, serving

from bastion.artifacts.served_model import ServedModel, TensorSpec
from bastion.config import OutputPolicy, OutputSettings
from bastion.core.principals import Role
from bastion.gateway.models import ServedEntry
from bastion.gateway.output import OutputHardener

pytestmark = pytest.mark.anyio

SCORES = np.array(
    [
        [0.05, 0.61234, 0.2, 0.13766],
        [0.4, 0.1, 0.15, 0.35],
    ]
)


class _Four:
    platform = "test"
    inputs = (TensorSpec("x", "FP32", (-1, 2)),)
    outputs = (TensorSpec("probs", "FP32", (-1, 4)),)
    input_range = None
    classes = ("a", "b", "c", "d")

    def predict(self, batch: Any) -> Any:
        return SCORES[: batch.shape[0]]


@pytest.fixture
def entry() -> ServedEntry:
    return ServedEntry.build("four", "1", _Four())


def _hardener(rng: np.random.Generator | None = None, **policy: Any) -> OutputHardener:
    return OutputHardener(OutputSettings(client=OutputPolicy(**policy)), rng)


@pytest.mark.parametrize("rows", [2, 200])  # the plain-Python and the NumPy paths
def test_scores_are_rounded(entry: ServedEntry, rows: int) -> None:
    scores = np.tile(SCORES, (rows // 2, 1))
    (tensor,) = _hardener(mode="scores", decimals=2).harden(entry, Role.CLIENT, scores)
    assert tensor["name"] == "probs"
    assert tensor["datatype"] == "FP32"
    assert tensor["shape"] == [rows, 4]
    assert tensor["data"][:8] == [0.05, 0.61, 0.2, 0.14, 0.4, 0.1, 0.15, 0.35]
    assert "parameters" not in tensor


@pytest.mark.parametrize("rows", [2, 200])
@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, [0.0, 0.612, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0]),
        (2, [0.0, 0.612, 0.2, 0.0, 0.4, 0.0, 0.0, 0.35]),
        (4, [0.05, 0.612, 0.2, 0.138, 0.4, 0.1, 0.15, 0.35]),
        (9, [0.05, 0.612, 0.2, 0.138, 0.4, 0.1, 0.15, 0.35]),
    ],
)
def test_top_k_zeroes_the_rest(
    entry: ServedEntry, rows: int, k: int, expected: list[float]
) -> None:
    scores = np.tile(SCORES, (rows // 2, 1))
    (tensor,) = _hardener(mode="top-k", top_k=k, decimals=3).harden(entry, Role.CLIENT, scores)
    assert tensor["shape"] == [rows, 4]  # the declared shape: OIP clients read it unchanged
    assert tensor["data"][:8] == expected
    assert tensor["parameters"] == {"top_k": min(k, 4)}


def test_label_only(entry: ServedEntry) -> None:
    (tensor,) = _hardener(mode="label").harden(entry, Role.CLIENT, SCORES)
    assert tensor == {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}


def test_noise_is_seeded_bounded_and_keeps_the_answer(entry: ServedEntry) -> None:
    scores = np.tile(SCORES, (50, 1))
    policy = {"mode": "top-k", "top_k": 2, "decimals": 6, "noise_std": 0.05}
    first = _hardener(np.random.default_rng(7), **policy).harden(entry, Role.CLIENT, scores)
    again = _hardener(np.random.default_rng(7), **policy).harden(entry, Role.CLIENT, scores)
    other = _hardener(np.random.default_rng(8), **policy).harden(entry, Role.CLIENT, scores)
    noisy = np.reshape(first[0]["data"], scores.shape)
    assert first == again
    assert first != other
    assert noisy.min() >= 0.0
    assert noisy.max() <= 1.0
    # Only the top-2 entries carry (noisy) values; the rest stay exactly 0.
    top2 = np.argsort(-scores, axis=1)[:, :2]
    mask = np.zeros(scores.shape, dtype=bool)
    mask[np.arange(len(scores))[:, None], top2] = True
    assert np.all(noisy[~mask] == 0.0)
    deviation = noisy[mask] - scores[mask]
    assert 0.03 < deviation.std() < 0.07
    assert not np.allclose(noisy[mask], np.round(scores[mask], 6))


def test_each_role_gets_its_policy(entry: ServedEntry) -> None:
    hardener = OutputHardener(
        OutputSettings(
            sre=OutputPolicy(mode="scores"),
            client=OutputPolicy(mode="top-k", top_k=1),
            admin=OutputPolicy(mode="label"),
        )
    )
    assert hardener.output_names(entry, Role.SRE) == ("probs",)
    assert hardener.output_names(entry, Role.ADMIN) == ("label",)
    assert hardener.metadata_outputs(entry, Role.ADMIN) == [
        {"name": "label", "datatype": "INT64", "shape": [-1]}
    ]
    assert hardener.metadata_outputs(entry, Role.CLIENT) == [
        {"name": "probs", "datatype": "FP32", "shape": [-1, 4]}
    ]
    for role in Role:
        assert hardener.policy(role).mode in ("scores", "top-k", "label")


async def test_roles_over_http(
    make_gateway: GatewayFactory, keys: Keys, sample: Any, demo_model: ServedModel
) -> None:
    gateway = make_gateway(
        output={
            "client": {"mode": "top-k", "top_k": 2, "decimals": 2},
            "sre": {"mode": "scores", "decimals": 6},
            "data_scientist": {"mode": "label"},
        }
    )
    answers = {}
    async with serving(gateway) as client:
        for role in ("client", "sre", "data-scientist"):
            response = await client.post(
                "/v2/models/digits/infer", json=infer_body(sample(0)), headers=keys.headers(role)
            )
            assert response.status_code == 200
            answers[role] = response.json()["outputs"]
    clean = demo_model.predict(np.asarray([sample(0)], dtype=np.float32))[0]
    (full,) = answers["sre"]
    np.testing.assert_allclose(full["data"], clean, atol=1e-6)
    (top,) = answers["client"]
    assert sum(v > 0 for v in top["data"]) <= 2
    assert top["data"][int(clean.argmax())] == round(float(clean.max()), 2)
    assert all(v == round(v, 2) for v in top["data"])
    (label,) = answers["data-scientist"]
    assert label == {
        "name": "label",
        "datatype": "INT64",
        "shape": [1],
        "data": [int(clean.argmax())],
    }
