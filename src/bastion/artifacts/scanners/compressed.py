"""Single-stream compression: gzip, bzip2, xz, lzma, zlib, and joblib's compressed files.

``joblib.load`` picks a decompressor by the first bytes of the file (``joblib/compressor.py``,
``numpy_pickle_utils._detect_compressor``), in this order: ``ZF`` (the pre-0.10 format: ``ZF``,
a hex length padded to 19 characters, then zlib data), ``\\x78`` (zlib), ``\\x1f\\x8b`` (gzip),
``BZ`` (bzip2), ``\\x5d\\x00`` (lzma "alone"), ``\\xfd7zXZ`` (xz), ``\\x04\\x22\\x4d\\x18`` (LZ4,
with the optional lz4 package); what comes out is unpickled. LZ4 is recognised but not
decompressed (no decoder in the standard library), which fails closed.
The same wrappers around a tar (``.tar.gz``) or anything else are handled alike: the stream is
decompressed with caps (see :mod:`~bastion.artifacts.scanners._inflate`) and its content scanned
by format one level deeper.
"""

from __future__ import annotations

import lzma
import zlib

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners._inflate import InflateError, inflate
from bastion.artifacts.scanners.interface import PickleRole, ScanContext

__all__ = ["CompressedScanner"]

_JOBLIB_COMPAT = b"ZF"
_JOBLIB_COMPAT_HEADER = 2 + 19  # "ZF" + hex length padded to len(hex(2**64))
_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16
_BZ2_BLOCK = b"\x31\x41\x59\x26\x53\x59"
_BZ2_EMPTY = b"\x17\x72\x45\x38\x50\x90"
#: LZ4 frame magic: joblib.load decompresses it when the lz4 package is installed.
_LZ4_FRAME = b"\x04\x22\x4d\x18"


def _kind(data: memoryview) -> str | None:
    head = bytes(data[:16])
    if head.startswith(_JOBLIB_COMPAT + b"0x"):
        return "joblib-zf"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if (
        head.startswith(b"BZh")
        and len(head) >= 10
        and head[3:4] in {str(i).encode() for i in range(1, 10)}
        and head[4:10] in (_BZ2_BLOCK, _BZ2_EMPTY)
    ):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(_LZ4_FRAME):
        return "lz4"
    if len(head) >= 13 and head.startswith(b"\x5d\x00"):
        dict_size = int.from_bytes(head[1:5], "little")
        size = int.from_bytes(head[5:13], "little")
        if dict_size and dict_size & (dict_size - 1) == 0 and (size == 2**64 - 1 or size < 2**48):
            return "lzma"
    return None


def _trial(kind: str, data: memoryview) -> bool:
    if kind == "joblib-zf":
        start = _JOBLIB_COMPAT_HEADER + (bytes(data[21:22]) == b" ")
        return _trial("zlib", data[start:])
    sample = bytes(data[:4096])
    try:
        if kind == "zlib":
            zlib.decompressobj(15).decompress(sample, 1 << 16)
        else:
            lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(sample, 1 << 16)
    except (zlib.error, lzma.LZMAError, EOFError):
        return False
    return True


def _gzip_name(data: memoryview) -> str | None:
    """The original file name a gzip header carries (FNAME), if any."""
    head = bytes(data[:4096])
    if len(head) < 10 or not head[3] & _FNAME:
        return None
    pos = 10
    if head[3] & _FEXTRA:
        if pos + 2 > len(head):
            return None
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    end = head.find(b"\0", pos)
    if end < 0:
        return None
    return head[pos:end].decode("latin-1") or None


class CompressedScanner:
    """gzip, bzip2, xz, lzma and zlib streams, joblib's compressed pickles among them."""

    name = "compressed"
    strong = False

    def matches(self, data: memoryview) -> bool:
        kind = _kind(data)
        if kind in ("zlib", "lzma", "joblib-zf"):
            # Two-byte magics turn up by chance (a safetensors header length can start with
            # 0x78): the first bytes must also decompress.
            return _trial(kind, data)
        return kind is not None

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        kind = _kind(data)
        assert kind is not None
        if kind == "lz4":
            # No lz4 decoder in the standard library, and bastion adds none: fail closed.
            ctx.incomplete("LZ4-compressed stream (joblib reads these); bastion cannot open it")
            return kind
        stream = data
        codec = kind
        if kind == "joblib-zf":
            skip = _JOBLIB_COMPAT_HEADER
            if bytes(data[skip : skip + 1]) == b" ":
                skip += 1
            stream = data[skip:]
            codec = "zlib"
        try:
            result = inflate(stream, codec, ctx, what=f"{kind} stream")
        except InflateError as exc:
            ctx.incomplete(str(exc))
            return kind
        if result is None:
            return kind
        content, consumed = result
        rest = stream[consumed:]
        if len(rest) and bytes(rest).strip(b"\0"):
            ctx.add(
                "COMPRESSED-TRAILING-DATA",
                Severity.LOW,
                f"{len(rest)} bytes follow the end of the {kind} stream",
                offset=len(data) - len(rest),
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
        if not ctx.count_member():
            return kind
        name = (_gzip_name(data) if kind == "gzip" else None) or f"[{kind}]"
        # joblib.load unpickles what comes out, unless this stream was itself only a guess.
        role = PickleRole.SNIFFED if ctx.weakly_matched else PickleRole.LOADED
        inner = ctx.nested(memoryview(content), name, role=role)
        return f"{kind}:{'+'.join(inner)}" if inner else kind
