"""Projected Gradient Descent, L-infinity and L2, with random start and restarts (stable API).

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, arXiv:1706.06083.

Threat model: white box (gradients), untargeted, budget ``eps`` in raw input units under the
L-infinity or L2 norm. Each step ascends the loss (cross-entropy, or the Carlini-Wagner margin)
by ``step = step_ratio * eps`` along the gradient's sign (L-infinity) or its L2 direction, then
projects back onto the eps-ball intersected with the domain's bounds.

Defaults: ``steps = 40``, ``step_ratio = 2.5 / steps`` (Madry et al.'s 2.5 eps / steps),
random start uniform in the L-infinity ball (L2: a random direction scaled by a uniform
radius, as torchattacks' PGDL2), ``restarts = 1``, cross-entropy loss, ``keep_best = True``
(a point counts as broken if any iterate misclassified it, as AutoAttack and RobustBench
evaluate; ``False`` returns Madry's final iterate). Restarts are run only on the points still
standing, each from a fresh random start.

The inner loop is the minimum the bound of ``steps x (forward + backward)`` allows: one
forward, one input-gradient (parameters frozen, so no weight gradients), and in-place update
and projection (the projection is a single clamp against precomputed per-element bounds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.attacks._torch import margin, setup, to_numpy, torch_module
from bastion.assess.attacks.interface import Norm, StepCallback
from bastion.assess.targets.interface import Access, Target

if TYPE_CHECKING:
    import torch

__all__ = ["PGD", "PgdOptions"]


class PGD:
    """PGD (see the module docstring)."""

    name = "pgd"
    access = Access.GRADIENTS
    bounded = True

    def __init__(
        self,
        norm: Norm = Norm.LINF,
        *,
        steps: int = 40,
        step_ratio: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        loss: Literal["ce", "margin"] = "ce",
        keep_best: bool = True,
    ) -> None:
        self.norm = norm
        self.steps = steps
        self.step_ratio = 2.5 / steps if step_ratio is None else step_ratio
        self.restarts = restarts
        self.random_start = random_start
        self.loss = loss
        self.keep_best = keep_best

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
        model, xt, yt, generator = setup(target, x, y, rng)
        if eps <= 0 or self.steps <= 0:
            return x.copy()
        result = xt.clone()
        standing = torch.ones(xt.shape[0], dtype=torch.bool, device=xt.device)
        total = self.steps * self.restarts
        for restart in range(self.restarts):
            index = standing.nonzero()[:, 0]
            if index.numel() == 0:
                break

            def step_done(i: int, _total: int, base: int = restart * self.steps) -> None:
                if on_step is not None:
                    on_step(base + i, total)

            adv, broken = self._run(model, xt[index], yt[index], eps, target, generator, step_done)
            result[index] = adv
            standing[index[broken]] = False
        return to_numpy(result)

    def _run(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        target: Target,
        generator: torch.Generator,
        on_step: StepCallback,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One PGD run from a random start; returns the adversarials and which broke."""
        torch = torch_module()
        functional = torch.nn.functional
        lower, upper = target.domain.lower, target.domain.upper
        step = eps * self.step_ratio
        view = (-1,) + (1,) * (x.dim() - 1)
        linf = self.norm is Norm.LINF
        with torch.no_grad():
            if linf:
                lo = (x - eps).clamp_(min=lower)
                hi = (x + eps).clamp_(max=upper)
            adv = x.clone()
            if self.random_start:
                if linf:
                    noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
                    adv.add_(noise).clamp_(lo, hi)
                else:
                    noise = torch.empty_like(x).normal_(generator=generator)
                    norms = noise.flatten(1).norm(dim=1).clamp_min_(1e-12)
                    radius = torch.empty_like(norms).uniform_(0, 1, generator=generator)
                    adv.add_(noise.mul_((radius * eps / norms).view(view)))
                    adv.clamp_(lower, upper)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best = adv.clone() if self.keep_best else adv
        for i in range(self.steps):
            adv.requires_grad_(True)
            logits = model(adv)
            if self.loss == "ce":
                loss = functional.cross_entropy(logits, y, reduction="sum")
            else:
                loss = -margin(logits, y).sum()
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach()
            with torch.no_grad():
                if self.keep_best:
                    wrong = logits.argmax(dim=1).ne(y)
                    newly = wrong & ~found
                    if bool(newly.any()):
                        best[newly] = adv[newly]
                        found |= wrong
                if linf:
                    adv.add_(grad.sign_(), alpha=step).clamp_(lo, hi)
                else:
                    norms = grad.flatten(1).norm(dim=1).add_(1e-12)
                    adv.add_(grad.mul_((step / norms).view(view)))
                    adv.sub_(x)
                    norms = adv.flatten(1).norm(dim=1).clamp_min_(1e-12)
                    adv.mul_((eps / norms).clamp_max_(1.0).view(view)).add_(x)
                    adv.clamp_(lower, upper)
            on_step(i + 1, self.steps)
        with torch.no_grad():
            wrong = model(adv).argmax(dim=1).ne(y)
        if not self.keep_best:
            return adv, wrong
        # Where the last iterate still fools the model keep it; else the first iterate that did.
        use_best = found & ~wrong
        adv[use_best] = best[use_best]
        return adv, wrong | found


class PgdOptions(BaseModel):
    """``[[evasion.attacks]] name = "pgd"``: see :class:`PGD` for the meaning and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["pgd"] = "pgd"
    id: str | None = None
    eps: list[float | str] | None = None
    norm: Norm = Norm.LINF
    steps: int = Field(default=40, ge=1, le=100_000)
    step_ratio: float | None = Field(default=None, gt=0)
    restarts: int = Field(default=1, ge=1, le=1000)
    random_start: bool = True
    loss: Literal["ce", "margin"] = "ce"
    keep_best: bool = True

    def build(self) -> PGD:
        return PGD(
            self.norm,
            steps=self.steps,
            step_ratio=self.step_ratio,
            restarts=self.restarts,
            random_start=self.random_start,
            loss=self.loss,
            keep_best=self.keep_best,
        )
