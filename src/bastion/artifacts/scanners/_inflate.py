"""Bounded stream decompression shared by the archive and compression scanners.

Every decompressor here is driven chunk by chunk with an output cap, so a decompression bomb
costs at most the cap in memory and ends as a finding: the output may not pass the scan's
buffer cap, the file's total expanded-bytes budget, or the compression ratio limit (above a
small floor, see :data:`~bastion.artifacts.scanners.interface.RATIO_FLOOR_BYTES`).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any

from bastion.artifacts.scanners.interface import ScanContext

__all__ = ["InflateError", "inflate"]

_IN_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 22


class InflateError(Exception):
    """The compressed stream is corrupt (not a limit: those are findings)."""


def _new(kind: str) -> Any:
    if kind == "deflate":
        return zlib.decompressobj(-15)
    if kind == "zlib":
        return zlib.decompressobj(15)
    if kind == "gzip":
        return zlib.decompressobj(31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    raise ValueError(f"unknown compression {kind!r}")


#: Stream kinds whose concatenated streams the usual readers (gzip, bz2, lzma modules) join.
_MULTISTREAM_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}


def inflate(
    data: memoryview | bytes,
    kind: str,
    ctx: ScanContext,
    *,
    what: str,
    limit: int | None = None,
) -> tuple[bytes, int] | None:
    """Decompress ``data`` with caps.

    Args:
        data: the compressed bytes.
        kind: ``deflate`` (raw, as in zip), ``zlib``, ``gzip``, ``bz2``, ``xz`` or ``lzma``
            (the ``.lzma`` "alone" format).
        ctx: the scan, for its limits and findings.
        what: names the stream in findings.
        limit: stop quietly after this many output bytes (a prefix for sniffing); None for
            the whole stream.

    Returns:
        The output and the number of input bytes consumed, or None when a limit was hit (a
        finding was recorded).

    Raises:
        InflateError: the stream is corrupt or ends early.
    """
    cap = ctx.buffer_cap if limit is None else min(limit, ctx.buffer_cap)
    out = bytearray()
    view = memoryview(data)
    pos = 0
    decomp = _new(kind)
    is_zlib = kind in ("deflate", "zlib", "gzip")
    base = 0  # input consumed by earlier streams of a multi-stream file
    while True:
        ctx.check_deadline()
        want = min(_OUT_CHUNK, cap + 1 - len(out))
        if is_zlib:
            if decomp.unconsumed_tail:
                chunk = decomp.unconsumed_tail
            else:
                chunk = bytes(view[pos : pos + _IN_CHUNK])
                pos += len(chunk)
            try:
                piece = decomp.decompress(chunk, want)
            except zlib.error as exc:
                raise InflateError(f"{what}: corrupt {kind} data ({exc})") from exc
            consumed = pos - len(decomp.unconsumed_tail)
            starved = not chunk and not piece
        else:
            if getattr(decomp, "needs_input", True):
                chunk = bytes(view[pos : pos + _IN_CHUNK])
                pos += len(chunk)
            else:
                chunk = b""
            try:
                piece = decomp.decompress(chunk, want)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise InflateError(f"{what}: corrupt {kind} data ({exc})") from exc
            consumed = pos
            starved = not chunk and not piece and getattr(decomp, "needs_input", True)
        out += piece
        if limit is not None and len(out) >= limit:
            return bytes(out[:limit]), consumed
        if len(out) > cap:
            ctx.limit("memory", f"{what} expands past {cap} bytes, the scan's buffer limit")
            return None
        if ctx.ratio_exceeded(len(out), base + consumed):
            ctx.limit(
                "ratio",
                f"{what} is a decompression bomb: more than "
                f"{ctx.settings.max_compression_ratio:g}x expansion",
            )
            return None
        if decomp.eof:
            rest = bytes(decomp.unused_data) + bytes(view[pos:])
            magic = _MULTISTREAM_MAGIC.get(kind)
            if magic is not None and rest.startswith(magic):
                base = len(data) - len(rest)
                view = memoryview(rest)
                pos = 0
                decomp = _new(kind)
                continue
            if not ctx.count_expanded(len(out)):
                return None
            return bytes(out), len(data) - len(rest)
        if starved:
            raise InflateError(f"{what}: {kind} stream ends before its end marker")
