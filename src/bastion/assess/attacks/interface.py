"""The evasion-attack seam: one module per attack, listed in ``attacks.ATTACKS`` (stable API).

An attack takes a target, a batch of raw inputs with their true labels and a budget ``eps``
(raw units, in the attack's norm), and returns adversarial inputs in the domain. Attacks are
untargeted: they try to change the predicted class away from the true label.

*Bounded* attacks (FGSM, PGD, Square) stay within ``eps``; the evaluation runs them once per
budget. *Minimum-norm* attacks (Carlini-Wagner, HopSkipJump) ignore ``eps`` and return the
smallest adversarial they found (or the input where they found none); one run gives the whole
robust-accuracy curve, a point being robust at ``eps`` when no adversarial within ``eps`` was
found.

Each attack's options are a pydantic model (``extra="forbid"``) with a ``name`` literal, so an
attack is configured the same way from a policy file, the command line or Python, and
``build()`` makes the attack.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bastion.assess.targets.interface import Access, Target

__all__ = ["EvasionAttack", "Norm", "StepCallback", "perturbation_norms"]

#: Called by iterative attacks as ``(done, total)`` iterations; may be a no-op.
StepCallback = Callable[[int, int], None]


class Norm(StrEnum):
    """The norm a budget is measured in."""

    LINF = "linf"
    L2 = "l2"


class EvasionAttack(Protocol):
    """An untargeted evasion attack on one batch."""

    @property
    def name(self) -> str:
        """Short name: ``pgd``."""
        ...

    @property
    def norm(self) -> Norm:
        """The norm budgets are measured in."""
        ...

    @property
    def access(self) -> Access:
        """The least access it needs (gradients, scores or labels)."""
        ...

    @property
    def bounded(self) -> bool:
        """True: stays within ``eps``; False: minimum-norm (ignores ``eps``)."""
        ...

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
        """Adversarial versions of ``x`` (same shape, inside the domain).

        Args:
            target: the model.
            x: raw inputs ``(n, *shape)``.
            y: true labels ``(n,)``.
            eps: the budget in raw units (ignored by minimum-norm attacks).
            rng: the source of every random choice (reproducibility).
            on_step: progress within the batch.
        """
        ...


def perturbation_norms(
    x: NDArray[np.float32], x_adv: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-sample L-infinity and L2 norms of ``x_adv - x`` (float64, raw units)."""
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    delta = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(n, -1)
    return np.abs(delta).max(axis=1, initial=0.0), np.sqrt((delta * delta).sum(axis=1))
