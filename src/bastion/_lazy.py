"""Lazy package exports (PEP 562), shared by the packages that name their public symbols.

A package lists each public name and the module that defines it; the module is imported on the
first access of one of its names, so ``import bastion.core`` stays cheap for the CLI's start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package.

    Args:
        namespace: the package's ``globals()`` (holding ``__name__`` and ``__all__``); a name
            is cached there once loaded.
        exports: public name -> the module that defines it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module protocol's name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module protocol's name
        return sorted(set(namespace) | set(namespace["__all__"]))

    return __getattr__, __dir__
