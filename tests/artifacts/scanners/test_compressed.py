"""Single-stream compression: bombs, truncation, concatenated streams."""

from __future__ import annotations

import gzip
import zlib

from bastion.artifacts.findings import ScanStatus
from bastion.config import ScanSettings


def _gzip_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join(compressor.compress(chunk) for _ in range(size >> 20)) + compressor.flush()


def test_gzip_bomb_ends_as_a_finding(scan, rule_ids) -> None:
    result = scan(_gzip_zeros(64 << 20), name="weights.gz")
    assert "SCAN-LIMIT-RATIO" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE
    assert result.seconds < 5


def test_output_past_the_memory_budget_ends_as_a_finding(scan, rule_ids) -> None:
    # 40 MB of zeros, ratio limit out of the way: the buffer cap (half of 64 MiB) stops it.
    settings = ScanSettings(memory_mb=64, max_compression_ratio=1e9)
    result = scan(_gzip_zeros(40 << 20), settings=settings)
    assert "SCAN-LIMIT-MEMORY" in rule_ids(result)
    assert result.status is ScanStatus.UNSAFE


def test_expanded_total_limit(scan, rule_ids) -> None:
    settings = ScanSettings(max_archive_total_bytes=1 << 20, max_compression_ratio=1e9)
    result = scan(_gzip_zeros(2 << 20), settings=settings)
    assert "SCAN-LIMIT-EXPANDED" in rule_ids(result)


def test_truncated_stream_fails_closed(scan, rule_ids, payloads) -> None:
    data = gzip.compress(payloads[2] * 50)
    result = scan(data[: len(data) // 2])
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)


def test_payload_in_a_second_concatenated_member(scan, payloads) -> None:
    # gzip readers join concatenated members; so must the scan.
    data = gzip.compress(b"") + gzip.compress(payloads[2])
    result = scan(data)
    assert result.status is ScanStatus.UNSAFE


def test_compressed_text_is_a_known_container_and_clean(scan) -> None:
    result = scan(gzip.compress(b"just some notes\n" * 10))
    assert result.format == "gzip"
    assert result.status is ScanStatus.CLEAN


def test_7z_archives_fail_closed(scan, rule_ids) -> None:
    # The nullifAI shape: a "model" that is a 7z archive holding a pickle. bastion does not
    # open 7z, so it cannot pass one as clean.
    data = b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(24) + b"packed streams"
    result = scan(data, name="pytorch_model.bin")
    assert result.format == "7z"
    assert result.status is ScanStatus.UNSAFE
    assert "ARCHIVE-UNSUPPORTED" in rule_ids(result)


def test_lz4_joblib_fails_closed(scan, rule_ids) -> None:
    result = scan(b"\x04\x22\x4d\x18\x64\x40\xa7" + bytes(32), name="model.joblib")
    assert result.status is ScanStatus.UNSAFE
    assert "SCAN-MALFORMED" in rule_ids(result)
