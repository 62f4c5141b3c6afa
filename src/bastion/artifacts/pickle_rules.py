"""Which pickle globals are known to be dangerous, and why (internal; used by ``pickle_scan``).

A pickle can name any importable object (``GLOBAL``, ``STACK_GLOBAL``, ``INST``) and the loader
imports the module and walks the attribute path. This module answers one question about a full
dotted name: is it *known* to give an attacker code execution, file or network access, a nested
deserializer, or a way to reach any other object (a resolver)? The allowlist
(:mod:`bastion.artifacts.pickle_allowlist`) answers the other question (is it known safe); a name
that is neither is *unknown* and ``pickle_scan`` grades it by how the stream uses it.

Matching is on components, never on substrings, and covers every way a name can be spelt:

- the name as written and the name after Python 2 import fixing (``__builtin__`` ->
  ``builtins``, ``commands`` -> ``subprocess``, ``itertools.imap`` -> ``builtins.map``), which
  ``pickle`` applies for protocols < 3 (picklescan/modelscan bypasses via ``__builtin__``);
- every attribute path through a module: ``torch.serialization.os.system`` reaches ``os.system``
  through the ``os`` that ``torch.serialization`` imported (GHSA-9gvj-pp9x-gcfr class of
  picklescan bypasses), so every suffix of the attribute path is checked as a name of its own;
- dunder attributes anywhere in the attribute path (``X.__globals__``, ``X.__class__``,
  ``X.__subclasses__``, ``X.__init__.__globals__['os']``): object-graph walking, never needed by
  a model file;
- names that only work because of Unicode/whitespace quirks are handled by the caller
  (``PICKLE-SUSPICIOUS-NAME``), which also checks their normalised spelling here.
"""

from __future__ import annotations

import _compat_pickle
import re
import unicodedata
from typing import Final

__all__ = ["danger_reason", "fix_imports", "name_is_well_formed", "normalized_spellings"]

#: Whole modules (and everything under them) that give code execution, process control, file
#: system or network access, import machinery, debuggers/profilers that exec strings, or nested
#: deserializers. Sources: picklescan ``_unsafe_globals``, modelscan ``unsafe_globals``,
#: fickling ``UNSAFE_IMPORTS``, and the advisories cited in tests/artifacts/test_pickle_scan.py.
_DANGEROUS_MODULES: Final = frozenset(
    {
        # processes and the OS
        "os",
        "posix",
        "nt",
        "_posixsubprocess",
        "subprocess",
        "commands",
        "popen2",
        "pty",
        "pipes",
        "platform",
        "multiprocessing",
        "_multiprocessing",
        "concurrent",
        "signal",
        "_signal",
        "threading",
        "_thread",
        "thread",
        "sched",
        "atexit",
        "resource",
        "sys",
        "_osx_support",
        "_aix_support",
        "_pyrepl",
        "posixpath",
        "ntpath",
        "genericpath",
        "pwd",
        "grp",
        # code execution, compilation and import machinery
        "runpy",
        "code",
        "codeop",
        "compileall",
        "py_compile",
        "marshal",
        "imp",
        "importlib",
        "_imp",
        "_frozen_importlib",
        "_frozen_importlib_external",
        "zipimport",
        "pkgutil",
        "site",
        "sitecustomize",
        "usercustomize",
        "inspect",
        "gc",
        "ctypes",
        "_ctypes",
        "cffi",
        "dis",
        "ast",
        "symtable",
        "__main__",
        # indirection primitives: call or attribute-fetch anything
        "operator",
        "_operator",
        "functools",
        "_functools",
        "itertools",
        "copy",
        "weakref",
        "_weakref",
        "contextlib",
        "asyncio",
        "_asyncio",
        "selectors",
        "select",
        # debuggers, profilers, test runners (exec strings)
        "pdb",
        "bdb",
        "trace",
        "tracemalloc",
        "cProfile",
        "profile",
        "_lsprof",
        "timeit",
        "doctest",
        "unittest",
        "test",
        "pydoc",
        "idlelib",
        "turtledemo",
        "turtle",
        "tkinter",
        "_tkinter",
        "lib2to3",
        "rlcompleter",
        "readline",
        "cmd",
        "antigravity",
        "this",
        "IPython",
        "ipykernel",
        "jupyter_client",
        # files and archives
        "io",
        "_io",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "linecache",
        "filecmp",
        "tarfile",
        "zipfile",
        "gzip",
        "bz2",
        "lzma",
        "shelve",
        "dbm",
        "sqlite3",
        "_sqlite3",
        "mmap",
        "codecs",
        "logging",
        "syslog",
        "mailbox",
        "netrc",
        # network
        "socket",
        "_socket",
        "ssl",
        "_ssl",
        "socketserver",
        "http",
        "httplib",
        "urllib",
        "urllib2",
        "urllib3",
        "requests",
        "httpx",
        "aiohttp",
        "ftplib",
        "smtplib",
        "smtpd",
        "imaplib",
        "poplib",
        "nntplib",
        "telnetlib",
        "xmlrpc",
        "webbrowser",
        "wsgiref",
        "paramiko",
        "fabric",
        "pexpect",
        "boto3",
        "botocore",
        "fsspec",
        "huggingface_hub",
        # packaging and environments
        "distutils",
        "setuptools",
        "pip",
        "ensurepip",
        "venv",
        "virtualenv",
        "pkg_resources",
        # nested deserializers and code-carrying serializers
        "pickle",
        "_pickle",
        "pickletools",
        "copyreg",
        "copy_reg",
        "cPickle",
        "dill",
        "cloudpickle",
        "joblib",
        "jsonpickle",
        "yaml",
        "ruamel",
        "srsly",
        "types",
        # evaluators of expressions given as strings
        "sympy",
        "numexpr",
        "jinja2",
        "mako",
        "tensorflow",
        "keras",
        "tf_keras",
        "fire",
        # compatibility shims that re-export other modules (six.moves.builtins is builtins)
        "six",
        "future",
        "past",
        "_distutils_hack",
        "_interpreters",
        "_xxsubinterpreters",
        "_testcapi",
        "_testinternalcapi",
        "mailcap",
        "xxsubtype",
        "_posixshmem",
        "mlflow",
        "wandb",
    }
)

