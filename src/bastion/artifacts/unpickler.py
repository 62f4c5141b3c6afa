"""A restricted unpickler: only the scanner's allowlist, nothing it cannot vouch for (stable API).

Loading a pickle runs whatever callables it names (CWE-502; MITRE ATLAS AML.T0011.000). bastion
loads a pickle-based model only after it scanned clean, its signature verified and its model
carries an explicit opt-in; even then it goes through :class:`RestrictedUnpickler`, which
enforces at run time what :mod:`bastion.artifacts.pickle_scan` checks statically (the
"restricting globals" recipe of the Python documentation, made strict):

* ``find_class`` resolves only names on :mod:`bastion.artifacts.pickle_allowlist`, matched
  *exactly* on the full dotted name (``numpy.dtype``, never ``numpy.dtype.mro`` or a prefix),
  and checks the name before anything is imported: a refused name never imports its module.
* ``REDUCE``, ``INST`` and ``OBJ`` call only objects resolved from a name in
  :data:`~bastion.artifacts.pickle_allowlist.SAFE_CALLABLES`; ``NEWOBJ``/``NEWOBJ_EX`` create
  only classes from :data:`~bastion.artifacts.pickle_allowlist.SAFE_CLASSES`. A value computed
  while loading is never called.
* Cython's ``__pyx_unpickle_<Class>`` helpers (scikit-learn's and NumPy's extension types)
  are allowed only for an allowed ``<Class>`` of the same module, and only to make that class.
* Rebuild helpers that call or import what they are given are held to the same rules:
  ``copyreg._reconstructor`` (its base's ``__init__`` runs), ``copyreg.__newobj__`` and NumPy's
  ``_reconstruct`` (the class must be allowed), NumPy's ``_ufunc_reconstruct`` (an already
  imported NumPy ufunc, never an import). PyTorch's rebuild helpers are refused outright: some
  call their arguments, one loads a nested archive with ``torch.load``; bastion does not serve
  pickled PyTorch models.
* ``BUILD``, ``SETITEM(S)``, ``APPEND(S)`` and ``ADDITEMS`` may change only objects made by
  this load: never a resolved global (a class, a function), a module, a shared logger, an enum
  member or one of NumPy's built-in dtypes, any of which would change the whole process.
* The extension registry (``EXT1/2/4``, whose cache bypasses ``find_class``) and persistent ids
  are refused.
* joblib files: the raw array bytes that follow a ``NumpyArrayWrapper`` are read here (never by
  joblib's own reader, which can memory-map files and reads object arrays with a plain
  unpickler): a plain dtype, a shape whose bytes lie inside the file, an object array only as a
  nested pickle read by this same restricted unpickler. joblib's pre-0.10 wrappers, which make
  joblib read side files named in the pickle, are refused.

Any refusal, and any malformed stream, raises :class:`~bastion.errors.VerificationError`. The
limits (what a pickle may allocate) are the scanner's: the file was scanned before it comes
here. References: Python ``pickle`` docs, "Restricting Globals"; fickling
(github.com/trailofbits/fickling); PyTorch ``_weights_only_unpickler``.
"""

from __future__ import annotations

import copyreg
import enum
import importlib
import io
import logging
import pickle
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar, Final

import numpy as np

from bastion.artifacts.pickle_allowlist import is_safe_callable, is_safe_class
from bastion.errors import VerificationError

__all__ = ["MAX_PICKLE_BYTES", "RestrictedUnpickler", "load_pickle_file", "restricted_loads"]

logger = logging.getLogger(__name__)

#: Largest pickle or joblib file :func:`load_pickle_file` reads.
MAX_PICKLE_BYTES: Final = 2 * 2**30

#: Prefixes refused although the allowlist has names under them (see the module docstring).
_REFUSED_PREFIXES: Final = ("torch.",)

#: joblib's pre-0.10 wrappers read a side file named in the pickle.
_JOBLIB_COMPAT: Final = frozenset(
    {
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.NDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.ZNDArrayWrapper",
    }
)
_JOBLIB_WRAPPERS: Final = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)
#: Helpers that make their first argument, a class, with ``cls.__new__``.
_RECONSTRUCTORS: Final = frozenset(
    {
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
    }
)
_UFUNC_RECONSTRUCTORS: Final = frozenset(
    {"numpy._core._ufunc_reconstruct", "numpy.core._ufunc_reconstruct"}
)
#: Nested pickles (joblib object arrays) inside nested pickles, at most.
_MAX_NESTING: Final = 4

_ROUTINE_TYPES: Final = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.BuiltinMethodType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)


def _refuse(message: str) -> VerificationError:
    return VerificationError(f"refused to unpickle: {message}")


