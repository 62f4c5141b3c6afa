"""ONNX models, read with a small bounded protobuf reader (never ``onnx.load``).

Only the fields that matter are visited (``onnx/onnx.proto``): the graph, its nodes, their
attributes' subgraphs (``g``, ``graphs``: the bodies of ``If``, ``Loop``, ``Scan``), tensors
(initializers, attribute tensors, sparse tensors), local functions and training graphs.

Checked:

- external data: a tensor's ``location`` is joined to the model's folder by every ONNX
  reader. An absolute path, a ``..`` component or a symlink that resolves outside the folder
  makes loading read (and with ``save`` write) arbitrary files (CVE-2022-25882,
  CVE-2024-27318, CVE-2024-27319 in ``onnx``). Paths are resolved with
  :func:`os.path.realpath`, which reads links but opens nothing.
- operator domains outside the ONNX standard (HIGH): running such a node needs a custom
  operator library, native code that comes with the model (MITRE ATLAS AML.T0011.000).
  Domains of the model's own local functions are not custom; ONNX Runtime's own contrib
  domains (``com.microsoft``) are noted only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.artifacts.findings import Atlas, Severity
from bastion.artifacts.scanners._paths import external_path_problem
from bastion.artifacts.scanners._protobuf import (
    LENGTH,
    VARINT,
    ProtobufError,
    fields,
    read_varint,
    text,
)
from bastion.artifacts.scanners.interface import ScanContext

__all__ = ["OnnxScanner"]

#: ModelProto fields and the wire type each must have.
_MODEL_FIELDS = {
    1: VARINT,
    2: LENGTH,
    3: LENGTH,
    4: LENGTH,
    5: VARINT,
    6: LENGTH,
    7: LENGTH,
    8: LENGTH,
    14: LENGTH,
    20: LENGTH,
    25: LENGTH,
    26: LENGTH,
}
_MAX_DETECT_FIELDS = 100_000
#: ir_version values are small (11 in 2025); anything larger is not an ONNX model.
_MAX_IR_VERSION = 1000
#: Subgraphs nested deeper than this are a limit finding (protobuf's own limit is 100).
MAX_GRAPH_DEPTH = 64
STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
)
#: Contrib operators that ship inside ONNX Runtime itself.
RUNTIME_DOMAINS = frozenset(
    {"com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental", "com.ms.internal.nhwc"}
)


@dataclass
class _Walk:
    ctx: ScanContext
    data: memoryview
    node_domains: dict[str, set[str]] = field(default_factory=dict)
    function_domains: set[str] = field(default_factory=set)
    locations: set[str] = field(default_factory=set)
    visited: int = 0


class OnnxScanner:
    """ONNX ModelProto files."""

    name = "onnx"
    strong = False

    def matches(self, data: memoryview) -> bool:
        """A ModelProto: only its fields, each with its wire type, an ``ir_version`` and a
        graph, in any order (every writer puts ``ir_version`` first; a polyglot need not).

        A model cut short is still one (and a finding) when it starts with ``ir_version``
        and the tag of one more ModelProto field was read before the bytes ran out.
        """
        if len(data) < 4:
            return False
        first_is_version = data[0] == 0x08
        seen_graph = seen_version = False
        pos = count = 0
        try:
            while pos < len(data):
                key, after = read_varint(data, pos, len(data))
                number, wire = key >> 3, key & 7
                count += 1
                if count > _MAX_DETECT_FIELDS or _MODEL_FIELDS.get(number) != wire:
                    return False
                seen_graph = seen_graph or number == 7
                value, after = read_varint(data, after, len(data))
                if wire == VARINT:
                    if number == 1:
                        if not 1 <= value <= _MAX_IR_VERSION:
                            return False
                        seen_version = True
                    pos = after
                else:
                    pos = after + value
                    if pos > len(data):
                        return first_is_version and count >= 2
        except ProtobufError:
            return first_is_version and count >= 2
        return seen_graph and seen_version

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        walk = _Walk(ctx, data)
        try:
            for number, _, value in fields(data, 0, len(data)):
                if number == 7 and isinstance(value, tuple):
                    _graph(walk, value, 0)
                elif number == 20 and isinstance(value, tuple):
                    for sub, _, span in fields(data, *value):
                        if sub in (1, 2) and isinstance(span, tuple):
                            _graph(walk, span, 1)
                elif number == 25 and isinstance(value, tuple):
                    _function(walk, value)
        except ProtobufError as exc:
            ctx.incomplete(f"ONNX protobuf is malformed ({exc})")
            return "onnx"
        except _TooDeepError:
            ctx.limit("depth", f"ONNX subgraphs nested deeper than {MAX_GRAPH_DEPTH} levels")
        _report_domains(walk)
        return "onnx"


class _TooDeepError(Exception):
    pass


def _tick(walk: _Walk) -> None:
    walk.visited += 1
    if walk.visited % 1024 == 0:
        walk.ctx.check_deadline()


def _graph(walk: _Walk, span: tuple[int, int], depth: int) -> None:
    if depth > MAX_GRAPH_DEPTH:
        raise _TooDeepError
    for number, _, value in fields(walk.data, *span):
        if not isinstance(value, tuple):
            continue
        if number == 1:
            _node(walk, value, depth)
        elif number == 5:
            _tensor(walk, value)
        elif number == 15:
            _sparse_tensor(walk, value)


def _node(walk: _Walk, span: tuple[int, int], depth: int) -> None:
    _tick(walk)
    op_type = ""
    domain = ""
    for number, _, value in fields(walk.data, *span):
        if number == 4:
            op_type = text(walk.data, value)
        elif number == 7:
            domain = text(walk.data, value)
        elif number == 5 and isinstance(value, tuple):
            _attribute(walk, value, depth)
    walk.node_domains.setdefault(domain, set()).add(op_type)


def _attribute(walk: _Walk, span: tuple[int, int], depth: int) -> None:
    for number, _, value in fields(walk.data, *span):
        if not isinstance(value, tuple):
            continue
        if number in (5, 10):
            _tensor(walk, value)
        elif number in (6, 11):
            _graph(walk, value, depth + 1)
        elif number in (22, 23):
            _sparse_tensor(walk, value)


def _sparse_tensor(walk: _Walk, span: tuple[int, int]) -> None:
    for number, _, value in fields(walk.data, *span):
        if number in (1, 2) and isinstance(value, tuple):
            _tensor(walk, value)


def _function(walk: _Walk, span: tuple[int, int]) -> None:
    for number, _, value in fields(walk.data, *span):
        if number == 10:
            walk.function_domains.add(text(walk.data, value))
        elif number == 7 and isinstance(value, tuple):
            _node(walk, value, 0)


def _tensor(walk: _Walk, span: tuple[int, int]) -> None:
    _tick(walk)
    name = ""
    for number, _, value in fields(walk.data, *span):
        if number == 8:
            name = text(walk.data, value)
        elif number == 13 and isinstance(value, tuple):
            key = entry_value = ""
            for sub, _, item in fields(walk.data, *value):
                if sub == 1:
                    key = text(walk.data, item)
                elif sub == 2:
                    entry_value = text(walk.data, item)
            if key == "location":
                _location(walk, entry_value, name)


def _location(walk: _Walk, location: str, tensor: str) -> None:
    if location in walk.locations:
        return
    walk.locations.add(location)
    ctx = walk.ctx
    problem = external_path_problem(location, ctx)
    if problem is None:
        return
    severity, what = problem
    ctx.add(
        "ONNX-EXTERNAL-DATA-PATH",
        severity,
        f"tensor {tensor!r} reads its external data from {location!r}: {what}",
        atlas=Atlas.SUPPLY_CHAIN_MODEL if severity < Severity.HIGH else Atlas.UNSAFE_ARTIFACT,
        remediation="External data must be plain relative files inside the model folder; "
        "do not load this model.",
    )


def _report_domains(walk: _Walk) -> None:
    for domain in sorted(walk.node_domains):
        if domain in STANDARD_DOMAINS or domain in walk.function_domains:
            continue
        ops = ", ".join(sorted(walk.node_domains[domain])[:10])
        if domain in RUNTIME_DOMAINS:
            walk.ctx.add(
                "ONNX-RUNTIME-DOMAIN",
                Severity.LOW,
                f"operators from ONNX Runtime's contrib domain {domain!r} ({ops})",
                atlas=Atlas.SUPPLY_CHAIN_MODEL,
            )
            continue
        walk.ctx.add(
            "ONNX-CUSTOM-DOMAIN",
            Severity.HIGH,
            f"custom operator domain {domain!r} ({ops}): running the model needs a custom "
            "operator library, native code outside ONNX",
            atlas=Atlas.UNSAFE_ARTIFACT,
            remediation="Load custom operator libraries only from trusted sources.",
        )