#: Names (and everything under them) inside otherwise trusted packages that are gadgets.
_DANGEROUS_PREFIXES: Final = frozenset(
    {
        # torch: nested loaders, code compilers, process runners, TorchScript, package importers
        "torch.load",
        "torch.serialization.load",
        "torch.serialization._load",
        "torch.serialization._legacy_load",
        "torch.serialization.os",
        "torch.hub",
        "torch.jit",
        "torch.package",
        "torch._inductor",
        "torch._dynamo",
        "torch._functorch",
        "torch._export",
        "torch.export",
        "torch.compiler",
        "torch.compile",
        "torch.fx.graph_module",
        "torch.fx._symbolic_trace",
        "torch.fx.experimental",
        "torch.utils.collect_env",
        "torch.utils.cpp_extension",
        "torch.utils.bottleneck",
        "torch.utils.data.datapipes",
        "torch.utils._config_module",
        "torch.utils.model_zoo",
        "torch.utils.tensorboard",
        "torch.utils.benchmark",
        "torch.utils.hipify",
        "torch.utils.checkpoint",
        "torch.distributed",
        "torch.multiprocessing",
        "torch.testing",
        "torch.ops",
        "torch._ops",
        "torch.library",
        "torch.classes",
        "torch._classes",
        "torch.backends.cudnn.rnn",
        "torch._C._jit",
        "torch._C.import_ir_module",
        "torch._C.import_ir_module_from_buffer",
        "torch._C._load_for_lite_interpreter",
        "torch._C._load_jit_module_from_bytes",
        "torch._C._load_jit_module_from_file",
        "torch._C._import_ir_module_from_package",
        "torch._C.CompilationUnit",
        "torch._C.ScriptModule",
        "torch._C.ScriptFunction",
        "torch._C._distributed_c10d",
        "torch._C._dynamo",
        "torch.storage._load_from_bytes.__globals__",
        "torch._utils._import_dotted_name",
        "torch._six",
        "numpy.compat",
        "numpy.lib.utils",
        "torch.storage.TypedStorage._new_shared_filename",
        "torch.storage.UntypedStorage._new_shared_filename",
        "torch.storage.UntypedStorage.from_file",
        "torch.storage.TypedStorage.from_file",
        "torch.from_file",
        "torch.save",
        "torch.set_default_tensor_type",
        "torch.set_default_device",
        "torch.set_default_dtype",
        "torch.cuda.memory._record_memory_history",
        "torch.cuda.memory._dump_snapshot",
        "torch.overrides",
        # numpy: nested/side-file loaders, exec helpers, compilers, ctypes
        "numpy.load",
        "numpy.loads",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.fromfile",
        "numpy.fromregex",
        "numpy.memmap",
        "numpy.save",
        "numpy.savez",
        "numpy.savez_compressed",
        "numpy.savetxt",
        "numpy.testing",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.ctypeslib",
        "numpy.DataSource",
        "numpy.lib.npyio",
        "numpy.lib._npyio_impl",
        "numpy.lib.format",
        "numpy.lib._format_impl",
        "numpy.lib.format.read_array",
        "numpy.lib._datasource",
        "numpy.lib._utils_impl",
        "numpy.core._internal",
        "numpy._core._internal",
        "numpy.core.memmap",
        "numpy._core.memmap",
        "numpy.core.records.fromfile",
        "numpy._core.records.fromfile",
        "numpy.rec.fromfile",
        "numpy.ma.load",
        "numpy.ma.loads",
        "numpy.ma.dump",
        "numpy.ma.dumps",
        "numpy.ma.core.load",
        "numpy.ma.core.loads",
        "numpy.ma.core.dump",
        "numpy.ma.core.dumps",
        "numpy.matlib",
        "numpy._pytesttester",
        "numpy.random._pickle.BitGenerators",
        # scipy / sklearn / pandas helpers that read files, download or evaluate strings
        "scipy.io",
        "scipy.weave",
        "scipy._lib._testutils",
        "scipy.datasets",
        "sklearn.datasets",
        "sklearn.utils._testing",
        "sklearn.utils._show_versions",
        "sklearn.externals.joblib",
        "sklearn.externals._packaging",
        "pandas.read_pickle",
        "pandas.HDFStore",
        "pandas.ExcelFile",
        "pandas.ExcelWriter",
        "pandas.core.frame.DataFrame.to_pickle",
        "pandas.DataFrame.to_pickle",
        "docker",
        "git",
        "pandas.io",
        "pandas.eval",
        "pandas.core.computation",
        "pandas.read_csv",
        "pandas.read_table",
        "pandas.read_sql",
        "pandas.read_html",
        "pandas.read_json",
        "pandas.read_excel",
        "pandas.read_hdf",
        "pandas.read_parquet",
        "pandas.read_feather",
        "pandas.read_orc",
        "pandas.read_sas",
        "pandas.read_stata",
        "pandas.read_spss",
        "pandas.read_xml",
        "pandas.read_clipboard",
        "pandas.read_fwf",
        "pandas.read_gbq",
        "pandas.DataFrame.eval",
        "pandas.DataFrame.query",
        "pandas.core.frame.DataFrame.eval",
        "pandas.core.frame.DataFrame.query",
        # ML libraries that load models, run code or download
        "transformers.dynamic_module_utils",
        "transformers.modeling_utils.PreTrainedModel.from_pretrained",
        "transformers.AutoModel",
        "transformers.pipeline",
        "transformers.pipelines",
        "transformers.models.auto",
        "diffusers.utils.dynamic_modules_utils",
        "safetensors.torch.load_file",
        "onnx.load",
        "onnxruntime",
        "h5py.File",
        "tokenizers.Tokenizer.from_file",
        "lightgbm.Booster",
        "xgboost.Booster",
        "catboost",
        "ray.cloudpickle",
        "ray",
        "dask",
        "accelerate.commands",
        "accelerate.utils.launch",
        "gradio",
        "streamlit",
        # builtins that execute, resolve, open, or call back
        "builtins.eval",
        "builtins.exec",
        "builtins.execfile",
        "builtins.compile",
        "builtins.open",
        "builtins.file",
        "builtins.__import__",
        "builtins.__loader__",
        "builtins.__spec__",
        "builtins.__build_class__",
        "builtins.getattr",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.hasattr",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.dir",
        "builtins.input",
        "builtins.raw_input",
        "builtins.breakpoint",
        "builtins.help",
        "builtins.exit",
        "builtins.quit",
        "builtins.copyright",
        "builtins.credits",
        "builtins.license",
        "builtins.apply",
        "builtins.reload",
        "builtins.map",
        "builtins.filter",
        "builtins.iter",
        "builtins.next",
        "builtins.aiter",
        "builtins.anext",
        "builtins.memoryview",
        "builtins.type",
        "builtins.super",
        "builtins.classmethod",
        "builtins.staticmethod",
        "builtins.property",
        "builtins.object.__subclasses__",
        "builtins.str.format",
        "builtins.str.format_map",
        # stdlib odds and ends known as gadgets
        "uuid._get_command_stdout",
        "uuid._popen",
        "uuid._ifconfig_getnode",
        "uuid._ip_getnode",
        "uuid._arp_getnode",
        "uuid._lanscan_getnode",
        "uuid._netstat_getnode",
        "uuid._ipconfig_getnode",
        "uuid._netbios_getnode",
        "uuid._find_mac",
        "uuid._find_mac_near_keyword",
        "uuid._find_mac_under_heading",
        "ensurepip._run_pip",
        "imaplib.IMAP4_stream",
        "ctypes.util",
        "string.Formatter",
        "email.utils",
        "mimetypes.init",
        "mimetypes.read_mime_types",
        "sysconfig",
        "locale.setlocale",
        "zlib.decompressobj",
        "xml.dom.minidom.parse",
        "xml.etree.ElementTree.parse",
        "xml.etree.ElementTree.iterparse",
        "xml.sax",
        "plistlib.load",
        "plistlib.loads",
        "json.load",
        "configparser",
        "tomllib.load",
        "curses",
        "crypt",
        "spwd",
        "faulthandler",
        "ensurepip",
        "encodings",
    }
)

