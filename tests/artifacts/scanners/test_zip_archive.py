"""Zip archives: PyTorch checkpoints, TorchScript, polyglots, structure tricks and bombs."""

from __future__ import annotations

import io
import pickle
import random
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.artifacts.findings import ScanStatus, Severity
from bastion.config import ScanSettings


def _torch_members(tmp_path: Path, folder: str = "archive") -> list[tuple[str, bytes]]:
    """The members of a real torch.save checkpoint, moved under ``folder``."""
    path = tmp_path / "src.pt"
    torch.save({"weight": torch.arange(6, dtype=torch.float32), "step": 3}, path)
    with zipfile.ZipFile(path) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    return [(f"{folder}/{name.split('/', 1)[1]}", data) for name, data in members]


def test_torch_checkpoint_is_clean_and_loads(scan, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(4, 4), "b": torch.zeros(4)}, path)
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "pytorch-zip"
    assert torch.load(path, weights_only=True)["w"].shape == (4, 4)


def test_payload_under_renamed_folder_and_innocent_name(
    scan, payloads, zip_builder, zip_member, tmp_path: Path
) -> None:
    # torch reads <first entry's folder>/data.pkl; a scanner that looks for "archive/data.pkl"
    # or only for *.pkl names misses a payload stored as if it were a tensor record.
    members = [zip_member(n, d) for n, d in _torch_members(tmp_path, "resnet50")]
    members.append(zip_member("resnet50/data/7", payloads[2]))
    data = zip_builder(members)
    path = tmp_path / "checkpoint.bin"
    path.write_bytes(data)
    assert torch.load(path, weights_only=True)["step"] == 3  # a valid checkpoint all the same
    result = scan(path)
    assert result.status is ScanStatus.UNSAFE
    hit = next(f for f in result.findings if f.symbol == "os.system")
    assert hit.member == "resnet50/data/7"
    assert hit.severity is Severity.CRITICAL


def test_payload_as_data_pkl_of_renamed_folder(
    scan, payloads, zip_builder, zip_member, tmp_path
) -> None:
    members = [
        zip_member(n, payloads[2] if n.endswith("data.pkl") else d)
        for n, d in _torch_members(tmp_path, "weights")
    ]
    result = scan(zip_builder(members))
    assert result.status is ScanStatus.UNSAFE
    assert any(f.member == "weights/data.pkl" for f in result.findings)


def test_payload_in_a_deflated_member_with_any_name(
    scan, payloads, zip_builder, zip_member
) -> None:
    result = scan(zip_builder([zip_member("docs/README", payloads[4], method=8)]))
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].member == "docs/README"


def test_duplicate_names_every_copy_is_scanned(
    scan, payloads, rule_ids, zip_builder, zip_member, tmp_path
) -> None:
    benign = [zip_member(n, d) for n, d in _torch_members(tmp_path)]
    pkl = next(m for m in benign if m.name.endswith("data.pkl"))
    data = zip_builder([zip_member(pkl.name, payloads[2]), *benign])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read(pkl.name) == pkl.data  # zipfile only sees the last copy
    result = scan(data)
    assert result.status is ScanStatus.UNSAFE
    assert "ZIP-DUPLICATE-NAME" in rule_ids(result)
    assert any(f.symbol == "os.system" for f in result.findings)


