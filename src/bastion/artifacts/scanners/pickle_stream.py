"""Raw pickles, joblib files and PyTorch legacy (pre-zip) checkpoints.

What the loaders do, and so what is scanned:

- ``pickle.load``, ``joblib.load`` (uncompressed) and ``numpy.load`` (a file that is neither
  zip nor ``.npy``) run the first pickle of the file. joblib writes the bytes of each array
  inline, right after the ``NumpyArrayWrapper`` that describes it; the pickle analyser steps
  over them.
- ``torch.load`` on a file that does not start with a zip local header first tries the old tar
  layout (see :mod:`~bastion.artifacts.scanners.tar_archive`), then reads five pickles in a
  row: the magic number, the protocol version, ``sys_info``, the object itself and the list of
  storage keys; raw storage bytes follow (``torch/serialization.py``, ``_legacy_load``). Each
  pickle is fully unpickled before torch checks its value, so all five are scanned, whatever
  the first one holds.

Every further pickle that follows the last one is scanned too (some loaders read several); a
tail of other bytes is reported, since it is how polyglots hide a second format.
"""

from __future__ import annotations

import pickletools
import re

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.pickle_scan import analyze_pickle, looks_like_pickle
from bastion.artifacts.scanners.interface import PickleRole, ScanContext

__all__ = ["PickleScanner", "scan_torch_storages", "scan_torch_tensors"]

#: Bytes handed to the sniffer: enough for a protocol 0/1 opening that carries a short string
#: (an ONNX doc_string that doubles as a pickle operand, say).
_SNIFF = 256
#: Pickles read from one stream before giving up (a legacy checkpoint has five).
MAX_PICKLES = 256
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_MAGIC_LE = _TORCH_MAGIC.to_bytes(10, "little")
_TORCH_MAGIC_TEXT = str(_TORCH_MAGIC).encode()
_LEGACY_PICKLES = 5
_OPCODES = frozenset(ord(op.code) for op in pickletools.opcodes)
#: GLOBAL, INST, STACK_GLOBAL, EXT1/2/4: without one of these bytes nothing gets imported.
_IMPORTING_OPCODES = (b"c", b"i", b"\x93", b"\x82", b"\x83", b"\x84")
#: A global as a pickle names one (text that merely starts with "c" names none).
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")

#: Element sizes of the legacy typed storages, by class name (``torch/storage.py``).
STORAGE_ELEMENT_SIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QUInt8Storage": 1,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}


def sniff_pickle(data: memoryview, offset: int = 0) -> bool:
    """Whether the bytes at ``offset`` start like a pickle (any protocol, header or not).

    Besides the analyser's own sniffing, a head whose opcodes import a global counts: a
    stream can be odd enough for the sniffer (protocol 4 opcodes without a PROTO header, a
    STOP with items left on the stack, which CPython accepts) and still run its payload.
    """
    if offset >= len(data):
        return False
    head = bytes(data[offset : offset + _SNIFF])
    if looks_like_pickle(head):
        return True
    if head[0] not in _OPCODES or not any(op in head for op in _IMPORTING_OPCODES):
        return False
    found = analyze_pickle(head, path="", allow_trailing=True).globals
    return any(_DOTTED.fullmatch(name) for name in found)


def is_torch_legacy(data: memoryview) -> bool:
    """Whether the first pickle holds torch's legacy magic number (binary or text form)."""
    head = bytes(data[:48])
    return _TORCH_MAGIC_LE in head or _TORCH_MAGIC_TEXT in head