#: Exact dunder names that are ordinary in pickles: reconstructor helpers and ``__main__``.
_BENIGN_DUNDERS: Final = frozenset(
    {
        "__main__",
        "__builtin__",
        "__newobj__",
        "__newobj_ex__",
        "__randomstate_ctor",
        "__generator_ctor",
        "__bit_generator_ctor",
        "__mp_main__",
    }
)

#: Most dotted parts a global may have before it is refused outright (keeps checks linear).
_MAX_PARTS: Final = 64

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Module names whose attribute ``path`` is harmless string/stat manipulation; a path through
#: ``os`` to them is still dangerous (``os`` itself is), but ``os.path.join`` referenced as
#: ``posixpath.join`` is graded by use, not as known-dangerous.
_PATH_HELPER_MODULES: Final = frozenset({"posixpath", "ntpath", "genericpath", "os.path"})


def fix_imports(module: str, name: str) -> tuple[str, str]:
    """The (module, name) Python 3 imports for a protocol < 3 pickle (``_compat_pickle``)."""
    key = (module, name)
    if key in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[key]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


def name_is_well_formed(module: str, name: str) -> bool:
    """True when both parts are dotted Python identifiers (ASCII, no whitespace, no empties)."""
    if not module or not name or len(module) + len(name) > 512:
        return False
    return all(_IDENTIFIER.match(p) for p in module.split(".")) and all(
        _IDENTIFIER.match(p) for p in name.split(".")
    )


