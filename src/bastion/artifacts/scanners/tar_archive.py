"""Tar archives, including PyTorch's oldest checkpoint layout.

A tar is recognised the way :func:`tarfile.open` accepts one: a first header whose checksum is
right (the ``ustar`` magic is not required). ``torch.load`` tries exactly that first on a file
that is not a zip, and then extracts three members (``torch/serialization.py``,
``_legacy_load``):

- ``storages``: a pickle (the count), per storage a pickle ``(key, location, StorageType)``
  with raw bytes after it, then a pickle of storage views;
- ``tensors``: a pickle (the count), per tensor a pickle and a fixed binary record;
- ``pickle``: the object itself.

torch refuses this layout with ``weights_only=True`` and unpickles every one of these pickles
otherwise, so they are scanned as pickles whatever they look like. Every other member is
scanned by content, like a zip member.
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners.interface import PickleRole, ScanContext
from bastion.artifacts.scanners.pickle_stream import scan_torch_storages, scan_torch_tensors
from bastion.artifacts.scanners.zip_archive import check_member_name

__all__ = ["TarScanner"]

_BLOCK = 512
_TORCH_MEMBERS = frozenset({"storages", "tensors", "pickle"})


class _ViewFile(io.RawIOBase):
    """A read-only, seekable file over a memoryview (no copy until read)."""

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _header_checksum_ok(block: bytes) -> bool:
    """The checks :class:`tarfile.TarInfo` makes on a header block before trusting it."""
    if len(block) < _BLOCK or block.count(0) == _BLOCK:
        return False
    field = block[148:156].split(b"\0", 1)[0].strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    stored = int(field, 8)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:_BLOCK])
    signed = (
        sum(b - 256 if b > 127 else b for b in block[:148])
        + 8 * 32
        + sum(b - 256 if b > 127 else b for b in block[156:_BLOCK])
    )
    return stored in (unsigned, signed)


class TarScanner:
    """Tar archives (any tar tarfile accepts) and PyTorch's legacy tar checkpoints."""

    name = "tar"
    strong = True

    def matches(self, data: memoryview) -> bool:
        return _header_checksum_ok(bytes(data[:_BLOCK]))

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        members: list[tarfile.TarInfo] = []
        try:
            archive = tarfile.TarFile(fileobj=_ViewFile(data), mode="r")
            while True:
                ctx.check_deadline()
                if len(members) >= ctx.settings.max_archive_members:
                    if archive.next() is not None:
                        ctx.limit(
                            "members",
                            f"more than {ctx.settings.max_archive_members} tar members",
                        )
                    break
                info = archive.next()
                if info is None:
                    break
                members.append(info)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            ctx.incomplete(f"tar archive is malformed ({exc})")
        names = {m.name for m in members}
        torch_layout = names >= _TORCH_MEMBERS
        self._check(members, ctx)
        for info in members:
            ctx.check_deadline()
            if not info.isfile():
                continue
            if not ctx.count_member():
                break
            end = info.offset_data + info.size
            if end > len(data):
                ctx.incomplete(f"tar member {info.name!r} runs past the end of the archive")
                continue
            content = data[info.offset_data : end]
            if torch_layout and info.name in _TORCH_MEMBERS:
                self._torch_member(info.name, content, ctx)
            else:
                ctx.nested(content, info.name)
        return "pytorch-legacy-tar" if torch_layout else "tar"

    @staticmethod
    def _torch_member(name: str, content: memoryview, ctx: ScanContext) -> None:
        with ctx.member_frame(name, PickleRole.LOADED):
            if name == "storages":
                scan_torch_storages(content, ctx)
            elif name == "tensors":
                scan_torch_tensors(content, ctx)
            else:
                ctx.analyze_pickle(content, allow_trailing=False, role=PickleRole.LOADED)

    @staticmethod
    def _check(members: list[tarfile.TarInfo], ctx: ScanContext) -> None:
        counts = Counter(m.name for m in members)
        for name, count in sorted(counts.items()):
            if count > 1:
                ctx.add(
                    "TAR-DUPLICATE-NAME",
                    Severity.MEDIUM,
                    f"{count} tar members are named {name!r}: tarfile extracts the last; all "
                    "were scanned",
                    atlas=Atlas.SUPPLY_CHAIN_MODEL,
                )
        for info in members:
            check_member_name(info.name, ctx, kind="tar")
            if info.issym() or info.islnk():
                target = info.linkname
                escapes = target.startswith(("/", "\\")) or ".." in target.replace("\\", "/").split(
                    "/"
                )
                ctx.add(
                    "ARCHIVE-LINK",
                    Severity.HIGH if escapes else Severity.MEDIUM,
                    f"tar member {info.name!r} is a link to {target!r}"
                    + (": it points outside the extraction folder" if escapes else ""),
                    atlas=Atlas.SUPPLY_CHAIN_MODEL,
                    remediation="Do not extract this archive; model archives hold plain files.",
                )
            elif info.isdev() or info.isfifo():
                ctx.add(
                    "ARCHIVE-SPECIAL-FILE",
                    Severity.MEDIUM,
                    f"tar member {info.name!r} is a device or FIFO",
                    atlas=Atlas.SUPPLY_CHAIN_MODEL,
                )
