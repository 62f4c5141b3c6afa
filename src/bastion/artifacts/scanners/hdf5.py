"""HDF5 files, Keras 2 ``.h5`` models among them.

Keras 2 stores the model's configuration as JSON in the root attribute ``model_config`` (and
the compile settings in ``training_config``); loading rebuilds the model from it exactly as
from a ``.keras`` zip's ``config.json``, so both are checked by
:func:`~bastion.artifacts.scanners.keras.check_keras_config`. Only these attributes are read,
through h5py; no dataset is touched. The HDF5 signature may sit at byte 0 or, after a user
block, at any power of two from 512.
"""

from __future__ import annotations

import io
import json
from typing import Any

from bastion.artifacts.scanners.interface import NeedsIsolation, ScanContext
from bastion.artifacts.scanners.keras import check_keras_config

__all__ = ["HDF5_SIGNATURE", "Hdf5Scanner"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CONFIG_ATTRIBUTES = ("model_config", "training_config")


def _signature_offset(data: memoryview) -> int | None:
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(data):
        if data[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    item = getattr(value, "item", None)  # numpy scalars and 0-d arrays
    if callable(item):
        return _text(item())
    return None


class Hdf5Scanner:
    """HDF5 containers; Keras 2 model configurations inside them."""

    name = "hdf5"
    strong = True

    def matches(self, data: memoryview) -> bool:
        return _signature_offset(data) is not None

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        if not ctx.native:
            raise NeedsIsolation  # the HDF5 library is native code: only in a worker
        import h5py

        label = self.name
        source: Any
        if ctx.at_file_level and ctx.disk_path is not None:
            source = str(ctx.disk_path)
        else:
            source = io.BytesIO(bytes(data))
        try:
            with h5py.File(source, "r", locking=False) as handle:
                attributes = {
                    key: handle.attrs[key] for key in _CONFIG_ATTRIBUTES if key in handle.attrs
                }
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            ctx.incomplete(f"HDF5 file could not be read ({type(exc).__name__}: {exc})")
            return label
        for key, value in attributes.items():
            ctx.check_deadline()
            text = _text(value)
            if text is None:
                ctx.incomplete(f"HDF5 attribute {key!r} is not text")
                continue
            try:
                config = json.loads(text)
            except (ValueError, RecursionError) as exc:
                ctx.incomplete(f"HDF5 attribute {key!r} is not valid JSON ({type(exc).__name__})")
                continue
            if key == "model_config":
                label = "keras-h5"
            check_keras_config(config, ctx)
        return label
