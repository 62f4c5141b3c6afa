"""Fast Gradient Sign Method (stable API).

Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
arXiv:1412.6572.

Threat model: white box (gradients), untargeted, L-infinity budget ``eps`` in raw input
units. One gradient of the cross-entropy loss at the input, then
``x_adv = clip(x + eps * sign(grad), lower, upper)``. No randomness; no options.

The loss is summed over the batch (not averaged), so the gradient of each sample does not
depend on the batch size; the sign, and so the result, is identical to torchattacks' ``FGSM``
and ART's ``FastGradientMethod`` on the same model (tested).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from bastion.assess.attacks._torch import setup, to_numpy, torch_module
from bastion.assess.attacks.interface import Norm, StepCallback
from bastion.assess.targets.interface import Access, Target

__all__ = ["FGSM", "FgsmOptions"]


class FGSM:
    """FGSM, L-infinity (see the module docstring)."""

    name = "fgsm"
    norm = Norm.LINF
    access = Access.GRADIENTS
    bounded = True

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
        domain = target.domain
        xt.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xt), yt, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xt)
        with torch.no_grad():
            adv = xt.detach() + eps * grad.sign()
            adv.clamp_(domain.lower, domain.upper)
        if on_step is not None:
            on_step(1, 1)
        return to_numpy(adv)


class FgsmOptions(BaseModel):
    """``[[evasion.attacks]] name = "fgsm"``: no options besides the budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["fgsm"] = "fgsm"
    id: str | None = None
    eps: list[float | str] | None = None
    norm: Literal[Norm.LINF] = Norm.LINF

    def build(self) -> FGSM:
        return FGSM()
