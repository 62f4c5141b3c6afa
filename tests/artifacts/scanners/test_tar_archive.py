"""Tar archives, PyTorch's legacy tar layout, and archives nested in compressed streams."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from bastion.artifacts.findings import ScanStatus, Severity


def _tar(members: list[tuple[str, bytes]], links: tuple[tuple[str, str], ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def _legacy_members(values: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)) -> dict[str, bytes]:
    """The three members torch's pre-0.4 tar layout has (torch/serialization.py, legacy_load)."""
    raw = struct.pack(f"<{len(values)}f", *values)
    storages = (
        pickle.dumps(1, protocol=2)
        + pickle.dumps((0, "cpu", torch.FloatStorage), protocol=2)
        + struct.pack("<q", len(values))
        + raw
        + pickle.dumps([], protocol=2)
    )
    tensors = (
        pickle.dumps(1, protocol=2)
        + pickle.dumps((1, 0, torch.FloatTensor), protocol=2)
        + struct.pack("<ii", 1, 0)
        + struct.pack("<qqq", len(values), 1, 0)
    )

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return "1" if obj == "TENSOR" else None

    main = io.BytesIO()
    _Pickler(main, protocol=2).dump({"weight": "TENSOR"})
    return {"storages": storages, "tensors": tensors, "pickle": main.getvalue()}


def test_torch_legacy_tar_is_clean_and_loads(scan, tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    path.write_bytes(_tar(list(_legacy_members().items())))
    result = scan(path)
    assert result.status is ScanStatus.CLEAN, result.findings
    assert result.format == "pytorch-legacy-tar"
    # torch refuses this layout with weights_only=True; the file is our own benign sample.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.load(path, weights_only=False)
    assert loaded["weight"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_torch_legacy_tar_payload_in_main_pickle(scan, payloads) -> None:
    members = _legacy_members()
    members["pickle"] = payloads[2]
    result = scan(_tar(list(members.items())))
    assert result.status is ScanStatus.UNSAFE
    hit = next(f for f in result.findings if f.symbol == "os.system")
    assert hit.member == "pickle"


def test_torch_legacy_tar_payload_in_a_storage_record(scan, payloads) -> None:
    members = _legacy_members()
    count = pickle.dumps(1, protocol=2)
    members["storages"] = members["storages"].replace(
        pickle.dumps((0, "cpu", torch.FloatStorage), protocol=2), payloads[2]
    )
    assert members["storages"].startswith(count + payloads[2])
    result = scan(_tar(list(members.items())))
    assert result.status is ScanStatus.UNSAFE
    assert any(f.member == "storages" and f.symbol == "os.system" for f in result.findings)


def test_torch_legacy_tar_lying_storage_size_fails_closed(scan, rule_ids) -> None:
    members = _legacy_members()
    members["storages"] = members["storages"].replace(
        struct.pack("<q", 4), struct.pack("<q", 10**9)
    )
    result = scan(_tar(list(members.items())))
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_zip_in_tar_in_gzip_payload(scan, payloads, zip_builder, zip_member) -> None:
    inner_zip = zip_builder([zip_member("weights/x.bin", payloads[3])])
    data = gzip.compress(_tar([("bundle/model.zip", inner_zip), ("README", b"hi")]))
    result = scan(data, name="bundle.tgz")
    assert result.status is ScanStatus.UNSAFE
    # The zip's end record lies within the tar's last 64 KiB, so zipfile would open the tar
    # itself as a zip (with prefix data): both readings are scanned.
    assert result.format == "gzip:zip+tar"
    members = {f.member for f in result.findings if f.severity is Severity.CRITICAL}
    assert "[gzip]!bundle/model.zip!weights/x.bin" in members


@pytest.mark.parametrize("kind", ["bz2", "xz"])
def test_tar_in_single_stream_compression(scan, payloads, kind: str) -> None:
    tar = _tar([("model.pkl", payloads[2])])
    data = bz2.compress(tar) if kind == "bz2" else lzma.compress(tar)
    result = scan(data)
    assert result.status is ScanStatus.UNSAFE
    assert result.findings[0].member == f"[{kind}]!model.pkl"


def test_link_members_that_leave_the_archive(scan, rule_ids) -> None:
    result = scan(_tar([("a.txt", b"x")], links=(("storages", "../../../etc/passwd"),)))
    assert "ARCHIVE-LINK" in rule_ids(result, Severity.HIGH)
    assert result.status is ScanStatus.UNSAFE


def test_member_name_traversal(scan, rule_ids) -> None:
    result = scan(_tar([("../../outside.txt", b"x")]))
    assert "ARCHIVE-PATH-TRAVERSAL" in rule_ids(result)


def test_truncated_tar_fails_closed(scan, rule_ids, payloads) -> None:
    data = _tar([("big.bin", bytes(4096)), ("model.pkl", payloads[2])])
    result = scan(data[:1024])
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)
