"""The plugin seam of ``bastion assess``: one *family* of attacks per module (stable API).

A family (evasion, membership, extraction, inversion, backdoor, invariance) is an object with
a name, a pydantic config model (its section of the policy file, every field defaulted,
``extra="forbid"``), the metric names it produces for a config (so policy rules are checked
before anything runs), declarative command-line options, and ``run``. Families are listed in
the explicit tuple :data:`bastion.assess.families.FAMILIES`; ``bastion assess <name>`` and the
policy section ``[<name>]`` come from it, so adding a family edits nothing else.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel

from bastion.assess.data import Dataset
from bastion.assess.results import FamilyResult, ProgressCallback, no_progress
from bastion.assess.targets.interface import Target

__all__ = ["CliOption", "Family", "RunContext"]

ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class CliOption:
    """A command-line option of ``bastion assess <family>`` that sets one config field.

    The CLI adds ``flag`` to the family's subcommand and, when given, sets ``field`` of the
    family's config: a string pydantic coerces, a list of strings when ``multiple`` (given
    comma-separated or repeated), or True for a ``switch``.

    Attributes:
        flag: the option, ``--eps``.
        field: the config field it sets, ``eps``.
        help: the help text.
        multiple: a list (``--eps 2/255,8/255`` or ``--eps 2/255 --eps 8/255``).
        switch: a flag without value that sets True.
        metavar: the value's name in the help.
        choices: the allowed values, when a closed set.
    """

    flag: str
    field: str
    help: str
    multiple: bool = False
    switch: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a family runs against.

    Attributes:
        target: the model under assessment.
        data: the evaluation data, labels as indices into ``target.info.classes``.
        seed: the assessment's seed; derive generators with :meth:`rng`.
        progress: the progress observer ``(task, done, total)``.
        aux: further named datasets given with ``--aux NAME=PATH`` (for instance the
            training members of a membership test), same domain and labels.
    """

    target: Target
    data: Dataset
    seed: int = 0
    progress: ProgressCallback = no_progress
    aux: Mapping[str, Dataset] = field(default_factory=dict)

    def rng(self, *keys: int | str) -> np.random.Generator:
        """A generator derived from the seed and ``keys``: same keys, same numbers."""
        words = [self.seed & 0xFFFFFFFF]
        words += [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
        return np.random.default_rng(np.random.SeedSequence(words))


class Family(Protocol[ConfigT]):
    """One family of attacks (see the module docstring)."""

    @property
    def name(self) -> str:
        """The subcommand and policy section: ``evasion``."""
        ...

    @property
    def summary(self) -> str:
        """One line for ``--help``."""
        ...

    @property
    def config_model(self) -> type[ConfigT]:
        """Its policy section; ``config_model()`` must be a valid default config."""
        ...

    @property
    def cli_options(self) -> tuple[CliOption, ...]:
        """Options of ``bastion assess <name>``."""
        ...

    def metric_names(self, config: ConfigT) -> frozenset[str]:
        """The metric names :meth:`run` produces with ``config``."""
        ...

    def run(self, context: RunContext, config: ConfigT) -> FamilyResult:
        """Run the family.

        Raises:
            AssessmentError: it cannot run on this target or data (say why).
        """
        ...


def default_config(family: Family[Any]) -> BaseModel:
    """The family's config with every default."""
    config: BaseModel = family.config_model()
    return config


def validate_config(family: Family[Any], data: Mapping[str, Any]) -> BaseModel:
    """Validate a mapping as the family's config (raises pydantic's ValidationError)."""
    config: BaseModel = family.config_model.model_validate(dict(data))
    return config