class _Registry:
    """What ``find_class`` handed out in one load (shared with nested loads)."""

    __slots__ = ("callables", "classes", "names", "pyx", "resolved")

    def __init__(self) -> None:
        self.resolved: dict[int, object] = {}  # every object find_class returned, by id
        self.names: dict[int, str] = {}  # its full dotted name
        self.callables: set[int] = set()  # ids of objects resolved from a safe-callable name
        self.classes: set[int] = set()  # ids of classes resolved from a safe-class name
        self.pyx: dict[int, str] = {}  # Cython unpickle helpers: the class each one makes


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler limited to the scanner's allowlist (see the module docstring).

    Built on the pure-Python unpickler, whose opcodes can be overridden one by one; a model
    file is loaded once, so its speed does not matter.

    Args:
        file: a binary file positioned at the start of the pickle.
        size: the bytes left in ``file`` (bounds the arrays joblib reads from it).
    """

    # The pure-Python unpickler's internals that this class works with (typeshed does not
    # declare them).
    stack: list[Any]
    metastack: list[list[Any]]
    append: Callable[[Any], None]
    proto: int
    _unframer: Any

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], *, size: int, _registry: _Registry | None = None) -> None:
        super().__init__(file, fix_imports=True, encoding="ASCII", errors="strict")
        self._file = file
        self._size = size
        self._registry = _registry or _Registry()
        self._depth = 0

    # -- globals -------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only if the exact full name is on the allowlist."""
        if not isinstance(module, str) or not isinstance(name, str):
            raise _refuse("a global named by something other than text")
        if self.proto < 3:  # Python 2 names, mapped as the standard unpickler maps them
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in _JOBLIB_COMPAT:
            raise _refuse(f"{full} makes joblib read a side file named in the pickle")
        pyx_class = _pyx_class(module, name)
        callable_ok = pyx_class is not None or is_safe_callable(full)
        if not (callable_ok or is_safe_class(full)):
            raise _refuse(f"global {full[:200]!r} is not on the allowlist")
        if full.startswith(_REFUSED_PREFIXES):
            raise _refuse(f"global {full!r}: pickled PyTorch objects are not loaded")
        value = _resolve(module, name, full)
        registry = self._registry
        key = id(value)
        registry.resolved[key] = value
        registry.names.setdefault(key, full)
        if callable_ok:
            registry.callables.add(key)
        if pyx_class is not None:
            registry.pyx[key] = pyx_class
        if isinstance(value, type):
            registry.classes.add(key)
        return value

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse("persistent ids are not supported")

    # -- calls ---------------------------------------------------------------------------

    def _name_of(self, value: object) -> str:
        return self._registry.names.get(id(value), type(value).__name__)

    def _check_call(self, func: object, args: object, opcode: str) -> tuple[Any, ...]:
        registry = self._registry
        if id(func) not in registry.callables or registry.resolved.get(id(func)) is not func:
            raise _refuse(f"{opcode} calls {self._name_of(func)!r}, which may not be called")
        if type(args) is not tuple:
            raise _refuse(f"{opcode} arguments are a {type(args).__name__}, not a tuple")
        full = registry.names[id(func)]
        if func is copyreg._reconstructor:  # type: ignore[attr-defined]
            if len(args) != 3:
                raise _refuse("copyreg._reconstructor takes three arguments")
            cls, base, _state = args
            self._check_class(cls, "copyreg._reconstructor")
            if base is not object and id(base) not in registry.callables:
                raise _refuse(
                    f"copyreg._reconstructor runs {self._name_of(base)!r}.__init__, "
                    "which may not be called"
                )
        elif full in _RECONSTRUCTORS:
            if not args:
                raise _refuse(f"{full} without a class")
            self._check_class(args[0], full)
        elif full in _UFUNC_RECONSTRUCTORS:
            _check_ufunc(args)
        elif id(func) in registry.pyx:
            # __pyx_unpickle_C(cls, checksum, state) is cls.__new__(cls) and C's setstate.
            if not args:
                raise _refuse(f"{full} without a class")
            self._check_class(args[0], full)
            if registry.names.get(id(args[0])) != registry.pyx[id(func)]:
                raise _refuse(f"{full} given {self._name_of(args[0])!r}, not its own class")
        return args

    def _check_class(self, cls: object, opcode: str) -> None:
        registry = self._registry
        if (
            not isinstance(cls, type)
            or id(cls) not in registry.classes
            or registry.resolved.get(id(cls)) is not cls
        ):
            raise _refuse(f"{opcode} creates {self._name_of(cls)!r}, which is not an allowed class")

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        checked = self._check_call(func, args, "REDUCE")
        stack[-1] = func(*checked)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._check_class(cls, "NEWOBJ")
        if type(args) is not tuple:
            raise _refuse("NEWOBJ arguments are not a tuple")
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._check_class(cls, "NEWOBJ_EX")
        if type(args) is not tuple or type(kwargs) is not dict:
            raise _refuse("NEWOBJ_EX arguments are not a tuple and a dict")
        self.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        self._check_call(klass, tuple(args), "INST/OBJ")
        super()._instantiate(klass, args)  # type: ignore[misc]

    # -- changes to existing objects -----------------------------------------------------

    def _check_target(self, target: object, opcode: str) -> None:
        if id(target) in self._registry.resolved or _is_shared(target):
            raise _refuse(
                f"{opcode} would change {self._name_of(target)!r}, an object shared by the "
                "whole process"
            )

    def load_build(self) -> None:
        target = self.stack[-2] if len(self.stack) >= 2 else None
        self._check_target(target, "BUILD")
        super().load_build()  # type: ignore[misc]
        built = self.stack[-1]
        if self._registry.names.get(id(type(built))) in _JOBLIB_WRAPPERS:
            self.stack[-1] = self._joblib_array(built)

    def load_setitem(self) -> None:
        self._check_target(self.stack[-3] if len(self.stack) >= 3 else None, "SETITEM")
        super().load_setitem()  # type: ignore[misc]

    def load_setitems(self) -> None:
        self._check_target(self._below_mark(), "SETITEMS")
        super().load_setitems()  # type: ignore[misc]

    def load_append(self) -> None:
        self._check_target(self.stack[-2] if len(self.stack) >= 2 else None, "APPEND")
        super().load_append()  # type: ignore[misc]

    def load_appends(self) -> None:
        self._check_target(self._below_mark(), "APPENDS")
        super().load_appends()  # type: ignore[misc]

    def load_additems(self) -> None:
        self._check_target(self._below_mark(), "ADDITEMS")
        super().load_additems()  # type: ignore[misc]

    def _below_mark(self) -> object:
        # Before pop_mark: the object the items go into is the last one of the enclosing stack.
        outer = self.metastack[-1] if self.metastack else []
        return outer[-1] if outer else None

    def load_ext(self) -> None:
        raise _refuse("the extension registry (EXT1/EXT2/EXT4) is not supported")

    def load_persid(self) -> None:
        raise _refuse("persistent ids are not supported")

    # -- joblib --------------------------------------------------------------------------

    def _joblib_array(self, wrapper: Any) -> Any:
        state = getattr(wrapper, "__dict__", {})
        dtype, shape, order = state.get("dtype"), state.get("shape"), state.get("order", "C")
        subclass = state.get("subclass", np.ndarray)
        if not isinstance(dtype, np.dtype):
            raise _refuse("a joblib array wrapper without a NumPy dtype")
        if not (type(shape) is tuple and all(type(d) is int and d >= 0 for d in shape)):
            raise _refuse("a joblib array wrapper with a malformed shape")
        if order not in ("C", "F") or subclass is not np.ndarray:
            raise _refuse("a joblib array wrapper with an unsupported order or array class")
        frame = self._unframer.current_frame
        if frame is not None and frame.read(1):
            raise _refuse("joblib array bytes inside a pickle frame (a hidden stream)")
        self._unframer.current_frame = None
        if dtype.hasobject:
            return self._joblib_object_array(shape)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        alignment = state.get("numpy_array_alignment_bytes")
        if alignment is not None:
            pad = self._file.read(1)
            if len(pad) != 1:
                raise _refuse("a joblib array's alignment byte is missing")
            self._file.read(pad[0])
        if nbytes > self._remaining():
            raise _refuse(f"a joblib array of {nbytes} bytes runs past the end of the file")
        data = self._file.read(nbytes)
        if len(data) != nbytes:
            raise _refuse("a joblib array is truncated")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if order == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)

    def _joblib_object_array(self, shape: tuple[int, ...]) -> Any:
        if self._depth >= _MAX_NESTING:
            raise _refuse("joblib object arrays nested too deeply")
        nested = RestrictedUnpickler(self._file, size=self._remaining(), _registry=self._registry)
        nested._depth = self._depth + 1
        value = nested.load()
        if not isinstance(value, np.ndarray) or value.shape != shape:
            raise _refuse("a joblib object array's nested pickle is not the array announced")
        return value

    def _remaining(self) -> int:
        try:
            return self._size - self._file.tell()
        except (OSError, ValueError):
            return self._size

    # -- entry point ---------------------------------------------------------------------

    def load(self) -> Any:
        """Load one pickle.

        Raises:
            VerificationError: the pickle uses something the allowlist does not allow, or is
                malformed.
        """
        try:
            return super().load()
        except VerificationError:
            raise
        except RecursionError as exc:
            raise _refuse("structures nested too deeply") from exc
        except MemoryError as exc:
            raise _refuse("the pickle needs more memory than is available") from exc
        except Exception as exc:  # a malformed stream raises anything the unpickler can
            raise VerificationError(
                f"malformed pickle: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc


_ext_opcodes = (pickle.EXT1, pickle.EXT2, pickle.EXT4)
for _code in _ext_opcodes:
    RestrictedUnpickler.dispatch[_code[0]] = RestrictedUnpickler.load_ext
for _code in (pickle.PERSID, pickle.BINPERSID):
    RestrictedUnpickler.dispatch[_code[0]] = RestrictedUnpickler.load_persid
for _opcode, _method in (
    (pickle.REDUCE, RestrictedUnpickler.load_reduce),
    (pickle.NEWOBJ, RestrictedUnpickler.load_newobj),
    (pickle.NEWOBJ_EX, RestrictedUnpickler.load_newobj_ex),
    (pickle.BUILD, RestrictedUnpickler.load_build),
    (pickle.SETITEM, RestrictedUnpickler.load_setitem),
    (pickle.SETITEMS, RestrictedUnpickler.load_setitems),
    (pickle.APPEND, RestrictedUnpickler.load_append),
    (pickle.APPENDS, RestrictedUnpickler.load_appends),
    (pickle.ADDITEMS, RestrictedUnpickler.load_additems),
):
    RestrictedUnpickler.dispatch[_opcode[0]] = _method


def _resolve(module: str, name: str, full: str) -> object:
    """Import ``module`` and follow ``name``'s dotted path (the name was already allowed)."""
    try:
        value: object = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise _refuse(f"allowed global {full!r} does not exist here: {exc}") from exc
    return value


def _pyx_class(module: str, name: str) -> str | None:
    """The class of Cython's ``__pyx_unpickle_<Class>`` helper, if that class is allowed."""
    prefix = "__pyx_unpickle_"
    if not name.startswith(prefix) or "." in name:
        return None
    full = f"{module}.{name[len(prefix) :]}"
    return full if is_safe_class(full) else None


def _check_ufunc(args: tuple[Any, ...]) -> None:
    # numpy's _ufunc_reconstruct(module, name) imports ``module``: allow only a ufunc of an
    # already imported NumPy module.
    if len(args) != 2 or not all(type(a) is str for a in args):
        raise _refuse("_ufunc_reconstruct takes a module name and a ufunc name")
    module, name = args
    loaded = sys.modules.get(module)
    if (
        loaded is None
        or not (module == "numpy" or module.startswith("numpy."))
        or not isinstance(getattr(loaded, name, None), np.ufunc)
    ):
        raise _refuse(f"_ufunc_reconstruct of {module[:80]}.{name[:80]}, not a NumPy ufunc")


def _is_shared(target: object) -> bool:
    if isinstance(target, (*_ROUTINE_TYPES, logging.Logger, enum.Enum)):
        return True
    return isinstance(target, np.dtype) and bool(target.isbuiltin)


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Raises:
        VerificationError: see :meth:`RestrictedUnpickler.load`.
    """
    return RestrictedUnpickler(io.BytesIO(data), size=len(data)).load()


def load_pickle_file(path: Path) -> Any:
    """Load one pickle or (uncompressed) joblib file with :class:`RestrictedUnpickler`.

    Only call this on a file that scanned clean and whose signature verified.

    Raises:
        VerificationError: the file is refused (see the module docstring) or malformed.
        bastion.errors.BastionError: it cannot be read.
    """
    from bastion.errors import BastionError

    try:
        with path.open("rb") as handle:
            size = handle.seek(0, io.SEEK_END)
            handle.seek(0)
            if size > MAX_PICKLE_BYTES:
                raise _refuse(f"{path.name} is larger than {MAX_PICKLE_BYTES} bytes")
            head = handle.read(1)
            handle.seek(0)
            if head != pickle.PROTO:  # joblib's compressed files start with a codec's magic
                raise _refuse(
                    f"{path.name} is not an uncompressed pickle of protocol 2 or later "
                    "(compressed joblib files are not loaded: save with compress=0)"
                )
            value = RestrictedUnpickler(handle, size=size).load()
            if handle.read(1):
                raise _refuse(f"{path.name} has data after the pickle")
            return value
    except OSError as exc:
        raise BastionError(f"cannot read {path}: {exc.strerror or exc}") from exc
