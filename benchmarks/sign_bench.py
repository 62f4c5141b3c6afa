"""Benchmark: signing a checkpoint-sized model with bastion against OpenSSF model-signing.

Creates a model folder with one random ``model.safetensors`` of ``--size-gb`` GB (and a small
``config.json``) in a temporary folder, reads it once so that every run starts from the page
cache, then times, best and median of ``--repeat`` runs each:

* ``hashlib.sha256`` streaming over the file (1 MiB reads): the single-core SHA-256 floor;
* model-signing 1.1 signing with an elliptic (P-256) key: default settings (whole-file SHA-256),
  its shard mode (default 1 GB shards), and BLAKE3;
* bastion signing with the same key: SHA-256 (default: 256 MiB shards in parallel), SHA-256
  whole files, and BLAKE3.

Every signer goes through its Python API in this process (hash, build the statement, sign,
write the bundle). Ratios are model-signing's default time divided by each time.

    .venv/bin/python benchmarks/sign_bench.py --size-gb 1 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bastion.artifacts.manifest import SerializationMethod
from bastion.artifacts.signing import SignOptions, sign
from bastion.core.digests import HashAlgorithm, default_workers
from bastion.core.keys import KeyAlgorithm, generate_key, write_keypair


def make_model(folder: Path, size: int) -> Path:
    model = folder / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architecture": "transformer", "layers": 24}\n')
    chunk = 64 * 2**20
    with (model / "model.safetensors").open("wb") as handle:
        written = 0
        while written < size:
            n = min(chunk, size - written)
            handle.write(os.urandom(n))
            written += n
    return model


def warm(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(16 * 2**20):
            pass


def sha256_stream(path: Path) -> None:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(2**20):
            hasher.update(block)
    hasher.hexdigest()


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="checkpoint size (GB, 1e9)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per signer (best is kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the model")
    args = parser.parse_args(argv)

    import model_signing

    size = int(args.size_gb * 1e9)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bastion-bench-") as tmp:
        folder = Path(tmp)
        model = make_model(folder, size)
        key = generate_key(KeyAlgorithm.ECDSA_P256)
        private, _ = write_keypair(folder / "key", key)
        total = sum(p.stat().st_size for p in model.iterdir())
        warm(model / "model.safetensors")

        def ms(hashing: object | None) -> Callable[[], None]:
            def run() -> None:
                config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private)
                if hashing is not None:
                    config.set_hashing_config(hashing)
                config.sign(model, folder / "ms.sig")

            return run

        def ours(options: SignOptions) -> Callable[[], None]:
            return lambda: sign(
                model, key, output=folder / "bastion.sig", options=options, actor="bench"
            )

        runs: list[tuple[str, Callable[[], object]]] = [
            ("hashlib.sha256 stream (1 core)", lambda: sha256_stream(model / "model.safetensors")),
            ("model-signing sha256 (default)", ms(None)),
            (
                "model-signing sha256 shards 1 GB",
                ms(model_signing.hashing.Config().use_shard_serialization()),
            ),
            (
                "model-signing blake3",
                ms(
                    model_signing.hashing.Config().use_file_serialization(
                        hashing_algorithm="blake3"
                    )
                ),
            ),
            ("bastion sha256 (256 MiB shards)", ours(SignOptions())),
            (
                "bastion sha256 whole files",
                ours(SignOptions(method=SerializationMethod.FILES)),
            ),
            ("bastion blake3", ours(SignOptions(hash_algorithm=HashAlgorithm.BLAKE3))),
        ]
        load_before = os.getloadavg()
        results = [(label, *timed(run, args.repeat)) for label, run in runs]
        load_after = os.getloadavg()

    baseline = results[1][1]
    print(
        f"model: {total / 1e9:.2f} GB in 2 files; cores: {default_workers()}; "
        f"best of {args.repeat}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f}; python {sys.version.split()[0]}"
    )
    print(f"{'signer':36} {'best s':>8} {'median s':>9} {'GB/s':>6} {'vs model-signing':>17}")
    for label, best, median in results:
        print(
            f"{label:36} {best:8.3f} {median:9.3f} {total / best / 1e9:6.2f} "
            f"{baseline / best:16.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
