"""Generate src/bastion/artifacts/_pickle_allowlist_data.py from the installed ML packages.

Usage: .venv/bin/python scripts/gen_pickle_allowlist.py [--check]

What goes in (exact full dotted names only, never prefixes):

- GENERATED_CLASSES: every *class* defined in the walked modules of torch (nn, optim,
  distributions, ao.nn, storage/tensor types), NumPy (top level, dtypes, random, ma,
  polynomial), SciPy (sparse, stats distributions, spatial, interpolate splines, optimize
  results) and scikit-learn (every public and private module except tests, datasets, externals
  and test utilities), under the name pickle writes for it (``cls.__module__`` + qualname) and
  the name it is reachable under in its walked module. Classes whose module or name the
  denylist (``bastion.artifacts.pickle_rules``) calls dangerous are left out, and so are
  modules that open files, sockets or processes. NumPy names are written both as
  ``numpy.core.*`` (1.x) and ``numpy._core.*`` (2.x).
- GENERATED_CALLABLES: the generated classes (their constructors only store parameters) plus
  torch dtype/layout/memory-format/qscheme *objects* (``torch.float32``: pickled by name), NumPy
  ufuncs and scalar types, and reconstructor helpers the packages write into their own pickles
  that were reviewed by hand (:data:`REVIEWED_HELPERS`); each is checked to exist.

``--check`` exits 1 when the committed module differs from what would be generated (CI can run
it against the locked versions).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "bastion" / "artifacts" / "_pickle_allowlist_data.py"
sys.path.insert(0, str(ROOT / "src"))

from bastion.artifacts.pickle_rules import danger_reason  # noqa: E402

#: Module trees whose classes are walked (recursively).
WALK = (
    "torch.nn.modules",
    "torch.nn.parameter",
    "torch.nn.utils.weight_norm",
    "torch.nn.utils.spectral_norm",
    "torch.nn.utils.rnn",
    "torch.optim",
    "torch.distributions",
    "torch.ao.nn",
    "torch.nn.intrinsic",
    "torch.nn.qat",
    "torch.nn.quantized",
    "torch.storage",
    "torch.return_types",
    "numpy.random",
    "numpy.ma",
    "numpy.polynomial",
    "numpy.dtypes",
    "scipy.sparse",
    "scipy.stats._distn_infrastructure",
    "scipy.stats._continuous_distns",
    "scipy.stats._discrete_distns",
    "scipy.stats._multivariate",
    "scipy.spatial._kdtree",
    "scipy.spatial._ckdtree",
    "scipy.interpolate._bsplines",
    "scipy.interpolate._interpolate",
    "scipy.interpolate._fitpack2",
    "scipy.optimize._optimize",
    "sklearn",
)
#: Single modules whose top-level classes are taken (not walked).
TOP_LEVEL = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "scipy.sparse")
#: Classes of torch's top level that pickles name (tensor and storage classes are added too).
TORCH_TOP_CLASSES = (
    "Size",
    "device",
    "dtype",
    "layout",
    "memory_format",
    "qscheme",
    "Generator",
    "finfo",
    "iinfo",
    "Tensor",
    "TypedStorage",
    "UntypedStorage",
)
#: Module names (and everything under them) never walked.
SKIP = (
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils._show_versions",
    "sklearn._build_utils",
    "sklearn.experimental",
    "sklearn.conftest",
    "numpy.random._examples",
    "torch.distributions.constraint_registry",
)
#: Reconstructor helpers written by the packages into their own pickles, reviewed by hand:
#: each builds an object from plain data and calls nothing it is given.
REVIEWED_HELPERS = (
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy.core._ufunc_reconstruct",
    "numpy.ma.core._mareconstruct",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_xla_tensor",
    "torch._tensor._rebuild_from_type",
    "torch._tensor._rebuild_from_type_v2",
    "torch.serialization._get_layout",
    "scipy.sparse._sputils.matrix",
    "sklearn.metrics._dist_metrics.newObj",
    "sklearn.neighbors._binary_tree.newObj",
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.neighbors._ball_tree.newObj",
    "sklearn.tree._tree._build_pruned_tree_py",
)
#: Class names (exact) that stay out although they live in a walked module.
EXCLUDE_CLASSES = frozenset(
    {
        "numpy.memmap",
        "numpy.vectorize",
        "numpy.lib._function_base_impl.vectorize",
        "numpy.ma.core.MaskedArrayFutureWarning",
        "torch.storage._StorageBase",
    }
)


def _iter_modules(root: str) -> list[ModuleType]:
    try:
        top = importlib.import_module(root)
    except Exception:
        return []
    mods = [top]
    path = getattr(top, "__path__", None)
    if path is None:
        return mods
    for info in pkgutil.walk_packages(path, prefix=root + ".", onerror=lambda _n: None):
        name = info.name
        if any(name == s or name.startswith(s + ".") for s in SKIP):
            continue
        parts = name.split(".")
        if "tests" in parts or "test" in parts or "_tests" in parts or "conftest" in parts:
            continue
        try:
            mods.append(importlib.import_module(name))
        except Exception:  # noqa: S112 - some submodules need optional dependencies
            continue
    return mods


def _safe(full: str) -> bool:
    if full in EXCLUDE_CLASSES:
        return False
    module, _, name = full.rpartition(".")
    return bool(module) and danger_reason(module, name) is None


def _classes_of(mod: ModuleType, own_only: bool) -> set[str]:
    out = set()
    for attr, value in list(vars(mod).items()):
        if not inspect.isclass(value) or attr.startswith("__"):
            continue
        module = getattr(value, "__module__", None) or ""
        qual = getattr(value, "__qualname__", "") or ""
        if own_only and not module.startswith(mod.__name__.split(".")[0]):
            continue
        if "<" in qual:
            continue
        for full in (f"{module}.{qual}", f"{mod.__name__}.{attr}"):
            if module.split(".")[0] == mod.__name__.split(".")[0] and _safe(full):
                out.add(full)
    return out


def _torch_objects() -> set[str]:
    """torch's top level holds JIT and file classes too: take only the data types."""
    import torch

    out = set()
    for cls in (*torch._tensor_classes, *torch._storage_classes):
        out.add(f"{cls.__module__}.{cls.__name__}")
    for attr in TORCH_TOP_CLASSES:
        out.add(f"torch.{attr}")
        value = getattr(torch, attr)
        out.add(f"{value.__module__}.{value.__qualname__}")  # torch.Generator is torch._C's
    kinds = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)
    for attr, value in vars(torch).items():
        if isinstance(value, kinds) and not attr.startswith("_"):
            out.add(f"torch.{attr}")
    return out


