"""Static analysis of pickle streams: what loading them would import and call (stable API).

:func:`analyze_pickle` runs a *symbolic* pickle machine over the opcode stream, protocols 0-5.
It never imports, unpickles or loads anything: values are tokens (a resolved global, a string,
an instance of class X, a call of Y, a list, a dict ...) that refer to one another, so a stream
that builds a huge object graph with ``DUP``/``GET`` (expansion bombs, fickling#111) costs only
its own length. The stack, the mark stack and the memo are modelled exactly as CPython's
``pickle``/``_pickle`` do, so every global is resolved to its full dotted name however it was
reached (``GLOBAL``, ``STACK_GLOBAL`` with operands from the memo, ``INST``), and every call the
loader would make is recorded with the callable it calls (``REDUCE``, ``INST``, ``OBJ``,
``NEWOBJ``, ``NEWOBJ_EX``, ``BUILD`` through ``__setstate__``, ``APPENDS``/``ADDITEMS`` through
planted ``extend``/``append``/``add``, and the callables that trusted rebuild helpers call on
the stream's behalf, such as ``torch._tensor._rebuild_from_type_v2``'s first argument).

Verdicts, per name (see :mod:`~bastion.artifacts.pickle_rules` and
:mod:`~bastion.artifacts.pickle_allowlist`):

- allowlisted (exact full name) -> nothing to report;
- known dangerous, however spelt or reached -> ``CRITICAL``;
- unknown and *called* -> ``HIGH``; unknown and only instantiated without ``__init__`` as a
  class (``NEWOBJ``/``copyreg`` + ``BUILD``) -> ``MEDIUM``; unknown and only referenced ->
  ``LOW``. A file is unsafe from ``HIGH`` up; the driver applies that threshold.

Three calls are graded by their arguments rather than their name: ``builtins.getattr`` is
allowed only as ``getattr(<allowlisted class>, <allowlisted classmethod>)`` (how
``zoneinfo.ZoneInfo`` pickles) and is ``CRITICAL`` otherwise; trusted helpers that call or
instantiate what they are given (``copyreg._reconstructor``'s base, ``_rebuild_from_type_v2``'s
function, NumPy's random-state constructors, ``LambdaLR``'s lambda) have those arguments graded
as calls; ``torch.storage._load_from_bytes`` has its embedded ``torch.save`` payload analysed.

Anything the analyser cannot follow is never clean: a malformed or truncated stream, bytes after
``STOP``, a limit reached (opcodes, memo, stack, deadline), an extension code, a computed
callable: all are findings of at least ``HIGH``.

joblib: after the ``BUILD`` of a ``joblib.numpy_pickle.NumpyArrayWrapper`` joblib reads the
array's raw bytes straight from the file (``joblib/numpy_pickle.py``, ``read_array``): one
alignment byte ``p`` and ``p`` padding bytes when the wrapper has
``numpy_array_alignment_bytes``, then ``prod(shape) * itemsize`` bytes; an object-dtype array is
instead a nested pickle stream, analysed like the outer one. The size is computed from the
wrapper's (attacker-controlled) state; a size that cannot be computed exactly, runs past the
data, or is read while a protocol-4 frame is still open is a finding, never a silent skip.

Rule ids (stable):

========================== ========= ====================================================
``PICKLE-DANGEROUS-GLOBAL`` critical  a known-dangerous global is imported (any spelling)
``PICKLE-STATE-HIJACK``     critical  ``BUILD`` plants ``__setstate__``/``extend``/... that a
                                      later opcode calls, or sets ``__class__``/dunders
``PICKLE-GLOBAL-MUTATION``  critical  ``BUILD``/``SETITEM``/``APPEND`` change an imported object
``PICKLE-UNKNOWN-CALL``     high      an unknown callable is called while loading
``PICKLE-COMPUTED-CALL``    high      the callable is not a resolved global (a call's result,
                                      an attribute of an object, a planted attribute)
``PICKLE-UNRESOLVED-GLOBAL`` high     ``STACK_GLOBAL`` operands are not plain strings, or an
                                      extension code (``EXT1/2/4``) names a global
``PICKLE-SUSPICIOUS-NAME``  high      a global name that is not a dotted identifier
                                      (whitespace, newline, control or non-ASCII characters)
``PICKLE-MALFORMED``        high      invalid opcode or argument, stack underflow, memo miss
``PICKLE-TRUNCATED``        high      the stream ends before ``STOP``
``PICKLE-TRAILING-DATA``    high      bytes after ``STOP`` (concatenated pickles, polyglots)
``PICKLE-LIMIT``            high      opcodes, memo, stack or time limit reached
``PICKLE-RESOURCE-BOMB``    high      an expansion bomb (a value a naive walk expands beyond
                                      100x the stream), nesting deeper than 5000, one name
                                      imported 10,000 times, a huge allocation requested
``PICKLE-JOBLIB-ARRAY``     high      a joblib array whose raw bytes cannot be located exactly
``PICKLE-NESTED``           high      an embedded pickle/torch payload could not be analysed
``PICKLE-SIDE-FILE``        medium    a joblib <0.10 wrapper loads a side ``.npy`` file with
                                      ``allow_pickle`` (high when the name leaves the folder)
``PICKLE-UNKNOWN-CLASS``    medium    an unknown class is instantiated without ``__init__``
``PICKLE-UNKNOWN-VALUE-CALL`` medium  an unknown class outside the standard library and the
                                      trusted ML packages is called with one constant
                                      (the pickle of an ``enum`` member)
``PICKLE-UNKNOWN-GLOBAL``   low       an unknown global is imported but never called
========================== ========= ====================================================
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Final

from bastion.artifacts.findings import Atlas, Finding, Severity
from bastion.artifacts.pickle_vm import (
    _OPNAMES,
    _REMEDIATE_BROKEN,
    _REMEDIATE_UNKNOWN,
    HIGHEST_PROTOCOL,
    R_COMPUTED_CALL,
    R_DANGEROUS,
    R_HIJACK,
    R_JOBLIB,
    R_LIMIT,
    R_MALFORMED,
    R_MUTATION,
    R_NESTED,
    R_RESOURCE,
    R_SIDE_FILE,
    R_SUSPICIOUS_NAME,
    R_TRAILING,
    R_TRUNCATED,
    R_UNKNOWN_CALL,
    R_UNKNOWN_CLASS,
    R_UNKNOWN_GLOBAL,
    R_UNRESOLVED,
    R_VALUE_CALL,
    PickleLimits,
    _Analyzer,
)

__all__ = ["PickleAnalysis", "PickleLimits", "analyze_pickle", "looks_like_pickle"]

_DEFAULT_LIMITS: Final = PickleLimits()

#: Rule ids, stable (documented above).
RULE_IDS = (
    R_DANGEROUS,
    R_HIJACK,
    R_MUTATION,
    R_UNKNOWN_CALL,
    R_COMPUTED_CALL,
    R_UNRESOLVED,
    R_SUSPICIOUS_NAME,
    R_MALFORMED,
    R_TRUNCATED,
    R_TRAILING,
    R_LIMIT,
    R_RESOURCE,
    R_JOBLIB,
    R_NESTED,
    R_SIDE_FILE,
    R_UNKNOWN_CLASS,
    R_VALUE_CALL,
    R_UNKNOWN_GLOBAL,
)


@dataclass(frozen=True, slots=True)
class PickleAnalysis:
    """What a pickle stream would import and call.

    Attributes:
        findings: every finding, most severe first, one per rule and symbol.
        end: offset just past ``STOP`` (or where analysis stopped).
        complete: True when a ``STOP`` was reached and the stream was well formed.
        globals: every resolved full dotted global, in order of first appearance, once each.
        protocol: the protocol named by the first ``PROTO`` opcode, None when there is none.
    """

    findings: tuple[Finding, ...]
    end: int
    complete: bool
    globals: tuple[str, ...]
    protocol: int | None


# ---------------------------------------------------------------------------------------------
# Public entry points.


def analyze_pickle(
    data: bytes | bytearray | memoryview,
    *,
    path: str,
    member: str = "",
    start: int = 0,
    limits: PickleLimits = _DEFAULT_LIMITS,
    allow_trailing: bool = False,
) -> PickleAnalysis:
    """Analyse the pickle stream at ``data[start:]`` without loading it.

    Args:
        data: the bytes holding the stream (a file, a member, a mapped region).
        path: the scanned file, for findings.
        member: the member inside archives, for findings.
        start: offset of the stream's first opcode.
        limits: resource limits; reaching one is a finding.
        allow_trailing: False to report bytes after ``STOP`` (``PICKLE-TRAILING-DATA``);
            True where the format itself puts data after the pickle (the caller then goes on
            at :attr:`PickleAnalysis.end`).

    Returns:
        The analysis: findings, where the stream ended, whether it was complete, the globals.
    """
    buf: bytes | memoryview
    if isinstance(data, bytes):
        buf = data
    else:
        buf = memoryview(data).cast("B") if memoryview(data).format != "B" else memoryview(data)
    a = _Analyzer(buf, path, member, limits)
    # The analysis allocates many small linked objects and frees none until it ends: the
    # cyclic collector would only rescan them (a third of the time on large checkpoints).
    collecting = gc.isenabled()
    gc.disable()
    try:
        end, complete, proto = a.run(start)
    finally:
        if collecting:
            gc.enable()
    if complete and not allow_trailing and end < len(buf):
        a.report(
            R_TRAILING,
            Severity.HIGH,
            f"could not be fully analysed, treated as unsafe: {len(buf) - end} bytes follow "
            "the pickle's STOP (a second pickle or another format hidden behind it)",
            offset=end,
            atlas=Atlas.SUPPLY_CHAIN_MODEL,
            remediation=_REMEDIATE_BROKEN,
        )
    a.grade_unknowns()
    for rule, (count, severity) in a.suppressed.items():
        a.findings[(rule, "")] = Finding(
            rule_id=rule,
            severity=severity,
            message=f"{count} more findings of this rule were left out of the report",
            path=path,
            member=member,
            remediation=_REMEDIATE_UNKNOWN,
        )
    findings = sorted(
        a.findings.values(), key=lambda f: (-f.severity, f.offset if f.offset is not None else -1)
    )
    return PickleAnalysis(
        findings=tuple(findings),
        end=end,
        complete=complete,
        globals=tuple(a.globals),
        protocol=proto,
    )


#: Opcodes a protocol 0/1 pickle can start with.
_TEXT_STARTS: Final = frozenset(b"(}])NIJKLMFGSTUVXcip.")


def looks_like_pickle(head: bytes) -> bool:
    """Cheap content sniffing: do these first bytes (64 or more is best) start a pickle?

    True for a ``PROTO`` header of protocol 2-5 (and 0-1), or for a protocol 0/1 stream whose
    first opcodes parse as valid ones (a ``GLOBAL`` with identifier lines, a ``MARK`` followed
    by opcodes, ...). It never loads anything and is meant for format detection only.
    """
    if len(head) < 2:
        return len(head) == 1 and head[0] in (0x4E, 0x29, 0x5D, 0x7D)  # N ) ] } without STOP
    if head[0] == 0x80:
        # A PROTO header is what every pickler since protocol 2 writes first; what follows
        # may be garbage, which the analysis then reports (a loader would still try it).
        return head[1] <= HIGHEST_PROTOCOL
    if head[0] not in _OPNAMES or head[0] == 0x2E:
        return False
    return _plausible_pickle(head, text=head[0] in _TEXT_STARTS)


def _plausible_pickle(head: bytes, *, text: bool) -> bool:
    a = _Analyzer(head, "", "", PickleLimits(max_opcodes=4096))
    end, complete, _ = a.run(0, joblib=False)
    if complete:
        return True
    # An incomplete head is fine as long as it failed only by running out of bytes.
    bad = [f for f in a.findings.values() if f.rule_id in (R_MALFORMED, R_LIMIT)]
    return not bad and end >= min(len(head), 8) and a.opcodes >= (2 if text else 4)
