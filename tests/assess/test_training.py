"""The shared training loops: small models train on one CPU thread, large ones keep torch's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bastion.assess._training import SMALL_MODEL_PARAMETERS, small_model_threads, train_classifier


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_threads")
def test_a_small_model_trains_on_one_thread_and_the_setting_is_restored() -> None:
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with small_model_threads(model):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_a_large_model_keeps_the_thread_setting() -> None:
    model = nn.Linear(1000, SMALL_MODEL_PARAMETERS // 1000 + 1)
    assert sum(p.numel() for p in model.parameters()) >= SMALL_MODEL_PARAMETERS
    with small_model_threads(model):
        assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_the_setting_is_restored_when_training_fails() -> None:
    model = nn.Linear(4, 2)
    with pytest.raises(RuntimeError), small_model_threads(model):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_train_classifier_fits_and_restores_threads() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=generator)
    y = (x[:, 0] > 0).long()
    model = train_classifier(
        nn.Linear(2, 2), x, y, epochs=30, batch_size=32, learning_rate=0.05, seed=0
    )
    accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.95
    assert torch.get_num_threads() == 2
