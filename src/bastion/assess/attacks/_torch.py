"""What the gradient attacks share: tensors on the target's device, seeded generators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bastion.assess.targets.interface import Access, Target
from bastion.errors import AssessmentError

if TYPE_CHECKING:
    import torch


def torch_module() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch comes with the dev extra
        raise AssessmentError("gradient attacks need torch: pip install torch") from exc
    return torch


def setup(
    target: Target, x: NDArray[np.float32], y: NDArray[np.int64], rng: np.random.Generator
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator]:
    """The differentiable model, inputs and labels as tensors, and a seeded generator."""
    torch = torch_module()
    if target.info.access is not Access.GRADIENTS:
        raise AssessmentError(
            f"this attack needs gradients; the {target.info.kind} target gives "
            f"{target.info.access.value} only"
        )
    model = target.torch_model()
    device = next((p.device for p in model.parameters()), None)
    if device is None:
        device = next((b.device for b in model.buffers()), torch.device("cpu"))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return model, xt, yt, generator


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logit[y] - max_{j != y} logit[j]`` per sample (negative: misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    result: torch.Tensor = true - other
    return result


def to_numpy(t: torch.Tensor) -> NDArray[np.float32]:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
