"""Zip archives: PyTorch checkpoints, TorchScript, ``.npz``, Keras ``.keras`` and plain zips.

The directory is read by hand (never with :mod:`zipfile`, which keeps only the last of two
members with one name and refuses what it finds odd), and every member is scanned by content,
whatever it is called. Names decide nothing but labels and how a pickle's parse failure counts.

What the loaders read, and so what must be covered:

- ``torch.load`` needs a zip local header at byte 0, then looks members up through the central
  directory by name (``<first entry's folder>/data.pkl``, ``.../data/<key>``, ``constants.pkl``
  for TorchScript). miniz finds a duplicated name by binary search, so it may take either copy.
- ``numpy.load`` reads a file starting with ``PK\\x03\\x04`` or ``PK\\x05\\x06`` as ``.npz``
  through :mod:`zipfile`, which finds the directory from the end (data before it is allowed)
  and keeps the last of duplicated names.
- Keras reads ``config.json`` and the weights through :mod:`zipfile` too.
- Streaming unzippers walk local headers from the front and may see entries the directory
  does not list.

So every directory entry is scanned, and so is every local entry the directory skips; names
that differ between the directory and the local header, duplicated names, data before the
archive, overlapping entries and paths that leave the extraction folder are findings.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections import Counter
from dataclasses import dataclass

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners._inflate import InflateError, inflate
from bastion.artifacts.scanners.interface import PickleRole, ScanContext

__all__ = ["ZipScanner", "check_member_name"]

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_EOCD_SIZE = 22
_CENTRAL_STRUCT = struct.Struct("<4s6H3I5HII")
_LOCAL_STRUCT = struct.Struct("<4s5H3I2H")
_EOCD_STRUCT = struct.Struct("<4s4H2IH")
_EOCD64_STRUCT = struct.Struct("<4sQ2H2I4Q")
_MAX_COMMENT = 0xFFFF
_METHODS = {0: "stored", 8: "deflate", 12: "bz2", 14: "lzma"}
_LOADED_SUFFIXES = (".pkl", ".pickle", ".debug_pkl")
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD_PATTERN = re.compile(re.escape(_EOCD))


class ZipError(Exception):
    """The archive's structure is broken."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    local_name: str
    flags: int
    method: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int
    hidden: bool = False