def normalized_spellings(text: str) -> set[str]:
    """Spellings a lenient loader or platform might turn ``text`` into (NFKC, stripped, case)."""
    out = {text}
    nfkc = unicodedata.normalize("NFKC", text)
    out.add(nfkc)
    for t in (text, nfkc):
        stripped = "".join(t.split())
        out.add(stripped)
        out.add(stripped.lower())
        out.add(t.strip().lower())
        out.add(t.replace("\x00", ""))
    return out


def _module_is_dangerous(parts: list[str], start: int) -> str | None:
    """Danger reason when ``parts[start:]`` starts with a dangerous module or prefix."""
    head = parts[start]
    if head in _DANGEROUS_MODULES:
        if head in ("posixpath", "ntpath", "genericpath") and start == 0:
            return None
        if head == "os" and start == 0 and len(parts) > 2 and parts[1] == "path":
            return None
        if head == "__main__" and start == 0:
            return None
        return f"module {head!r} gives code execution, system or network access"
    joined = head
    for i in range(start + 1, len(parts)):
        joined = f"{joined}.{parts[i]}"
        if joined in _DANGEROUS_PREFIXES:
            return f"{joined!r} is a known code-execution, file or network gadget"
    if head in _DANGEROUS_PREFIXES:
        return f"{head!r} is a known gadget"
    return None


def danger_reason(module: str, name: str) -> str | None:
    """Why ``module`` + ``name`` is known to be dangerous, or None when it is not known to be.

    Args:
        module: the module part, as the pickle imports it (after fixing Python 2 names).
        name: the attribute path inside the module (may be dotted, protocol 4).

    Returns:
        A short reason, or None.
    """
    mod_parts = module.split(".")
    name_parts = name.split(".")
    parts = mod_parts + name_parts
    if len(parts) > _MAX_PARTS:
        return f"an attribute path of {len(parts)} parts: no real global is that deep"
    # The module path itself, from its top.
    reason = _module_is_dangerous(parts, 0)
    if reason:
        return reason
    # __main__-like modules of packages run their code when imported: ``pip.__main__``.
    for p in mod_parts[1:]:
        if p.startswith("__") and p.endswith("__"):
            return f"importing {module!r} runs a package's main code"
    # Every point of the attribute path: an attribute that is a module alias or a gadget.
    for i in range(len(mod_parts), len(parts)):
        p = parts[i]
        if p.startswith("__") and p.endswith("__") and p not in _BENIGN_DUNDERS:
            return f"attribute path walks the dunder {p!r} (object-graph traversal)"
        reason = _module_is_dangerous(parts, i)
        if reason:
            return f"attribute path through {'.'.join(parts[:i])!r}: {reason}"
    return None
