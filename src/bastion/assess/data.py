"""Labelled evaluation data from ``.npy``, ``.npz`` or CSV files (stable API).

Inputs are raw values (see :mod:`bastion.assess.domain`); labels are class indices into the
target's class list. Files are read with ``allow_pickle=False`` and size limits checked before
anything is decompressed; every problem is one clear :class:`~bastion.errors.AssessmentError`.

Accepted layouts:

- ``.npz`` with arrays ``x`` and ``y`` (also ``X``/``y``, ``inputs``/``labels``,
  ``data``/``target``; or name them).
- ``.npy`` with the inputs, plus a second ``.npy`` (or ``.csv``) with the labels.
- ``.csv``: one row per sample, numbers only; the label column is ``label``, ``y``, ``target``
  or ``class`` when there is a header, else the last column (or name/number it).
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.assess.domain import InputDomain
from bastion.errors import AssessmentError

__all__ = ["DEFAULT_MAX_BYTES", "Dataset", "load_dataset", "load_labels"]

#: Largest data file (or decompressed .npz content) read by default: 2 GiB.
DEFAULT_MAX_BYTES = 2 * 2**30

_KEY_PAIRS = (("x", "y"), ("X", "y"), ("inputs", "labels"), ("data", "target"), ("x", "labels"))
_LABEL_NAMES = ("label", "labels", "y", "target", "class")


@dataclass(frozen=True, slots=True)
class Dataset:
    """Raw inputs and integer labels.

    Attributes:
        x: inputs, ``float32`` of shape ``(n, *domain.shape)``, in the raw input space.
        y: labels, ``int64`` of shape ``(n,)``.
        source: where the data came from (a path, or a description).
        digest: ``sha256:<hex>`` of the file(s) read, or empty for in-memory data.
    """

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    source: str = "memory"
    digest: str = ""

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise AssessmentError(
                f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels in {self.source}"
            )
        if self.y.ndim != 1:
            raise AssessmentError(f"labels in {self.source} must be one per sample")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, limit: int | None, seed: int) -> Dataset:
        """A seeded random subset of at most ``limit`` samples (all of them when None)."""
        if limit is None or limit >= len(self):
            return self
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(len(self), size=limit, replace=False))
        return Dataset(self.x[index], self.y[index], self.source, self.digest)

    def take(self, index: NDArray[np.intp] | slice) -> Dataset:
        """The samples at ``index``."""
        return Dataset(self.x[index], self.y[index], self.source, self.digest)

    def conform(self, domain: InputDomain) -> Dataset:
        """The data reshaped to the domain's shape (flat rows of the right size) and checked.

        Raises:
            AssessmentError: the shape does not fit, or values fall outside the bounds.
        """
        x = self.x
        if x.shape[1:] != domain.shape and x[0].size == domain.size:
            x = x.reshape((x.shape[0], *domain.shape))
        domain.check(x, f"inputs in {self.source}")
        return Dataset(x, self.y, self.source, self.digest)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (for reports)."""
        return {
            "source": self.source,
            "digest": self.digest,
            "samples": len(self),
            "shape": list(self.x.shape[1:]),
        }


def load_dataset(
    path: Path,
    *,
    labels: Path | None = None,
    domain: InputDomain | None = None,
    x_key: str | None = None,
    y_key: str | None = None,
    label_column: str | int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Dataset:
    """Read a labelled dataset and check it against the input domain.

    Args:
        path: a ``.npz``, ``.npy`` or ``.csv`` file.
        labels: the labels for a ``.npy`` input file (``.npy`` or ``.csv``).
        domain: when given, flat rows are reshaped to its shape and the data must lie in it.
        x_key: the inputs' name in a ``.npz``.
        y_key: the labels' name in a ``.npz``.
        label_column: the label column of a CSV (a header name or a 0-based index).
        max_bytes: the largest file, or decompressed ``.npz`` content, to read.

    Raises:
        AssessmentError: unreadable, oversized or malformed data (shape mismatch, NaN,
            non-numeric values, non-integer labels, values outside the domain).
    """
    suffix = path.suffix.lower()
    digests = [_sha256(path, max_bytes)]
    if suffix == ".npz":
        x, y = _read_npz(path, x_key, y_key, max_bytes)
    elif suffix == ".npy":
        if labels is None:
            raise AssessmentError(f"{path} holds inputs only: give the labels file too")
        x = _read_npy(path, max_bytes)
        y = load_labels(labels, max_bytes=max_bytes)
        digests.append(_sha256(labels, max_bytes))
    elif suffix == ".csv":
        x, y = _read_csv(path, label_column, max_bytes)
    else:
        raise AssessmentError(f"unsupported data file {path.name}: use .npz, .npy or .csv")
    source = str(path) if labels is None else f"{path} + {labels}"
    digest = digests[0] if len(digests) == 1 else _combine(digests)
    return _build(x, y, source, digest, domain)


def load_labels(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> NDArray[np.int64]:
    """Read a label vector from ``.npy`` or a one-column ``.csv``."""
    if path.suffix.lower() == ".npy":
        raw = _read_npy(path, max_bytes)
    elif path.suffix.lower() == ".csv":
        rows = _csv_rows(path, max_bytes)
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]
        raw = _numeric(rows, path)
    else:
        raise AssessmentError(f"unsupported labels file {path.name}: use .npy or .csv")
    return _labels(raw, str(path))


def _build(
    x: NDArray[Any], y: NDArray[Any], source: str, digest: str, domain: InputDomain | None
) -> Dataset:
    if x.dtype.kind not in "fiub":
        raise AssessmentError(f"inputs in {source} have dtype {x.dtype}, not numbers")
    if x.ndim < 2:
        raise AssessmentError(f"inputs in {source} must have a batch axis (got shape {x.shape})")
    if x.shape[0] == 0:
        raise AssessmentError(f"{source} holds no samples")
    labels = _labels(y, source)
    if labels.shape[0] != x.shape[0]:
        raise AssessmentError(f"{x.shape[0]} inputs but {labels.shape[0]} labels in {source}")
    inputs = np.asarray(x, dtype=np.float32)
    if not np.isfinite(inputs).all():
        raise AssessmentError(f"inputs in {source} contain NaN or infinite values")
    data = Dataset(np.ascontiguousarray(inputs), labels, source, digest)
    return data if domain is None else data.conform(domain)


def _labels(raw: NDArray[Any], source: str) -> NDArray[np.int64]:
    y = np.asarray(raw)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise AssessmentError(f"labels in {source} must be a vector, got shape {y.shape}")
    if y.dtype.kind == "b" or y.dtype.kind not in "fiu":
        raise AssessmentError(f"labels in {source} have dtype {y.dtype}, not integers")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.equal(np.round(y), y).all()):
        raise AssessmentError(f"labels in {source} are not whole numbers")
    if y.size and y.min() < 0:
        raise AssessmentError(f"labels in {source} must be class indices (>= 0)")
    return y.astype(np.int64)