class ZipScanner:
    """Zip archives, found by a local header at byte 0 or an end record near the end."""

    name = "zip"
    strong = True

    def matches(self, data: memoryview) -> bool:
        if bytes(data[:4]) in (_LOCAL, _EOCD):
            return True
        return _plausible_directory(data)

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        try:
            entries, concat = _read_directory(data, ctx)
        except ZipError as exc:
            ctx.incomplete(f"zip archive is malformed ({exc})")
            return "zip"
        extra: list[_Entry] = []
        if concat > 0:
            nested_archive = bytes(data[:4]) == _LOCAL
            ctx.add(
                "ZIP-PREFIX-DATA",
                Severity.HIGH if nested_archive else Severity.MEDIUM,
                f"{concat} bytes precede the zip archive"
                + (", and they start with another archive" if nested_archive else "")
                + ": readers that start at byte 0 (torch) and readers that start from the end "
                "(zipfile, numpy, Keras) see different files",
                offset=0,
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Re-export the model with the tool that made it.",
            )
            extra = _absolute_view(data, entries, ctx)
        known = entries + extra
        hidden = _hidden_local_entries(data, known, 0 if data[:4] == _LOCAL else concat, ctx)
        for entry in hidden:
            ctx.add(
                "ZIP-HIDDEN-ENTRY",
                Severity.MEDIUM,
                f"local entry {entry.name!r} is not in the central directory: streaming "
                "unzippers read it, zipfile does not",
                offset=entry.header_offset,
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
        _check_structure(entries, ctx)
        labels: list[list[str]] = []
        for entry in entries + extra + hidden:
            ctx.check_deadline()
            if entry.name.endswith("/") and entry.csize == 0:
                continue
            if not ctx.count_member():
                break
            content = _member_content(data, entry, ctx)
            if content is None:
                continue
            role = (
                PickleRole.LOADED
                if entry.name.endswith(_LOADED_SUFFIXES)
                or entry.local_name.endswith(_LOADED_SUFFIXES)
                else PickleRole.SNIFFED
            )
            labels.append(ctx.nested(content, entry.name, role=role))
        return _classify(entries, labels, ctx)


def _classify(entries: list[_Entry], labels: list[list[str]], ctx: ScanContext) -> str:
    names = [e.name for e in entries]
    basenames = [n.rpartition("/")[2] for n in names]
    if "constants.pkl" in basenames:
        ctx.add(
            "TORCHSCRIPT-ARCHIVE",
            Severity.MEDIUM,
            "TorchScript archive: torch.load hands it to torch.jit.load, which compiles and "
            "runs the TorchScript code it carries (CVE-2025-32434 reached that even with "
            "weights_only=True before torch 2.6)",
            atlas=Atlas.UNSAFE_ARTIFACT,
            remediation="Load TorchScript only from trusted sources; prefer safetensors for "
            "weights.",
        )
        return "torchscript"
    if basenames.count("data.pkl") > 1:
        ctx.add(
            "TORCH-SEVERAL-DATA-PKL",
            Severity.MEDIUM,
            "several data.pkl members: torch reads the one under the first entry's folder, "
            "other tools may read another",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
        )
    if "data.pkl" in basenames:
        return "pytorch-zip"
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return "keras"
    if labels and all(label == ["npy"] for label in labels):
        return "npz"
    return "zip"


def _find_eocd(data: memoryview) -> int | None:
    """Offset of the end-of-central-directory record, found the way zipfile finds it."""
    size = len(data)
    if size < _EOCD_SIZE:
        return None
    if bytes(data[size - _EOCD_SIZE : size - _EOCD_SIZE + 4]) == _EOCD and bytes(
        data[size - 2 : size]
    ) == bytes(2):
        return size - _EOCD_SIZE
    start = max(0, size - _MAX_COMMENT - _EOCD_SIZE)
    window = data[start:]
    if _EOCD_PATTERN.search(window) is None:  # searched in place: most members have none
        return None
    tail = bytes(window)
    at = tail.rfind(_EOCD)
    if at < 0 or at + _EOCD_SIZE > len(tail):
        return None
    return start + at


def _plausible_directory(data: memoryview) -> bool:
    """An end record whose directory starts where it says: what zipfile needs to open.

    Four bytes ``PK\\x05\\x06`` turn up by chance in large binary files; the directory
    check keeps those from being read as archives.
    """
    eocd = _find_eocd(data)
    if eocd is None:
        return False
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD_STRUCT.unpack_from(data, eocd)
    start = eocd
    locator = eocd - 20
    if locator >= 0 and bytes(data[locator : locator + 4]) == _EOCD64_LOCATOR:
        record64 = locator - _EOCD64_STRUCT.size
        if record64 < 0 or bytes(data[record64 : record64 + 4]) != _EOCD64:
            return False
        fields = _EOCD64_STRUCT.unpack_from(data, record64)
        count, cd_size, cd_offset = fields[7], fields[8], fields[9]
        start = record64
    concat = start - cd_size - cd_offset
    if concat < 0:
        return False
    if count == 0:
        return bool(cd_size == 0)
    pos = cd_offset + concat
    return bytes(data[pos : pos + 4]) == _CENTRAL


def _absolute_view(data: memoryview, entries: list[_Entry], ctx: ScanContext) -> list[_Entry]:
    """Entries found by reading the directory the way miniz (torch's reader) does.

    zipfile shifts every offset by the data found before the archive; miniz takes the end
    record's directory offset as absolute. With data before the archive the two can read two
    different directories (two archives back to back: torch unpickles the first one's
    ``data.pkl``, zipfile the second's).
    """
    try:
        absolute, _ = _read_directory(data, ctx, absolute=True)
    except ZipError:
        return []  # miniz would fail to open it: nothing more to read
    seen = {e.header_offset for e in entries}
    extra = [e for e in absolute if e.header_offset not in seen]
    if extra:
        ctx.add(
            "ZIP-DIRECTORY-DIFFERENTIAL",
            Severity.HIGH,
            f"torch's zip reader (miniz) finds a different central directory than zipfile "
            f"does, listing {len(extra)} member(s) zipfile never reads (e.g. "
            f"{extra[0].name!r}); all were scanned",
            offset=extra[0].header_offset,
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Do not load this file; model archives have one directory.",
        )
    return extra


def _read_directory(
    data: memoryview, ctx: ScanContext, *, absolute: bool = False
) -> tuple[list[_Entry], int]:
    """Parse the central directory found from the end record.

    Args:
        absolute: take the directory offset as absolute, as miniz does, instead of shifting
            it past data that precedes the archive, as zipfile does.
    """
    eocd = _find_eocd(data)
    if eocd is None:
        if bytes(data[:4]) == _LOCAL:
            raise ZipError("no end-of-central-directory record (truncated?)")
        raise ZipError("no end-of-central-directory record")
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD_STRUCT.unpack_from(data, eocd)
    if disk != 0 or cd_disk != 0:
        raise ZipError("multi-disk archives are not supported")
    record_start = eocd
    locator = eocd - 20
    if locator >= 0 and bytes(data[locator : locator + 4]) == _EOCD64_LOCATOR:
        (offset64,) = struct.unpack_from("<Q", data, locator + 8)
        # zipfile finds the zip64 record right before the locator, wherever the offset says.
        record64 = locator - _EOCD64_STRUCT.size
        if record64 < 0 or bytes(data[record64 : record64 + 4]) != _EOCD64:
            raise ZipError(f"zip64 end record missing (locator points at {offset64})")
        fields = _EOCD64_STRUCT.unpack_from(data, record64)
        count, cd_size, cd_offset = fields[7], fields[8], fields[9]
        record_start = record64
    concat = 0 if absolute else record_start - cd_size - cd_offset
    if concat < 0:
        raise ZipError("central directory offsets point past the archive")
    if count > ctx.settings.max_archive_members:
        ctx.limit(
            "members",
            f"the archive lists {count} members, more than {ctx.settings.max_archive_members}",
        )
        count = ctx.settings.max_archive_members
    entries: list[_Entry] = []
    pos = cd_offset + concat
    end = pos + cd_size
    for _ in range(count):
        ctx.check_deadline()
        if pos + _CENTRAL_STRUCT.size > end or bytes(data[pos : pos + 4]) != _CENTRAL:
            raise ZipError(f"bad central directory entry at offset {pos}")
        (
            _,
            _made,
            _need,
            flags,
            method,
            _time,
            _date,
            _crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            _disk,
            _iattr,
            _eattr,
            header_offset,
        ) = _CENTRAL_STRUCT.unpack_from(data, pos)
        name_start = pos + _CENTRAL_STRUCT.size
        raw_name = bytes(data[name_start : name_start + name_len])
        extra = bytes(data[name_start + name_len : name_start + name_len + extra_len])
        usize, csize, header_offset = _zip64_sizes(extra, usize, csize, header_offset)
        pos = name_start + name_len + extra_len + comment_len
        if pos > end:
            raise ZipError("central directory entry runs past the directory")
        name = _decode(raw_name, flags)
        local = header_offset + concat
        local_name, data_offset = _read_local(data, local, name)
        entries.append(
            _Entry(
                name=name,
                local_name=local_name,
                flags=flags,
                method=method,
                csize=csize,
                usize=usize,
                header_offset=local,
                data_offset=data_offset,
            )
        )
    return entries, concat


def _zip64_sizes(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x0001:
            values = [int.from_bytes(body[i : i + 8], "little") for i in range(0, len(body), 8)]
            it = iter(values)
            if usize == 0xFFFFFFFF:
                usize = next(it, usize)
            if csize == 0xFFFFFFFF:
                csize = next(it, csize)
            if offset == 0xFFFFFFFF:
                offset = next(it, offset)
            break
        pos += 4 + size
    return usize, csize, offset


def _decode(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        return raw.decode("utf-8", errors="replace")
    return raw.decode("cp437")


def _read_local(data: memoryview, offset: int, name: str) -> tuple[str, int]:
    if offset + _LOCAL_STRUCT.size > len(data) or bytes(data[offset : offset + 4]) != _LOCAL:
        raise ZipError(f"member {name!r}: no local header at offset {offset}")
    fields = _LOCAL_STRUCT.unpack_from(data, offset)
    flags, name_len, extra_len = fields[2], fields[9], fields[10]
    start = offset + _LOCAL_STRUCT.size
    local_name = _decode(bytes(data[start : start + name_len]), flags)
    return local_name, start + name_len + extra_len


def _hidden_local_entries(
    data: memoryview, entries: list[_Entry], concat: int, ctx: ScanContext
) -> list[_Entry]:
    """Local entries that a front-to-back reader finds but the directory does not list."""
    known = {e.header_offset for e in entries}
    hidden: list[_Entry] = []
    pos = concat
    walked = 0
    while pos + _LOCAL_STRUCT.size <= len(data) and bytes(data[pos : pos + 4]) == _LOCAL:
        walked += 1
        if walked > ctx.settings.max_archive_members:
            break
        ctx.check_deadline()
        fields = _LOCAL_STRUCT.unpack_from(data, pos)
        flags, method, csize, usize, name_len, extra_len = (
            fields[2],
            fields[3],
            fields[7],
            fields[8],
            fields[9],
            fields[10],
        )
        start = pos + _LOCAL_STRUCT.size
        extra = bytes(data[start + name_len : start + name_len + extra_len])
        usize, csize, _ = _zip64_sizes(extra, usize, csize, 0)
        if flags & 0x8 and csize == 0:
            break  # sizes only in a trailing descriptor: cannot walk on
        data_offset = start + name_len + extra_len
        if pos not in known:
            name = _decode(bytes(data[start : start + name_len]), flags)
            hidden.append(
                _Entry(
                    name=name,
                    local_name=name,
                    flags=flags,
                    method=method,
                    csize=csize,
                    usize=usize,
                    header_offset=pos,
                    data_offset=data_offset,
                    hidden=True,
                )
            )
        pos = data_offset + csize
        if flags & 0x8:
            pos += 16 if bytes(data[pos : pos + 4]) == b"PK\x07\x08" else 12
    return hidden


def check_member_name(name: str, ctx: ScanContext, *, kind: str = "zip") -> None:
    """Report member names that escape an extraction folder or that tools read differently."""
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        ctx.add(
            "ARCHIVE-PATH-TRAVERSAL",
            Severity.HIGH,
            f"{kind} member {name!r} has an absolute path: extracting it writes outside the "
            "target folder",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Do not extract this archive; obtain the model from a trusted source.",
        )
    elif ".." in parts:
        ctx.add(
            "ARCHIVE-PATH-TRAVERSAL",
            Severity.HIGH,
            f"{kind} member {name!r} climbs out of the extraction folder with '..'",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation="Do not extract this archive; obtain the model from a trusted source.",
        )
    elif not name or any(ord(c) < 0x20 or c == "\x7f" for c in name) or "\\" in name:
        ctx.add(
            "ARCHIVE-ODD-NAME",
            Severity.MEDIUM,
            f"{kind} member name {name!r} holds control characters, backslashes or is empty; "
            "tools disagree on what it names",
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
        )


def _check_structure(entries: list[_Entry], ctx: ScanContext) -> None:
    counts = Counter(e.name for e in entries)
    for name, count in sorted(counts.items()):
        if count > 1:
            ctx.add(
                "ZIP-DUPLICATE-NAME",
                Severity.MEDIUM,
                f"{count} members are named {name!r}: zipfile reads the last, torch's reader "
                "may read another; all were scanned",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
                remediation="Re-export the model with the tool that made it.",
            )
    for entry in entries:
        check_member_name(entry.name, ctx)
        if entry.local_name != entry.name:
            ctx.add(
                "ZIP-NAME-MISMATCH",
                Severity.MEDIUM,
                f"member is {entry.name!r} in the directory but {entry.local_name!r} in its "
                "local header: readers disagree on its name",
                offset=entry.header_offset,
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
            check_member_name(entry.local_name, ctx)
    spans = sorted((e.data_offset, e.data_offset + e.csize, e.name) for e in entries if e.csize > 0)
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            ctx.add(
                "ZIP-OVERLAPPING-ENTRIES",
                Severity.HIGH,
                f"members {first!r} and {second!r} share compressed bytes: the mark of a "
                "zip bomb that expands one payload many times",
                atlas=Atlas.DENIAL_OF_SERVICE,
                remediation="Do not extract this archive.",
            )
            break


def _member_content(data: memoryview, entry: _Entry, ctx: ScanContext) -> memoryview | None:
    what = f"zip member {entry.name!r}"
    start, end = entry.data_offset, entry.data_offset + entry.csize
    if end > len(data):
        ctx.incomplete(f"{what} runs past the end of the archive", offset=entry.header_offset)
        return None
    if entry.flags & 0x1:
        ctx.incomplete(f"{what} is encrypted", offset=entry.header_offset)
        return None
    raw = data[start:end]
    if entry.method == 0:
        if entry.usize != entry.csize:
            _size_mismatch(entry, entry.csize, ctx)
        return raw
    kind = _METHODS.get(entry.method)
    if kind is None:
        ctx.incomplete(
            f"{what} uses compression method {entry.method}, which bastion does not read",
            offset=entry.header_offset,
        )
        return None
    if ctx.ratio_exceeded(entry.usize, entry.csize):
        ctx.limit(
            "ratio",
            f"{what} declares {entry.usize} bytes from {entry.csize}: a decompression bomb",
        )
        return None
    stream: memoryview | bytes = raw
    if kind == "lzma":
        # zip's LZMA: version (2), properties size (2), properties; wrap as a .lzma stream.
        if len(raw) < 9:
            ctx.incomplete(f"{what}: LZMA header is truncated", offset=entry.header_offset)
            return None
        props_size = int.from_bytes(raw[2:4], "little")
        props = bytes(raw[4 : 4 + props_size])
        stream = props + b"\xff" * 8 + bytes(raw[4 + props_size :])
    try:
        result = inflate(stream, kind, ctx, what=what)
    except InflateError as exc:
        ctx.incomplete(str(exc), offset=entry.header_offset)
        return None
    if result is None:
        return None
    content, _ = result
    if len(content) != entry.usize:
        _size_mismatch(entry, len(content), ctx)
    return memoryview(content)


def _size_mismatch(entry: _Entry, actual: int, ctx: ScanContext) -> None:
    ctx.add(
        "ZIP-SIZE-MISMATCH",
        Severity.MEDIUM,
        f"member {entry.name!r} declares {entry.usize} bytes but holds {actual}",
        offset=entry.header_offset,
        atlas=Atlas.SUPPLY_CHAIN_MODEL,
    )