def _numpy_objects() -> set[str]:
    import numpy as np

    out = set()
    for attr, value in vars(np).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, np.ufunc) or (
            inspect.isclass(value) and issubclass(value, np.generic)
        ):
            out.add(f"numpy.{attr}")
    return out


def _numpy_both(names: set[str]) -> set[str]:
    out = set(names)
    for n in names:
        if n.startswith("numpy._core."):
            out.add("numpy.core." + n[len("numpy._core.") :])
        elif n.startswith("numpy.core."):
            out.add("numpy._core." + n[len("numpy.core.") :])
    return out


def _exists(full: str) -> bool:
    parts = full.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: S112
            continue
        for p in parts[i:]:
            if not hasattr(obj, p):
                return False
            obj = getattr(obj, p)
        return True
    return False


def generate() -> str:
    warnings.simplefilter("ignore")
    classes: set[str] = set()
    for root in WALK:
        for mod in _iter_modules(root):
            classes |= _classes_of(mod, own_only=True)
    for name in TOP_LEVEL:
        try:
            classes |= _classes_of(importlib.import_module(name), own_only=True)
        except Exception:  # noqa: S112
            continue
    classes = {c for c in _numpy_both(classes) if _safe(c)}
    helpers = set()
    for h in REVIEWED_HELPERS:
        for spelling in _numpy_both({h}):
            if _exists(spelling) or spelling.startswith(("numpy.core.", "numpy._core.")):
                helpers.add(spelling)
    objects = _torch_objects() | _numpy_both(_numpy_objects())
    callables = helpers | objects
    versions = {}
    for pkg in ("torch", "numpy", "scipy", "sklearn", "joblib"):
        try:
            versions[pkg] = importlib.import_module(pkg).__version__
        except Exception:
            versions[pkg] = "absent"
    lines = [
        '"""Generated by scripts/gen_pickle_allowlist.py: do not edit (internal).',
        "",
        "Installed versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        '"""',
        "",
        "from typing import Final",
        "",
        "GENERATED_CLASSES: Final[frozenset[str]] = frozenset(",
        "    {",
        *[f'        "{c}",' for c in sorted(classes)],
        "    }",
        ")",
        "",
        "GENERATED_CALLABLES: Final[frozenset[str]] = GENERATED_CLASSES | frozenset(",
        "    {",
        *[f'        "{c}",' for c in sorted(callables - classes)],
        "    }",
        ")",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = generate()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            sys.stderr.write(f"{OUT} is out of date; run scripts/gen_pickle_allowlist.py\n")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    sys.stderr.write(f"wrote {OUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
