"""Evasion attacks, one module each, listed in :data:`ATTACKS` (stable API).

=================  ==========  ======  =========  ==============================
attack             access      norm    kind       paper
=================  ==========  ======  =========  ==============================
``fgsm``           gradients   linf    bounded    arXiv:1412.6572 (Goodfellow)
``pgd``            gradients   linf/l2 bounded    arXiv:1706.06083 (Madry)
``cw``             gradients   l2      min-norm   arXiv:1608.04644 (Carlini)
``square``         scores      linf    bounded    arXiv:1912.00049 (Andriushchenko)
``hopskipjump``    labels      l2/linf min-norm   arXiv:1904.02144 (Chen)
=================  ==========  ======  =========  ==============================
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bastion.assess.attacks.carlini_wagner import CarliniWagnerL2, CwOptions
from bastion.assess.attacks.fgsm import FGSM, FgsmOptions
from bastion.assess.attacks.hop_skip_jump import HopSkipJump, HopSkipJumpOptions
from bastion.assess.attacks.interface import EvasionAttack, Norm, perturbation_norms
from bastion.assess.attacks.pgd import PGD, PgdOptions
from bastion.assess.attacks.square import SquareAttack, SquareOptions

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "AttackOptions",
    "CarliniWagnerL2",
    "CwOptions",
    "EvasionAttack",
    "FgsmOptions",
    "HopSkipJump",
    "HopSkipJumpOptions",
    "Norm",
    "PgdOptions",
    "SquareAttack",
    "SquareOptions",
    "perturbation_norms",
]

#: The options model of every attack, in the order reports list them.
ATTACKS = (FgsmOptions, PgdOptions, CwOptions, SquareOptions, HopSkipJumpOptions)

#: Any attack's options, told apart by ``name``.
AttackOptions = Annotated[
    FgsmOptions | PgdOptions | CwOptions | SquareOptions | HopSkipJumpOptions,
    Field(discriminator="name"),
]