def test_local_header_name_mismatch(scan, rule_ids, payloads, zip_builder, zip_member) -> None:
    data = zip_builder([zip_member("a/data/0", payloads[2], local_name="a/data.pkl")])
    result = scan(data)
    assert "ZIP-NAME-MISMATCH" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_local_entry_missing_from_directory_is_scanned(
    scan, rule_ids, payloads, zip_builder, zip_member
) -> None:
    data = zip_builder(
        [
            zip_member("hidden.pkl", payloads[2], in_directory=False),
            zip_member("visible.txt", b"hello"),
        ]
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["visible.txt"]
    result = scan(data)
    assert "ZIP-HIDDEN-ENTRY" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_pickle_zip_polyglot_is_scanned_both_ways(scan, rule_ids, payloads, tmp_path) -> None:
    # torch.load sees no zip magic at byte 0 and unpickles; zipfile finds the directory at the
    # end and sees a clean checkpoint.
    path = tmp_path / "clean.pt"
    torch.save({"w": torch.ones(2)}, path)
    result = scan(payloads[2] + path.read_bytes())
    assert result.status is ScanStatus.UNSAFE
    assert result.format == "pytorch-zip+pickle"
    assert {"POLYGLOT", "ZIP-PREFIX-DATA"} <= rule_ids(result)


def test_junk_before_a_benign_npz_is_noted_not_failed(scan, rule_ids, tmp_path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(4))
    result = scan(b"\x01\x02\x03 not a format " + buffer.getvalue())
    assert "ZIP-PREFIX-DATA" in rule_ids(result)
    assert result.status is ScanStatus.CLEAN


@pytest.mark.parametrize("name", ["../../etc/cron.d/evil", "/etc/cron.d/evil", "C:/evil.txt"])
def test_member_paths_that_escape_extraction(scan, rule_ids, zip_builder, zip_member, name) -> None:
    result = scan(zip_builder([zip_member(name, b"x")]))
    assert "ARCHIVE-PATH-TRAVERSAL" in rule_ids(result, Severity.HIGH)
    assert result.status is ScanStatus.UNSAFE


def test_control_characters_in_names_are_noted(scan, rule_ids, zip_builder, zip_member) -> None:
    result = scan(zip_builder([zip_member("a\nb\\c", b"x")]))
    assert "ARCHIVE-ODD-NAME" in rule_ids(result)


def _zeros_deflated(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    out = b"".join(compressor.compress(chunk) for _ in range(size >> 20))
    return out + compressor.flush()


def _raw_zip(name: str, payload: bytes, method: int, usize: int, crc: int = 0) -> bytes:
    raw = name.encode()
    local = struct.pack(
        "<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), usize, len(raw), 0
    )
    central = struct.pack(
        "<4s6H3I5HII",
        b"PK\x01\x02",
        20,
        20,
        0,
        method,
        0,
        0,
        crc,
        len(payload),
        usize,
        len(raw),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + raw + payload
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(raw), len(body), 0)
    return body + central + raw + end


def test_zip_bomb_with_honest_sizes_is_stopped_before_inflating(scan, rule_ids) -> None:
    payload = _zeros_deflated(32 << 20)
    result = scan(_raw_zip("zeros.bin", payload, 8, 32 << 20))
    assert "SCAN-LIMIT-RATIO" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_zip_bomb_that_lies_about_its_size_is_stopped_while_inflating(scan, rule_ids) -> None:
    payload = _zeros_deflated(32 << 20)
    result = scan(_raw_zip("zeros.bin", payload, 8, 1000))
    assert "SCAN-LIMIT-RATIO" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE
    assert result.seconds < 5


def test_overlapping_entries_are_reported(scan, rule_ids) -> None:
    single = _raw_zip("a", b"x" * 100, 0, 100)
    # Two directory entries pointing at the same local entry: the quoted-overlap bomb shape.
    cd_start = single.index(b"PK\x01\x02")
    central = single[cd_start:-22]
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 2, 2, 2 * len(central), cd_start, 0)
    result = scan(single[:cd_start] + central + central + end)
    assert "ZIP-OVERLAPPING-ENTRIES" in rule_ids(result)
    assert "ZIP-DUPLICATE-NAME" in rule_ids(result)


def test_hundred_thousand_members_hit_the_member_limit(scan, rule_ids) -> None:
    locals_, central = bytearray(), bytearray()
    for i in range(100_000):
        name = b"m%d" % i
        central += (
            struct.pack(
                "<4s6H3I5HII",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                len(name),
                0,
                0,
                0,
                0,
                0,
                len(locals_),
            )
            + name
        )
        locals_ += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        locals_ += name
    # 100k entries need the zip64 end records; the classic one says 0xFFFF.
    zip64_at = len(locals_) + len(central)
    zip64 = struct.pack(
        "<4sQ2H2I4Q",
        b"PK\x06\x06",
        44,
        45,
        45,
        0,
        0,
        100_000,
        100_000,
        len(central),
        len(locals_),
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, zip64_at, 1)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    data = bytes(locals_ + central + zip64 + locator + end)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len(archive.infolist()) == 100_000
    result = scan(data)
    assert ScanSettings().max_archive_members == 10_000
    assert "SCAN-LIMIT-MEMBERS" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE
    assert result.seconds < 10


def test_deep_nesting_hits_the_depth_limit(scan, rule_ids, payloads, zip_builder, zip_member):
    data = payloads[2]
    for level in range(8):
        data = zip_builder([zip_member(f"level{level}.zip" if level else "x.pkl", data)])
    result = scan(data)
    assert "SCAN-LIMIT-DEPTH" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_nesting_within_the_limit_is_followed(scan, payloads, zip_builder, zip_member) -> None:
    inner = zip_builder([zip_member("x.pkl", payloads[2])])
    outer = zip_builder([zip_member("inner.zip", inner)])
    result = scan(outer)
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].member == "inner.zip!x.pkl"


