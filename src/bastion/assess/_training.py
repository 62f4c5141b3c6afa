"""Small, deterministic torch training loops shared by the attacks (internal).

Shadow models (membership inference) and substitute models (extraction) are trained the same
way: Adam on cross-entropy against hard labels or soft targets (probability vectors), in
minibatches drawn by a seeded generator, on CPU or the module's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["SMALL_MODEL_PARAMETERS", "predict_logits", "small_model_threads", "train_classifier"]

#: Below this many parameters a model trains on one CPU thread (see small_model_threads).
SMALL_MODEL_PARAMETERS = 1_000_000


@contextlib.contextmanager
def small_model_threads(model: nn.Module) -> Iterator[None]:
    """Run the block on one CPU thread when ``model`` is small, then restore the setting.

    The shadow and substitute models of the attacks are often tiny (an MLP on 64 inputs):
    split over several intra-op threads their minibatch steps spend more time waiting on one
    another than computing. Measured on a busy two-core machine: 200 Adam steps of a
    64-128-10 MLP took 4.0 s on torch's default 2 threads and 0.3 s on one. Large models, or
    models on an accelerator, keep torch's setting.
    """
    small = _device_of(model).type == "cpu" and (
        sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    )
    before = torch.get_num_threads()
    if not small or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device_of(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place on ``(x, targets)`` and return it in eval mode.

    Args:
        model: maps a batch of inputs to logits.
        x: inputs.
        targets: int64 class labels ``[n]`` or float soft targets ``[n, classes]`` (a
            probability vector per row).
        epochs: passes over the data.
        batch_size: minibatch size.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 penalty.
        seed: seeds the minibatch order.
    """
    with small_model_threads(model):
        return _train(model, x, targets, epochs, batch_size, learning_rate, weight_decay, seed)


def _train(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
) -> nn.Module:
    device = _device_of(model)
    x = x.to(device)
    targets = targets.to(device)
    soft = targets.is_floating_point()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            logits = model(x[batch])
            if soft:
                loss = -(targets[batch] * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            else:
                loss = nn.functional.cross_entropy(logits, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    return model


def predict_logits(model: Any, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's logits on ``x``, in batches, without gradients, on the CPU."""
    device = _device_of(model)
    with torch.no_grad():
        outputs = [
            model(x[start : start + batch_size].to(device)).cpu()
            for start in range(0, x.shape[0], batch_size)
        ]
    return torch.cat(outputs) if outputs else torch.empty(0)


class Affine(nn.Module):
    """``(x - shift) * scale``, with broadcastable buffers: a domain's normalisation or bounds.

    A module-level class so that shadow and substitute factories stay picklable.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, shift: torch.Tensor | float, scale: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale
