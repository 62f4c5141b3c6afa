"""The symbolic pickle machine behind :mod:`bastion.artifacts.pickle_scan` (internal).

Values are tokens that refer to one another (never copies): resolved globals, strings, ints,
tuples, and :class:`_Node` containers that carry the weight and depth a naive walk of them
would have. :class:`_Analyzer` runs the opcode loop (ordered by opcode frequency, one pass,
no recursion on anything the stream controls), grades every global and call with
:mod:`~bastion.artifacts.pickle_rules` and :mod:`~bastion.artifacts.pickle_allowlist`, steps
over joblib's raw array bytes, follows nested pickles, and records findings; the rule ids and
their meaning are documented in :mod:`bastion.artifacts.pickle_scan`.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import re
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bastion.artifacts import pickle_rules
from bastion.artifacts.findings import Atlas, Finding, Severity
from bastion.artifacts.pickle_allowlist import SAFE_CALLABLES, SAFE_CLASSES

__all__ = ["PickleLimits"]

_log = logging.getLogger(__name__)

HIGHEST_PROTOCOL: Final = 5

# Rule ids.
R_DANGEROUS: Final = "PICKLE-DANGEROUS-GLOBAL"
R_HIJACK: Final = "PICKLE-STATE-HIJACK"
R_MUTATION: Final = "PICKLE-GLOBAL-MUTATION"
R_UNKNOWN_CALL: Final = "PICKLE-UNKNOWN-CALL"
R_COMPUTED_CALL: Final = "PICKLE-COMPUTED-CALL"
R_UNRESOLVED: Final = "PICKLE-UNRESOLVED-GLOBAL"
R_SUSPICIOUS_NAME: Final = "PICKLE-SUSPICIOUS-NAME"
R_MALFORMED: Final = "PICKLE-MALFORMED"
R_TRUNCATED: Final = "PICKLE-TRUNCATED"
R_TRAILING: Final = "PICKLE-TRAILING-DATA"
R_LIMIT: Final = "PICKLE-LIMIT"
R_JOBLIB: Final = "PICKLE-JOBLIB-ARRAY"
R_NESTED: Final = "PICKLE-NESTED"
R_SIDE_FILE: Final = "PICKLE-SIDE-FILE"
R_UNKNOWN_CLASS: Final = "PICKLE-UNKNOWN-CLASS"
R_VALUE_CALL: Final = "PICKLE-UNKNOWN-VALUE-CALL"
R_UNKNOWN_GLOBAL: Final = "PICKLE-UNKNOWN-GLOBAL"
R_RESOURCE: Final = "PICKLE-RESOURCE-BOMB"

_REMEDIATE_CODE: Final = (
    "Do not load this file with pickle, torch.load(weights_only=False) or joblib. Obtain the "
    "model from a trusted source, or re-export it as safetensors."
)
_REMEDIATE_UNKNOWN: Final = (
    "Review the named callable; if it is trusted, load with an allowlist "
    "(torch.load(weights_only=True) with add_safe_globals) or convert to safetensors."
)
_REMEDIATE_BROKEN: Final = (
    "The stream could not be fully analysed and is treated as unsafe; re-create the file "
    "with a current library, or do not load it."
)
_REMEDIATE_CLASS: Final = (
    "Loading needs the named class importable and runs its __setstate__; make sure it comes "
    "from code you trust, or convert the model to safetensors."
)

#: Strings kept as Python ``str`` values up to this many bytes; longer ones stay lazy slices.
_MAX_INLINE_STR: Final = 1 << 16
#: Deepest nesting of pickles inside pickles (joblib object arrays, torch storages as bytes).
_MAX_NESTING: Final = 4
#: Opcodes between deadline and stack-size checks (the stack grows by at most one item per
#: opcode, so a limit is overshot by at most this many items).
_DEADLINE_EVERY: Final = 1 << 12
_NO_FRAME: Final = 1 << 63
#: Longest text line accepted for text opcodes (GLOBAL, INT, GET, ...).
_MAX_LINE: Final = 1 << 16
#: Findings kept per rule; the rest are counted in one summary finding.
_MAX_FINDINGS_PER_RULE: Final = 200
#: Naive-walk size above which a value is an expansion bomb: the larger of a floor and a
#: multiple of the stream's length (shared references in real pickles stay well below).
_MIN_EXPANSION: Final = 10_000_000
_EXPANSION_FACTOR: Final = 100
_WEIGHT_CAP: Final = 1 << 62
#: Nesting depth above which a value is a bomb; CPython's pickler stops near the recursion
#: limit (1000 by default).
_MAX_DEPTH: Final = 5000
#: Times one name may be imported by GLOBAL/STACK_GLOBAL (a pickler memoises it after once).
_MAX_REIMPORTS: Final = 10_000
#: Largest allocation (bytes) a bytes/bytearray constructor may ask for, and largest element
#: count (product of integer arguments) any other trusted constructor may ask for.
_MAX_ALLOC_BYTES: Final = 1 << 28
_MAX_ALLOC_ELEMENTS: Final = 1 << 32
_ALLOCATORS: Final = frozenset(
    {
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "builtins.dict",
        "builtins.str",
        "collections.deque",
        "collections.OrderedDict",
        "collections.Counter",
    }
)
#: Trusted callables whose integer arguments are not sizes to allocate.
_NO_ALLOCATION: Final = frozenset(
    {
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.range",
        "builtins.slice",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "re._compile",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch.device",
        "torch.Size",
    }
)
#: Values examined among the arguments of one trusted call.
_MAX_ARG_SCAN: Final = 64
#: Trusted callables that never call or instantiate their arguments while loading (a
#: defaultdict's factory runs only on a later missing key).
_ARGS_NEVER_CALLED: Final = frozenset(
    {
        "builtins.set",
        "builtins.frozenset",
        "builtins.list",
        "builtins.tuple",
        "builtins.dict",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.complex",
        "builtins.slice",
        "builtins.range",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.str",
        "builtins.object",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "collections.deque",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter",
        "torch.Size",
        "torch.device",
    }
)
_GETATTR: Final = "builtins.getattr"
#: An enum member's value, as pickled by ``Enum.__reduce_ex__``: a short word.
_ENUM_WORD: Final = re.compile(r"[A-Za-z0-9_\-]{0,64}\Z")
#: Standard library top-level modules (never eligible for the enum-value leniency).
_STDLIB: Final = frozenset(sys.stdlib_module_names) | {"__builtin__", "builtins", "exceptions"}
#: Packages whose Cython ``__pyx_unpickle_<Class>(type, checksum, state)`` helpers are trusted:
#: each only does ``<Class>.__new__(type)`` and sets the state.
_PYX_PACKAGES: Final = frozenset({"torch", "numpy", "scipy", "sklearn", "pandas"})
#: Packages whose allowlist is generated from the installed code: a miss there is not an enum.
_TRUSTED_PACKAGES: Final = frozenset({"torch", "numpy", "scipy", "sklearn", "joblib"})


@dataclass(frozen=True, slots=True)
class PickleLimits:
    """Resource limits of one analysis; reaching one is a ``PICKLE-LIMIT`` finding.

    Attributes:
        max_opcodes: opcodes executed, nested pickles included.
        max_memo: memo entries (and the largest memo index accepted).
        max_stack: live stack items plus open marks.
        deadline: a ``time.monotonic()`` value after which analysis stops with a finding.
    """

    max_opcodes: int = 5_000_000
    max_memo: int = 1_000_000
    max_stack: int = 1_000_000
    deadline: float | None = None


# ---------------------------------------------------------------------------------------------
# Symbolic values. Python str/int/float/bool/None/tuple stand for themselves; the classes below
# stand for everything else and are only ever referenced, never copied.


class _Global:
    """An imported object, by full dotted name. ``resolved`` is False for EXT codes/unknowns."""

    __slots__ = ("module", "name", "offset", "resolved", "via")

    def __init__(self, module: str, name: str, offset: int, via: str, resolved: bool = True):
        self.module = module
        self.name = name
        self.offset = offset
        self.via = via
        self.resolved = resolved

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}" if self.resolved else self.name


class _Node:
    """A value that holds others. ``w`` is how many values a naive walk of it visits (shared
    references counted every time, as ``copy.deepcopy``, ``repr`` or a scanner that rebuilds
    the object tree would) and ``d`` its nesting depth; both are updated in O(1) per reference
    so that expansion bombs are measured, never expanded."""

    __slots__ = ("d", "w")

    def __init__(self) -> None:
        self.w = 1
        self.d = 1


class _Obj(_Node):
    """A value the loader would compute: an instance, a call result, a persistent object."""

    __slots__ = ("attrs", "cls", "info", "kind", "source")

    def __init__(self, kind: str, source: object = None, cls: str = "") -> None:
        self.w = 1
        self.d = 1
        self.kind = kind  # "instance", "call", "persistent", "buffer", "attr"
        self.source = source  # the callable/class value that produced it
        self.cls = cls  # full name of its class when known
        self.attrs: dict[str, object] | None = None  # attributes planted by BUILD
        self.info: object = None  # dtype description, joblib state ...


class _List(_Node):
    __slots__ = ("items",)

    def __init__(self, items: list[object] | None = None) -> None:
        super().__init__()
        self.items: list[object] = items if items is not None else []


class _Dict(_Node):
    """A dict; only string keys are indexed (the last value wins, as in a real dict)."""

    __slots__ = ("keys", "size")

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, object] = {}
        self.size = 0

    def set(self, key: object, value: object) -> None:
        self.size += 1
        if type(key) is str:
            self.keys[key] = value


class _Set(_Node):
    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


_NODE_TYPES: Final = frozenset({_Obj, _List, _Dict, _Set})


class _Bytes:
    """A bytes value: a slice of the input, or text encoded by ``_codecs.encode``."""

    __slots__ = ("length", "start", "text")

    def __init__(self, start: int, length: int, text: object = None) -> None:
        self.start = start
        self.length = length
        self.text = text


class _BigStr:
    """A long string argument, left as a slice of the input until something needs it."""

    __slots__ = ("length", "op", "start")

    def __init__(self, start: int, length: int, op: int) -> None:
        self.start = start
        self.length = length
        self.op = op


class _Mark:
    __slots__ = ()


_MARK_SENTINEL: Final = _Mark()


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Ends the analysis early with a finding."""

    def __init__(self, rule: str, message: str, offset: int, opcode: str | None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.offset = offset
        self.opcode = opcode


# ---------------------------------------------------------------------------------------------
# Opcodes.

_OPNAMES: Final[dict[int, str]] = {
    0x28: "MARK",
    0x2E: "STOP",
    0x30: "POP",
    0x31: "POP_MARK",
    0x32: "DUP",
    0x46: "FLOAT",
    0x49: "INT",
    0x4A: "BININT",
    0x4B: "BININT1",
    0x4C: "LONG",
    0x4D: "BININT2",
    0x4E: "NONE",
    0x50: "PERSID",
    0x51: "BINPERSID",
    0x52: "REDUCE",
    0x53: "STRING",
    0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING",
    0x56: "UNICODE",
    0x58: "BINUNICODE",
    0x61: "APPEND",
    0x62: "BUILD",
    0x63: "GLOBAL",
    0x64: "DICT",
    0x7D: "EMPTY_DICT",
    0x65: "APPENDS",
    0x67: "GET",
    0x68: "BINGET",
    0x69: "INST",
    0x6A: "LONG_BINGET",
    0x6C: "LIST",
    0x5D: "EMPTY_LIST",
    0x6F: "OBJ",
    0x70: "PUT",
    0x71: "BINPUT",
    0x72: "LONG_BINPUT",
    0x73: "SETITEM",
    0x74: "TUPLE",
    0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS",
    0x47: "BINFLOAT",
    0x80: "PROTO",
    0x81: "NEWOBJ",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x85: "TUPLE1",
    0x86: "TUPLE2",
    0x87: "TUPLE3",
    0x88: "NEWTRUE",
    0x89: "NEWFALSE",
    0x8A: "LONG1",
    0x8B: "LONG4",
    0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE",
    0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
    0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE",
    0x95: "FRAME",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}

_U1 = struct.Struct("<B")
_U2 = struct.Struct("<H")
_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")

#: Attribute names that a loader looks up on an object and calls: planting one with BUILD and
#: then triggering the lookup turns any value into a call (BUILD -> __setstate__,
#: APPENDS -> extend, APPEND -> append, ADDITEMS -> add).
_INVOKED_ATTRS: Final = ("__setstate__", "extend", "append", "add")
#: Attributes whose assignment through BUILD changes what an object is or does.
_HIJACK_ATTRS: Final = frozenset(
    {
        "__setstate__",
        "__class__",
        "__dict__",
        "__reduce__",
        "__reduce_ex__",
        "__getattr__",
        "__getattribute__",
        "__setattr__",
        "__delattr__",
        "__getstate__",
        "__call__",
        "__init__",
        "__new__",
        "__del__",
        "__eq__",
        "__hash__",
        "__len__",
        "__iter__",
        "__getitem__",
        "__setitem__",
        "__index__",
        "__bool__",
        "__repr__",
        "__str__",
        "__format__",
        "__enter__",
        "__exit__",
        "__fspath__",
        "__array__",
        "__array_finalize__",
        "__array_wrap__",
        "__torch_function__",
        "__torch_dispatch__",
    }
)

_HIJACK_ATTRS_ORDERED: Final = tuple(sorted(_HIJACK_ATTRS))
#: State keys of joblib's array wrappers that the analysis reads.
_WRAPPER_KEYS: Final = (
    "subclass",
    "shape",
    "order",
    "dtype",
    "allow_mmap",
    "numpy_array_alignment_bytes",
    "filename",
)
#: Most fields a structured dtype may have before it is treated as holding objects.
_MAX_FIELDS: Final = 4096

_JOBLIB_WRAPPERS: Final = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)
_JOBLIB_SIDE_FILE_WRAPPERS: Final = frozenset(
    {
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.NDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "joblib.numpy_pickle.NDArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
    }
)
_DTYPE_NAMES: Final = frozenset({"numpy.dtype", "numpy.core.multiarray.dtype"})
_LOAD_FROM_BYTES: Final = "torch.storage._load_from_bytes"

