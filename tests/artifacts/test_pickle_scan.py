"""The static pickle analyser: malicious streams built opcode by opcode, benign real objects.

Each malicious sample names the advisory, CVE or issue whose technique it reproduces. Nothing
malicious is ever loaded; benign samples are loaded by the real loader as a sanity check that
they are what they claim to be.
"""

from __future__ import annotations

import collections
import datetime
import importlib
import io
import pickle
import re
import struct
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from importlib.abc import MetaPathFinder
from pathlib import Path

import numpy as np
import pytest

from bastion.artifacts import pickle_scan, pickle_vm
from bastion.artifacts.findings import Severity
from bastion.artifacts.pickle_scan import (
    PickleAnalysis,
    PickleLimits,
    analyze_pickle,
    looks_like_pickle,
)

torch = importlib.import_module("torch")
joblib = importlib.import_module("joblib")

# -- builders (fickling test_bypasses style: every opcode spelt out) --
PROTO4 = pickle.PROTO + b"\x04"
PROTO2 = pickle.PROTO + b"\x02"


def u(text: str) -> bytes:
    """Push a str (SHORT_BINUNICODE or BINUNICODE)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def sg(module: str, name: str) -> bytes:
    """Push a global with STACK_GLOBAL (protocol 4)."""
    return u(module) + u(name) + pickle.STACK_GLOBAL


def g(module: str, name: str) -> bytes:
    """Push a global with the text GLOBAL opcode (protocol 0)."""
    return pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n"


def call1(func: bytes, arg: bytes) -> bytes:
    """``func(arg)`` with REDUCE."""
    return func + arg + pickle.TUPLE1 + pickle.REDUCE


def tup(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def wrap4(body: bytes) -> bytes:
    """A protocol-4 stream holding ``body`` (one value) and STOP."""
    return PROTO4 + body + pickle.STOP


def reduce_call(module: str, name: str, *args: str, proto: int = 4) -> bytes:
    """``module.name(*args)`` with string args, as a whole stream."""
    if proto >= 4:
        return wrap4(sg(module, name) + tup(*(u(a) for a in args)) + pickle.REDUCE)
    body = g(module, name) + pickle.MARK
    body += b"".join(b"V" + a.encode("raw-unicode-escape") + b"\n" for a in args)
    head = pickle.PROTO + bytes([proto]) if proto >= 2 else b""
    return head + body + pickle.TUPLE + pickle.REDUCE + pickle.STOP


def binput(i: int) -> bytes:
    return pickle.BINPUT + bytes([i])


def binget(i: int) -> bytes:
    return pickle.BINGET + bytes([i])


def scan(data: bytes, **kw: object) -> PickleAnalysis:
    return analyze_pickle(data, path="sample.pkl", **kw)  # type: ignore[arg-type]


def worst(a: PickleAnalysis) -> Severity | None:
    return max((f.severity for f in a.findings), default=None)


def rules(a: PickleAnalysis) -> set[str]:
    return {f.rule_id for f in a.findings}


def symbols(a: PickleAnalysis, rule: str | None = None) -> set[str]:
    return {f.symbol or "" for f in a.findings if rule is None or f.rule_id == rule}


def assert_clean(a: PickleAnalysis) -> None:
    bad = [f for f in a.findings if f.severity >= Severity.MEDIUM]
    assert a.complete, [f.message for f in a.findings]
    assert not bad, [(f.rule_id, f.symbol, f.message) for f in bad]


def assert_unsafe(a: PickleAnalysis, rule: str, sev: Severity = Severity.HIGH) -> None:
    hits = [f for f in a.findings if f.rule_id == rule]
    assert hits, [(f.rule_id, f.symbol, f.message) for f in a.findings]
    assert max(f.severity for f in hits) >= sev


# ---------------------------------------------------------------------------------------------
# Known-dangerous callables, each as GLOBAL+REDUCE (protocol 0) and STACK_GLOBAL (protocol 4).

DANGEROUS = [
    # classic payloads (fickling test_bypasses; python docs "pickle is not secure")
    ("os", "system"),
    ("posix", "system"),  # what pickle.dumps(os.system) writes on Linux
    ("nt", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("subprocess", "getoutput"),
    ("_posixsubprocess", "fork_exec"),
    ("pty", "spawn"),  # fickling PR #108
    ("runpy", "_run_code"),
    ("runpy", "run_path"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("builtins", "compile"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("builtins", "open"),
    ("builtins", "breakpoint"),
    ("builtins", "setattr"),
    ("builtins", "map"),
    ("builtins", "iter"),
    ("webbrowser", "open"),  # drhyrum/bert-tiny-torch-picklebomb
    ("socket", "create_connection"),
    ("ssl", "get_server_certificate"),  # picklescan: DNS exfiltration
    # picklescan advisories and CVEs
    ("asyncio.unix_events", "_UnixSubprocessTransport"),  # CVE-2025-10157
    ("asyncio", "create_subprocess_shell"),
    ("_io", "FileIO"),  # GHSA-x843-g5mx-g377 class: file access bypassing builtins.open
    ("distutils.file_util", "write_file"),  # GHSA-rrxm-2pvv-m66x class: arbitrary file write
    ("timeit", "timeit"),  # GHSA-v7x6-rv5q-mhwc
    ("cProfile", "run"),  # GHSA-46h3-79wf-xr6c / GHSA-4675-36f9-wf6r
    ("profile", "run"),
    ("pdb", "run"),
    ("bdb", "Bdb.run"),
    ("trace", "Trace.run"),
    ("doctest", "debug_script"),
    ("code", "InteractiveInterpreter.runcode"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcode"),  # GHSA-r8g5-cgf2-4m4m
    ("lib2to3.pgen2.grammar", "Grammar.loads"),
    ("ensurepip", "_run_pip"),  # GHSA-xp4f-hrf8-rxw7
    ("pip", "main"),  # GHSA-vqmv-47xg-9wpr
    ("venv", "create"),
    ("pkgutil", "resolve_name"),  # GHSA-vvpj-8cmc-gx39 (universal resolver)
    ("importlib", "import_module"),  # picklescan #66/#74, modelscan #331
    ("marshal", "loads"),  # picklescan #74
    ("types", "FunctionType"),
    ("types", "CodeType"),
    ("cloudpickle.cloudpickle", "_make_function"),
    ("dill._dill", "_create_function"),  # modelscan #28
    ("pickle", "loads"),  # GHSA-84r2-jw7c-4r5q, modelscan #267: nested pickle
    ("_pickle", "loads"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("torch.hub", "load"),
    ("torch.jit", "load"),
    ("numpy", "load"),
    ("joblib", "load"),
    ("operator", "attrgetter"),  # GHSA-m273-6v24-x4m4
    ("operator", "methodcaller"),
    ("_operator", "attrgetter"),  # GHSA-955r-x9j8-7rhh
    ("operator", "itemgetter"),
    ("functools", "partial"),  # fickling PR #210
    ("functools", "reduce"),
    ("itertools", "starmap"),
    ("copy", "_reconstruct"),
    ("weakref", "finalize"),
    ("atexit", "register"),
    ("threading", "Timer"),
    ("torch.utils.collect_env", "run"),  # modelscan #338
    ("numpy.testing._private.utils", "runstring"),  # picklescan list: exec synonym
    ("numpy.f2py.crackfortran", "getlincoef"),  # fickling PR #210: eval
    ("torch._inductor.codecache", "compile_file"),
    ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
    ("torch._dynamo.guards", "GuardBuilder.get"),
    ("torch.utils._config_module", "ConfigModule.load_config"),
    ("torch.utils.bottleneck.__main__", "run_cprofile"),
    ("torch.jit.unsupported_tensor_ops", "execWrapper"),
    ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
    ("torch.fx.graph_module", "reduce_graph_module"),  # execs Python source from the file
    ("multiprocessing.util", "spawnv_passfds"),  # modelscan #338
    ("pandas.io.parsers.readers", "read_csv"),  # modelscan #338: exfiltration by URL
    ("mlflow.projects.backend.local", "_run_entry_point"),  # modelscan #338
    ("uuid", "_get_command_stdout"),  # picklescan list
    ("imaplib", "IMAP4_stream"),
    ("_osx_support", "_read_output"),
    ("_aix_support", "_read_cmd_output"),
    ("_pyrepl.pager", "pipe_pager"),
    ("mailcap", "findmatch"),  # modelscan PR #346
    ("_interpreters", "run_string"),  # fickling GHSA-6ggj-6f2q-f7mx
    ("ctypes", "CDLL"),
    ("shutil", "rmtree"),
    ("tempfile", "mkstemp"),
    ("glob", "glob"),
    ("linecache", "getlines"),
    ("http.client", "HTTPSConnection"),
    ("urllib.request", "urlopen"),
    ("requests", "get"),
    ("smtplib", "SMTP"),
    ("ftplib", "FTP"),
    ("telnetlib", "Telnet"),
    ("logging", "FileHandler"),
    ("zipimport", "zipimporter"),
    ("setuptools.sandbox", "run_setup"),
    ("sys", "exit"),
    ("six.moves.builtins", "eval"),
    ("yaml", "unsafe_load"),
]


@pytest.mark.parametrize(("module", "name"), DANGEROUS)
def test_dangerous_global_is_critical(module: str, name: str) -> None:
    for data in (reduce_call(module, name, "x", proto=0), reduce_call(module, name, "x")):
        a = scan(data)
        assert a.complete
        assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
        assert f"{module}.{name}" in a.globals
        assert f"{module}.{name}" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")


def test_dangerous_global_only_referenced_is_still_critical() -> None:
    # os.system stored as a value (a defaultdict factory, an attribute), never called here.
    data = wrap4(sg("collections", "defaultdict") + tup(sg("os", "system")) + pickle.REDUCE)
    assert_unsafe(scan(data), "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def test_python2_aliases_are_fixed_and_checked_both_ways() -> None:
    # picklescan/modelscan list __builtin__ separately: protocol < 3 maps it to builtins.
    a = scan(reduce_call("__builtin__", "eval", "1", proto=2))
    assert "builtins.eval" in a.globals
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    # commands.getoutput is subprocess.getoutput once fixed (_compat_pickle.IMPORT_MAPPING).
    assert (
        "subprocess.getoutput" in scan(reduce_call("commands", "getoutput", "id", proto=2)).globals
    )
    # With protocol 4 the loader does not fix names; the spelling is still flagged.
    assert_unsafe(scan(reduce_call("__builtin__", "eval", "1")), "PICKLE-DANGEROUS-GLOBAL")
    # itertools.imap -> builtins.map under protocol 2
    assert "builtins.map" in scan(reduce_call("itertools", "imap", "x", proto=2)).globals


@pytest.mark.parametrize(
    ("module", "name", "bad"),
    [
        # GHSA-9gvj-pp9x-gcfr class: an attribute path through a module alias
        ("torch.serialization", "os.system", "os"),
        ("torch.library", "torch.utils.collect_env.run", "collect_env"),  # modelscan #338
        ("numpy", "__builtins__", "__builtins__"),  # modelscan #330
        ("torch.nn.modules.linear", "Linear.__init__.__globals__", "__globals__"),
        ("collections", "OrderedDict.__subclasses__", "__subclasses__"),
        ("sklearn.base", "sys.modules", "sys"),
        ("__main__", "os.system", "os"),
    ],
)
def test_attribute_paths_through_modules(module: str, name: str, bad: str) -> None:
    a = scan(reduce_call(module, name, "id"))
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    assert bad in " ".join(f.message for f in a.findings)


def test_exact_allowlist_never_prefix() -> None:
    ok = scan(wrap4(sg("torch.nn.modules.linear", "Linear") + pickle.EMPTY_TUPLE + pickle.NEWOBJ))
    assert_clean(ok)
    a = scan(reduce_call("torch.nn.modules.linear", "os.system", "id"))
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    # an unknown attribute of an allowed class is not allowed either
    a = scan(reduce_call("torch.nn.modules.linear", "Linear.forward_helper", "x"))
    assert_unsafe(a, "PICKLE-UNKNOWN-CALL")


def test_stack_global_operands_from_memo() -> None:
    # picklescan#22 (imaginaryctf "Safe Pickle"): operands memoised early, decoys pushed later.
    body = (
        u("os")
        + binput(0)
        + pickle.POP
        + u("system")
        + binput(1)
        + pickle.POP
        + u("numpy")
        + u("dtype")
        + pickle.POP
        + pickle.POP
        + binget(0)
        + binget(1)
        + pickle.STACK_GLOBAL
        + u("id")
        + pickle.TUPLE1
        + pickle.REDUCE
    )
    a = scan(wrap4(body))
    assert "os.system" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")


def test_stack_global_operands_via_memoize_and_get_text() -> None:
    # modelscan #85: PUT/GET with text arguments feeding STACK_GLOBAL.
    body = u("subprocess") + b"p0\n" + u("check_output") + b"p1\n"
    body += pickle.POP + pickle.POP + b"g0\ng1\n" + pickle.STACK_GLOBAL
    body += u("id") + pickle.TUPLE1 + pickle.REDUCE
    assert "subprocess.check_output" in symbols(scan(wrap4(body)), "PICKLE-DANGEROUS-GLOBAL")


def test_stack_global_with_computed_operands_is_unresolved() -> None:
    # modelscan #85: operands are attributes of a global planted by BUILD, not strings.
    body = (
        g("numpy", "prod")
        + pickle.NONE
        + pickle.MARK
        + u("a")
        + u("os")
        + pickle.DICT
        + pickle.TUPLE2
        + pickle.BUILD
        + pickle.POP
        + g("numpy", "prod.a")
        + u("system")
        + pickle.STACK_GLOBAL
        + u("id")
        + pickle.TUPLE1
        + pickle.REDUCE
    )
    a = scan(PROTO4 + body + pickle.STOP)
    assert_unsafe(a, "PICKLE-GLOBAL-MUTATION", Severity.CRITICAL)
    assert_unsafe(a, "PICKLE-UNRESOLVED-GLOBAL")
    # bytes operands (only str is accepted by the loader) are unresolvable too
    body = pickle.SHORT_BINBYTES + b"\x02os" + u("system") + pickle.STACK_GLOBAL
    assert_unsafe(scan(wrap4(body)), "PICKLE-UNRESOLVED-GLOBAL")


def test_getattr_resolution_chain() -> None:
    # modelscan #331: importlib.import_module('os') then builtins.getattr(mod, 'system')
    body = (
        sg("builtins", "getattr")
        + call1(sg("importlib", "import_module"), u("os"))
        + u("system")
        + pickle.TUPLE2
        + pickle.REDUCE
        + u("id")
        + pickle.TUPLE1
        + pickle.REDUCE
    )
    a = scan(wrap4(body))
    assert {"builtins.getattr", "importlib.import_module"} <= symbols(a, "PICKLE-DANGEROUS-GLOBAL")
    assert_unsafe(a, "PICKLE-COMPUTED-CALL")


def test_numpy_ufunc_reconstruct_resolves_its_operands() -> None:
    # numpy's _ufunc_reconstruct(module, name) imports module and returns getattr(module, name).
    body = sg("numpy._core", "_ufunc_reconstruct") + u("os") + u("system") + pickle.TUPLE2
    body += pickle.REDUCE + u("id") + pickle.TUPLE1 + pickle.REDUCE
    a = scan(wrap4(body))
    assert "os.system" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")


def test_inst_and_obj_protocol0() -> None:
    # fickling PR #108: (cpty\nspawn\nS"id"\no.  and the INST spelling
    a = scan(b'(cpty\nspawn\nS"id"\no.')
    assert "pty.spawn" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")
    a = scan(b"(S'id'\nios\nsystem\n.")
    assert "os.system" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")
    a = scan(b"(S'x'\nimypkg.tools\nRunner\n.")
    assert_unsafe(a, "PICKLE-UNKNOWN-CALL")


def test_newobj_and_newobj_ex_with_dangerous_class() -> None:
    a = scan(wrap4(sg("subprocess", "Popen") + pickle.EMPTY_TUPLE + pickle.NEWOBJ))
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    body = sg("code", "InteractiveConsole") + pickle.EMPTY_TUPLE + pickle.EMPTY_DICT
    a = scan(wrap4(body + pickle.NEWOBJ_EX))
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


@pytest.mark.parametrize(
    "ext", [pickle.EXT1 + b"\x01", pickle.EXT2 + b"\x01\x02", pickle.EXT4 + b"\x01\x00\x00\x00"]
)
def test_extension_registry_is_unresolvable(ext: bytes) -> None:
    # copyreg.add_extension codes depend on the loading process.
    a = scan(wrap4(ext + u("id") + pickle.TUPLE1 + pickle.REDUCE))
    assert_unsafe(a, "PICKLE-UNRESOLVED-GLOBAL")


def test_planted_setstate_then_build() -> None:
    # The __setstate__ trick: BUILD with (state, slotstate) planting __setstate__, then BUILD
    # again calls it with attacker state (fickling GHSA-6ggj-6f2q-f7mx routes through it).
    body = (
        sg("argparse", "Namespace")
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + pickle.NONE
        + pickle.EMPTY_DICT
        + u("__setstate__")
        + sg("mypkg.helpers", "run")
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
        + u("id")
        + pickle.BUILD
    )
    a = scan(wrap4(body))
    assert_unsafe(a, "PICKLE-STATE-HIJACK", Severity.CRITICAL)
    assert "mypkg.helpers.run" in symbols(a, "PICKLE-UNKNOWN-CALL")
    # the same through the plain state dict (inst.__dict__ update)
    body2 = (
        sg("argparse", "Namespace")
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + pickle.EMPTY_DICT
        + u("__setstate__")
        + sg("os", "system")
        + pickle.SETITEM
        + pickle.BUILD
        + u("id")
        + pickle.BUILD
    )
    a = scan(wrap4(body2))
    assert_unsafe(a, "PICKLE-STATE-HIJACK", Severity.CRITICAL)
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def test_planted_extend_called_by_appends() -> None:
    # APPENDS on a non-list looks up .extend and calls it: a planted attribute is a call.
    body = (
        sg("argparse", "Namespace")
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + pickle.EMPTY_DICT
        + u("extend")
        + sg("mypkg.helpers", "run")
        + pickle.SETITEM
        + pickle.BUILD
        + pickle.MARK
        + u("id")
        + pickle.APPENDS
    )
    a = scan(wrap4(body))
    assert_unsafe(a, "PICKLE-STATE-HIJACK", Severity.CRITICAL)
    assert "mypkg.helpers.run" in symbols(a, "PICKLE-UNKNOWN-CALL")


def test_build_and_setitem_on_globals_is_mutation() -> None:
    body = sg("torch.serialization", "_package_registry") + pickle.MARK + u("x") + pickle.APPENDS
    assert_unsafe(scan(wrap4(body)), "PICKLE-GLOBAL-MUTATION", Severity.CRITICAL)
    body = sg("mypkg", "REGISTRY") + u("k") + u("v") + pickle.SETITEM
    assert_unsafe(scan(wrap4(body)), "PICKLE-GLOBAL-MUTATION", Severity.CRITICAL)


def test_rebuild_helpers_that_call_their_arguments() -> None:
    # torch._tensor._rebuild_from_type_v2(func, new_type, args, state) calls func(*args).
    body = sg("torch._tensor", "_rebuild_from_type_v2") + pickle.MARK
    body += sg("mypkg.evil", "go") + sg("torch", "Tensor") + tup(u("id")) + pickle.EMPTY_DICT
    body += pickle.TUPLE + pickle.REDUCE
    assert "mypkg.evil.go" in symbols(scan(wrap4(body)), "PICKLE-UNKNOWN-CALL")
    # numpy.random._pickle.__randomstate_ctor(name, ctor) calls ctor(name).
    body = sg("numpy.random._pickle", "__randomstate_ctor") + u("id") + sg("os", "system")
    a = scan(wrap4(body + pickle.TUPLE2 + pickle.REDUCE))
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    # copyreg._reconstructor(cls, base, state) calls base.__init__(obj, state)
    body = sg("copyreg", "_reconstructor") + pickle.MARK + sg("mypkg", "Cls")
    body += sg("mypkg", "Launcher") + u("id") + pickle.TUPLE + pickle.REDUCE
    assert "mypkg.Launcher" in symbols(scan(wrap4(body)), "PICKLE-UNKNOWN-CALL")
    # torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda) calls lr_lambda(0)
    body = sg("torch.optim.lr_scheduler", "LambdaLR") + pickle.NONE + sg("mypkg", "hook")
    a = scan(wrap4(body + pickle.TUPLE2 + pickle.REDUCE))
    assert "mypkg.hook" in symbols(a, "PICKLE-UNKNOWN-CALL")


def test_unknown_globals_are_graded_by_use() -> None:
    called = scan(reduce_call("mypkg.tools", "run_job", "x"))
    assert_unsafe(called, "PICKLE-UNKNOWN-CALL")
    enum_like = scan(reduce_call("mypkg.config", "Mode", "train"))
    assert worst(enum_like) == Severity.MEDIUM
    assert rules(enum_like) == {"PICKLE-UNKNOWN-VALUE-CALL"}
    # a path, URL or command is no enum value: a class given one is graded as a call
    for arg in ("/tmp/x.h5", "https://example.invalid/x", "rm -rf /", "a.b"):
        assert_unsafe(scan(reduce_call("mypkg.io", "Store", arg)), "PICKLE-UNKNOWN-CALL")
    # the enum leniency never applies to the standard library or the trusted packages
    assert_unsafe(scan(reduce_call("logging", "Handler", "x")), "PICKLE-DANGEROUS-GLOBAL")
    assert_unsafe(scan(reduce_call("torch.nn.modules", "Evil", "x")), "PICKLE-UNKNOWN-CALL")
    cls_only = scan(wrap4(sg("mypkg.models", "Net") + pickle.EMPTY_TUPLE + pickle.NEWOBJ))
    assert worst(cls_only) == Severity.MEDIUM
    assert rules(cls_only) == {"PICKLE-UNKNOWN-CLASS"}
    ref = scan(wrap4(sg("mypkg.models", "activation")))
    assert worst(ref) == Severity.LOW
    assert rules(ref) == {"PICKLE-UNKNOWN-GLOBAL"}


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_zoneinfo_getattr_classmethod_is_clean(proto: int) -> None:
    # corpus benign/pickle/datetime_zoneinfo: ZoneInfo pickles as
    # builtins.getattr(zoneinfo.ZoneInfo, '_unpickle')('UTC', 1)
    from zoneinfo import ZoneInfo

    data = pickle.dumps(datetime.datetime(2024, 1, 2, tzinfo=ZoneInfo("UTC")), protocol=proto)
    assert_clean(scan(data))
    # the same primitive on anything else stays critical
    body = sg("builtins", "getattr") + sg("zoneinfo", "ZoneInfo") + u("__init__")
    body += pickle.TUPLE2 + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    body = sg("builtins", "getattr") + sg("collections", "OrderedDict") + u("fromkeys")
    body += pickle.TUPLE2 + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    # imported and never called: still critical
    assert_unsafe(scan(wrap4(sg("builtins", "getattr"))), "PICKLE-DANGEROUS-GLOBAL")


def test_torch_generator_object_is_clean() -> None:
    # corpus benign/pytorch/generator_object: torch._C.Generator(device) then __setstate__
    gen = torch.Generator().manual_seed(3)
    assert_clean(scan(_data_pkl({"gen": gen, "np": np.random.default_rng(1)})))


def test_pandas_reconstructors() -> None:
    # a DataFrame's index: pandas.core.indexes.base._new_Index(cls, d) instantiates cls
    body = sg("pandas.core.indexes.base", "_new_Index") + sg("pandas.core.indexes.base", "Index")
    body += pickle.EMPTY_DICT + pickle.TUPLE2 + pickle.REDUCE
    a = scan(wrap4(body))
    assert worst(a) == Severity.MEDIUM  # loading needs pandas importable
    body = sg("pandas.core.indexes.base", "_new_Index") + sg("subprocess", "Popen")
    body += pickle.EMPTY_DICT + pickle.TUPLE2 + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def test_computed_callable() -> None:
    # calling the result of an allowed call: REDUCE(REDUCE(OrderedDict, ()), ())
    body = sg("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    body += pickle.EMPTY_TUPLE + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-COMPUTED-CALL")


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os ", "system"),  # trailing space
        ("o\u0455", "system"),  # Cyrillic dze
        ("\uff4f\uff53", "system"),  # fullwidth: NFKC gives "os"
        ("os", "system\r"),  # CRLF line ending
        ("os\x00", "system"),
        ("", "system"),
        ("os", ".system"),
    ],
)
def test_suspicious_names(module: str, name: str) -> None:
    # GLOBAL names that are not dotted identifiers: tricks against scanners that normalise.
    a = scan(wrap4(sg(module, name) + u("id") + pickle.TUPLE1 + pickle.REDUCE))
    assert_unsafe(a, "PICKLE-SUSPICIOUS-NAME")
    if module in ("\uff4f\uff53", "os\x00", "os ") or name == "system\r":
        assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def test_text_global_with_odd_line() -> None:
    a = scan(b"cos \nsystem\n(S'id'\ntR.")
    assert_unsafe(a, "PICKLE-SUSPICIOUS-NAME")
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


# ---------------------------------------------------------------------------------------------
# Streams that cannot be fully analysed are never clean.


BENIGN = pickle.dumps({"w": [1.0, 2.0], "name": "m", "t": (1, 2)}, protocol=4)


def test_every_truncation_is_unsafe() -> None:
    for cut in range(len(BENIGN)):
        a = scan(BENIGN[:cut])
        assert not a.complete
        assert worst(a) is not None
        assert worst(a) >= Severity.HIGH
    assert_clean(scan(BENIGN))


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"\x80\x04N", "PICKLE-TRUNCATED"),  # missing STOP
        (b"\x80\x04\xffN.", "PICKLE-MALFORMED"),  # invalid opcode
        (b"\x80\x04t.", "PICKLE-MALFORMED"),  # TUPLE with no MARK
        (b"\x80\x04R.", "PICKLE-MALFORMED"),  # REDUCE underflow
        (b"\x80\x04h\x05.", "PICKLE-MALFORMED"),  # memo miss
        (b"\x80\x04NN.", "PICKLE-MALFORMED"),  # two values at STOP
        (b"\x80\x04(N.", "PICKLE-MALFORMED"),  # open MARK at STOP
        (b"\x80\x06N.", "PICKLE-MALFORMED"),  # unknown protocol
        (b"\x80\x02T\xff\xff\xff\xffN.", "PICKLE-MALFORMED"),  # negative BINSTRING length
        (b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"x.", "PICKLE-TRUNCATED"),  # huge claim
        (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "PICKLE-TRUNCATED"),  # frame
        (b"I12x\n.", "PICKLE-MALFORMED"),
        (b"S'unquoted\n.", "PICKLE-MALFORMED"),
        (b"\x80\x04(N(N\x8f\x90\x90.", "PICKLE-MALFORMED"),
        (b"\x80\x04}(N\x75.", "PICKLE-MALFORMED"),  # odd SETITEMS
    ],
)
def test_malformed_streams(data: bytes, rule: str) -> None:
    a = scan(data)
    assert not a.complete
    assert_unsafe(a, rule)


def test_frame_rules() -> None:
    # an opcode argument crossing its frame's end (the pure-Python unpickler refuses it)
    body = pickle.FRAME + struct.pack("<Q", 3) + pickle.SHORT_BINUNICODE + b"\x04abcd."
    assert_unsafe(scan(PROTO4 + body), "PICKLE-MALFORMED")
    # a frame inside a frame
    body = pickle.FRAME + struct.pack("<Q", 20) + pickle.FRAME + struct.pack("<Q", 1) + b"N."
    assert_unsafe(scan(PROTO4 + body + b"\x00" * 10), "PICKLE-MALFORMED")


def test_trailing_data_and_concatenated_pickles() -> None:
    evil = reduce_call("os", "system", "id")
    data = BENIGN + evil  # scanners that stop at the first STOP miss the second pickle
    a = scan(data)
    assert a.complete
    assert a.end == len(BENIGN)
    assert_unsafe(a, "PICKLE-TRAILING-DATA")
    b = scan(data, allow_trailing=True)
    assert "PICKLE-TRAILING-DATA" not in rules(b)
    second = scan(data, start=b.end)
    assert_unsafe(second, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def test_payload_before_a_broken_tail_is_reported() -> None:
    # nullifAI (ReversingLabs, 2025): the payload runs, then the stream breaks.
    data = reduce_call("os", "system", "id")[:-1] + b"\xff\xff"
    a = scan(data)
    assert not a.complete
    assert_unsafe(a, "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)
    assert_unsafe(a, "PICKLE-MALFORMED")


def test_limits() -> None:
    many = PROTO4 + (pickle.NONE + pickle.POP) * 600 + pickle.NONE + pickle.STOP
    assert_unsafe(scan(many, limits=PickleLimits(max_opcodes=1000)), "PICKLE-LIMIT")
    memo = PROTO4 + b"".join(pickle.NONE + pickle.MEMOIZE + pickle.POP for _ in range(50))
    a = scan(memo + pickle.NONE + pickle.STOP, limits=PickleLimits(max_memo=10))
    assert_unsafe(a, "PICKLE-LIMIT")
    deep = PROTO4 + pickle.MARK * 5000 + pickle.NONE + pickle.STOP
    assert_unsafe(scan(deep, limits=PickleLimits(max_stack=1000)), "PICKLE-LIMIT")
    huge_put = PROTO4 + pickle.NONE + pickle.LONG_BINPUT + b"\xff\xff\xff\xff" + pickle.STOP
    assert_unsafe(scan(huge_put), "PICKLE-LIMIT")
    past = PickleLimits(deadline=time.monotonic() - 1)
    long = PROTO4 + (pickle.NONE + pickle.POP) * 20000 + pickle.NONE + pickle.STOP
    assert_unsafe(scan(long, limits=past), "PICKLE-LIMIT")


def test_expansion_bombs_end_quickly() -> None:
    # fickling#111 / billion laughs: each GET doubles what a naive model would copy.
    body = pickle.EMPTY_LIST + pickle.MEMOIZE + pickle.POP
    for level in range(200):
        body += binget(level) + binget(level) + pickle.TUPLE2 + pickle.MEMOIZE + pickle.POP
    body += binget(200)
    data = PROTO4 + body + pickle.STOP
    start = time.perf_counter()
    a = scan(data)
    assert time.perf_counter() - start < 1.0
    assert a.complete
    assert_unsafe(a, "PICKLE-RESOURCE-BOMB")
    # DUP/APPEND self-reference loops
    loop = PROTO4 + pickle.EMPTY_LIST
    loop += (pickle.DUP + pickle.DUP + pickle.APPEND + pickle.POP) * 20000
    a = scan(loop + pickle.STOP)
    assert a.complete
    # one huge dict reused as BUILD state many times stays linear
    big = pickle.EMPTY_DICT + binput(1) + pickle.MARK
    big += b"".join(u(f"k{i}") + pickle.NONE for i in range(2000)) + pickle.SETITEMS
    body = sg("argparse", "Namespace") + pickle.EMPTY_TUPLE + pickle.NEWOBJ + big + pickle.BUILD
    body += (binget(1) + pickle.BUILD) * 20000
    start = time.perf_counter()
    a = scan(wrap4(body))
    assert time.perf_counter() - start < 2.0
    assert a.complete
    assert_unsafe(a, "PICKLE-RESOURCE-BOMB")


def test_resource_bombs() -> None:
    # 100,000 nested lists (fickling#196): deeper than any pickler writes
    deep = PROTO4 + pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999 + pickle.STOP
    a = scan(deep)
    assert a.complete
    assert "depth" in symbols(a, "PICKLE-RESOURCE-BOMB")
    # 20,000 GLOBALs of one name, never memoised (fickling#111 globalLaughs.pt)
    laughs = PROTO4 + pickle.EMPTY_LIST + pickle.MARK
    laughs += g("collections", "OrderedDict") * 20_000 + pickle.APPENDS + pickle.STOP
    assert_unsafe(scan(laughs), "PICKLE-RESOURCE-BOMB")
    # builtins.bytearray(2**40): a 1 TiB allocation
    body = sg("builtins", "bytearray") + pickle.LONG1 + b"\x06" + (1 << 40).to_bytes(6, "little")
    assert_unsafe(scan(wrap4(body + pickle.TUPLE1 + pickle.REDUCE)), "PICKLE-RESOURCE-BOMB")
    # list(range(2**40))
    rng = sg("builtins", "range") + pickle.LONG1 + b"\x06" + (1 << 40).to_bytes(6, "little")
    rng += pickle.TUPLE1 + pickle.REDUCE
    body = sg("builtins", "list") + rng + pickle.TUPLE1 + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-RESOURCE-BOMB")
    # a module built by REDUCE with a 2**34-element weight
    body = sg("torch.nn.modules.linear", "Linear") + pickle.BININT + struct.pack("<i", 1 << 17)
    body += pickle.BININT + struct.pack("<i", 1 << 17) + pickle.TUPLE2 + pickle.REDUCE
    assert_unsafe(scan(wrap4(body)), "PICKLE-RESOURCE-BOMB")
    # torch.FloatStorage(2**30): 4 GiB
    body = sg("torch", "FloatStorage") + pickle.BININT + struct.pack("<i", 1 << 30)
    assert_unsafe(scan(wrap4(body + pickle.TUPLE1 + pickle.REDUCE)), "PICKLE-RESOURCE-BOMB")
    # small values of the same kinds are fine
    ok = sg("builtins", "bytearray") + pickle.BININT1 + b"\x10" + pickle.TUPLE1 + pickle.REDUCE
    assert_clean(scan(wrap4(ok)))


def test_never_imports_what_it_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    class Recorder(MetaPathFinder):
        def find_spec(self, fullname: str, path: object, target: object = None) -> None:
            attempts.append(fullname)

    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    monkeypatch.setattr(pickle, "loads", None)
    monkeypatch.setattr(pickle, "Unpickler", None)
    a = scan(reduce_call("bastion_canary_module", "boom", "x"))
    assert "bastion_canary_module" not in sys.modules
    assert not [m for m in attempts if m.startswith("bastion_canary")]
    assert "bastion_canary_module.boom" in a.globals


# ---------------------------------------------------------------------------------------------
# joblib


def _joblib_bytes(obj: object, tmp_path: Path) -> bytes:
    path = tmp_path / "m.joblib"
    joblib.dump(obj, path)
    return path.read_bytes()


def test_joblib_arrays_are_stepped_over(tmp_path: Path) -> None:
    obj = {
        "f": np.arange(1000, dtype=np.float32).reshape(10, 100),
        "fortran": np.asfortranarray(np.ones((7, 3))),
        "u": np.array(["ab", "cde"]),
        "struct": np.zeros(4, dtype=[("a", "<f4"), ("b", "<i8", (2,))]),
        "empty": np.zeros((0, 5)),
        "scalar": np.array(3.5),
        "obj": np.array([1, "x", None], dtype=object),
        "bool": np.ones(9, dtype=bool),
        "dt": np.array(["2020-01-01"], dtype="datetime64[D]"),
    }
    data = _joblib_bytes(obj, tmp_path)
    a = scan(data)
    assert_clean(a)
    assert a.end == len(data)
    loaded = joblib.load(tmp_path / "m.joblib")
    assert np.array_equal(loaded["f"], obj["f"])


def test_joblib_object_array_payload_is_analysed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (eval, ("1+1",))

    arr = np.empty(2, dtype=object)
    arr[0] = Evil()
    arr[1] = "benign"
    data = _joblib_bytes({"a": np.ones(3), "o": arr}, tmp_path)
    a = scan(data)
    assert "builtins.eval" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")


def test_joblib_code_after_an_array_is_seen(tmp_path: Path) -> None:
    data = _joblib_bytes([np.ones(4)], tmp_path)
    assert data.endswith(pickle.STOP)
    # replace the final STOP: after the array, a payload is appended to the outer stream
    tampered = data[:-1] + pickle.POP + sg("os", "system") + u("id") + pickle.TUPLE1
    tampered += pickle.REDUCE + pickle.STOP
    assert_unsafe(scan(tampered), "PICKLE-DANGEROUS-GLOBAL", Severity.CRITICAL)


def _wrapper(shape: bytes, dtype: str = "f8", align: bool = True, frame: bool = False) -> bytes:
    state = pickle.EMPTY_DICT + pickle.MARK
    state += u("subclass") + sg("numpy", "ndarray")
    state += u("shape") + shape + u("order") + u("C")
    state += u("dtype") + sg("numpy", "dtype") + u(dtype) + pickle.NEWFALSE + pickle.NEWTRUE
    state += pickle.TUPLE3 + pickle.REDUCE
    state += u("allow_mmap") + pickle.NEWFALSE
    if align:
        state += u("numpy_array_alignment_bytes") + pickle.BININT1 + b"\x10"
    state += pickle.SETITEMS
    body = sg("joblib.numpy_pickle", "NumpyArrayWrapper") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
    body += state + pickle.BUILD
    if frame:
        return PROTO4 + pickle.FRAME + struct.pack("<Q", len(body) + 2) + body
    return PROTO4 + body


def test_joblib_wrapper_state_is_checked() -> None:
    ok = _wrapper(pickle.BININT1 + b"\x02" + pickle.TUPLE1) + b"\x01\xff" + b"\x00" * 16 + b"."
    assert_clean(scan(ok))
    # a size past the data
    past = _wrapper(pickle.BININT + struct.pack("<i", 10**6) + pickle.TUPLE1) + b"\x00" * 8
    assert_unsafe(scan(past + b"."), "PICKLE-JOBLIB-ARRAY")
    # a negative dimension
    neg = _wrapper(pickle.BININT + struct.pack("<i", -4) + pickle.TUPLE1) + b"\x00" * 40
    assert_unsafe(scan(neg + b"."), "PICKLE-JOBLIB-ARRAY")
    # a dtype that is not a numpy.dtype
    body = _wrapper(pickle.BININT1 + b"\x01" + pickle.TUPLE1, dtype="zz9")
    assert_unsafe(scan(body + b"\x00" * 20 + b"."), "PICKLE-JOBLIB-ARRAY")
    # the wrapper's BUILD inside an open frame: joblib reads the array after the frame
    framed = _wrapper(pickle.BININT1 + b"\x01" + pickle.TUPLE1, frame=True)
    assert_unsafe(scan(framed + b"NN" + b"\x00" * 20 + b"."), "PICKLE-JOBLIB-ARRAY")


def test_joblib_dtype_elsize_desync() -> None:
    # corpus joblib/dtype_elsize_desync: NumPy ignores the state's elsize for built-in kinds,
    # so joblib reads 8*n bytes for an 'f8' array whatever the state says; trusting elsize
    # would make the analyser read 4*n and parse array bytes as opcodes.
    state = pickle.MARK + pickle.BININT1 + b"\x03" + u("<") + pickle.NONE * 3
    state += pickle.BININT1 + b"\x04" + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x00"
    state += pickle.TUPLE + pickle.BUILD
    body = _wrapper(pickle.BININT1 + b"\x02" + pickle.TUPLE1, align=False)
    tampered = body.replace(pickle.TUPLE3 + pickle.REDUCE, pickle.TUPLE3 + pickle.REDUCE + state)
    assert tampered != body
    assert_unsafe(scan(tampered + b"\x00" * 16 + b"."), "PICKLE-JOBLIB-ARRAY")


def test_joblib_side_file_wrapper() -> None:
    body = sg("joblib.numpy_pickle_compat", "NDArrayWrapper") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
    body += pickle.EMPTY_DICT + u("filename") + u("../../../tmp/evil.npy") + pickle.SETITEM
    body += pickle.BUILD
    a = scan(wrap4(body))
    assert_unsafe(a, "PICKLE-SIDE-FILE", Severity.HIGH)


# ---------------------------------------------------------------------------------------------
# torch


def _data_pkl(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.rnn = torch.nn.LSTM(4, 4)
        self.head = torch.nn.utils.weight_norm(torch.nn.Linear(4, 2))
        self.act = torch.nn.functional.relu


def _torch_objects() -> Iterator[tuple[str, object]]:
    warnings.simplefilter("ignore")  # deprecations of quantized tensors and weight_norm
    net = _Net()
    opt = torch.optim.AdamW(net.parameters())
    loss = sum(p.sum() for p in net.parameters())
    loss.backward()  # type: ignore[union-attr]
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    yield "state_dict", net.state_dict()
    yield "module", net
    yield "optimizer", opt.state_dict()
    yield "scheduler", sched.state_dict()
    yield "rng", torch.get_rng_state()
    yield (
        "checkpoint",
        {
            "model": net.state_dict(),
            "epoch": 3,
            "np_rng": np.random.get_state(),
            "when": datetime.datetime(2024, 1, 2),
            "hist": collections.OrderedDict(a=[1.0]),
        },
    )
    yield "sparse", torch.eye(3).to_sparse()
    yield "quantized", torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)
    yield "bf16", torch.ones(3, dtype=torch.bfloat16)
    yield "parameter", torch.nn.Parameter(torch.ones(2))


TORCH_SAMPLES = (
    "state_dict",
    "module",
    "optimizer",
    "scheduler",
    "rng",
    "checkpoint",
    "sparse",
    "quantized",
    "bf16",
    "parameter",
)


@pytest.mark.parametrize("name", TORCH_SAMPLES)
def test_torch_checkpoints_are_clean(name: str) -> None:
    with warnings.catch_warnings():
        obj = dict(_torch_objects())[name]
        data = _data_pkl(obj)
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        torch.load(buf, weights_only=False)
    a = scan(data)
    if name == "module":  # the user's own class: loading needs it importable
        assert worst(a) == Severity.MEDIUM
        assert symbols(a, "PICKLE-UNKNOWN-CLASS") == {f"{__name__}._Net"}
        assert a.complete
    else:
        assert_clean(a)
    if name not in ("sparse", "quantized", "scheduler"):
        assert "torch._utils._rebuild_tensor_v2" in a.globals


def test_torch_legacy_format_five_pickles() -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(_Net().state_dict(), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    pos = 0
    for _ in range(5):
        a = scan(data, start=pos, allow_trailing=True)
        assert_clean(a)
        pos = a.end
    assert pos < len(data)  # raw storages follow


def test_pickled_tensor_nested_bytes_are_analysed() -> None:
    # pickle.dumps(tensor) embeds a whole legacy torch.save file as bytes
    for proto in (2, 4, 5):
        assert_clean(scan(pickle.dumps(torch.ones(3), protocol=proto)))
    # a malicious legacy payload inside torch.storage._load_from_bytes
    inner = reduce_call("os", "system", "id")
    body = sg("torch.storage", "_load_from_bytes")
    body += pickle.SHORT_BINBYTES + bytes([len(inner)]) + inner + pickle.TUPLE1 + pickle.REDUCE
    a = scan(wrap4(body))
    assert "os.system" in symbols(a, "PICKLE-DANGEROUS-GLOBAL")


# ---------------------------------------------------------------------------------------------
# Benign Python and NumPy objects over every protocol


def _python_objects() -> dict[str, object]:
    return {
        "mixed": {
            "ints": [0, -1, 2**70, True],
            "floats": (1.5, float("inf")),
            "text": "h\u00e9llo\n",
            "bytes": b"\x00\xff",
            "set": {1, 2},
            "frozen": frozenset([3]),
            "none": None,
            "od": collections.OrderedDict(a=1),
            "dd": collections.defaultdict(list, {"k": [1]}),
            "counter": collections.Counter("abca"),
            "deque": collections.deque([1, 2]),
            "complex": 1 + 2j,
            "range": range(3),
            "slice": slice(1, 5, 2),
            "bytearray": bytearray(b"ab"),
            "date": datetime.date(2020, 1, 2),
            "delta": datetime.timedelta(seconds=3),
            "path": Path("/tmp/x"),
            "regex": re.compile("a+"),
        },
        "numpy": [
            np.arange(12).reshape(3, 4),
            np.float64(2.5),
            np.int32(7),
            np.array(["a", "bc"]),
            np.ones(3, dtype=[("x", "f4"), ("y", "i2")]),
            np.array([1, None], dtype=object),
            np.random.default_rng(3),
            np.random.RandomState(4),
            np.random.Generator(np.random.MT19937(5)),
            np.dtype("float16"),
            np.ma.masked_array([1, 2], mask=[0, 1]),
        ],
    }


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", ["mixed", "numpy"])
def test_benign_python_and_numpy_all_protocols(proto: int, name: str) -> None:
    obj = _python_objects()[name]
    data = pickle.dumps(obj, protocol=proto)
    assert_clean(scan(data))
    pickle.loads(data)  # the real loader agrees it is a valid pickle


def _sklearn_models() -> dict[str, object]:
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = make_classification(80, 5, random_state=0)
    return {
        "pipeline": Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]).fit(x, y),
        "forest": RandomForestClassifier(5, random_state=0).fit(x, y),
        "boosting": GradientBoostingClassifier(n_estimators=5).fit(x, y),
        "mlp": MLPClassifier(max_iter=5, random_state=0).fit(x, y),
        "svc": SVC().fit(x, y),
        "kmeans": KMeans(2, n_init=1, random_state=0).fit(x),
        "knn": KNeighborsClassifier(algorithm="kd_tree").fit(x, y),
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_models_pickled_and_joblib_dumped_are_clean(tmp_path: Path) -> None:
    for name, model in _sklearn_models().items():
        for proto in (2, 5):
            assert_clean(scan(pickle.dumps(model, protocol=proto)))
        path = tmp_path / f"{name}.joblib"
        joblib.dump(model, path)
        a = scan(path.read_bytes())
        assert_clean(a)
        assert a.end == path.stat().st_size
        assert type(joblib.load(path)) is type(model)


# ---------------------------------------------------------------------------------------------
# Sniffing, API shape, documentation, speed


def test_looks_like_pickle() -> None:
    assert looks_like_pickle(pickle.dumps([1], protocol=2))
    assert looks_like_pickle(pickle.dumps([1], protocol=5))
    assert looks_like_pickle(pickle.dumps({"a": 1}, protocol=0))
    assert looks_like_pickle(b"cos\nsystem\n(S'id'\ntR.")
    assert looks_like_pickle(b"(S'id'\nios\nsystem\n.")
    for text in (b"hello world", b'{"json": 1}', b"PK\x03\x04", b"\x93NUMPY", b"", b"# x\n"):
        assert not looks_like_pickle(text)


def test_rule_ids_are_documented() -> None:
    doc = pickle_scan.__doc__ or ""
    constants = set(pickle_scan.RULE_IDS)
    assert constants == {v for k, v in vars(pickle_vm).items() if k.startswith("R_")}
    for rule in constants:
        assert f"``{rule}``" in doc, rule


def test_memoryview_and_offsets() -> None:
    data = b"junk" + reduce_call("os", "system", "id")
    a = analyze_pickle(memoryview(bytearray(data)), path="p", member="m!x", start=4)
    assert a.complete
    assert a.end == len(data)
    f = next(f for f in a.findings if f.rule_id == "PICKLE-DANGEROUS-GLOBAL")
    assert f.member == "m!x"
    assert f.offset is not None
    assert f.offset > 4
    assert a.protocol == 4


def test_large_state_dict_is_fast() -> None:
    sd = {f"layer{i}.weight": torch.zeros(2, 2) for i in range(3000)}
    data = _data_pkl(sd)
    start = time.perf_counter()
    a = scan(data)
    elapsed = time.perf_counter() - start
    assert_clean(a)
    assert elapsed < 1.0, elapsed
