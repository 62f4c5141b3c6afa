"""The lazy package exports: a name loads its module on first use, and only then."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bastion._lazy import lazy_exports


def test_a_name_is_loaded_once_then_cached() -> None:
    namespace: dict[str, Any] = {"__name__": "pkg", "__all__": ["dumps"]}
    getattr_, dir_ = lazy_exports(namespace, {"dumps": "json"})
    import json

    assert getattr_("dumps") is json.dumps
    assert namespace["dumps"] is json.dumps
    assert "dumps" in dir_()
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        getattr_("loads")


@pytest.mark.parametrize("package", ["core", "artifacts", "registry", "gateway"])
def test_importing_a_package_loads_none_of_its_modules(package: str) -> None:
    code = (
        f"import sys, bastion.{package} as p\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith('bastion.{package}.'))\n"
        "assert loaded == [], loaded\n"
        "for name in p.__all__: getattr(p, name)\n"
        "assert set(dir(p)) >= set(p.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
