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
  that run commands or code are critical, any other is an unknown custom object (high: its
  code is imported, or the user's registered class runs).
- a ``Lambda`` layer naming a Python function (not bytecode) calls that function.
- a function object (``"class_name": "function"``) is a call of the named function, even under
  ``keras.*`` (CVE-2025-8747 reached ``keras.utils.get_file``): only activations, losses,
  metrics and ops pass.
- layers that load other artifacts: ``TFSMLayer`` (a TensorFlow SavedModel from ``filepath``,
  CVE-2026-1462), any config with a ``filepath``, and ``TorchModuleWrapper``, whose config
  carries a ``torch.save`` of a module that Keras reads back with ``torch.load``: that payload
  is decoded and scanned like a file of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners.interface import PickleRole, ScanContext

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
#: Keras modules whose functions a configuration may name (activations, losses, metrics, ops).
SAFE_FUNCTION_MODULES = (
    "keras.activations",
    "keras.losses",
    "keras.metrics",
    "keras.ops",
    "keras.src.activations",
    "keras.src.losses",
    "keras.src.metrics",
    "keras.src.ops",
    "tf_keras.activations",
    "tf_keras.losses",
    "tf_keras.metrics",
)
_LOADER_LAYERS = frozenset({"TFSMLayer"})
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
    if (
        class_name == "function"
        and isinstance(module, str)
        and _is_keras_module(module)
        and not module.startswith(SAFE_FUNCTION_MODULES)
    ):
        name = config if isinstance(config, str) else "?"
        ctx.add(
            "KERAS-FUNCTION-CALL",
            Severity.HIGH,
            f"the configuration makes Keras call {module}.{name}, which is not an "
            "activation, loss, metric or op",
            symbol=f"{module}.{name}",
            remediation="Do not load this model unless you expect that function here.",
        )
    if class_name in _LOADER_LAYERS or (isinstance(config, dict) and "filepath" in config):
        path = config.get("filepath") if isinstance(config, dict) else None
        ctx.add(
            "KERAS-EXTERNAL-LOAD",
            Severity.HIGH,
            f"{class_name or 'a layer'} loads another artifact from {path!r} when the model "
            "loads (a TensorFlow SavedModel runs its own graph)",
            symbol=str(class_name),
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Do not load this model; a model file should be self-contained.",
        )
    if class_name == "TorchModuleWrapper":
        _torch_module(config, ctx)
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
                Severity.HIGH,
                f"unknown custom object {module}.{name}: loading imports code outside Keras",
                symbol=f"{module}.{name}",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Load only with the custom objects' code from a trusted source.",
            )


def _torch_module(config: object, ctx: ScanContext) -> None:
    """A TorchModuleWrapper: Keras rebuilds it with ``torch.load`` of a pickled module."""
    ctx.add(
        "KERAS-TORCH-MODULE",
        Severity.HIGH,
        "TorchModuleWrapper: loading unpickles a whole torch module (torch.load with "
        "weights_only=False), which can run any code",
        symbol="TorchModuleWrapper",
        remediation="Load only from a trusted source; prefer native Keras layers.",
    )
    encoded = config.get("module") if isinstance(config, dict) else None
    if isinstance(encoded, dict):  # serialized as {"class_name": "__bytes__", ...}
        inner = encoded.get("config")
        encoded = inner.get("value") if isinstance(inner, dict) else None
    if not isinstance(encoded, str) or not ctx.count_member():
        return
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        payload = encoded.encode("utf-8", errors="surrogateescape")
    ctx.nested(memoryview(payload), "TorchModuleWrapper.module", role=PickleRole.LOADED)


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
