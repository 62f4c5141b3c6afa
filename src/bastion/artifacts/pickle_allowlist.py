"""Exact names a pickle may use without a finding (internal; used by ``pickle_scan``).

Two sets, both matched on the *exact* full dotted name (``torch.nn.modules.linear.Linear``
matches, ``torch.nn.modules.linear.os`` never does):

- :data:`SAFE_CALLABLES`: may be called with any arguments while loading (``REDUCE``, ``INST``,
  ``OBJ``): constructors of plain data and the rebuild helpers that PyTorch, NumPy and the
  standard library write into their own pickles. A helper whose arguments include something it
  calls or instantiates is *also* listed in ``pickle_scan._FORWARDERS``, which checks those
  arguments as calls of their own.
- :data:`SAFE_CLASSES`: classes that may be created without running ``__init__``
  (``NEWOBJ``, ``copyreg.__newobj__``, ``copyreg._reconstructor``) and given state with
  ``BUILD``. Generated from the installed torch, NumPy, SciPy, scikit-learn and joblib by
  ``scripts/gen_pickle_allowlist.py`` into :mod:`bastion.artifacts._pickle_allowlist_data`
  (both numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` spellings), plus the curated standard
  library and ecosystem classes below. Classes of those packages may also be *called*, since
  their constructors only store parameters (the generator leaves out the modules whose classes
  open files, sockets or processes).

Sources: torch ``_weights_only_unpickler._get_allowed_globals``, fickling ``ml.ML_ALLOWLIST``,
and the pickles that torch/numpy/scikit-learn write for their own objects (tests pickle them).
"""

from __future__ import annotations

from typing import Final

from bastion.artifacts._pickle_allowlist_data import GENERATED_CALLABLES, GENERATED_CLASSES

__all__ = ["SAFE_CALLABLES", "SAFE_CLASSES", "is_safe_callable", "is_safe_class"]

_NUMPY_CORE_CALLABLES: Final = (
    "multiarray._reconstruct",
    "multiarray.scalar",
    "_multiarray_umath._reconstruct",
    "_multiarray_umath.scalar",
    "numeric._frombuffer",
)

_CURATED_CALLABLES: Final = frozenset(
    {
        # builtins: plain data constructors (protocol 0-2 write some of these)
        "builtins.object",
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
        "_codecs.encode",
        "copyreg._reconstructor",
        "copyreg.__newobj__",
        "copyreg.__newobj_ex__",
        # standard library value classes
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "collections.deque",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "re._compile",
        "array.array",
        "array._array_reconstructor",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "argparse.Namespace",
        "types.SimpleNamespace",
        "logging.getLogger",
        "_io.BytesIO",
        "io.BytesIO",
        "zoneinfo.ZoneInfo",
        "zoneinfo.ZoneInfo._unpickle",  # reached as getattr(zoneinfo.ZoneInfo, "_unpickle")
        "zoneinfo._common._load_tzdata",
        "ipaddress.IPv4Address",
        "ipaddress.IPv6Address",
        "enum.Enum",
        "enum.IntEnum",
        "enum.Flag",
        "enum.IntFlag",
        # torch (weights_only allowlist and tensor rebuild helpers)
        "torch.Size",
        "torch.device",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.nn.parameter.UninitializedParameter",
        "torch.nn.parameter.UninitializedBuffer",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.storage._load_from_bytes",
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
        "torch._utils._rebuild_mtia_tensor",
        "torch._utils._rebuild_sparse_csr_tensor",
        "torch._tensor._rebuild_from_type",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.backends.thnn._get_thnn_function_backend",
        # TorchScript archives' pickles (read by torch.jit.load's own C++ unpickler)
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
        "torch.return_types.max",
        "torch.return_types.min",
        "torch.return_types.sort",
        "torch.return_types.topk",
        # NumPy
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.__RandomState_ctor",
        "numpy.ma.core._mareconstruct",
        "numpy.core._ufunc_reconstruct",
        "numpy._core._ufunc_reconstruct",
        # joblib's array wrappers (the loader then reads the raw array bytes that follow)
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
        # pandas objects' own reconstructors (pandas/_libs/internals.pyx, tslibs); the
        # index helpers _new_Index & co. only instantiate their class argument and are
        # checked as forwarders in pickle_vm
        "pandas._libs.internals._unpickle_block",
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "pandas._libs.tslibs.nattype.__nat_unpickle",
        "pandas.core.indexes.base._new_Index",
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "pandas.core.indexes.period._new_PeriodIndex",
        # third-party classes seen in benign training checkpoints (fickling ML_ALLOWLIST)
        "transformers.training_args.OptimizerNames",
        "transformers.trainer_utils.EvaluationStrategy",
        "transformers.trainer_utils.FSDPOption",
        "transformers.trainer_utils.HubStrategy",
        "transformers.trainer_utils.IntervalStrategy",
        "transformers.trainer_utils.SaveStrategy",
        "transformers.trainer_utils.SchedulerType",
        "transformers.trainer_utils.ShardedDDPOption",
        "transformers.debug_utils.DebugOption",
        "accelerate.utils.dataclasses.DistributedType",
        "trl.trainer.dpo_config.FDivergenceType",
        "sentence_transformers.training_args.BatchSamplers",
        "sentence_transformers.training_args.MultiDatasetBatchSamplers",
        "tokenizers.AddedToken",
        "pyannote.audio.core.task.Problem",
        "pyannote.audio.core.task.Resolution",
    }
)

_CURATED_CLASSES: Final = frozenset(
    {
        "transformers.training_args.TrainingArguments",
        "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
        "transformers.trainer_pt_utils.AcceleratorConfig",
        "transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig",
        "transformers.integrations.deepspeed.HfDeepSpeedConfig",
        "accelerate.state.PartialState",
        "accelerate.utils.deepspeed.HfDeepSpeedConfig",
        "accelerate.utils.dataclasses.DeepSpeedPlugin",
        "trl.trainer.sft_config.SFTConfig",
        "trl.trainer.dpo_config.DPOConfig",
        "trl.trainer.grpo_config.GRPOConfig",
        "trl.trainer.kto_config.KTOConfig",
        "sentence_transformers.training_args.SentenceTransformerTrainingArguments",
        "pyannote.audio.core.task.Specifications",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.NDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle_compat.ZNDArrayWrapper",
    }
)


def _numpy_spellings() -> frozenset[str]:
    out = set()
    for tail in _NUMPY_CORE_CALLABLES:
        out.add(f"numpy.core.{tail}")
        out.add(f"numpy._core.{tail}")
    return frozenset(out)


SAFE_CALLABLES: Final[frozenset[str]] = (
    _CURATED_CALLABLES | _numpy_spellings() | GENERATED_CALLABLES
)
SAFE_CLASSES: Final[frozenset[str]] = _CURATED_CLASSES | GENERATED_CLASSES | SAFE_CALLABLES


def is_safe_callable(name: str) -> bool:
    """Whether calling ``name`` with any arguments while loading is known to be harmless."""
    return name in SAFE_CALLABLES


def is_safe_class(name: str) -> bool:
    """Whether creating ``name`` without ``__init__`` and setting its state is harmless."""
    return name in SAFE_CLASSES
