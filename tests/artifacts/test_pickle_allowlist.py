"""The pickle allowlist and deny rules: exact names, every spelling, a generator that is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.artifacts import pickle_allowlist, pickle_rules
from bastion.artifacts._pickle_allowlist_data import GENERATED_CALLABLES, GENERATED_CLASSES
from bastion.artifacts.pickle_allowlist import SAFE_CALLABLES, SAFE_CLASSES

ROOT = Path(__file__).resolve().parents[2]

#: Curated entries under modules the deny rules cover as a whole, each allowed on purpose.
CURATED_EXCEPTIONS = {
    "copyreg._reconstructor",  # what protocols 0-1 write for every plain object
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "types.SimpleNamespace",
    "logging.getLogger",  # Logger.__reduce__
    "_io.BytesIO",
    "io.BytesIO",
    "torch.storage._load_from_bytes",  # analysed as a nested torch file
    "torch.jit._pickle.build_intlist",  # TorchScript archives' own pickles
    "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_boollist",
    "torch.jit._pickle.build_tensor_from_id",
    "torch.jit._pickle.restore_type_tag",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle_compat.NDArrayWrapper",
    "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle_compat.NDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle_compat.ZNDArrayWrapper",
}


def _danger(full: str) -> str | None:
    module, _, name = full.rpartition(".")
    return pickle_rules.danger_reason(module, name)


def test_no_allowlisted_name_is_dangerous_except_curated() -> None:
    dangerous = {n for n in SAFE_CLASSES if _danger(n)}
    assert dangerous <= CURATED_EXCEPTIONS, sorted(dangerous - CURATED_EXCEPTIONS)
    assert not {n for n in GENERATED_CLASSES | GENERATED_CALLABLES if _danger(n)}


def test_generated_data_covers_both_numpy_layouts_and_core_classes() -> None:
    for name in (
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "torch.nn.modules.linear.Linear",
        "torch.nn.modules.conv.Conv2d",
        "torch.optim.adam.Adam",
        "torch.float32",
        "torch.FloatStorage",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "scipy.sparse._csr.csr_matrix",
    ):
        assert name in SAFE_CLASSES, name
    # generated from classes only (plus reviewed helpers and dtype-like objects)
    for name in ("torch.load", "numpy.load", "torch.jit.load", "numpy.memmap", "torch.save"):
        assert name not in SAFE_CLASSES


def test_exact_names_only() -> None:
    assert pickle_allowlist.is_safe_class("torch.nn.modules.linear.Linear")
    assert not pickle_allowlist.is_safe_class("torch.nn.modules.linear.os")
    assert not pickle_allowlist.is_safe_class("torch.nn.modules.linear.Linear.__init__")
    assert not pickle_allowlist.is_safe_class("torch.nn.modules.linear")
    assert not pickle_allowlist.is_safe_callable("collections.OrderedDict.fromkeys")
    assert pickle_allowlist.is_safe_callable("collections.OrderedDict")
    assert SAFE_CALLABLES <= SAFE_CLASSES


@pytest.mark.parametrize(
    ("module", "name", "dangerous"),
    [
        ("os", "system", True),
        ("torch.serialization", "os.system", True),
        ("torch.library", "torch.utils.collect_env.run", True),
        ("numpy", "__builtins__", True),
        ("pip.__main__", "main", True),  # importing a package's __main__ runs it
        ("os.path", "join", False),  # path string helpers: graded by use, not denied
        ("posixpath", "join", False),
        ("__main__", "Net", False),
        ("__main__", "os.system", True),
        ("mypkg.io", "Reader", False),  # a user module named io is not the stdlib io
        ("numpy.random._pickle", "__randomstate_ctor", False),
        ("__torch__.torch.nn.modules.linear.___torch_mangle_0", "Linear", False),
        ("sklearn.tree._tree", "Tree", False),
    ],
)
def test_danger_reason(module: str, name: str, dangerous: bool) -> None:
    assert (pickle_rules.danger_reason(module, name) is not None) is dangerous


def test_fix_imports_and_spellings() -> None:
    assert pickle_rules.fix_imports("__builtin__", "eval") == ("builtins", "eval")
    assert pickle_rules.fix_imports("copy_reg", "_reconstructor") == ("copyreg", "_reconstructor")
    assert pickle_rules.fix_imports("itertools", "imap") == ("builtins", "map")
    assert "os" in pickle_rules.normalized_spellings("\uff4f\uff53")
    assert "os" in pickle_rules.normalized_spellings(" os\t")
    assert pickle_rules.name_is_well_formed("torch.nn", "Linear")
    assert not pickle_rules.name_is_well_formed("os ", "system")
    assert not pickle_rules.name_is_well_formed("os", "sys\ntem")
    assert not pickle_rules.name_is_well_formed("o\u0455", "system")


def test_generated_module_is_current() -> None:
    """scripts/gen_pickle_allowlist.py --check: the committed data matches the installed libs.

    Run in a fresh interpreter: introspection sees different module attributes once other
    tests have imported things (numpy.ma grows names), which must not change the verdict.
    """
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_pickle_allowlist.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, "run scripts/gen_pickle_allowlist.py: " + done.stdout + done.stderr
