"""NumPy ``.npy`` arrays (``.npz`` archives are zips of these; see the zip scanner).

Layout (``numpy/lib/format.py``): ``\\x93NUMPY``, major and minor version, a header length
(2 bytes in version 1, 4 in versions 2 and 3), a header that is a Python dict literal with
``descr``, ``fortran_order`` and ``shape``, then the data. ``numpy.load`` with
``allow_pickle=True`` unpickles the data of an object array (``descr`` holding ``O``); any
other array is raw bytes whose size the header fixes.

The header is read with :func:`ast.literal_eval`, as numpy does, and only after its length is
checked; the dtype comes from :func:`numpy.lib.format.descr_to_dtype`, which builds a dtype and
runs nothing.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners.interface import PickleRole, ScanContext

__all__ = ["NpyScanner"]

MAGIC = b"\x93NUMPY"
#: numpy.load refuses longer headers unless allow_pickle is set (numpy >= 1.24).
NUMPY_MAX_HEADER = 10_000
_KEYS = {"descr", "fortran_order", "shape"}


class NpyScanner:
    """NumPy ``.npy`` arrays: object arrays carry a pickle, others must add up."""

    name = "npy"
    strong = True

    def matches(self, data: memoryview) -> bool:
        return bytes(data[:6]) == MAGIC

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        parsed = _parse_header(data, ctx)
        if parsed is None:
            return "npy"
        header, start = parsed
        try:
            dtype = _dtype(header["descr"])
        except (TypeError, ValueError, KeyError, RecursionError) as exc:
            ctx.incomplete(f"npy header has an invalid dtype ({exc})")
            return "npy"
        if dtype.hasobject:
            ctx.add(
                "NPY-OBJECT-ARRAY",
                Severity.LOW,
                "object array: numpy.load(allow_pickle=True) unpickles its data",
                offset=start,
                remediation="Save numeric arrays without object dtype; load with "
                "allow_pickle=False.",
            )
            ctx.analyze_pickle(data, start=start, allow_trailing=False, role=PickleRole.LOADED)
            return "npy"
        expected = dtype.itemsize * math.prod(header["shape"])
        actual = len(data) - start
        if actual < expected:
            ctx.incomplete(
                f"npy data is truncated: the header promises {expected} bytes, {actual} follow",
                offset=start,
            )
        elif actual > expected:
            ctx.add(
                "NPY-TRAILING-DATA",
                Severity.LOW,
                f"{actual - expected} bytes follow the array data; numpy ignores them",
                offset=start + expected,
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
        return "npy"


def _parse_header(data: memoryview, ctx: ScanContext) -> tuple[dict[str, Any], int] | None:
    if len(data) < 10:
        ctx.incomplete("npy file is truncated inside its preamble")
        return None
    major, minor = data[6], data[7]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        if len(data) < 12:
            ctx.incomplete("npy file is truncated inside its preamble")
            return None
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        ctx.incomplete(f"npy format version {major}.{minor} is unknown")
        return None
    if minor != 0:
        ctx.incomplete(f"npy format version {major}.{minor} is unknown")
        return None
    if length > ctx.settings.max_header_bytes:
        ctx.limit("header", f"npy header of {length} bytes")
        return None
    if start + length > len(data):
        ctx.incomplete("npy file is truncated inside its header")
        return None
    if length > NUMPY_MAX_HEADER:
        ctx.add(
            "NPY-LARGE-HEADER",
            Severity.MEDIUM,
            f"npy header of {length} bytes: numpy.load refuses it unless allow_pickle=True",
            atlas=Atlas.DENIAL_OF_SERVICE,
        )
    raw = bytes(data[start : start + length])
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        ctx.incomplete(f"npy header is not a Python literal ({type(exc).__name__})")
        return None
    if not isinstance(header, dict) or set(header) != _KEYS:
        ctx.incomplete("npy header is not the dict numpy writes")
        return None
    shape = header["shape"]
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or not isinstance(header["fortran_order"], bool)
    ):
        ctx.incomplete("npy header has an invalid shape or order")
        return None
    return header, start + length


def _dtype(descr: object) -> Any:
    import numpy as np

    return np.lib.format.descr_to_dtype(descr)  # type: ignore[arg-type]
