"""Keras model configurations: ``config.json`` in a ``.keras`` zip, ``model_config`` in HDF5.

Keras rebuilds a model from its JSON configuration by importing ``module`` and looking up
``class_name`` in it (``keras/src/saving/serialization_lib.py``, ``deserialize_keras_object``),
so the configuration decides what code runs:

- a ``Lambda`` layer stores its function as marshalled Python bytecode: ``{"class_name":
  "__lambda__", ...}`` in Keras 3, ``"function_type": "lambda"`` in Keras 2 HDF5 files. Loading
  runs it (CVE-2024-3660; Keras 3's ``safe_mode`` refuses it by default, older loaders and
  ``safe_mode=False`` do not): critical.
- an object whose ``module`` is not Keras' own imports that module and calls into it
  (CVE-2025-1550 used ``module`` to reach arbitrary functions despite ``safe_mode``): modules
  that run commands or code are critical, any other is an unknown custom object to review.
- a ``Lambda`` layer naming a Python function (not bytecode) calls that function.
"""

from __future__ import annotations

import json
from typing import Any

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners.interface import ScanContext

__all__ = ["DANGEROUS_MODULES", "KerasConfigScanner", "check_keras_config"]

#: Top-level modules whose functions run commands, code or I/O when a config calls them.
DANGEROUS_MODULES = frozenset(
    {
        "builtins",
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "shutil",
        "importlib",
        "runpy",
        "pickle",
        "marshal",
        "socket",
        "ctypes",
        "code",
        "codeop",
        "pty",
        "webbrowser",
        "multiprocessing",
        "types",
        "pathlib",
        "io",
        "tempfile",
        "urllib",
        "requests",
        "http",
        "dill",
        "cloudpickle",
        "joblib",
    }
)
_KERAS_ROOTS = frozenset({"keras", "tf_keras"})
_MAX_NODES = 5_000_000
_SNIFF = 4096
_JSON_STARTS = frozenset(b"{ \t\r\n")


def _is_keras_module(module: str) -> bool:
    root = module.split(".", 1)[0]
    return root in _KERAS_ROOTS or module.startswith("tensorflow.keras")


def check_keras_config(config: Any, ctx: ScanContext) -> None:
    """Walk a parsed Keras configuration and report what would run code when it loads."""
    stack = [config]
    nodes = 0
    reported: set[tuple[str, str]] = set()
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes % 4096 == 0:
            ctx.check_deadline()
        if nodes > _MAX_NODES:
            ctx.limit("nodes", f"Keras configuration with more than {_MAX_NODES} values")
            return
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        stack.extend(item.values())
        _check_object(item, ctx, reported)


def _check_object(obj: dict[str, Any], ctx: ScanContext, reported: set[tuple[str, str]]) -> None:
    class_name = obj.get("class_name")
    module = obj.get("module")
    config = obj.get("config")
    if class_name == "__lambda__":
        ctx.add(
            "KERAS-LAMBDA-BYTECODE",
            Severity.CRITICAL,
            "a Lambda function stored as marshalled Python bytecode: loading the model with "
            "safe_mode=False (or an older Keras) runs it",
            symbol="__lambda__",
            remediation="Do not load this model; rebuild the Lambda as a registered custom layer.",
        )
    if class_name == "Lambda" and isinstance(config, dict):
        function = config.get("function")
        if config.get("function_type") == "lambda" or (
            isinstance(function, list | tuple) and function and isinstance(function[0], str)
        ):
            ctx.add(
                "KERAS-LAMBDA-BYTECODE",
                Severity.CRITICAL,
                "a Keras 2 Lambda layer stores marshalled Python bytecode: loading the model "
                "runs it",
                symbol="Lambda",
                remediation="Do not load this model; rebuild the Lambda as a registered "
                "custom layer.",
            )
        elif isinstance(function, str):
            fn_module = config.get("module") or "?"
            ctx.add(
                "KERAS-LAMBDA-FUNCTION",
                Severity.HIGH,
                f"a Lambda layer calls the Python function {fn_module}.{function}",
                symbol=f"{fn_module}.{function}",
                remediation="Review the function; prefer registered custom layers.",
            )
    if (
        isinstance(module, str)
        and module
        and isinstance(class_name, str)
        and not _is_keras_module(module)
    ):
        name = class_name
        key = (module, name)
        if key in reported:
            return
        reported.add(key)
        root = module.split(".", 1)[0]
        if root in DANGEROUS_MODULES:
            ctx.add(
                "KERAS-DANGEROUS-MODULE",
                Severity.CRITICAL,
                f"the configuration makes Keras import {module} and use {name} from it",
                symbol=f"{module}.{name}",
                remediation="Do not load this model.",
            )
        else:
            ctx.add(
                "KERAS-CUSTOM-OBJECT",
                Severity.MEDIUM,
                f"unknown custom object {module}.{name}: loading imports code outside Keras",
                symbol=f"{module}.{name}",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Load only with the custom objects' code from a trusted source.",
            )


def looks_like_keras_config(data: memoryview) -> bool:
    """JSON whose first bytes name a ``class_name``: a Keras model configuration."""
    if not data or data[0] not in _JSON_STARTS:
        return False
    head = bytes(data[:_SNIFF]).lstrip()
    return head.startswith(b"{") and b'"class_name"' in head


class KerasConfigScanner:
    """A Keras model configuration as JSON (``config.json`` in ``.keras`` zips, model JSON)."""

    name = "keras-config"
    strong = True

    def matches(self, data: memoryview) -> bool:
        return looks_like_keras_config(data)

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        if len(data) > ctx.settings.max_header_bytes:
            ctx.limit("header", f"Keras configuration of {len(data)} bytes")
            return self.name
        try:
            config = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            ctx.incomplete(f"Keras configuration is not valid JSON ({type(exc).__name__})")
            return self.name
        check_keras_config(config, ctx)
        return self.name
