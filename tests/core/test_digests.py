"""Parallel digests equal the hashlib/blake3 reference, whole and sharded, at every boundary."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.core import digests
from bastion.core.digests import (
    DigestRequest,
    HashAlgorithm,
    digest_bytes,
    digest_files,
    digest_path,
    shard_bounds,
)


def reference(data: bytes, algorithm: HashAlgorithm) -> bytes:
    if algorithm is HashAlgorithm.SHA256:
        return hashlib.sha256(data).digest()
    return blake3.blake3(data).digest()


def opener(path: Path) -> Callable[[], int]:
    return lambda: os.open(path, os.O_RDONLY)


def write(path: Path, data: bytes) -> DigestRequest:
    path.write_bytes(data)
    return DigestRequest(path.name, len(data), opener(path))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read 7 bytes at a time, so that every test crosses many chunk boundaries."""
    monkeypatch.setattr(digests, "CHUNK_BYTES", 7)


@pytest.mark.usefixtures("small_chunks")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shard=st.integers(min_value=1, max_value=40),
    offsets=st.lists(st.integers(min_value=-2, max_value=2), min_size=1, max_size=4),
    multiples=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=4),
    algorithm=st.sampled_from(list(HashAlgorithm)),
    workers=st.sampled_from([1, 2, 3]),
    seed=st.binary(min_size=1, max_size=8),
)
def test_digests_match_reference_around_shard_boundaries(
    tmp_path_factory: pytest.TempPathFactory,
    shard: int,
    offsets: list[int],
    multiples: list[int],
    algorithm: HashAlgorithm,
    workers: int,
    seed: bytes,
) -> None:
    folder = tmp_path_factory.mktemp("d")
    sizes = [max(0, m * shard + o) for m, o in zip(multiples, offsets, strict=False)]
    contents = [hashlib.shake_256(seed + bytes([i])).digest(size) for i, size in enumerate(sizes)]
    requests = [write(folder / f"f{i}", data) for i, data in enumerate(contents)]

    whole = digest_files(requests, algorithm, workers=workers)
    sharded = digest_files(requests, algorithm, shard_bytes=shard, workers=workers)

    for data, one, parts in zip(contents, whole, sharded, strict=True):
        assert one.error is None
        assert parts.error is None
        assert one.digest == reference(data, algorithm)
        assert [(p.start, p.end) for p in parts.parts] == shard_bounds(len(data), shard)
        for part in parts.parts:
            assert part.digest == reference(data[part.start : part.end], algorithm)


def test_shard_bounds_are_model_signings_endpoints() -> None:
    from model_signing._serialization.file_shard import _endpoints

    for size in (1, 4, 5, 8, 9, 1000):
        for step in (1, 3, 4, 1000):
            ends = list(_endpoints(step, size))
            assert [end for _, end in shard_bounds(size, step)] == ends
            assert [start for start, _ in shard_bounds(size, step)] == [0, *ends[:-1]]
    assert shard_bounds(0, 4) == []
    with pytest.raises(ValueError, match="positive"):
        shard_bounds(10, 0)


@pytest.mark.parametrize("algorithm", list(HashAlgorithm))
def test_large_file_uses_every_worker_and_equals_reference(
    tmp_path: Path, algorithm: HashAlgorithm
) -> None:
    data = hashlib.shake_256(b"large").digest(17 * 2**20 + 3)  # > BLAKE3 threading threshold
    path = tmp_path / "big"
    path.write_bytes(data)
    assert digest_path(path, algorithm, workers=2) == reference(data, algorithm)
    progress: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            progress.append(n)

    (result,) = digest_files(
        [DigestRequest("big", len(data), opener(path))],
        algorithm,
        shard_bytes=4 * 2**20,
        workers=2,
        progress=record,
    )
    assert sum(progress) == len(data)
    assert len(result.parts) == 5
    assert result.parts[-1].digest == reference(data[16 * 2**20 :], algorithm)


def test_digest_bytes() -> None:
    assert digest_bytes(b"abc", HashAlgorithm.SHA256) == hashlib.sha256(b"abc").digest()
    assert digest_bytes(b"abc", HashAlgorithm.BLAKE3) == blake3.blake3(b"abc").digest()


@pytest.mark.parametrize("shard_bytes", [None, 4])
def test_file_that_shrank_or_grew_is_an_error_not_a_digest(
    tmp_path: Path, shard_bytes: int | None
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    shrank = DigestRequest("shrank", 12, opener(path))
    grew = DigestRequest("grew", 8, opener(path))
    results = digest_files([shrank, grew], HashAlgorithm.SHA256, shard_bytes=shard_bytes, workers=2)
    assert results[0].parts == ()
    assert "shrank" in (results[0].error or "")
    assert results[1].parts == ()
    assert "grew" in (results[1].error or "")
    with pytest.raises(ValueError, match="no whole-file digest"):
        _ = results[0].digest


def test_open_failure_is_reported_per_file(tmp_path: Path) -> None:
    good = write(tmp_path / "good", b"x")

    def fail() -> int:
        raise PermissionError(13, "Permission denied")

    results = digest_files([good, DigestRequest("bad", 1, fail)], HashAlgorithm.SHA256, workers=2)
    assert results[0].error is None
    assert results[1].error == "Permission denied"


def test_every_opened_descriptor_is_closed(tmp_path: Path) -> None:
    before = len(list(Path("/proc/self/fd").iterdir()))
    requests = [write(tmp_path / f"f{i}", bytes(i * 10)) for i in range(20)]
    digest_files(requests, HashAlgorithm.BLAKE3, shard_bytes=16, workers=3)
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_digest_path_refuses_links_and_special_files(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError, match=r"Too many levels|symbolic link"):
        digest_path(link, HashAlgorithm.SHA256)
    assert digest_path(link, HashAlgorithm.SHA256, follow_symlinks=True) == (
        hashlib.sha256(b"secret").digest()
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        digest_path(fifo, HashAlgorithm.SHA256)


def test_invalid_arguments(tmp_path: Path) -> None:
    request = write(tmp_path / "f", b"x")
    with pytest.raises(ValueError, match="positive"):
        digest_files([request], HashAlgorithm.SHA256, shard_bytes=0)
    with pytest.raises(ValueError, match="negative"):
        digest_files([DigestRequest("n", -1, request.open)], HashAlgorithm.SHA256)


@pytest.mark.parametrize("mapped", [True, False])
def test_blake3_thread_pool_mapped_or_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    monkeypatch.setattr(digests, "MAP_THREADED_BLAKE3", mapped)
    monkeypatch.setattr(digests, "_MAPPED_PIECE_BYTES", 5 * 2**20 + 1)  # pieces cross pages
    data = hashlib.shake_256(b"mapped").digest(16 * 2**20 + 4097)
    path = tmp_path / "big"
    path.write_bytes(data)
    progress: list[int] = []
    (result,) = digest_files(
        [DigestRequest("big", len(data), opener(path))],
        HashAlgorithm.BLAKE3,
        workers=2,
        progress=progress.append,
    )
    assert result.digest == blake3.blake3(data).digest()
    assert sum(progress) == len(data)
    (shrank,) = digest_files(
        [DigestRequest("big", len(data) + 1, opener(path))], HashAlgorithm.BLAKE3, workers=2
    )
    assert "shrank" in (shrank.error or "")
    (grew,) = digest_files(
        [DigestRequest("big", len(data) - 1, opener(path))], HashAlgorithm.BLAKE3, workers=2
    )
    assert "grew" in (grew.error or "")