class PickleScanner:
    """Raw pickle streams: plain pickle, joblib, PyTorch legacy checkpoints."""

    name = "pickle"
    strong = False

    def matches(self, data: memoryview) -> bool:
        return sniff_pickle(data)

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        legacy = is_torch_legacy(data)
        offset = 0
        count = 0
        globals_seen: set[str] = set()
        while True:
            analysis = ctx.analyze_pickle(data, start=offset, allow_trailing=True)
            count += 1
            globals_seen.update(analysis.globals)
            if not analysis.complete:
                return _label(legacy, globals_seen)  # the analyser said why
            offset = analysis.end
            if legacy and count == _LEGACY_PICKLES:
                return _label(legacy, globals_seen)  # raw storages follow
            if offset >= len(data) or not sniff_pickle(data, offset):
                break
            if count >= MAX_PICKLES:
                ctx.limit("pickles", f"more than {MAX_PICKLES} pickles in one stream")
                return _label(legacy, globals_seen)
        if legacy:
            ctx.incomplete(
                f"PyTorch legacy checkpoint holds {count} of the {_LEGACY_PICKLES} pickles "
                "torch.load reads",
                offset=offset,
            )
        elif offset < len(data):
            ctx.add(
                "PICKLE-TRAILING-DATA",
                # As the analyser grades it: concatenated pickles and polyglots hide here.
                Severity.HIGH if ctx.pickle_role is PickleRole.LOADED else Severity.LOW,
                f"{len(data) - offset} bytes follow the pickle's STOP; pickle loaders ignore "
                "them, other readers may not (a polyglot hides a second format this way)",
                offset=offset,
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Re-export the file with the tool that made it.",
            )
        return _label(legacy, globals_seen)


def _label(legacy: bool, globals_seen: set[str]) -> str:
    if legacy:
        return "pytorch-legacy"
    if any(name.startswith("joblib.") for name in globals_seen):
        return "joblib"
    return "pickle"


def _storage_class(globals_: tuple[str, ...]) -> str | None:
    for name in globals_:
        short = name.rpartition(".")[2]
        if short in STORAGE_ELEMENT_SIZES:
            return short
    return None


def scan_torch_storages(data: memoryview, ctx: ScanContext) -> None:
    """The ``storages`` member of the legacy tar layout.

    Layout: a pickle (the count), then per storage a pickle ``(key, location, StorageType)``,
    an int64 element count and the raw bytes, then a pickle of the storage views.
    """
    offset = 0
    analysis = ctx.analyze_pickle(data, start=offset, role=PickleRole.LOADED)
    if not analysis.complete:
        return
    offset = analysis.end
    while offset < len(data):
        ctx.check_deadline()
        analysis = ctx.analyze_pickle(data, start=offset, role=PickleRole.LOADED)
        if not analysis.complete:
            return
        offset = analysis.end
        storage = _storage_class(analysis.globals)
        if storage is None:
            break  # the storage views: the last pickle
        if offset + 8 > len(data):
            ctx.incomplete("legacy storage record is truncated", offset=offset)
            return
        numel = int.from_bytes(data[offset : offset + 8], "little", signed=True)
        size = numel * STORAGE_ELEMENT_SIZES[storage]
        if numel < 0 or offset + 8 + size > len(data):
            ctx.incomplete("legacy storage size runs past the member", offset=offset)
            return
        offset += 8 + size
    else:
        ctx.incomplete("legacy storages member lacks its storage-views pickle", offset=offset)
        return
    _trailing(data, offset, ctx)


def scan_torch_tensors(data: memoryview, ctx: ScanContext) -> None:
    """The ``tensors`` member of the legacy tar layout.

    Layout: a pickle (the count), then per tensor a pickle ``(key, storage_id, TensorType)``
    followed by int32 ndim, 4 padding bytes, ndim int64 sizes, ndim int64 strides and an int64
    storage offset.
    """
    analysis = ctx.analyze_pickle(data, start=0, role=PickleRole.LOADED)
    if not analysis.complete:
        return
    offset = analysis.end
    while offset < len(data):
        ctx.check_deadline()
        analysis = ctx.analyze_pickle(data, start=offset, role=PickleRole.LOADED)
        if not analysis.complete:
            return
        offset = analysis.end
        if offset + 8 > len(data):
            ctx.incomplete("legacy tensor record is truncated", offset=offset)
            return
        ndim = int.from_bytes(data[offset : offset + 4], "little", signed=True)
        end = offset + 8 + 16 * ndim + 8
        if ndim < 0 or end > len(data):
            ctx.incomplete("legacy tensor record runs past the member", offset=offset)
            return
        offset = end


def _trailing(data: memoryview, offset: int, ctx: ScanContext) -> None:
    if offset < len(data):
        ctx.add(
            "PICKLE-TRAILING-DATA",
            Severity.LOW,
            f"{len(data) - offset} bytes follow the last record torch reads",
            offset=offset,
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
        )
