"""safetensors: the header is the whole attack surface, so it is checked the way the reference
reader checks it (``safetensors/src/tensor.rs``, ``Metadata::validate``), and more strictly.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an optional
``__metadata__`` map of strings to strings), then the data. Offsets are relative to the data;
sorted by ``begin`` they must tile it exactly: no gap, no overlap, nothing out of bounds, and
each range must be exactly ``prod(shape) * bits(dtype) / 8`` bytes. The header may be at most
``scan.max_header_bytes`` (the reference reader stops at 100 MB) and is parsed only after that
check. Duplicate JSON keys are reported: readers disagree on which one wins.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners.interface import INCOMPLETE_SUFFIX, ScanContext

__all__ = ["DTYPE_BITS", "SafetensorsScanner"]

#: Bits per element of every dtype the reference reader knows.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_METADATA = "__metadata__"
_JSON_AFTER_BRACE = frozenset(b'"} \t\r\n')


class _DuplicateKeyError(ValueError):
    pass


class SafetensorsScanner:
    """safetensors files: length-prefixed JSON header, then tensor bytes."""

    name = "safetensors"
    strong = True

    def matches(self, data: memoryview) -> bool:
        # An 8-byte length, then text. Tensor data has a ``{`` at byte 8 once in 256 members,
        # so the length must also be plausible: below 4 GiB and within the file (a header
        # that is not an object, or starts with a space, is then still this format, and a
        # finding), or, for a length built to exhaust a reader, followed by JSON-like text.
        head = bytes(data[:16])
        if len(head) < 10:
            return False
        length = int.from_bytes(head[:8], "little")
        if length <= len(data) - 8:
            return 2 <= length < 2**32 and _textual(head[8 : 8 + min(length, 8)])
        return (
            head[8] == ord("{")
            and head[9] in _JSON_AFTER_BRACE
            and len(head) == 16
            and all(0x20 <= c < 0x7F for c in head[9:])  # stricter: no length to vouch for it
        )

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        length = int.from_bytes(data[:8], "little")
        if length > ctx.settings.max_header_bytes:
            ctx.limit("header", f"safetensors header of {length} bytes")
            return "safetensors"
        if length > len(data) - 8:
            self._bad(ctx, f"header length {length} runs past the end of the file")
            return "safetensors"
        raw = bytes(data[8 : 8 + length])
        if not raw.startswith(b"{"):
            # The reference reader refuses a header that does not open an object right away.
            self._bad(ctx, "header does not start with '{'")
            return "safetensors"
        duplicates: list[str] = []
        try:
            header = json.loads(
                raw.decode("utf-8"), object_pairs_hook=lambda pairs: _pairs(pairs, duplicates)
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._bad(ctx, f"header is not valid UTF-8 JSON ({type(exc).__name__})")
            return "safetensors"
        for key in sorted(set(duplicates)):
            ctx.add(
                "SAFETENSORS-DUPLICATE-KEY",
                Severity.HIGH,
                f"header key {key!r} appears more than once: readers disagree on which wins",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
        if not isinstance(header, dict):
            self._bad(ctx, "header is not a JSON object")
            return "safetensors"
        self._validate(header, len(data) - 8 - length, ctx)
        return "safetensors"

    @staticmethod
    def _bad(ctx: ScanContext, what: str, rule: str = "SAFETENSORS-MALFORMED") -> None:
        ctx.add(
            rule,
            Severity.HIGH,
            f"safetensors {what}: {INCOMPLETE_SUFFIX}",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Re-export the weights with the safetensors library from a trusted copy.",
        )

    def _validate(self, header: dict[str, Any], data_size: int, ctx: ScanContext) -> None:
        metadata = header.get(_METADATA)
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            self._bad(ctx, "__metadata__ is not a map of strings to strings")
        spans: list[tuple[int, int, str]] = []
        for name, info in header.items():
            ctx.check_deadline()
            if name == _METADATA:
                continue
            if not isinstance(info, dict):
                self._bad(ctx, f"entry {name!r} is not an object")
                continue
            dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if dtype not in DTYPE_BITS:
                self._bad(ctx, f"tensor {name!r} has unknown dtype {dtype!r}")
                continue
            if not (
                isinstance(shape, list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            ):
                self._bad(ctx, f"tensor {name!r} has an invalid shape")
                continue
            if not (
                isinstance(offsets, list)
                and len(offsets) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
            ):
                self._bad(ctx, f"tensor {name!r} has invalid data_offsets")
                continue
            begin, end = offsets
            if begin < 0 or end < begin:
                self._bad(ctx, f"tensor {name!r} has reversed offsets", "SAFETENSORS-OFFSETS")
                continue
            if end > data_size:
                self._bad(
                    ctx,
                    f"tensor {name!r} ends at {end}, past the {data_size} data bytes",
                    "SAFETENSORS-OFFSETS",
                )
            bits = math.prod(shape) * DTYPE_BITS[dtype]
            if bits % 8 or bits // 8 != end - begin:
                self._bad(
                    ctx,
                    f"tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, its range "
                    f"holds {end - begin}",
                    "SAFETENSORS-DTYPE-SHAPE",
                )
            spans.append((begin, end, name))
        spans.sort()
        position = 0
        for begin, end, name in spans:
            if begin < position:
                self._bad(
                    ctx,
                    f"tensor {name!r} overlaps the tensor before it",
                    "SAFETENSORS-OFFSETS",
                )
            elif begin > position:
                self._bad(
                    ctx,
                    f"{begin - position} data bytes before tensor {name!r} belong to no tensor",
                    "SAFETENSORS-OFFSETS",
                )
            position = max(position, end)
        if position < data_size:
            self._bad(
                ctx,
                f"{data_size - position} data bytes at the end belong to no tensor",
                "SAFETENSORS-OFFSETS",
            )


def _textual(chunk: bytes) -> bool:
    """Starts like a JSON value and holds no control characters (other bytes may be any:
    a header that is not valid UTF-8 is still a safetensors header, and a finding)."""
    return (
        bool(chunk)
        and chunk[:1] in (b"{", b"[", b" ", b"\t", b"\r", b"\n", b'"')
        and all((c >= 0x20 and c != 0x7F) or c in b"\t\r\n" for c in chunk)
    )


def _pairs(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    return result
