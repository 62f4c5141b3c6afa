"""Shared by the assess benchmarks: a small CNN trained on scikit-learn's digits upsampled to
28x28 (no download), big enough that its forward and backward passes dominate a step."""

from __future__ import annotations

import time

import numpy as np
import torch
from numpy.typing import NDArray


def digits_28(seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """All 1797 digits as (n, 1, 28, 28) float32 in [0, 1] (bilinear upsampling of 8x8)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    big = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return big.clamp(0, 1).numpy(), np.asarray(data.target, dtype=np.int64)


def make_cnn() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def trained_cnn(
    epochs: int = 3, seed: int = 0
) -> tuple[torch.nn.Module, NDArray[np.float32], NDArray[np.int64]]:
    """The CNN trained on 1,300 digits; returns it (eval, frozen) and the 497 held out."""
    torch.manual_seed(seed)
    x, y = digits_28(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:1300], order[1300:]
    model = make_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(train), 64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(xt[start : start + 64]), yt[start : start + 64]
            )
            loss.backward()
            optimiser.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x[test])).argmax(1).numpy() == y[test]).mean()
    print(
        f"model: CNN on 28x28 digits, trained {time.perf_counter() - started:.1f}s, "
        f"held-out accuracy {accuracy:.3f}"
    )
    return model, x[test], y[test]
