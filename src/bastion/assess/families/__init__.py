"""Assessment families, one module each, listed in :data:`FAMILIES` (stable API).

To add a family: write ``families/<name>.py`` with an object satisfying
:class:`~bastion.assess.families.interface.Family` and add it to ``FAMILIES``; the command
line (``bastion assess <name>``), the policy section ``[<name>]`` and the reports follow.
"""

from __future__ import annotations

from typing import Any

from bastion.assess.families.evasion import EVASION
from bastion.assess.families.interface import CliOption, Family, RunContext

__all__ = ["EVASION", "FAMILIES", "CliOption", "Family", "RunContext", "family_named"]

#: Every family, in the order reports list them.
FAMILIES: tuple[Family[Any], ...] = (EVASION,)


def family_named(name: str) -> Family[Any]:
    """The family called ``name``.

    Raises:
        KeyError: there is none.
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)
