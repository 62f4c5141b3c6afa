"""The restricted unpickler: benign scikit-learn models load, everything else is refused.

Malicious streams come from the opcode-by-opcode builders of ``test_pickle_scan.py`` (each
sample there names the advisory it reproduces) and from the builders below; none is ever given
to an unrestricted loader.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Iterator
from importlib.abc import MetaPathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bastion.artifacts.unpickler import RestrictedUnpickler, load_pickle_file, restricted_loads
from bastion.errors import VerificationError


def _builders() -> ModuleType:
    """The malicious-pickle builders and samples of test_pickle_scan.py."""
    path = Path(__file__).with_name("test_pickle_scan.py")
    spec = importlib.util.spec_from_file_location("_bastion_pickle_scan_builders", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


B = _builders()
u, sg, g, tup, wrap4, reduce_call = B.u, B.sg, B.g, B.tup, B.wrap4, B.reduce_call
PROTO2 = B.PROTO2


class ImportRecorder(MetaPathFinder):
    """Records every import attempt that reaches the finders (a module not yet imported)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        self.names.append(fullname)


@pytest.fixture
def imports() -> Iterator[ImportRecorder]:
    recorder = ImportRecorder()
    sys.meta_path.insert(0, recorder)
    try:
        yield recorder
    finally:
        sys.meta_path.remove(recorder)