#: numpy dtype kinds whose item size comes from the pickled state (``PyDataType_ISFLEXIBLE``).
_FLEXIBLE_KINDS: Final = frozenset({"S", "U", "V", "a"})
#: numpy dtype kind letter -> item size when the descriptor has no explicit size.
_DTYPE_DEFAULT_SIZES: Final = {"?": 1, "b": 1, "B": 1, "O": 8}


@dataclass(slots=True)
class _Usage:
    """How the stream used one unknown global (for its final grading)."""

    first: _Global
    called: bool = False
    instantiated: bool = False


class _Analyzer:
    """One symbolic run over one stream (and the streams nested in it)."""

    def __init__(
        self,
        data: bytes | memoryview,
        path: str,
        member: str,
        limits: PickleLimits,
        nested: Callable[[bytes | memoryview, str], None] | None = None,
    ) -> None:
        self.data = data
        self.size = len(data)
        self.path = path
        self.member = member
        self.limits = limits
        self.findings: dict[tuple[str, str], Finding] = {}
        self.globals: dict[str, None] = {}
        self.usage: dict[str, _Usage] = {}
        self.verdicts: dict[str, str | None] = {}
        self.opcodes = 0
        self.nested = nested
        self.depth = 0
        self.flagged: set[str] = set()
        #: weight and depth of the tuples that hold containers, by id (the tuple kept alive)
        self.tuples: dict[int, tuple[tuple[object, ...], int, int]] = {}
        self.max_weight = max(_MIN_EXPANSION, _EXPANSION_FACTOR * self.size)
        self.imports: dict[str, int] = {}
        self.embedded: dict[int, object] = {}
        self.arg_scanned: dict[int, object] = {}
        self.per_rule: dict[str, int] = {}
        self.getattr_global: _Global | None = None
        self.getattr_calls = 0
        self.suppressed: dict[str, tuple[int, Severity]] = {}

    # -- reporting -------------------------------------------------------------------------

    def report(
        self,
        rule: str,
        severity: Severity,
        message: str,
        *,
        offset: int | None,
        opcode: str | None = None,
        symbol: str | None = None,
        atlas: Atlas = Atlas.UNSAFE_ARTIFACT,
        remediation: str = _REMEDIATE_CODE,
    ) -> None:
        key = (rule, symbol or message)
        old = self.findings.get(key)
        if old is not None and old.severity >= severity:
            return
        if old is None:
            count = self.per_rule.get(rule, 0)
            if count >= _MAX_FINDINGS_PER_RULE:
                more = self.suppressed.get(rule)
                self.suppressed[rule] = (
                    (1, severity) if more is None else (more[0] + 1, max(more[1], severity))
                )
                return
            self.per_rule[rule] = count + 1
        self.findings[key] = Finding(
            rule_id=rule,
            severity=severity,
            message=message,
            path=self.path,
            member=self.member,
            offset=offset,
            opcode=opcode,
            symbol=symbol,
            atlas=atlas,
            remediation=remediation,
        )

    # -- names -----------------------------------------------------------------------------

    def resolve(self, module: str, name: str, offset: int, opcode: str, proto: int) -> _Global:
        """The global ``module``/``name`` as the loader would import it, checked and recorded."""
        raw_module, raw_name = module, name
        if proto < 3:
            module, name = pickle_rules.fix_imports(module, name)
        g = _Global(module, name, offset, opcode)
        full = g.full
        count = self.imports.get(full, 0) + 1
        self.imports[full] = count
        if count == _MAX_REIMPORTS:
            self.report(
                R_RESOURCE,
                Severity.HIGH,
                f"imports {full} {count} times without the memo a pickler uses: a "
                "scanner-exhaustion pattern (fickling#111 globalLaughs)",
                offset=offset,
                opcode=opcode,
                symbol=full,
                atlas=Atlas.DENIAL_OF_SERVICE,
                remediation=_REMEDIATE_BROKEN,
            )
        if full not in self.globals:
            self.globals[full] = None
            self.check_name(g, raw_module, raw_name, opcode)
        return g

    def getattr_call(
        self, func: _Global, args: tuple[object, ...] | None, at: int, op: str
    ) -> object:
        """``builtins.getattr(obj, name)``: safe only for a known constructor classmethod of an
        allowlisted class (``getattr(zoneinfo.ZoneInfo, '_unpickle')``, what ``ZoneInfo``
        pickles as); anything else is the universal attribute-fetch primitive (picklescan and
        modelscan deny it; modelscan #331 chains it with importlib)."""
        self.getattr_calls += 1
        if args and len(args) in (2, 3) and type(args[1]) is str:
            target = args[0]
            name = args[1]
            if type(target) is _Global and target.resolved:
                attr = f"{target.full}.{name}"
                if self.verdict(target) == "" and attr in SAFE_CALLABLES:
                    return self.resolve(target.module, f"{target.name}.{name}", at, op, 4)
                self.dangerous(func, f"getattr fetches {attr}: any attribute of anything", op)
                return self.resolve(target.module, f"{target.name}.{name}", at, op, 4)
        self.dangerous(func, "getattr fetches an attribute of a computed object", op)
        return _Obj("attr", func)

    def check_name(self, g: _Global, raw_module: str, raw_name: str, opcode: str) -> None:
        full = g.full
        if full == _GETATTR:
            self.getattr_global = g  # graded by how it is called (getattr_call, finish)
            return
        if not pickle_rules.name_is_well_formed(g.module, g.name):
            self.report(
                R_SUSPICIOUS_NAME,
                Severity.HIGH,
                f"global {full!r} is not a dotted Python name (whitespace, control or "
                "non-ASCII characters): a scanner-evasion trick",
                offset=g.offset,
                opcode=opcode,
                symbol=full,
            )
            for mod in pickle_rules.normalized_spellings(raw_module):
                for nm in pickle_rules.normalized_spellings(raw_name):
                    if not mod or not nm:
                        continue
                    fm, fn = pickle_rules.fix_imports(mod, nm)
                    reason = pickle_rules.danger_reason(fm, fn)
                    if reason:
                        self.dangerous(g, f"{fm}.{fn}: {reason}", opcode)
                        return
        verdict = self.verdict(g)
        if verdict is not None:
            if verdict:
                self.dangerous(g, verdict, opcode)
            return
        # Python 2 spellings are checked both ways: a scanner that does not fix imports
        # and a loader that does must never disagree on a dangerous name.
        fm, fn = pickle_rules.fix_imports(raw_module, raw_name)
        for mod, nm in {(raw_module, raw_name), (fm, fn)} - {(g.module, g.name)}:
            reason = pickle_rules.danger_reason(mod, nm)
            if reason and f"{mod}.{nm}" not in SAFE_CLASSES:
                self.dangerous(g, reason, opcode)
                return

    def verdict(self, g: _Global) -> str | None:
        """``""`` when allowlisted, a reason when dangerous, None when unknown."""
        full = g.full
        cached = self.verdicts.get(full, 0)
        if cached != 0:
            return cached  # type: ignore[return-value]
        result: str | None
        if not g.resolved:
            result = None
        elif full in SAFE_CLASSES or _is_pyx_unpickle(full):
            result = ""
        else:
            result = pickle_rules.danger_reason(g.module, g.name)
        self.verdicts[full] = result
        return result

    def dangerous(self, g: _Global, reason: str, opcode: str) -> None:
        self.flagged.add(g.full)
        self.report(
            R_DANGEROUS,
            Severity.CRITICAL,
            f"imports {g.full}: {reason}",
            offset=g.offset,
            opcode=opcode,
            symbol=g.full,
        )

    # -- calls -----------------------------------------------------------------------------

    def call(self, func: object, args: object, offset: int, opcode: str) -> object:
        """The loader calls ``func(*args)``; returns the symbolic result."""
        if type(func) is _Global and func.resolved:
            full = func.full
            if full == _GETATTR:
                return self.getattr_call(func, _positional(args), offset, opcode)
            verdict = self.verdict(func)
            if verdict:
                self.dangerous(func, verdict, opcode)
                return _Obj("call", func, full)
            handler = _FORWARDERS.get(full)
            if handler is not None:
                return handler(self, func, _positional(args), offset, opcode)
            if full in SAFE_CALLABLES or _is_pyx_unpickle(full):
                pos_args = _positional(args)
                if full.rsplit(".", 1)[-1].startswith("__pyx_unpickle_"):
                    return _fw_pyx_unpickle(self, func, pos_args, offset, opcode)
                if full not in _ARGS_NEVER_CALLED:
                    self.check_callable_args(full, args, offset, opcode)
                if full not in _NO_ALLOCATION:
                    self.allocation(full, pos_args, offset, opcode)
                obj = _Obj("instance", func, full)
                if full == "builtins.range" and pos_args:
                    obj.info = _range_length(pos_args)
                return obj
            self.unknown_call(func, args, offset, opcode)
            return _Obj("call", func, full)
        self.computed_call(func, offset, opcode)
        return _Obj("call", func)

    def check_callable_args(self, full: str, args: object, offset: int, opcode: str) -> None:
        """A trusted constructor may call what it is given (``LambdaLR(opt, f)`` calls ``f``):
        unknown globals among its arguments (two levels deep) are graded as called."""
        pending: list[tuple[object, int]] = [(args, 0)]
        seen = 0
        while pending and seen < _MAX_ARG_SCAN:
            value, depth = pending.pop()
            seen += 1
            kind = type(value)
            if kind is _Global:
                assert isinstance(value, _Global)
                if value.full == _GETATTR:
                    self.dangerous(value, "a trusted constructor is given getattr", opcode)
                elif value.resolved and self.verdict(value) is None:
                    self.unknown_call(value, None, offset, f"{opcode} (argument of {full})")
            elif depth < 2:
                if id(value) in self.arg_scanned:
                    continue  # the same container again (a memo reference)
                self.arg_scanned[id(value)] = value
                if kind is tuple:
                    assert isinstance(value, tuple)
                    pending.extend((v, depth + 1) for v in value[:_MAX_ARG_SCAN])
                elif kind is _List:
                    assert isinstance(value, _List)
                    pending.extend((v, depth + 1) for v in value.items[:_MAX_ARG_SCAN])
                elif kind is _Dict:
                    assert isinstance(value, _Dict)
                    items = list(itertools.islice(value.keys.values(), _MAX_ARG_SCAN))
                    pending.extend((v, depth + 1) for v in items)

    def unknown_call(self, func: _Global, args: object, offset: int, opcode: str) -> None:
        full = func.full
        self._use(func).called = True
        top = func.module.split(".", 1)[0]
        last = func.name.rsplit(".", 1)[-1]
        pos = _positional(args)
        if (
            top not in _STDLIB
            and top not in _TRUSTED_PACKAGES
            and last[:1].isupper()
            and pos is not None
            and len(pos) == 1
            and _enum_value(pos[0])
            and opcode == "REDUCE"
        ):
            self.report(
                R_VALUE_CALL,
                Severity.MEDIUM,
                f"calls {full} with one constant (the pickle of an enum member or value "
                "class); loading needs it importable",
                offset=offset,
                opcode=opcode,
                symbol=full,
                remediation=_REMEDIATE_CLASS,
            )
            return
        self.report(
            R_UNKNOWN_CALL,
            Severity.HIGH,
            f"calls {full}, which is not a known-safe constructor: loading runs it",
            offset=offset,
            opcode=opcode,
            symbol=full,
            remediation=_REMEDIATE_UNKNOWN,
        )

    def computed_call(self, func: object, offset: int, opcode: str) -> None:
        what = _describe(func)
        self.report(
            R_COMPUTED_CALL if type(func) is not _Global else R_UNRESOLVED,
            Severity.HIGH,
            f"calls {what}, which is not a resolvable global: its target cannot be checked",
            offset=offset,
            opcode=opcode,
            symbol=what,
        )

    def instantiate(self, cls: object, offset: int, opcode: str) -> _Obj:
        """The loader creates an instance of ``cls`` without running ``__init__``."""
        if type(cls) is _Global and cls.resolved:
            full = cls.full
            verdict = self.verdict(cls)
            if verdict:
                self.dangerous(cls, verdict, opcode)
            elif verdict is None:
                self._use(cls).instantiated = True
            return _Obj("instance", cls, full)
        self.computed_call(cls, offset, opcode)
        return _Obj("instance", cls)

    def _use(self, g: _Global) -> _Usage:
        u = self.usage.get(g.full)
        if u is None:
            u = self.usage[g.full] = _Usage(g)
        return u

    # -- state -----------------------------------------------------------------------------

    def build(self, inst: object, state: object, offset: int) -> None:
        """``BUILD``: ``inst.__setstate__(state)`` or update of its ``__dict__``/slots."""
        if type(inst) is _Global:
            self.report(
                R_MUTATION,
                Severity.CRITICAL,
                f"BUILD sets attributes of the imported object {inst.full}: loading "
                "monkey-patches a module or class",
                offset=offset,
                opcode="BUILD",
                symbol=inst.full,
            )
            return
        if type(inst) is _Obj:
            planted = inst.attrs.get("__setstate__") if inst.attrs else None
            if planted is not None:
                self.report(
                    R_HIJACK,
                    Severity.CRITICAL,
                    "BUILD calls a __setstate__ planted by an earlier BUILD "
                    f"({_describe(planted)}): arbitrary call with attacker state",
                    offset=offset,
                    opcode="BUILD",
                    symbol=_describe(planted),
                )
                self.call(planted, (state,), offset, "BUILD")
                return
        if type(inst) is _Obj and inst.cls == "numpy.dtype" and type(state) is tuple:
            _dtype_state(inst, state)
        self.plant(inst, state, offset, "BUILD")

    def plant(self, inst: object, state: object, offset: int, opcode: str) -> None:
        """Record attributes that ``state`` (a dict, or a (dict, slotstate) pair) sets."""
        dicts: list[_Dict] = []
        if type(state) is _Dict:
            dicts.append(state)
        elif type(state) is tuple and len(state) == 2:
            dicts.extend(s for s in state if type(s) is _Dict)
        for d in dicts:
            if not d.keys:
                continue
            keys = d.keys
            for attr in [a for a in _HIJACK_ATTRS_ORDERED if a in keys]:
                value = d.keys[attr]
                self.report(
                    R_HIJACK,
                    Severity.CRITICAL,
                    f"{opcode} sets the attribute {attr!r} of an object to "
                    f"{_describe(value)}: it changes what the object does when used",
                    offset=offset,
                    opcode=opcode,
                    symbol=attr,
                )
            if type(inst) is _Obj:
                for attr in _INVOKED_ATTRS:
                    if attr in d.keys:
                        if inst.attrs is None:
                            inst.attrs = {}
                        inst.attrs[attr] = d.keys[attr]
                if inst.cls in _JOBLIB_WRAPPERS or inst.cls in _JOBLIB_SIDE_FILE_WRAPPERS:
                    if inst.info is None:
                        inst.info = {}
                    assert isinstance(inst.info, dict)
                    inst.info.update((k, d.keys[k]) for k in _WRAPPER_KEYS if k in d.keys)

    def invoke_planted(self, target: object, attr: str, args: object, offset: int, op: str) -> bool:
        """If ``target`` has a planted ``attr``, the loader calls it: report, return True."""
        if type(target) is _Obj and target.attrs and attr in target.attrs:
            planted = target.attrs[attr]
            self.report(
                R_HIJACK,
                Severity.CRITICAL,
                f"{op} calls a {attr!r} attribute planted by BUILD ({_describe(planted)})",
                offset=offset,
                opcode=op,
                symbol=_describe(planted),
            )
            self.call(planted, args, offset, op)
            return True
        return False

    def mutate(self, target: object, offset: int, op: str) -> None:
        """SETITEM(S)/APPEND(S)/ADDITEMS on ``target``."""
        if type(target) is _Global:
            self.report(
                R_MUTATION,
                Severity.CRITICAL,
                f"{op} modifies the imported object {target.full} (global state)",
                offset=offset,
                opcode=op,
                symbol=target.full,
            )

    # -- expansion -------------------------------------------------------------------------

    def wd(self, v: object) -> tuple[int, int]:
        """Weight and depth of one value."""
        t = type(v)
        if t is _List or t is _Dict or t is _Obj or t is _Set:
            assert isinstance(v, _Node)
            return v.w, v.d
        if t is tuple:
            assert isinstance(v, tuple)
            e = self.tuples.get(id(v))
            return (e[1], e[2]) if e is not None else (1 + len(v), 1)
        return 1, 0

    def weigh(self, items: list[object] | tuple[object, ...], at: int) -> tuple[int, int]:
        """Weight and depth of a container holding ``items``; reports a bomb when too big."""
        w = 1
        d = 0
        tuples = self.tuples
        for v in items:
            t = type(v)
            if t in _NODE_TYPES:
                w += v.w  # type: ignore[attr-defined]
                if v.d > d:  # type: ignore[attr-defined]
                    d = v.d  # type: ignore[attr-defined]
            elif t is tuple:
                assert isinstance(v, tuple)
                e = tuples.get(id(v))
                if e is None:
                    w += 1 + len(v)
                    if d < 1:
                        d = 1
                else:
                    w += e[1]
                    if e[2] > d:
                        d = e[2]
            else:
                w += 1
        if w > _WEIGHT_CAP:
            w = _WEIGHT_CAP
        d += 1
        if w > self.max_weight or d > _MAX_DEPTH:
            self.bomb(w, d, at)
        return w, d

    def grow(self, target: object, items: list[object] | tuple[object, ...], at: int) -> None:
        """``items`` were added to ``target`` (APPEND(S), SETITEM(S), ADDITEMS, BUILD)."""
        if isinstance(target, _Node):
            w, d = self.weigh(items, at)
            target.w = min(target.w + w - 1, _WEIGHT_CAP)
            if d > target.d:
                target.d = d
            if target.w > self.max_weight:
                self.bomb(target.w, target.d, at)

    def new_tuple(self, items: tuple[object, ...], at: int) -> tuple[object, ...]:
        for v in items:
            t = type(v)
            if t is tuple or t in _NODE_TYPES:
                break
        else:
            return items  # flat: weight 1 + len, depth 1, nothing to record
        w, d = self.weigh(items, at)
        if d > 1 or w != len(items) + 1:
            self.tuples[id(items)] = (items, w, d)
        return items

    def bomb(self, weight: int, depth: int, at: int) -> None:
        if depth > _MAX_DEPTH:
            what = f"values nested {depth} levels deep (no pickler writes more than ~1000)"
        else:
            what = f"a value that a naive walk expands to {weight:,} values"
        self.report(
            R_RESOURCE,
            Severity.HIGH,
            f"resource-exhaustion pattern: {what} (an expansion bomb against whoever copies, "
            "prints, converts or scans the loaded object)",
            offset=at,
            symbol="depth" if depth > _MAX_DEPTH else "expansion",
            atlas=Atlas.DENIAL_OF_SERVICE,
            remediation=_REMEDIATE_BROKEN,
        )

    def allocation(self, full: str, args: tuple[object, ...] | None, at: int, op: str) -> None:
        """A trusted constructor asked for a huge allocation (``bytearray(2**40)``)."""
        if not args:
            return
        size = 1
        for a in args[:8]:
            if type(a) is int and a > 0:
                size *= a
            elif type(a) is _Obj and type(a.info) is int and a.info > 0:
                size *= a.info  # a range's length, materialised by list()/bytes()
        allocator = full in _ALLOCATORS or (
            full.startswith("torch.") and full.endswith(("Storage", "Tensor"))
        )
        limit = _MAX_ALLOC_BYTES if allocator else _MAX_ALLOC_ELEMENTS
        if size > limit:
            self.report(
                R_RESOURCE,
                Severity.HIGH,
                f"calls {full} with sizes asking for about {size:,} items: a memory-exhaustion "
                "bomb at load time",
                offset=at,
                opcode=op,
                symbol=full,
                atlas=Atlas.DENIAL_OF_SERVICE,
                remediation=_REMEDIATE_BROKEN,
            )

    # -- nested payloads -------------------------------------------------------------------

    def nested_stream(
        self, data: bytes | memoryview, start: int, what: str, offset: int, joblib: bool
    ) -> int | None:
        """Analyse a pickle nested at ``data[start:]``; return its end, None on failure."""
        if self.depth >= _MAX_NESTING:
            self.report(
                R_NESTED,
                Severity.HIGH,
                f"{what} nests pickles deeper than {_MAX_NESTING} levels",
                offset=offset,
                remediation=_REMEDIATE_BROKEN,
            )
            return None
        sub = _Analyzer(data, self.path, self.member, self.limits, self.nested)
        sub.depth = self.depth + 1
        sub.opcodes = self.opcodes
        sub.verdicts = self.verdicts
        end, complete, _ = sub.run(start, joblib=joblib)
        self.opcodes = sub.opcodes
        for g in sub.globals:
            self.globals.setdefault(g, None)
        for key, f in sub.findings.items():
            if key not in self.findings or self.findings[key].severity < f.severity:
                self.findings[key] = f
        for rule, (count, severity) in sub.suppressed.items():
            have = self.suppressed.get(rule, (0, severity))
            self.suppressed[rule] = (have[0] + count, max(have[1], severity))
        for name, u in sub.usage.items():
            mine = self.usage.setdefault(name, _Usage(u.first))
            mine.called |= u.called
            mine.instantiated |= u.instantiated
        return end if complete else None

    def embedded_bytes(self, value: object, offset: int, opcode: str) -> None:
        """``torch.storage._load_from_bytes(b)``: ``b`` is a whole torch.save file."""
        if id(value) in self.embedded:
            return  # the same value again (a memo reference): analysed once
        self.embedded[id(value)] = value
        payload = self.bytes_of(value)
        if payload is None:
            self.report(
                R_NESTED,
                Severity.HIGH,
                "torch.storage._load_from_bytes gets an argument that is not a bytes value "
                f"({_describe(value)})",
                offset=offset,
                opcode=opcode,
                symbol=_LOAD_FROM_BYTES,
            )
            return
        if self.nested is not None:
            self.nested(payload, f"{_LOAD_FROM_BYTES}@{offset}")
            return
        if payload[:2] == b"PK":
            self.report(
                R_NESTED,
                Severity.HIGH,
                "torch.storage._load_from_bytes holds a zip checkpoint that this analyser "
                "cannot open by itself",
                offset=offset,
                opcode=opcode,
                symbol=_LOAD_FROM_BYTES,
                remediation=_REMEDIATE_BROKEN,
            )
            return
        # Legacy torch.save: five pickles, then raw storage bytes (torch/serialization.py).
        pos = 0
        for _ in range(5):
            end = self.nested_stream(payload, pos, _LOAD_FROM_BYTES, offset, joblib=False)
            if end is None:
                return
            pos = end

    def bytes_of(self, value: object) -> bytes | memoryview | None:
        if type(value) is _Bytes:
            if value.text is None:
                return self.data[value.start : value.start + value.length]
            text = self.text_of(value.text)
            if text is None:
                return None
            try:
                return text.encode("latin-1")
            except UnicodeEncodeError:
                return None
        return None

    def text_of(self, value: object) -> str | None:
        if type(value) is str:
            return value
        if type(value) is _BigStr:
            raw = bytes(self.data[value.start : value.start + value.length])
            try:
                if value.op == 0x56:
                    return codecs.decode(raw, "raw-unicode-escape")
                return raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return None
        return None

    # -- the machine -----------------------------------------------------------------------

    def run(self, start: int, *, joblib: bool = True) -> tuple[int, bool, int | None]:
        """Execute from ``start``; returns (end, complete, protocol)."""
        try:
            return self._run(start, joblib)
        except _Stop as stop:
            rule = stop.rule
            sev = Severity.HIGH
            atlas = Atlas.DENIAL_OF_SERVICE if rule == R_LIMIT else Atlas.SUPPLY_CHAIN_MODEL
            self.report(
                rule,
                sev,
                f"could not be fully analysed, treated as unsafe: {stop.message}",
                offset=stop.offset,
                opcode=stop.opcode,
                atlas=atlas,
                remediation=_REMEDIATE_BROKEN,
            )
            return stop.offset, False, self._proto_seen

    _proto_seen: int | None = None

    def _run(self, start: int, joblib: bool) -> tuple[int, bool, int | None]:
        data = self.data
        size = self.size
        limits = self.limits
        max_ops = limits.max_opcodes
        max_memo = limits.max_memo
        max_stack = limits.max_stack
        deadline = limits.deadline
        stack: list[object] = []
        marks: list[int] = []
        memo: dict[int, object] = {}
        proto = 0
        self._proto_seen = None
        frame_end = -1  # end of the current protocol-4 frame, -1 when none
        limit = size  # reads past this take the slow path (the frame's end, or the data's)
        pos = start
        ops = self.opcodes
        check_at = min(ops + _DEADLINE_EVERY, max_ops + 1)
        frame_stop = _NO_FRAME  # frame_end while a frame is open
        find_nl = self._find_newline

        def stop(rule: str, message: str, at: int, op: int | None) -> _Stop:
            return _Stop(rule, message, at, _OPNAMES.get(op, None) if op is not None else None)

        def need(at: int, n: int, op: int) -> None:
            if n < 0 or at + n > size:
                raise stop(
                    R_TRUNCATED,
                    f"{_OPNAMES.get(op, hex(op))} needs {n} bytes at offset {at}, "
                    f"only {max(size - at, 0)} remain",
                    at,
                    op,
                )
            if frame_end >= 0 and at < frame_end < at + n:
                raise stop(R_MALFORMED, "an opcode argument crosses the end of its frame", at, op)

        def readline(at: int, op: int) -> tuple[bytes, int]:
            nl = find_nl(at)
            if nl < 0:
                raise stop(R_TRUNCATED, "a text argument has no terminating newline", at, op)
            if frame_end >= 0 and at < frame_end < nl + 1:
                raise stop(R_MALFORMED, "an opcode argument crosses the end of its frame", at, op)
            return bytes(data[at:nl]), nl + 1

        def pop_mark(at: int, op: int) -> list[object]:
            if not marks:
                raise stop(R_MALFORMED, "no MARK on the stack", at, op)
            m = marks.pop()
            items = stack[m:]
            del stack[m:]
            return items

        def underflow(at: int, op: int) -> _Stop:
            return stop(R_MALFORMED, "stack underflow", at, op)

        try:
            while True:
                if pos >= size:
                    raise stop(R_TRUNCATED, "the stream ends before STOP", pos, None)
                op = data[pos]
                at = pos
                pos += 1
                ops += 1
                if ops >= check_at:  # every _DEADLINE_EVERY opcodes, and at the opcode limit
                    if ops > max_ops:
                        name = _OPNAMES.get(op, None)
                        raise _Stop(R_LIMIT, f"more than {max_ops} opcodes", at, name)
                    check_at = min(ops + _DEADLINE_EVERY, max_ops + 1)
                    if deadline is not None and time.monotonic() > deadline:
                        raise _Stop(R_LIMIT, "time limit reached", at, _OPNAMES.get(op, None))
                    if len(stack) > max_stack or len(marks) > max_stack:
                        raise _Stop(R_LIMIT, f"more than {max_stack} stack items", at, None)
                if pos >= frame_stop:
                    frame_end = -1
                    frame_stop = _NO_FRAME
                    limit = size

                # Ordered roughly by frequency in real checkpoints.
                if op == 0x72:  # LONG_BINPUT
                    if pos + 4 > limit:
                        need(pos, 4, op)
                    idx = _U4.unpack_from(data, pos)[0]
                    pos += 4
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    if idx >= max_memo:
                        raise _Stop(
                            R_LIMIT, f"memo index {idx} beyond the limit", at, "LONG_BINPUT"
                        )
                    if idx in memo:
                        raise stop(R_MALFORMED, f"memo key {idx} defined twice", at, op)
                    memo[idx] = stack[-1]
                    if len(memo) > max_memo:
                        raise _Stop(
                            R_LIMIT, f"more than {max_memo} memo entries", at, "LONG_BINPUT"
                        )
                elif op == 0x71:  # BINPUT
                    if pos + 1 > limit:
                        need(pos, 1, op)
                    idx = data[pos]
                    pos += 1
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    if idx in memo:
                        raise stop(R_MALFORMED, f"memo key {idx} defined twice", at, op)
                    memo[idx] = stack[-1]
                elif op == 0x68:  # BINGET
                    if pos + 1 > limit:
                        need(pos, 1, op)
                    idx = data[pos]
                    pos += 1
                    try:
                        stack.append(memo[idx])
                    except KeyError:
                        raise stop(R_MALFORMED, f"memo key {idx} not found", at, op) from None
                elif op == 0x6A:  # LONG_BINGET
                    if pos + 4 > limit:
                        need(pos, 4, op)
                    idx = _U4.unpack_from(data, pos)[0]
                    pos += 4
                    try:
                        stack.append(memo[idx])
                    except KeyError:
                        raise stop(R_MALFORMED, f"memo key {idx} not found", at, op) from None
                elif op == 0x4B:  # BININT1
                    if pos + 1 > limit:
                        need(pos, 1, op)
                    stack.append(data[pos])
                    pos += 1
                elif op == 0x28:  # MARK
                    marks.append(len(stack))
                elif op == 0x58 or op == 0x8C or op == 0x8D:  # BINUNICODE, SHORT_, 8
                    if op == 0x8C:
                        if pos + 1 > limit:
                            need(pos, 1, op)
                        n = data[pos]
                        pos += 1
                    elif op == 0x58:
                        if pos + 4 > limit:
                            need(pos, 4, op)
                        n = _U4.unpack_from(data, pos)[0]
                        pos += 4
                    else:
                        if pos + 8 > limit:
                            need(pos, 8, op)
                        n = _U8.unpack_from(data, pos)[0]
                        pos += 8
                    if pos + n > limit:
                        need(pos, n, op)
                    if n <= _MAX_INLINE_STR:
                        try:
                            stack.append(
                                bytes(data[pos : pos + n]).decode("utf-8", "surrogatepass")
                            )
                        except UnicodeDecodeError:
                            raise stop(R_MALFORMED, "a string is not valid UTF-8", at, op) from None
                    else:
                        stack.append(_BigStr(pos, n, op))
                    pos += n
                elif op == 0x74:  # TUPLE
                    stack.append(self.new_tuple(tuple(pop_mark(at, op)), at))
                elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1/2/3
                    n = op - 0x84
                    if len(stack) - (marks[-1] if marks else 0) < n:
                        raise underflow(at, op)
                    small = tuple(stack[-n:])
                    del stack[-n:]
                    stack.append(self.new_tuple(small, at))
                elif op == 0x52:  # REDUCE
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise underflow(at, op)
                    args = stack.pop()
                    func = stack[-1]
                    result = self.call(func, args, at, "REDUCE")
                    self.grow(result, (args,), at)
                    stack[-1] = result
                elif op == 0x51:  # BINPERSID
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    stack[-1] = _persistent(stack[-1])
                elif op == 0x89:  # NEWFALSE
                    stack.append(False)
                elif op == 0x29:  # EMPTY_TUPLE
                    stack.append(())
                elif op == 0x94:  # MEMOIZE
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    mkey = len(memo)
                    if mkey in memo:
                        raise stop(R_MALFORMED, f"memo key {mkey} defined twice", at, op)
                    memo[mkey] = stack[-1]
                    if len(memo) > max_memo:
                        raise _Stop(R_LIMIT, f"more than {max_memo} memo entries", at, "MEMOIZE")
                elif op == 0x75:  # SETITEMS
                    items = pop_mark(at, op)
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    if len(items) & 1:
                        raise stop(R_MALFORMED, "odd number of items for SETITEMS", at, op)
                    target = stack[-1]
                    if type(target) is _Dict:
                        for i in range(0, len(items), 2):
                            target.set(items[i], items[i + 1])
                    else:
                        self.mutate(target, at, "SETITEMS")
                    self.grow(target, items, at)
                elif op == 0x62:  # BUILD
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise underflow(at, op)
                    state = stack.pop()
                    inst = stack[-1]
                    self.build(inst, state, at)
                    self.grow(inst, (state,), at)
                    if joblib and type(inst) is _Obj and inst.cls:
                        if inst.cls in _JOBLIB_WRAPPERS:
                            stack.pop()
                            pos = self.joblib_array(inst, pos, frame_end, at)
                            stack.append(_Obj("instance", None, "numpy.ndarray"))
                        elif inst.cls in _JOBLIB_SIDE_FILE_WRAPPERS:
                            self.side_file(inst, at)
                elif op == 0x4E:  # NONE
                    stack.append(None)
                elif op == 0x88:  # NEWTRUE
                    stack.append(True)
                elif op == 0x7D:  # EMPTY_DICT
                    stack.append(_Dict())
                elif op == 0x5D:  # EMPTY_LIST
                    stack.append(_List())
                elif op == 0x65:  # APPENDS
                    items = pop_mark(at, op)
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    target = stack[-1]
                    if type(target) is _List:
                        target.items.extend(items)
                    elif not self.invoke_planted(
                        target, "extend", (_List(items),), at, "APPENDS"
                    ) and not self.invoke_planted(target, "append", (None,), at, "APPENDS"):
                        self.mutate(target, at, "APPENDS")
                    self.grow(target, items, at)
                elif op == 0x61:  # APPEND
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise underflow(at, op)
                    value = stack.pop()
                    target = stack[-1]
                    if type(target) is _List:
                        target.items.append(value)
                    elif not self.invoke_planted(target, "append", (value,), at, "APPEND"):
                        self.mutate(target, at, "APPEND")
                    self.grow(target, (value,), at)
                elif op == 0x73:  # SETITEM
                    if len(stack) - (marks[-1] if marks else 0) < 3:
                        raise underflow(at, op)
                    value = stack.pop()
                    key = stack.pop()
                    target = stack[-1]
                    if type(target) is _Dict:
                        target.set(key, value)
                    else:
                        self.mutate(target, at, "SETITEM")
                    self.grow(target, (key, value), at)
                elif op == 0x4A:  # BININT
                    if pos + 4 > limit:
                        need(pos, 4, op)
                    stack.append(_I4.unpack_from(data, pos)[0])
                    pos += 4
                elif op == 0x4D:  # BININT2
                    if pos + 2 > limit:
                        need(pos, 2, op)
                    stack.append(_U2.unpack_from(data, pos)[0])
                    pos += 2
                elif op == 0x93:  # STACK_GLOBAL
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise underflow(at, op)
                    sg_name = stack.pop()
                    sg_module = stack.pop()
                    if isinstance(sg_module, str) and isinstance(sg_name, str):
                        stack.append(self.resolve(sg_module, sg_name, at, "STACK_GLOBAL", proto))
                    else:
                        text = f"{_describe(sg_module)} . {_describe(sg_name)}"
                        self.report(
                            R_UNRESOLVED,
                            Severity.HIGH,
                            f"STACK_GLOBAL operands are not plain strings ({text}): the imported "
                            "name cannot be checked",
                            offset=at,
                            opcode="STACK_GLOBAL",
                            symbol=text,
                        )
                        stack.append(_Global("?", text, at, "STACK_GLOBAL", resolved=False))
                elif op == 0x81:  # NEWOBJ
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise underflow(at, op)
                    args = stack.pop()
                    cls = stack[-1]
                    result = self.instantiate(cls, at, "NEWOBJ")
                    self.grow(result, (args,), at)
                    stack[-1] = result
                elif op == 0x92:  # NEWOBJ_EX
                    if len(stack) - (marks[-1] if marks else 0) < 3:
                        raise underflow(at, op)
                    del stack[-2:]  # args, kwargs
                    cls = stack[-1]
                    stack[-1] = self.instantiate(cls, at, "NEWOBJ_EX")
                elif op == 0x95:  # FRAME
                    if pos + 8 > limit:
                        need(pos, 8, op)
                    n = _U8.unpack_from(data, pos)[0]
                    pos += 8
                    if frame_end >= 0 and pos < frame_end:
                        raise stop(R_MALFORMED, "a new frame begins inside the current one", at, op)
                    if pos + n > size:
                        raise stop(R_TRUNCATED, f"frame of {n} bytes runs past the end", at, op)
                    frame_end = pos + n
                    limit = frame_end
                    frame_stop = frame_end
                elif op == 0x80:  # PROTO
                    if pos + 1 > limit:
                        need(pos, 1, op)
                    proto = data[pos]
                    pos += 1
                    if proto > HIGHEST_PROTOCOL:
                        raise stop(R_MALFORMED, f"unsupported pickle protocol {proto}", at, op)
                    if self._proto_seen is None:
                        self._proto_seen = proto
                elif op == 0x63:  # GLOBAL
                    line1, pos = readline(pos, op)
                    line2, pos = readline(pos, op)
                    try:
                        module = line1.decode("utf-8")
                        name = line2.decode("utf-8")
                    except UnicodeDecodeError:
                        raise stop(R_MALFORMED, "GLOBAL name is not UTF-8", at, op) from None
                    stack.append(self.resolve(module, name, at, "GLOBAL", proto))
                elif op == 0x8A or op == 0x8B:  # LONG1, LONG4
                    if op == 0x8A:
                        if pos + 1 > limit:
                            need(pos, 1, op)
                        n = data[pos]
                        pos += 1
                    else:
                        if pos + 4 > limit:
                            need(pos, 4, op)
                        n = _I4.unpack_from(data, pos)[0]
                        pos += 4
                        if n < 0:
                            raise stop(R_MALFORMED, "LONG pickle has negative byte count", at, op)
                    if pos + n > limit:
                        need(pos, n, op)
                    if n <= 64:
                        stack.append(int.from_bytes(data[pos : pos + n], "little", signed=True))
                    else:
                        stack.append(_Obj("int"))
                    pos += n
                elif op == 0x47:  # BINFLOAT
                    if pos + 8 > limit:
                        need(pos, 8, op)
                    stack.append(_F8.unpack_from(data, pos)[0])
                    pos += 8
                elif op == 0x42 or op == 0x43 or op == 0x8E or op == 0x96:  # bytes, bytearray
                    if op == 0x43:
                        if pos + 1 > limit:
                            need(pos, 1, op)
                        n = data[pos]
                        pos += 1
                    elif op == 0x42:
                        if pos + 4 > limit:
                            need(pos, 4, op)
                        n = _U4.unpack_from(data, pos)[0]
                        pos += 4
                    else:
                        if pos + 8 > limit:
                            need(pos, 8, op)
                        n = _U8.unpack_from(data, pos)[0]
                        pos += 8
                    if pos + n > limit:
                        need(pos, n, op)
                    stack.append(_Bytes(pos, n))
                    pos += n
                elif op == 0x54 or op == 0x55:  # BINSTRING, SHORT_BINSTRING
                    if op == 0x55:
                        if pos + 1 > limit:
                            need(pos, 1, op)
                        n = data[pos]
                        pos += 1
                    else:
                        if pos + 4 > limit:
                            need(pos, 4, op)
                        n = _I4.unpack_from(data, pos)[0]
                        pos += 4
                        if n < 0:
                            raise stop(
                                R_MALFORMED, "BINSTRING pickle has negative byte count", at, op
                            )
                    if pos + n > limit:
                        need(pos, n, op)
                    if n <= _MAX_INLINE_STR:
                        raw = bytes(data[pos : pos + n])
                        try:
                            stack.append(raw.decode("utf-8"))
                        except UnicodeDecodeError:
                            stack.append(_Bytes(pos, n))
                    else:
                        stack.append(_BigStr(pos, n, op))
                    pos += n
                elif op == 0x2E:  # STOP
                    if marks or len(stack) != 1:
                        raise stop(
                            R_MALFORMED,
                            f"STOP with {len(stack)} stack items and {len(marks)} open marks",
                            at,
                            op,
                        )
                    return pos, True, self._proto_seen
                elif op == 0x30:  # POP
                    if len(stack) > (marks[-1] if marks else 0):
                        stack.pop()
                    elif marks:
                        marks.pop()
                    else:
                        raise underflow(at, op)
                elif op == 0x31:  # POP_MARK
                    pop_mark(at, op)
                elif op == 0x32:  # DUP
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    stack.append(stack[-1])
                elif op == 0x6C:  # LIST
                    lst = _List(pop_mark(at, op))
                    lst.w, lst.d = self.weigh(lst.items, at)
                    stack.append(lst)
                elif op == 0x64:  # DICT
                    items = pop_mark(at, op)
                    if len(items) & 1:
                        raise stop(R_MALFORMED, "odd number of items for DICT", at, op)
                    d = _Dict()
                    for i in range(0, len(items), 2):
                        d.set(items[i], items[i + 1])
                    d.w, d.d = self.weigh(items, at)
                    stack.append(d)
                elif op == 0x8F:  # EMPTY_SET
                    stack.append(_Set())
                elif op == 0x90:  # ADDITEMS
                    items = pop_mark(at, op)
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    target = stack[-1]
                    if type(target) is _Set:
                        target.size += len(items)
                    elif not self.invoke_planted(target, "add", (None,), at, "ADDITEMS"):
                        self.mutate(target, at, "ADDITEMS")
                    self.grow(target, items, at)
                elif op == 0x91:  # FROZENSET
                    fs = _Set()
                    fs.w, fs.d = self.weigh(pop_mark(at, op), at)
                    stack.append(fs)
                elif op == 0x50:  # PERSID
                    line, pos = readline(pos, op)
                    try:
                        line.decode("ascii")
                    except UnicodeDecodeError:
                        raise stop(R_MALFORMED, "persistent id is not ASCII", at, op) from None
                    stack.append(_Obj("persistent"))
                elif op == 0x70:  # PUT
                    line, pos = readline(pos, op)
                    put = _parse_int(line)
                    if put is None or put < 0:
                        raise stop(
                            R_MALFORMED, "PUT argument is not a non-negative integer", at, op
                        )
                    if put >= max_memo:
                        raise _Stop(R_LIMIT, f"memo index {put} beyond the limit", at, "PUT")
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise underflow(at, op)
                    if put in memo:
                        raise stop(R_MALFORMED, f"memo key {put} defined twice", at, op)
                    memo[put] = stack[-1]
                    if len(memo) > max_memo:
                        raise _Stop(R_LIMIT, f"more than {max_memo} memo entries", at, "PUT")
                elif op == 0x67:  # GET
                    line, pos = readline(pos, op)
                    got = _parse_int(line)
                    if got is None or got not in memo:
                        raise stop(R_MALFORMED, "GET of a memo key that is not there", at, op)
                    stack.append(memo[got])
                elif op == 0x49:  # INT
                    line, pos = readline(pos, op)
                    if line == b"00":
                        stack.append(False)
                    elif line == b"01":
                        stack.append(True)
                    else:
                        num = _parse_int(line)
                        if num is None:
                            raise stop(R_MALFORMED, "INT argument is not an integer", at, op)
                        stack.append(num)
                elif op == 0x4C:  # LONG
                    line, pos = readline(pos, op)
                    if line.endswith(b"L"):
                        line = line[:-1]
                    num = _parse_int(line)
                    if num is None:
                        raise stop(R_MALFORMED, "LONG argument is not an integer", at, op)
                    stack.append(num)
                elif op == 0x46:  # FLOAT
                    line, pos = readline(pos, op)
                    try:
                        stack.append(float(line))
                    except ValueError:
                        raise stop(R_MALFORMED, "FLOAT argument is not a number", at, op) from None
                elif op == 0x53:  # STRING
                    line, pos = readline(pos, op)
                    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
                        try:
                            raw = codecs.escape_decode(line[1:-1])[0]
                        except ValueError:
                            raise stop(
                                R_MALFORMED, "STRING argument has bad escapes", at, op
                            ) from None
                        try:
                            stack.append(raw.decode("utf-8"))
                        except UnicodeDecodeError:
                            stack.append(_Obj("bytes"))
                    else:
                        raise stop(R_MALFORMED, "STRING argument must be quoted", at, op)
                elif op == 0x56:  # UNICODE
                    line, pos = readline(pos, op)
                    try:
                        stack.append(codecs.decode(line, "raw-unicode-escape"))
                    except UnicodeDecodeError:
                        raise stop(
                            R_MALFORMED, "UNICODE argument has bad escapes", at, op
                        ) from None
                elif op == 0x69:  # INST
                    line1, pos = readline(pos, op)
                    line2, pos = readline(pos, op)
                    try:
                        module = line1.decode("ascii")
                        name = line2.decode("ascii")
                    except UnicodeDecodeError:
                        raise stop(R_MALFORMED, "INST name is not ASCII", at, op) from None
                    args_list = pop_mark(at, op)
                    g = self.resolve(module, name, at, "INST", proto)
                    stack.append(self.call(g, tuple(args_list), at, "INST"))
                elif op == 0x6F:  # OBJ
                    args_list = pop_mark(at, op)
                    if not args_list:
                        raise underflow(at, op)
                    cls = args_list[0]
                    stack.append(self.call(cls, tuple(args_list[1:]), at, "OBJ"))
                elif op == 0x82 or op == 0x83 or op == 0x84:  # EXT1/2/4
                    width = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                    if pos + width > limit:
                        need(pos, width, op)
                    code = int.from_bytes(data[pos : pos + width], "little")
                    pos += width
                    text = f"<extension code {code}>"
                    self.report(
                        R_UNRESOLVED,
                        Severity.HIGH,
                        f"{_OPNAMES[op]} names a global through the copyreg extension registry "
                        f"(code {code}), which depends on the loading process: it cannot be "
                        "checked",
                        offset=at,
                        opcode=_OPNAMES[op],
                        symbol=text,
                    )
                    stack.append(_Global("?", text, at, _OPNAMES[op], resolved=False))
                elif op == 0x97 or op == 0x98:  # NEXT_BUFFER, READONLY_BUFFER
                    if op == 0x98:
                        if len(stack) <= (marks[-1] if marks else 0):
                            raise underflow(at, op)
                    else:
                        stack.append(_Obj("buffer"))
                else:
                    raise stop(R_MALFORMED, f"invalid opcode byte 0x{op:02x}", at, None)

        finally:
            self.opcodes = ops

    def _find_newline(self, at: int) -> int:
        data = self.data
        if isinstance(data, bytes):
            return data.find(b"\n", at, at + _MAX_LINE)
        end = min(self.size, at + _MAX_LINE)
        chunk = bytes(data[at:end])
        nl = chunk.find(b"\n")
        return at + nl if nl >= 0 else -1

    # -- joblib ----------------------------------------------------------------------------

    def joblib_array(self, wrapper: _Obj, pos: int, frame_end: int, at: int) -> int:
        """Step over the raw bytes joblib reads after a NumpyArrayWrapper; return new pos."""

        def fail(message: str) -> _Stop:
            return _Stop(R_JOBLIB, message, at, "BUILD")

        if frame_end >= 0 and pos < frame_end:
            raise fail(
                "joblib reads the array bytes from after the open frame, not from after the "
                "wrapper: the stream hides bytes from a linear reader"
            )
        state = wrapper.info if isinstance(wrapper.info, dict) else {}
        dtype = state.get("dtype")
        shape = state.get("shape")
        if not (type(dtype) is _Obj and isinstance(dtype.info, _DtypeInfo)):
            raise fail(f"the wrapper's dtype is not a numpy.dtype ({_describe(dtype)})")
        info = dtype.info
        if info.has_object:
            end = self.nested_stream(self.data, pos, "a joblib object array", at, joblib=False)
            if end is None:
                raise fail("the object array's nested pickle is not a complete pickle")
            return end
        if type(shape) is not tuple or not all(type(d) is int and d >= 0 for d in shape):
            raise fail(f"the wrapper's shape is not a tuple of sizes ({_describe(shape)})")
        if info.itemsize is None or info.itemsize < 0:
            raise fail("the array's item size cannot be computed from its dtype")
        count = 1
        for d in shape:
            count *= d
            if count * info.itemsize > self.size:
                raise fail("the array is larger than the file")
        nbytes = count * info.itemsize
        if (
            "numpy_array_alignment_bytes" in state
            and state["numpy_array_alignment_bytes"] is not None
        ):
            if pos >= self.size:
                raise fail("the alignment byte is missing")
            pad = self.data[pos]
            pos += 1 + pad
        if pos + nbytes > self.size:
            raise fail(f"the array's {nbytes} bytes run past the end of the data")
        return pos + nbytes

    def side_file(self, wrapper: _Obj, at: int) -> None:
        state = wrapper.info if isinstance(wrapper.info, dict) else {}
        filename = state.get("filename")
        text = filename if type(filename) is str else _describe(filename)
        escapes = (
            type(filename) is not str
            or "/" in filename
            or "\\" in filename
            or filename.startswith(".")
            or ":" in filename
        )
        self.report(
            R_SIDE_FILE,
            Severity.HIGH if escapes else Severity.MEDIUM,
            f"a joblib <0.10 array wrapper makes joblib.load read the side file {text!r} with "
            "numpy.load(allow_pickle=True)"
            + ("; the name leaves the file's folder" if escapes else ""),
            offset=at,
            opcode="BUILD",
            symbol=text,
        )

    # -- final grading ---------------------------------------------------------------------

    def grade_unknowns(self) -> None:
        if self.getattr_global is not None and not self.getattr_calls:
            self.dangerous(self.getattr_global, "getattr is imported (never called here)", "")
        for name, u in self.usage.items():
            if u.called:
                continue  # reported at the call
            if u.instantiated:
                self.report(
                    R_UNKNOWN_CLASS,
                    Severity.MEDIUM,
                    f"creates an instance of {name} and sets its state: loading needs class "
                    f"{name} importable and runs its __setstate__",
                    offset=u.first.offset,
                    opcode=u.first.via,
                    symbol=name,
                    remediation=_REMEDIATE_CLASS,
                )
        for name in self.globals:
            if name in self.usage:
                continue
            if name in self.flagged or self.verdicts.get(name, None) is not None:
                continue
            if not name.startswith("?") and not name.startswith("<"):
                self.report(
                    R_UNKNOWN_GLOBAL,
                    Severity.LOW,
                    f"imports {name}, which is not on the allowlist (it is never called "
                    "while loading)",
                    offset=None,
                    symbol=name,
                    remediation=_REMEDIATE_CLASS,
                )


