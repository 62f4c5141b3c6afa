"""The package's public names: sorted, complete, importable, lazily loaded."""

from __future__ import annotations

import subprocess
import sys

import bastion.gateway as gateway


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert gateway.__all__ == sorted(gateway.__all__, key=lambda n: (not n.isupper(), n))
    assert len(set(gateway.__all__)) == len(gateway.__all__)
    for name in gateway.__all__:
        value = getattr(gateway, name)
        module = sys.modules[gateway._EXPORTS[name]]
        assert name in module.__all__, name
        assert getattr(module, name) is value
    assert set(gateway._EXPORTS) == set(gateway.__all__)
    assert set(dir(gateway)) >= set(gateway.__all__)


def test_every_public_name_of_my_modules_is_exported() -> None:
    modules = {gateway._EXPORTS[name] for name in gateway.__all__}
    for module in modules - {"bastion.gateway.ratelimit", "bastion.gateway.extraction"}:
        for name in sys.modules[module].__all__:
            assert name in gateway.__all__ or name in _INTERNAL, (module, name)


# Public in their module for the other guards, not part of the package's surface.
_INTERNAL = {
    "JSON_HEADERS",
    "Receive",
    "Scope",
    "Send",
    "dumps",
    "send_bytes",
    "send_error",
    "send_json",
    "CONTENT_TYPE",
    "ClientDisconnected",
    "check_content_length",
    "check_json_structure",
    "read_body",
    "bind",
}


def test_importing_the_package_loads_no_guard() -> None:
    code = (
        "import sys, bastion.gateway\n"
        "print(sorted(m for m in sys.modules if m.startswith('bastion.gateway.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]"
