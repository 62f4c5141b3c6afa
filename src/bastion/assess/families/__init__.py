"""Assessment families, one module each, listed in :data:`FAMILIES` (stable API).

To add a family: write ``families/<name>.py`` with an object satisfying
:class:`~bastion.assess.families.interface.Family` and add it to ``FAMILIES``; the command
line (``bastion assess <name>``), the policy section ``[<name>]`` and the reports follow.
"""

from __future__ import annotations

from typing import Any

from bastion.assess.families.backdoor import BACKDOOR
from bastion.assess.families.evasion import EVASION
from bastion.assess.families.extraction import EXTRACTION
from bastion.assess.families.interface import CliOption, Family, RunContext
from bastion.assess.families.invariance import INVARIANCE
from bastion.assess.families.inversion import INVERSION
from bastion.assess.families.membership import MEMBERSHIP

__all__ = [
    "BACKDOOR",
    "EVASION",
    "EXTRACTION",
    "FAMILIES",
    "INVARIANCE",
    "INVERSION",
    "MEMBERSHIP",
    "CliOption",
    "Family",
    "RunContext",
    "family_named",
]

#: Every family, in the order reports list them.
FAMILIES: tuple[Family[Any], ...] = (
    EVASION,
    MEMBERSHIP,
    EXTRACTION,
    INVERSION,
    BACKDOOR,
    INVARIANCE,
)


def family_named(name: str) -> Family[Any]:
    """The family called ``name``.

    Raises:
        KeyError: there is none.
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)