@dataclass(slots=True)
class _DtypeInfo:
    itemsize: int | None
    has_object: bool
    kind: str = ""


# ---------------------------------------------------------------------------------------------
# Trusted helpers that call or instantiate their arguments: each checks those arguments.

_Forwarder = Callable[[_Analyzer, _Global, "tuple[object, ...] | None", int, str], object]


def _fw_reconstructor(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    # copyreg._reconstructor(cls, base, state): base.__new__(cls, state), then
    # base.__init__(obj, state) unless base is object: base is *called*.
    if not args or len(args) < 2:
        return _Obj("instance", f)
    obj = a.instantiate(args[0], at, op)
    base = args[1]
    if not (type(base) is _Global and base.full == "builtins.object"):
        a.call(base, None, at, f"{op} (base of copyreg._reconstructor)")
    return obj


def _fw_newobj(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    if not args:
        return _Obj("instance", f)
    return a.instantiate(args[0], at, op)


def _fw_rebuild_from_type(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    # torch._tensor._rebuild_from_type_v2(func, new_type, args, state): func(*args), then
    # as_subclass(new_type), then the state is set attribute by attribute.
    if not args or len(args) < 3:
        return _Obj("instance", f)
    result = a.call(args[0], args[2], at, f"{op} (argument of {f.full})")
    cls = a.instantiate(args[1], at, op)
    if len(args) > 3:
        a.plant(cls, args[3], at, op)
    return result if type(result) is _Obj else cls


def _fw_param_with_state(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    obj = _Obj("instance", f, "torch.nn.parameter.Parameter")
    if args and len(args) > 3:
        a.plant(obj, args[3], at, op)
    return obj


def _fw_wrapper_subclass(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    if not args:
        return _Obj("instance", f)
    return a.instantiate(args[0], at, op)


def _fw_ctor_arg(index: int, arg_index: int | None) -> _Forwarder:
    """numpy.random._pickle ctors: ``args[index]`` is called with ``args[arg_index]``."""

    def forward(
        a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
    ) -> object:
        if args and len(args) > index:
            target = args[index]
            if type(target) is _Global:
                call_args = (args[arg_index],) if arg_index is not None else ()
                a.call(target, call_args, at, f"{op} (argument of {f.full})")
            elif type(target) is not str:
                a.computed_call(target, at, op)
        return _Obj("instance", f, f.full)

    return forward


def _fw_getattr_like(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    # numpy's _ufunc_reconstruct(module, name) imports module and returns getattr(mod, name).
    if args and len(args) == 2 and type(args[0]) is str and type(args[1]) is str:
        return a.resolve(args[0], args[1], at, f"{op}->{f.name}", 4)
    a.report(
        R_UNRESOLVED,
        Severity.HIGH,
        f"{f.full} resolves a global from operands that are not plain strings",
        offset=at,
        opcode=op,
        symbol=f.full,
    )
    return _Global("?", f"<{f.full}>", at, op, resolved=False)


def _fw_load_from_bytes(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    a.embedded_bytes(args[0] if args else None, at, op)
    return _Obj("instance", f, "torch.storage.UntypedStorage")


def _fw_dtype(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    obj = _Obj("instance", f, "numpy.dtype")
    descr = args[0] if args else None
    obj.info = _dtype_info(descr)
    return obj


def _fw_encode(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    # _codecs.encode(text, "latin1"): how protocols 0-2 write bytes.
    if args and len(args) == 2 and args[1] in ("latin1", "latin-1"):
        return _Bytes(0, 0, args[0])
    return _Obj("instance", f, "builtins.bytes")


def _fw_pyx_unpickle(
    a: _Analyzer, f: _Global, args: tuple[object, ...] | None, at: int, op: str
) -> object:
    # Cython's __pyx_unpickle_X(type, checksum, state): X.__new__(type), then its setstate.
    if args:
        return a.instantiate(args[0], at, op)
    return _Obj("instance", f)


def _dtype_state(dtype: _Obj, state: tuple[object, ...]) -> None:
    """numpy ``dtype.__setstate__``: (version, byteorder, subarray, names, fields, elsize, ...)."""
    info = dtype.info if isinstance(dtype.info, _DtypeInfo) else _DtypeInfo(None, False)
    if len(state) >= 6:
        elsize = state[5]
        if type(elsize) is int and elsize > 0:
            if info.kind in _FLEXIBLE_KINDS:
                # NumPy takes elsize from the state only for flexible kinds (S, U, V)
                info = _DtypeInfo(elsize, info.has_object, info.kind)
            elif elsize != info.itemsize:
                # ... and ignores it for the others: a disagreement is a parser-differential
                # trick (joblib reads itemsize bytes, a reader trusting elsize fewer)
                info = _DtypeInfo(None, info.has_object, info.kind)
        subarray = state[2]
        fields = state[4]
        parts: list[object] = []
        if type(subarray) is tuple and subarray:
            parts.append(subarray[0])
        if type(fields) is _Dict:
            if len(fields.keys) > _MAX_FIELDS:
                info = _DtypeInfo(info.itemsize, True, info.kind)  # beyond any real dtype
            else:
                parts.extend(v[0] for v in fields.keys.values() if type(v) is tuple and v)
        elif fields is not None:
            info = _DtypeInfo(info.itemsize, True, info.kind)  # unseen fields: assume objects
        for part in parts:
            sub = part.info if type(part) is _Obj else None
            if not isinstance(sub, _DtypeInfo) or sub.has_object:
                info = _DtypeInfo(info.itemsize, True, info.kind)
    dtype.info = info


def _range_length(args: tuple[object, ...]) -> int | None:
    if not 1 <= len(args) <= 3 or not all(type(a) is int for a in args):
        return None
    ints = [a for a in args if isinstance(a, int)]
    try:
        return len(range(*ints))
    except (ValueError, OverflowError):
        return None


def _enum_value(value: object) -> bool:
    """What an enum member's value looks like: a short word or a number, never a path, URL,
    command or expression (which is what a gadget class would be given)."""
    if value is None or type(value) in (int, float, bool):
        return True
    return type(value) is str and _ENUM_WORD.match(value) is not None


def _is_pyx_unpickle(full: str) -> bool:
    """Cython's generated ``__pyx_unpickle_<Class>`` helpers of the trusted packages."""
    return full.split(".", 1)[0] in _PYX_PACKAGES and full.rsplit(".", 1)[-1].startswith(
        "__pyx_unpickle_"
    )


def _dtype_info(descr: object) -> _DtypeInfo:
    if type(descr) is not str or not descr:
        return _DtypeInfo(None, False)
    kind = descr.lstrip("<>|=")[:1]
    digits = descr.lstrip("<>|=")[1:]
    if kind == "O":
        return _DtypeInfo(8, True, kind)
    if digits.isdigit():
        n = int(digits)
        if kind == "U":
            return _DtypeInfo(n * 4, False, kind)
        return _DtypeInfo(n, False, kind)
    if kind in _DTYPE_DEFAULT_SIZES:
        return _DtypeInfo(_DTYPE_DEFAULT_SIZES[kind], kind == "O", kind)
    return _DtypeInfo(None, False, kind)


_FORWARDERS: Final[dict[str, _Forwarder]] = {
    "copyreg._reconstructor": _fw_reconstructor,
    "copyreg.__newobj__": _fw_newobj,
    "copyreg.__newobj_ex__": _fw_newobj,
    "torch._tensor._rebuild_from_type_v2": _fw_rebuild_from_type,
    "torch._tensor._rebuild_from_type": _fw_rebuild_from_type,
    "torch._utils._rebuild_parameter_with_state": _fw_param_with_state,
    "torch._utils._rebuild_wrapper_subclass": _fw_wrapper_subclass,
    "numpy.random._pickle.__randomstate_ctor": _fw_ctor_arg(1, 0),
    "numpy.random._pickle.__generator_ctor": _fw_ctor_arg(1, 0),
    "numpy.random._pickle.__bit_generator_ctor": _fw_ctor_arg(0, None),
    "numpy.core._ufunc_reconstruct": _fw_getattr_like,
    "numpy._core._ufunc_reconstruct": _fw_getattr_like,
    "numpy.core.multiarray._reconstruct": _fw_newobj,
    "numpy._core.multiarray._reconstruct": _fw_newobj,
    "numpy.ma.core._mareconstruct": _fw_newobj,
    "numpy.dtype": _fw_dtype,
    "_codecs.encode": _fw_encode,
    _LOAD_FROM_BYTES: _fw_load_from_bytes,
    # pandas: _new_Index(cls, d) is cls.__new__(cls, **d)
    "pandas.core.indexes.base._new_Index": _fw_newobj,
    "pandas.core.indexes.datetimes._new_DatetimeIndex": _fw_newobj,
    "pandas.core.indexes.period._new_PeriodIndex": _fw_newobj,
    # scikit-learn's Cython trees and metrics: newObj(cls) is cls.__new__(cls).
    "sklearn.metrics._dist_metrics.newObj": _fw_newobj,
    "sklearn.neighbors._binary_tree.newObj": _fw_newobj,
    "sklearn.neighbors._kd_tree.newObj": _fw_newobj,
    "sklearn.neighbors._ball_tree.newObj": _fw_newobj,
}


def _persistent(pid: object) -> object:
    """What ``persistent_load(pid)`` returns, as far as it matters here.

    torch's legacy loader returns the class itself for ``('module', cls, file, source)``
    (``torch/serialization.py``, ``_legacy_load.persistent_load``), so the class is what a
    later ``NEWOBJ``/``REDUCE`` uses; it was already resolved and checked as a global.
    Anything else (a storage) is an opaque object.
    """
    if type(pid) is tuple and len(pid) >= 2 and pid[0] == "module":
        return pid[1]
    return _Obj("persistent", pid)


def _positional(args: object) -> tuple[object, ...] | None:
    """The positional arguments of a call, when they are statically known."""
    if type(args) is tuple:
        return args
    if type(args) is _List:  # the pure-Python unpickler accepts any iterable for REDUCE
        return tuple(args.items)
    return None


def _describe(value: object) -> str:
    """A short description of a symbolic value, for messages (never recursive)."""
    if type(value) is _Global:
        return value.full
    if type(value) is _Obj:
        src = value.source
        if type(src) is _Global:
            return f"<result of {src.full}>"
        return f"<{value.kind}{' ' + value.cls if value.cls else ''}>"
    if type(value) is str:
        return repr(value[:80])
    if value is None or type(value) in (int, float, bool):
        return repr(value)
    if type(value) is tuple:
        return f"<tuple of {len(value)}>"
    return f"<{type(value).__name__.lstrip('_').lower()}>"


def _parse_int(line: bytes) -> int | None:
    try:
        return int(line, 0) if line[:2] in (b"0x", b"0o", b"0b") else int(line)
    except ValueError:
        return None
