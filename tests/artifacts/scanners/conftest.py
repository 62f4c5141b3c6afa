"""Builders shared by the per-format scanner tests.

Malicious samples are assembled opcode by opcode (fickling ``test/test_bypasses.py`` style);
the payload is ``os.system('true')``, harmless, and nothing here ever loads one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.artifacts.findings import FileResult, Severity
from bastion.artifacts.scan import scan_file
from bastion.config import ScanSettings

#: os.system('true') in each protocol, built opcode by opcode.
PAYLOADS: dict[int, bytes] = {
    0: b"cos\nsystem\n(S'true'\ntR.",
    1: b"cos\nsystem\nq\x00(X\x04\x00\x00\x00trueq\x01tq\x02Rq\x03.",
    2: b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    3: b"\x80\x03cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    4: b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.",
    5: b"\x80\x05\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.",
}


@dataclass(frozen=True)
class ZipMember:
    """One entry of a hand-built zip."""

    name: str
    data: bytes
    method: int = 0  # 0 stored, 8 deflate
    local_name: str | None = None  # a different name in the local header
    in_directory: bool = True  # False: a local entry the central directory does not list
    declared_size: int | None = None  # a lying uncompressed size


def build_zip(members: Sequence[ZipMember], *, prefix: bytes = b"") -> bytes:
    """A zip written field by field, so tests can make every inconsistency zipfile refuses."""
    out = bytearray(prefix)
    central = bytearray()
    count = 0
    for m in members:
        if m.method == 8:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = compressor.compress(m.data) + compressor.flush()
        else:
            payload = m.data
        crc = zlib.crc32(m.data)
        usize = len(m.data) if m.declared_size is None else m.declared_size
        local_name = (m.local_name if m.local_name is not None else m.name).encode()
        offset = len(out) - len(prefix)
        out += struct.pack(
            "<4s5H3I2H",
            b"PK\x03\x04",
            20,
            0x800,
            m.method,
            0,
            0x21,
            crc,
            len(payload),
            usize,
            len(local_name),
            0,
        )
        out += local_name + payload
        if not m.in_directory:
            continue
        name = m.name.encode()
        central += struct.pack(
            "<4s6H3I5HII",
            b"PK\x01\x02",
            20,
            20,
            0x800,
            m.method,
            0,
            0x21,
            crc,
            len(payload),
            usize,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += name
        count += 1
    cd_offset = len(out) - len(prefix)
    out += central
    out += struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)


Scan = Callable[..., FileResult]


@pytest.fixture
def scan(tmp_path: Path) -> Scan:
    """Scan bytes (written to a file first) or a path, in this process: ``scan(data)``."""

    def run(
        data: bytes | Path, name: str = "sample.bin", settings: ScanSettings | None = None
    ) -> FileResult:
        path = data if isinstance(data, Path) else tmp_path / name
        if not isinstance(data, Path):
            path.write_bytes(data)
        return scan_file(path, settings or ScanSettings())

    return run


def rules(result: FileResult, minimum: Severity = Severity.INFO) -> set[str]:
    """The rule ids of a result's findings at ``minimum`` or above."""
    return {f.rule_id for f in result.findings if f.severity >= minimum}


@pytest.fixture
def rule_ids() -> Callable[..., set[str]]:
    return rules


@pytest.fixture
def payloads() -> dict[int, bytes]:
    return PAYLOADS


@pytest.fixture
def zip_builder() -> Callable[..., bytes]:
    return build_zip


@pytest.fixture
def zip_member() -> type[ZipMember]:
    return ZipMember