class Payload:
    """Pickles as a call of os.system (only ever given to the restricted unpickler)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned",))


def refused(data: bytes, match: str = "refused to unpickle") -> VerificationError:
    with pytest.raises(VerificationError, match=match) as caught:
        restricted_loads(data)
    return caught.value


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return np.asarray(data.data[:300], dtype=np.float64), np.asarray(data.target[:300])


def _fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of deliberately tiny fits
        return estimator.fit(x, y)


@pytest.fixture(scope="module")
def estimators(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    x, y = digits
    labels = np.array([f"digit-{c}" for c in y], dtype=object)
    return {
        "logistic": _fit(LogisticRegression(max_iter=50), x / 16, y),
        "pipeline-mlp": _fit(
            make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=20, random_state=0)),
            x,
            labels,
        ),
        "forest": _fit(RandomForestClassifier(n_estimators=3, random_state=0), x, y),
    }


# -- benign models ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["logistic", "pipeline-mlp", "forest"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_scikit_learn_models_load_and_predict_the_same(
    estimators: dict[str, Any], digits: tuple[np.ndarray, np.ndarray], kind: str, protocol: int
) -> None:
    original = estimators[kind]
    loaded = restricted_loads(pickle.dumps(original, protocol=protocol))
    assert type(loaded) is type(original)
    x = digits[0][:20]
    np.testing.assert_array_equal(loaded.predict_proba(x), original.predict_proba(x))
    np.testing.assert_array_equal(loaded.classes_, original.classes_)


@pytest.mark.parametrize("kind", ["logistic", "pipeline-mlp", "forest"])
def test_joblib_files_load_with_their_arrays(
    estimators: dict[str, Any], digits: tuple[np.ndarray, np.ndarray], kind: str, tmp_path: Path
) -> None:
    original = estimators[kind]
    path = tmp_path / "model.joblib"
    joblib.dump(original, path)
    loaded = load_pickle_file(path)
    x = digits[0][:20]
    np.testing.assert_array_equal(loaded.predict_proba(x), original.predict_proba(x))


def test_joblib_object_arrays_go_through_the_restricted_unpickler(tmp_path: Path) -> None:
    value = {"labels": np.array(["a", 1, None], dtype=object), "w": np.arange(6.0).reshape(2, 3)}
    path = tmp_path / "objects.joblib"
    joblib.dump(value, path)
    loaded = load_pickle_file(path)
    assert loaded["labels"].tolist() == ["a", 1, None]
    np.testing.assert_array_equal(loaded["w"], value["w"])
    # An object array whose nested pickle (written by joblib itself) calls os.system.
    hostile = tmp_path / "hostile.joblib"
    joblib.dump({"labels": np.array([Payload()], dtype=object)}, hostile)
    with pytest.raises(VerificationError, match=r"system' is not on the allowlist"):
        load_pickle_file(hostile)


def test_fortran_ordered_joblib_arrays(tmp_path: Path) -> None:
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    path = tmp_path / "f.joblib"
    joblib.dump({"a": array}, path)
    np.testing.assert_array_equal(load_pickle_file(path)["a"], array)


# -- refused globals -------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "name"), B.DANGEROUS)
def test_every_dangerous_global_of_the_scanner_tests_is_refused(
    module: str, name: str, imports: ImportRecorder
) -> None:
    for protocol in (0, 4):
        error = refused(reduce_call(module, name, "x", proto=protocol))
        assert "is not on the allowlist" in str(error) or "PyTorch" in str(error)
    assert not any(n == module or n.startswith(module + ".") for n in imports.names)


def test_a_refused_name_never_imports_its_module(imports: ImportRecorder) -> None:
    for module in ("antigravity", "bastion_never_imported_module"):
        refused(reduce_call(module, "fly", "x"))
        assert module not in sys.modules
    assert not [n for n in imports.names if "antigravity" in n or "never_imported" in n]


@pytest.mark.parametrize(
    "full",
    [
        "numpy.dtype.mro",  # an attribute below an allowed name
        "numpy",  # a prefix of allowed names
        "collections.OrderedDict.fromkeys",
        "builtins.getattr",
        "sklearn.base.clone",  # a helper of an allowed package that is not on the list
    ],
)
def test_matching_is_exact(full: str) -> None:
    module, _, name = full.rpartition(".")
    refused(wrap4(sg(module or "builtins", name) + pickle.POP + u("x")))


def test_python2_names_are_mapped_before_the_check() -> None:
    # __builtin__.eval is builtins.eval once mapped: refused; __builtin__.set is builtins.set.
    refused(PROTO2 + g("__builtin__", "eval") + u("1") + pickle.TUPLE1 + pickle.REDUCE + b".")
    data = PROTO2 + g("__builtin__", "set") + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP
    assert restricted_loads(data) == set()


def test_torch_rebuild_helpers_are_refused() -> None:
    # torch.storage._load_from_bytes runs torch.load on nested bytes (not restricted).
    refused(reduce_call("torch.storage", "_load_from_bytes", "x"), "PyTorch")


def test_joblib_side_file_wrappers_are_refused() -> None:
    data = wrap4(sg("joblib.numpy_pickle_compat", "NDArrayWrapper") + pickle.POP + u("x"))
    refused(data, "side file")


# -- calls -----------------------------------------------------------------------------------


def test_a_computed_value_is_never_called() -> None:
    # builtins.str("x") is allowed; calling its result ("x"("y")) is not.
    call = u("x") + pickle.TUPLE1 + pickle.REDUCE
    data = wrap4(sg("builtins", "str") + call + u("y") + pickle.TUPLE1 + pickle.REDUCE)
    refused(data, "may not be called")


def test_inst_and_obj_call_only_allowed_callables() -> None:
    # INST (protocol 0) and OBJ call their class with the marked arguments.
    assert restricted_loads(b"(ibuiltins\nset\n.") == set()
    refused(b"(S'id'\nios\nsystem\n.", "not on the allowlist")
    assert restricted_loads(b"\x80\x02(cbuiltins\nset\no.") == set()
    refused(b"\x80\x02(X\x01\x00\x00\x00xo.", "may not be called")


def test_reduce_arguments_must_be_a_tuple() -> None:
    data = wrap4(sg("builtins", "set") + pickle.EMPTY_LIST + pickle.REDUCE)
    refused(data, "not a tuple")


def test_newobj_needs_an_allowed_class() -> None:
    # NEWOBJ on a value that is not a class resolved from the allowlist.
    refused(wrap4(u("str") + pickle.EMPTY_TUPLE + pickle.NEWOBJ), "not an allowed class")


def test_copyreg_reconstructor_runs_only_allowed_inits() -> None:
    # _reconstructor(cls, base, state) calls base.__init__: base must be callable-safe.
    data = wrap4(
        sg("copyreg", "_reconstructor")
        + tup(sg("collections", "OrderedDict"), u("not a class"), pickle.NONE)
        + pickle.REDUCE
    )
    refused(data, "may not be called")


def _numpy1_ufunc_reconstruct(module: str, name: str) -> Any:
    # NumPy 1.x's numpy.core._ufunc_reconstruct: an import and a getattr.
    return getattr(__import__(module, fromlist=[name]), name)


def test_ufunc_reconstruct_imports_nothing(
    imports: ImportRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NumPy 2 pickles ufuncs by name; NumPy 1.x pickles named this helper, still allowlisted.
    monkeypatch.setattr(np._core, "_ufunc_reconstruct", _numpy1_ufunc_reconstruct, raising=False)
    data = reduce_call("numpy._core", "_ufunc_reconstruct", "numpy", "add")
    assert restricted_loads(data) is np.add
    refused(reduce_call("numpy._core", "_ufunc_reconstruct", "os", "system"), "not a NumPy ufunc")
    refused(reduce_call("numpy._core", "_ufunc_reconstruct", "antigravity", "x"), "NumPy ufunc")
    assert "antigravity" not in sys.modules
    ufunc = restricted_loads(pickle.dumps(np.add, protocol=4))
    assert ufunc is np.add


def test_cython_unpickle_helper_only_makes_its_own_class() -> None:
    seeds = np.random.SeedSequence(1234)
    data = pickle.dumps(seeds, protocol=4)
    assert b"__pyx_unpickle_SeedSequence" in data
    assert restricted_loads(data).entropy == 1234
    hostile = wrap4(
        sg("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence")
        + tup(sg("collections", "OrderedDict"), pickle.NONE, pickle.NONE)
        + pickle.REDUCE
    )
    refused(hostile, "not its own class")


# -- changes to shared objects ---------------------------------------------------------------


def test_build_never_changes_a_resolved_global() -> None:
    data = wrap4(
        sg("sklearn.linear_model._logistic", "LogisticRegression")
        + pickle.NONE
        + pickle.EMPTY_DICT
        + u("predict_proba")
        + u("pwned")
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
    )
    refused(data, "shared by the whole process")
    assert LogisticRegression.predict_proba != "pwned"


def test_setitem_and_appends_never_change_a_resolved_global() -> None:
    refused(wrap4(sg("collections", "OrderedDict") + u("k") + u("v") + pickle.SETITEM), "shared")
    refused(wrap4(sg("builtins", "list") + pickle.MARK + u("v") + pickle.APPENDS), "shared")


def test_build_never_changes_a_builtin_dtype_or_a_logger() -> None:
    builtin_dtype = (
        sg("numpy", "dtype") + tup(u("f8"), pickle.NEWFALSE, pickle.NEWFALSE) + pickle.REDUCE
    )
    refused(wrap4(builtin_dtype + pickle.EMPTY_TUPLE + pickle.BUILD), "shared")
    logger = sg("logging", "getLogger") + u("bastion") + pickle.TUPLE1 + pickle.REDUCE
    state = pickle.EMPTY_DICT + u("disabled") + pickle.NEWTRUE + pickle.SETITEM
    refused(wrap4(logger + state + pickle.BUILD), "shared")
    assert not logging.getLogger("bastion").disabled


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02\x82\x01.",  # EXT1 (the extension registry bypasses find_class via a cache)
        b"\x80\x02\x83\x01\x00.",  # EXT2
        b"\x80\x02Pfoo\n.",  # PERSID
        b"\x80\x02X\x03\x00\x00\x00foo\x94Q.",  # BINPERSID
    ],
)
def test_extension_registry_and_persistent_ids_are_refused(data: bytes) -> None:
    refused(data)


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x04",
        b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00",  # a frame longer than the data
        b"\x80\x04(((((",  # marks, never closed
        b"\x80\x04\xff.",  # an unknown opcode
        b"\x80\x04h\x05.",  # a memo reference to nothing
    ],
)
def test_malformed_streams_are_verification_errors(data: bytes) -> None:
    with pytest.raises(VerificationError):
        restricted_loads(data)


def test_deeply_nested_lists_load_without_recursion() -> None:
    # The unpickler builds nesting iteratively: depth is bounded by the input, not the stack.
    data = b"\x80\x04" + b"]" * 50_000 + b"a" * 49_999 + b"."
    assert isinstance(restricted_loads(data), list)


def _joblib_bytes(tmp_path: Path, value: Any) -> bytes:
    path = tmp_path / "x.joblib"
    joblib.dump(value, path)
    return path.read_bytes()


def test_joblib_array_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    data = _joblib_bytes(tmp_path, np.arange(4.0))
    # The declared shape (4,) becomes (255,): 2040 bytes, more than the file holds.
    shape_op = data.index(b"K\x04\x85", data.index(b"shape"))
    hostile = data[:shape_op] + b"K\xff" + data[shape_op + 2 :]
    path = tmp_path / "hostile.joblib"
    path.write_bytes(hostile)
    with pytest.raises(VerificationError, match="past the end of the file"):
        load_pickle_file(path)


def test_compressed_joblib_and_trailing_data_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "z.joblib"
    joblib.dump({"a": 1}, path, compress=3)
    with pytest.raises(VerificationError, match="not an uncompressed pickle"):
        load_pickle_file(path)
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4) + b"more")
    with pytest.raises(VerificationError, match="data after the pickle"):
        load_pickle_file(path)


def test_unpickler_reads_from_any_binary_file() -> None:
    data = pickle.dumps({"w": [1.0, 2.0]}, protocol=5)
    assert RestrictedUnpickler(io.BytesIO(data), size=len(data)).load() == {"w": [1.0, 2.0]}