def test_truncated_checkpoint_fails_closed(scan, rule_ids, tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(64)}, path)
    data = path.read_bytes()
    result = scan(data[: len(data) // 2])
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_encrypted_member_cannot_be_examined(scan, rule_ids) -> None:
    data = bytearray(_raw_zip("secret.pkl", b"\x00" * 32, 0, 32))
    data[6] |= 1  # local header flags
    cd = bytes(data).index(b"PK\x01\x02")
    data[cd + 8] |= 1  # central directory flags
    result = scan(bytes(data))
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_archive_is_reported(scan, rule_ids, tmp_path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    result = scan(path)
    assert result.format == "torchscript"
    assert "TORCHSCRIPT-ARCHIVE" in rule_ids(result)


#: First bytes that weak signatures match: pickle headers, zlib, lzma, protobuf, safetensors.
_LOOKALIKES = [
    b"",
    b"\x80\x02",
    b"\x80\x05\x95",
    b"\x80\x04\x82",
    b"\x78\x9c",
    b"\x78\x01",
    b"\x08\x07\x12\x05",
    b"\x08\x03\x3a\x10",
    b"\x5d\x00\x00\x80\x00",
    b"(",
    b"c",
    b"}",
    b"N",
]


def test_tensor_bytes_that_look_like_formats_do_not_fail_a_checkpoint(
    scan, zip_builder, zip_member
) -> None:
    # Raw tensor records are sniffed like every member; bytes that merely start like a weakly
    # signed format (no magic number) must not make a clean checkpoint unsafe.
    rng = random.Random(0)  # noqa: S311 - reproducible test data, not a secret
    members = []
    for i in range(1300):
        body = bytearray(rng.randbytes(4096))
        prefix = _LOOKALIKES[i % len(_LOOKALIKES)]
        body[: len(prefix)] = prefix
        if i % 5 == 0:
            body[8] = ord("{")
        members.append(zip_member(f"archive/data/{i}", bytes(body)))
    result = scan(zip_builder(members))
    assert result.status is ScanStatus.CLEAN, [
        (f.rule_id, f.member, f.message) for f in result.findings if f.severity >= Severity.HIGH
    ]


def test_two_archives_back_to_back_torch_reads_the_first(
    scan, rule_ids, payloads, zip_builder, zip_member
) -> None:
    # miniz takes the last end record's directory offset as absolute: with two archives of the
    # same layout back to back it reads the first archive's directory, zipfile the second's.
    benign = pickle.dumps("x" * (len(payloads[2]) - 10), protocol=2)
    assert len(benign) == len(payloads[2])
    first = zip_builder([zip_member("archive/data.pkl", payloads[2])])
    second = zip_builder([zip_member("archive/data.pkl", benign)])
    with zipfile.ZipFile(io.BytesIO(first + second)) as archive:
        assert archive.read("archive/data.pkl") == benign
    result = scan(first + second)
    assert result.status is ScanStatus.UNSAFE
    assert {"ZIP-DIRECTORY-DIFFERENTIAL", "ZIP-PREFIX-DATA"} <= rule_ids(result, Severity.HIGH)
    assert any(f.symbol == "os.system" for f in result.findings)
