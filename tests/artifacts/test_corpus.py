"""``bastion scan`` against the adversarial corpus of ``tests/corpus/generate.py``.

The corpus is built into a temporary folder once per session and scanned once. Every malicious
file must come out ``unsafe``, every benign file ``clean``, and no side file (ONNX external
data, symlinks) ``unsafe``. Each benign file must also load in its own real loader, so the
corpus cannot drift into files no library would accept. Failures list every miss with its
class, technique and reference.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import pickle
import sys
import tarfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bastion.artifacts import FileResult, ScanStatus, scan_paths

GENERATOR = Path(__file__).resolve().parents[1] / "corpus" / "generate.py"


def _load_generator() -> ModuleType:
    name = "bastion_corpus_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


class Corpus:
    def __init__(self, root: Path, entries: list[Any], seconds: float) -> None:
        self.root = root
        self.files = root / "files"
        self.entries = entries
        self.seconds = seconds

    def of(self, expected: str) -> list[Any]:
        return [e for e in self.entries if e.expected == expected]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    started = time.monotonic()
    entries = gen.build_corpus(root)
    return Corpus(root, entries, time.monotonic() - started)


@pytest.fixture(scope="session")
def verdicts(corpus: Corpus) -> dict[str, FileResult]:
    """One scan of the whole corpus folder, keyed by path relative to ``files``."""
    report = scan_paths([corpus.files])
    out: dict[str, FileResult] = {}
    for result in report.results:
        path = Path(result.path)
        rel = path.relative_to(corpus.files) if path.is_absolute() else path
        out[rel.as_posix()] = result
    return out


def _describe(entry: Any, result: FileResult | None) -> str:
    if result is None:
        got = "no result"
    else:
        why = result.skip_reason or "; ".join(
            f"{f.rule_id}/{f.severity.label}: {f.message}" for f in result.findings[:2]
        )
        got = f"{result.status.value}" + (f" ({why[:160]})" if why else "")
    ref = f" [{entry.reference}]" if entry.reference else ""
    return f"  {entry.path}  <{entry.cls}>  got {got}\n      {entry.technique}{ref}"


def test_corpus_is_broad(corpus: Corpus) -> None:
    malicious, benign = corpus.of(gen.UNSAFE), corpus.of(gen.CLEAN)
    assert len(malicious) >= 150
    assert len(benign) >= 60
    assert len({e.path for e in corpus.entries}) == len(corpus.entries)
    classes = {e.cls for e in malicious}
    for required in (
        "pickle-protocol",
        "pickle-opcode",
        "pickle-gadget",
        "pickle-prefix",
        "pickle-stream",
        "pickle-bomb",
        "pytorch-zip",
        "pytorch-legacy",
        "joblib",
        "numpy",
        "safetensors",
        "onnx",
        "keras",
        "archive",
        "polyglot",
        "wrong-extension",
    ):
        assert required in classes, required
    for entry in corpus.entries:
        assert (corpus.files / entry.path).is_symlink() or (corpus.files / entry.path).is_file()
    manifest = json.loads((corpus.root / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["entries"]) == len(corpus.entries)


def test_every_malicious_file_is_unsafe(corpus: Corpus, verdicts: dict[str, FileResult]) -> None:
    malicious = corpus.of(gen.UNSAFE)
    misses = [
        e
        for e in malicious
        if (r := verdicts.get(e.path)) is None or r.status is not ScanStatus.UNSAFE
    ]
    assert not misses, (
        f"{len(misses)} of {len(malicious)} malicious files not unsafe:\n"
        + "\n".join(_describe(e, verdicts.get(e.path)) for e in misses)
    )


def test_every_benign_file_is_clean(corpus: Corpus, verdicts: dict[str, FileResult]) -> None:
    benign = corpus.of(gen.CLEAN)
    flagged = [
        e for e in benign if (r := verdicts.get(e.path)) is None or r.status is not ScanStatus.CLEAN
    ]
    assert not flagged, f"{len(flagged)} of {len(benign)} benign files not clean:\n" + "\n".join(
        _describe(e, verdicts.get(e.path)) for e in flagged
    )


def test_side_files_are_not_unsafe(corpus: Corpus, verdicts: dict[str, FileResult]) -> None:
    bad = [
        e
        for e in corpus.of(gen.AUX)
        if (r := verdicts.get(e.path)) is not None and r.status is ScanStatus.UNSAFE
    ]
    assert not bad, "side files flagged unsafe:\n" + "\n".join(
        _describe(e, verdicts.get(e.path)) for e in bad
    )


def test_scan_covers_every_file(corpus: Corpus, verdicts: dict[str, FileResult]) -> None:
    listed = {e.path for e in corpus.entries if e.expected != gen.AUX}
    assert listed <= set(verdicts), sorted(listed - set(verdicts))[:20]


# ---- benign files load in their real loaders ---------------------------------------------------


def _load_pickle(path: Path) -> None:
    pickle.loads(path.read_bytes())  # benign corpus file, written by pickle itself


def _load_torch(path: Path) -> None:
    import torch

    torch.load(path, weights_only=True)


def _load_torch_full(path: Path) -> None:
    import torch

    module = torch.load(path, weights_only=False)  # benign: a whole nn.Module we saved
    assert isinstance(module, torch.nn.Module)


def _load_torch_any(path: Path) -> None:
    import torch

    torch.load(path, weights_only=False)  # benign: objects weights_only does not allow


def _load_torch_jit(path: Path) -> None:
    import torch

    module = torch.jit.load(str(path))
    module(torch.ones(1, 4))


def _load_joblib(path: Path) -> None:
    import joblib

    joblib.load(path)


def _load_numpy(path: Path, allow_pickle: bool = False) -> None:
    import numpy as np

    loaded = np.load(path, allow_pickle=allow_pickle)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            for key in loaded.files:
                loaded[key]


def _load_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            fh.get_tensor(key)


def _load_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    onnx.load(str(path))


def _load_onnxruntime(path: Path) -> None:
    import onnxruntime

    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _load_hdf5_bytes(data: bytes) -> None:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as fh:
        datasets: list[Any] = []
        fh.visititems(
            lambda _n, obj: datasets.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        if "model_config" in fh.attrs:
            config = json.loads(fh.attrs["model_config"])
            assert "Lambda" not in json.dumps(config)


def _load_hdf5(path: Path) -> None:
    _load_hdf5_bytes(path.read_bytes())


def _load_keras_zip(path: Path) -> None:
    # Keras itself is not installed here: check the Keras 3 layout by hand.
    with zipfile.ZipFile(path) as zf:
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(zf.namelist())
        config = json.loads(zf.read("config.json"))
        json.loads(zf.read("metadata.json"))
        _load_hdf5_bytes(zf.read("model.weights.h5"))
    text = json.dumps(config)
    assert "__lambda__" not in text
    assert '"Lambda"' not in text


def _load_zip(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None


def _load_tar(path: Path) -> None:
    with tarfile.open(path) as tf:
        for member in tf.getmembers():
            fh = tf.extractfile(member)
            if fh is not None:
                fh.read()


def _load_gzip(path: Path) -> None:
    pickle.loads(gzip.decompress(path.read_bytes()))  # benign: a gzip of a sklearn pickle


LOADERS: dict[str, Callable[[Path], None]] = {
    "pickle": _load_pickle,
    "torch": _load_torch,
    "torch-full": _load_torch_full,
    "torch-any": _load_torch_any,
    "torch-jit": _load_torch_jit,
    "joblib": _load_joblib,
    "numpy": _load_numpy,
    "numpy-pickle": lambda p: _load_numpy(p, allow_pickle=True),
    "safetensors": _load_safetensors,
    "onnx": _load_onnx,
    "onnxruntime": _load_onnxruntime,
    "keras-zip": _load_keras_zip,
    "hdf5": _load_hdf5,
    "zip": _load_zip,
    "tar": _load_tar,
    "gzip": _load_gzip,
}


def test_benign_files_load_in_their_loaders(corpus: Corpus) -> None:
    gen.register_user_classes()  # user classes the full-module checkpoints refer to
    failures = []
    for entry in corpus.of(gen.CLEAN):
        loader = LOADERS.get(entry.loader)
        if loader is None:
            failures.append(f"{entry.path}: no loader {entry.loader!r}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # library deprecation notices are not our concern
                loader(corpus.files / entry.path)
        except Exception as exc:  # collect every failing file, report them together
            failures.append(f"{entry.path} ({entry.loader}): {type(exc).__name__}: {exc}")
    assert not failures, "benign files that do not load:\n" + "\n".join(failures)