def _check_size(path: Path, max_bytes: int) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AssessmentError(f"cannot read {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise AssessmentError(f"{path} is not a file")
    if size > max_bytes:
        raise AssessmentError(f"{path} is {size} bytes, over the limit of {max_bytes}")


def _sha256(path: Path, max_bytes: int) -> str:
    _check_size(path, max_bytes)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _combine(digests: Sequence[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _read_npy(path: Path, max_bytes: int) -> NDArray[Any]:
    _check_size(path, max_bytes)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AssessmentError(f"{path} is not a readable .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise AssessmentError(f"{path} is not a .npy array")
    return array


def _read_npz(
    path: Path, x_key: str | None, y_key: str | None, max_bytes: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    _check_size(path, max_bytes)
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise AssessmentError(f"{path} is not a readable .npz archive: {exc}") from exc
    if total > max_bytes:
        raise AssessmentError(f"{path} expands to {total} bytes, over the limit of {max_bytes}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if x_key or y_key:
                pair = (x_key or "x", y_key or "y")
            else:
                found = [p for p in _KEY_PAIRS if p[0] in names and p[1] in names]
                if not found:
                    raise AssessmentError(
                        f"{path} has arrays {sorted(names)}; expected 'x' and 'y' (or name them)"
                    )
                pair = found[0]
            missing = [k for k in pair if k not in names]
            if missing:
                raise AssessmentError(f"{path} has no array {missing[0]!r}")
            return archive[pair[0]], archive[pair[1]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise AssessmentError(f"{path} is not a readable .npz archive: {exc}") from exc


def _csv_rows(path: Path, max_bytes: int) -> list[list[str]]:
    _check_size(path, max_bytes)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AssessmentError(f"cannot read {path} as CSV: {exc}") from exc
    if not rows:
        raise AssessmentError(f"{path} is empty")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric(rows: list[list[str]], path: Path) -> NDArray[np.float64]:
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise AssessmentError(f"{path} row {number} has {len(row)} columns, not {width}")
    try:
        return np.asarray([[float(c) for c in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise AssessmentError(f"{path} holds a value that is not a number: {exc}") from exc


def _read_csv(
    path: Path, label_column: str | int | None, max_bytes: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    rows = _csv_rows(path, max_bytes)
    header: list[str] | None = None
    if not all(_is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise AssessmentError(f"{path} has a header but no rows")
    table = _numeric(rows, path)
    if table.shape[1] < 2:
        raise AssessmentError(f"{path} needs at least one feature column and a label column")
    column = _label_index(label_column, header, table.shape[1], path)
    features = np.delete(table, column, axis=1)
    return features, table[:, column]


def _label_index(
    label_column: str | int | None, header: list[str] | None, width: int, path: Path
) -> int:
    if isinstance(label_column, int):
        if not -width <= label_column < width:
            raise AssessmentError(f"label column {label_column} is outside {path}'s {width}")
        return label_column % width
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise AssessmentError(f"{path} has no column named {label_column!r}")
        return header.index(label_column)
    if header is not None:
        for name in _LABEL_NAMES:
            if name in header:
                return header.index(name)
    return width - 1
