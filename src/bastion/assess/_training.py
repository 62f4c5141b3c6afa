"""Small, deterministic torch training loops shared by the attacks (internal).

Shadow models (membership inference) and substitute models (extraction) are trained the same
way: Adam on cross-entropy against hard labels or soft targets (probability vectors), in
minibatches drawn by a seeded generator, on CPU or the module's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["predict_logits", "train_classifier"]


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
