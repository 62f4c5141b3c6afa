"""HDF5 files, Keras 2 ``.h5`` models among them.

Keras 2 stores the model's configuration as JSON in the root attribute ``model_config`` (and
the compile settings in ``training_config``); loading rebuilds the model from it exactly as
from a ``.keras`` zip's ``config.json``, so both are checked by
:func:`~bastion.artifacts.scanners.keras.check_keras_config`. Only these attributes are read,
through h5py; no dataset is touched. The HDF5 signature may sit at byte 0 or, after a user
block, at any power of two from 512.

External references are findings too: an external link, external raw storage or a virtual
dataset makes reading the model read another file; one that leaves the model's folder (an
absolute path, ``..``, a symlink out) is high, like ONNX external data.
"""

from __future__ import annotations

import io
import json
from typing import Any

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners._paths import external_path_problem
from bastion.artifacts.scanners.interface import NeedsIsolation, ScanContext
from bastion.artifacts.scanners.keras import check_keras_config

__all__ = ["HDF5_SIGNATURE", "Hdf5Scanner"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Links and objects visited per file, and group depth, before a limit finding.
MAX_HDF5_OBJECTS = 200_000
MAX_HDF5_DEPTH = 64
_CONFIG_ATTRIBUTES = ("model_config", "training_config")


def _signature_offset(data: memoryview) -> int | None:
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(data):
        if data[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _external_references(h5py: Any, handle: Any, ctx: ScanContext) -> None:
    """Report links and storage that make reading the file read other files.

    Walks groups by their links without following any: an external link (h5py follows it on
    access), a dataset whose raw data is external storage (an external file list), and a
    virtual dataset (its sources are other files). Names are judged like ONNX external data.
    """
    stack: list[tuple[Any, str]] = [(handle, "")]
    visited = 0
    while stack:
        group, prefix = stack.pop()
        for name in group:
            visited += 1
            if visited > MAX_HDF5_OBJECTS:
                ctx.limit("objects", f"HDF5 file with more than {MAX_HDF5_OBJECTS} objects")
                return
            if visited % 256 == 0:
                ctx.check_deadline()
            where = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                _reference(ctx, "external link", where, str(link.filename))
                continue
            if isinstance(link, h5py.SoftLink):
                continue
            item = group.get(name)
            if isinstance(item, h5py.Group):
                if where.count("/") <= MAX_HDF5_DEPTH:
                    stack.append((item, where))
            elif isinstance(item, h5py.Dataset):
                plist = item.id.get_create_plist()
                for index in range(plist.get_external_count()):
                    external = plist.get_external(index)[0]
                    _reference(ctx, "external storage", where, _text(external) or "")
                if item.is_virtual:
                    for source in item.virtual_sources():
                        _reference(ctx, "virtual dataset source", where, str(source.file_name))


def _reference(ctx: ScanContext, kind: str, where: str, target: str) -> None:
    problem = external_path_problem(target, ctx) if target != "." else None
    severity, why = problem or (Severity.MEDIUM, "a file next to the model")
    ctx.add(
        "HDF5-EXTERNAL-FILE",
        severity,
        f"{where} is an HDF5 {kind} to {target!r} ({why}): reading the model reads that file",
        atlas=Atlas.SUPPLY_CHAIN_MODEL if severity < Severity.HIGH else Atlas.UNSAFE_ARTIFACT,
        remediation="Model weights belong inside the file; do not load this model.",
    )


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
                _external_references(h5py, handle, ctx)
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
