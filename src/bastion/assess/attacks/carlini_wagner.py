"""Carlini-Wagner L2 attack (stable API).

Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
arXiv:1608.04644.

Threat model: white box (gradients), untargeted, minimum-norm under L2: it searches for the
smallest perturbation that changes the decision, so one run yields the whole
robust-accuracy-versus-eps curve. The search variable lives in tanh space
(``x = lower + span * (tanh(w) + 1) / 2``) so the domain's bounds always hold, and Adam
minimises ``||(x' - x) / span||^2 + c * max(Z_y - max_{j != y} Z_j + kappa, 0)`` with a
binary search on ``c`` per sample. The distance is measured in units of the domain's span, so
the defaults do not depend on whether inputs are in [0, 1] or [0, 255]; the perturbations
reported are in raw units.

Defaults: ``binary_steps = 6``, ``steps = 100`` Adam steps per search step, ``lr = 0.05``,
``initial_const = 0.1``, ``kappa = 0`` (torchattacks: one search step, c = 1, 50 steps;
ART: 10 search steps of 10 iterations, c = 0.01). A sample with no adversarial found is
returned unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.attacks._torch import margin, setup, to_numpy, torch_module
from bastion.assess.attacks.interface import Norm, StepCallback
from bastion.assess.targets.interface import Access, Target

__all__ = ["CarliniWagnerL2", "CwOptions"]


class CarliniWagnerL2:
    """Carlini-Wagner L2 (see the module docstring)."""

    name = "cw"
    norm = Norm.L2
    access = Access.GRADIENTS
    bounded = False

    def __init__(
        self,
        *,
        binary_steps: int = 6,
        steps: int = 100,
        lr: float = 0.05,
        initial_const: float = 0.1,
        kappa: float = 0.0,
    ) -> None:
        self.binary_steps = binary_steps
        self.steps = steps
        self.lr = lr
        self.initial_const = initial_const
        self.kappa = kappa

    def perturb(
        self,
        target: Target,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        eps: float,
        *,
        rng: np.random.Generator,
        on_step: StepCallback | None = None,
    ) -> NDArray[np.float32]:
        torch = torch_module()
        model, xt, yt, _ = setup(target, x, y, rng)
        lower, span = target.domain.lower, target.domain.span
        n = xt.shape[0]
        unit = ((xt - lower) / span).clamp(0.0, 1.0)
        w0 = torch.atanh((unit * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.initial_const, dtype=xt.dtype, device=xt.device)
        low = torch.zeros_like(const)
        high = torch.full_like(const, float("inf"))
        best_dist = torch.full_like(const, float("inf"))
        best = xt.clone()
        total = self.binary_steps * self.steps
        for search in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=xt.device)
            for step in range(self.steps):
                adv = lower + span * (torch.tanh(w) + 1) / 2
                logits = model(adv)
                dist = ((adv - xt) / span).pow(2).flatten(1).sum(dim=1)
                gap = margin(logits, yt)
                loss = dist.sum() + (const * (gap + self.kappa).clamp_min(0)).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    fooled = gap < 0 if self.kappa == 0 else gap <= -self.kappa
                    better = fooled & (dist < best_dist)
                    if bool(better.any()):
                        best_dist[better] = dist[better]
                        best[better] = adv.detach()[better]
                    succeeded |= fooled
                if on_step is not None:
                    on_step(search * self.steps + step + 1, total)
            with torch.no_grad():
                high = torch.where(succeeded, torch.minimum(high, const), high)
                low = torch.where(succeeded, low, torch.maximum(low, const))
                bounded = torch.isfinite(high)
                const = torch.where(bounded, (low + high) / 2, const * 10)
        return to_numpy(best)


class CwOptions(BaseModel):
    """``[[evasion.attacks]] name = "cw"``: see :class:`CarliniWagnerL2`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["cw"] = "cw"
    id: str | None = None
    eps: list[float | str] | None = None
    norm: Literal[Norm.L2] = Norm.L2
    binary_steps: int = Field(default=6, ge=1, le=50)
    steps: int = Field(default=100, ge=1, le=100_000)
    lr: float = Field(default=0.05, gt=0)
    initial_const: float = Field(default=0.1, gt=0)
    kappa: float = Field(default=0.0, ge=0)

    def build(self) -> CarliniWagnerL2:
        return CarliniWagnerL2(
            binary_steps=self.binary_steps,
            steps=self.steps,
            lr=self.lr,
            initial_const=self.initial_const,
            kappa=self.kappa,
        )
