"""Loading labelled data: the three formats, and a clear error for each malformed input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.assess.data import Dataset, load_dataset, load_labels
from bastion.assess.domain import InputDomain
from bastion.errors import AssessmentError

DOMAIN = InputDomain((2, 2), 0.0, 1.0)


def _xy(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 2, 2)).astype(np.float32), np.arange(n) % 3


def test_npz_with_any_conventional_names(tmp_path: Path):
    x, y = _xy()
    for keys in (("x", "y"), ("X", "y"), ("inputs", "labels"), ("data", "target")):
        path = tmp_path / f"{keys[0]}.npz"
        np.savez(path, **{keys[0]: x, keys[1]: y})
        data = load_dataset(path, domain=DOMAIN)
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)
        assert data.digest.startswith("sha256:")
    np.savez(tmp_path / "custom.npz", a=x, b=y)
    assert len(load_dataset(tmp_path / "custom.npz", x_key="a", y_key="b")) == 5
    with pytest.raises(AssessmentError, match="expected 'x' and 'y'"):
        load_dataset(tmp_path / "custom.npz")
    with pytest.raises(AssessmentError, match="no array 'zz'"):
        load_dataset(tmp_path / "custom.npz", x_key="zz", y_key="b")


def test_npy_with_labels_file_and_flat_rows_reshaped(tmp_path: Path):
    x, y = _xy()
    np.save(tmp_path / "x.npy", x.reshape(5, 4))
    np.save(tmp_path / "y.npy", y)
    data = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy", domain=DOMAIN)
    assert data.x.shape == (5, 2, 2)
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(str(v) for v in y) + "\n")
    np.testing.assert_array_equal(load_labels(tmp_path / "y.csv"), y)
    with pytest.raises(AssessmentError, match="give the labels file"):
        load_dataset(tmp_path / "x.npy")


def test_csv_label_column_by_header_index_or_last(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("a,target,b\n0.1,2,0.3\n0.4,1,0.6\n")
    data = load_dataset(path)
    np.testing.assert_array_equal(data.y, [2, 1])
    np.testing.assert_allclose(data.x, [[0.1, 0.3], [0.4, 0.6]])
    path.write_text("0.1,0.2,1\n0.3,0.4,0\n")
    np.testing.assert_array_equal(load_dataset(path).y, [1, 0])
    path.write_text("1,0.2,0.3\n0,0.4,0.5\n")
    np.testing.assert_allclose(load_dataset(path, label_column=0).x, [[0.2, 0.3], [0.4, 0.5]])
    with pytest.raises(AssessmentError, match="no column named 'y'"):
        load_dataset(path, label_column="y")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,x\n", "not a number"),
        ("1,2\n3\n", "row 2 has 1 columns"),
        ("1\n2\n", "at least one feature column"),
        ("a,label\n", "header but no rows"),
        ("", "empty"),
        ("0.5,1.5\n", "whole numbers"),
        ("0.5,-1\n", r"class indices \(>= 0\)"),
        ("nan,1\n", "NaN"),
    ],
)
def test_malformed_csv(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(AssessmentError, match=message):
        load_dataset(path)


def test_malformed_arrays(tmp_path: Path):
    x, y = _xy()
    np.savez(tmp_path / "count.npz", x=x, y=y[:3])
    with pytest.raises(AssessmentError, match="5 inputs but 3 labels"):
        load_dataset(tmp_path / "count.npz")
    np.savez(tmp_path / "text.npz", x=np.array([["a", "b"]]), y=np.array([0]))
    with pytest.raises(AssessmentError, match="not numbers"):
        load_dataset(tmp_path / "text.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.array([0]))
    with pytest.raises(AssessmentError, match=r"not a readable \.npy"):
        load_dataset(tmp_path / "objects.npy", labels=tmp_path / "y.npy")
    np.savez(tmp_path / "range.npz", x=x * 10, y=y)
    with pytest.raises(AssessmentError, match="outside the declared bounds"):
        load_dataset(tmp_path / "range.npz", domain=DOMAIN)
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 3)), y=y)
    with pytest.raises(AssessmentError, match="declares"):
        load_dataset(tmp_path / "shape.npz", domain=DOMAIN)
    np.savez(tmp_path / "boolean.npz", x=x, y=np.ones(5, dtype=bool))
    with pytest.raises(AssessmentError, match="not integers"):
        load_dataset(tmp_path / "boolean.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(AssessmentError, match=r"not a readable \.npz"):
        load_dataset(tmp_path / "garbage.npz")
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(AssessmentError, match="unsupported data file"):
        load_dataset(tmp_path / "data.parquet")
    with pytest.raises(AssessmentError, match="cannot read"):
        load_dataset(tmp_path / "missing.npz")


def test_size_limits_before_reading(tmp_path: Path):
    x, y = _xy(50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(AssessmentError, match="over the limit"):
        load_dataset(tmp_path / "d.npz", max_bytes=100)
    # A small archive that would expand far beyond the limit is refused unopened.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", b"\0" * 5_000_000)
        archive.writestr("y.npy", b"\0" * 10)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(AssessmentError, match="expands to"):
        load_dataset(bomb, max_bytes=1_000_000)


def test_subset_is_seeded():
    x, y = _xy(20)
    data = Dataset(x, y)
    first = data.subset(5, seed=3)
    assert len(first) == 5
    np.testing.assert_array_equal(first.x, data.subset(5, seed=3).x)
    assert data.subset(None, 0) is data
    assert data.subset(100, 0) is data


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(0, 1, allow_subnormal=False, width=32), min_size=2, max_size=2),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.integers(0, 9), min_size=8, max_size=8),
)
def test_csv_round_trip(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[float]], labels: list[int]
):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    lines = [
        ",".join([repr(v) for v in row] + [str(label)])
        for row, label in zip(rows, labels, strict=False)
    ]
    path.write_text("\n".join(lines) + "\n")
    data = load_dataset(path, domain=InputDomain((2,), 0.0, 1.0))
    np.testing.assert_array_equal(data.x, np.asarray(rows, dtype=np.float32))
    np.testing.assert_array_equal(data.y, labels[: len(rows)])
