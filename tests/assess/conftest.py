"""Fixtures of the assessment tests: small models trained here, once per session, on the
8x8 digits scikit-learn ships (no downloads). Inputs are raw pixels scaled to [0, 1]."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain

torch = importlib.import_module("torch")

Digits = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests share two cores with other work; torch would take both otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> Digits:
    """(x_train, y_train, x_test, y_test): inputs (n, 1, 8, 8) float32 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(data.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="session")
def digits_domain() -> InputDomain:
    return InputDomain(shape=(1, 8, 8), lower=0.0, upper=1.0)


def _train(module: Any, digits: Digits, epochs: int, seed: int) -> Any:
    torch.manual_seed(seed)
    x_train, y_train, _, _ = digits
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(xt.shape[0], generator=generator)
        for start in range(0, xt.shape[0], 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xt[batch]), yt[batch])
            loss.backward()
            optimiser.step()
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def make_mlp() -> Any:
    nn = torch.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def make_cnn() -> Any:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


@pytest.fixture(scope="session")
def mlp_module(digits: Digits) -> Any:
    """A 64-64-10 MLP, about 97% accurate on the held-out digits."""
    torch.manual_seed(0)
    return _train(make_mlp(), digits, epochs=30, seed=0)


@pytest.fixture(scope="session")
def cnn_module(digits: Digits) -> Any:
    """A two-layer CNN, about 97% accurate on the held-out digits."""
    torch.manual_seed(1)
    return _train(make_cnn(), digits, epochs=15, seed=1)


@pytest.fixture
def mlp_target(mlp_module: Any, digits_domain: InputDomain) -> Any:
    """The MLP as a target, with a fresh query counter."""
    from bastion.assess.targets.torch_target import TorchTarget

    return TorchTarget.from_module(mlp_module, digits_domain)


@pytest.fixture
def cnn_target(cnn_module: Any, digits_domain: InputDomain) -> Any:
    from bastion.assess.targets.torch_target import TorchTarget

    return TorchTarget.from_module(cnn_module, digits_domain)


@pytest.fixture(scope="session")
def logistic_model(digits: Digits) -> Any:
    """A scikit-learn logistic regression on the flat digits, in memory (no pickle)."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, _, _ = digits
    return LogisticRegression(max_iter=300).fit(x_train.reshape(len(x_train), -1), y_train)


@pytest.fixture
def sklearn_target(logistic_model: Any) -> Any:
    """The logistic regression as a (white-box) target on flat inputs in [0, 1]."""
    from bastion.assess.targets.sklearn_target import SklearnTarget

    return SklearnTarget(logistic_model, InputDomain((64,), 0.0, 1.0), name="logistic")


@pytest.fixture(scope="session")
def flat_digits(digits: Digits) -> Any:
    """The held-out digits as a Dataset of flat rows."""
    from bastion.assess.data import Dataset

    _, _, x_test, y_test = digits
    return Dataset(x_test.reshape(len(x_test), -1), y_test, "digits", "")
