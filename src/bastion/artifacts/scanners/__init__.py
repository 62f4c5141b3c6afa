"""One scanner per model-file format, listed explicitly in :data:`SCANNERS` (stable API).

Detection runs every scanner's ``matches`` on the content, in this order, and scans the content
as every format that matches (see :meth:`~.interface.ScanContext.scan_content`). Containers come
first so a polyglot's archive reading is reported before its pickle reading.
"""

from __future__ import annotations

from bastion.artifacts.scanners.compressed import CompressedScanner
from bastion.artifacts.scanners.hdf5 import Hdf5Scanner
from bastion.artifacts.scanners.interface import (
    BudgetExceeded,
    PickleRole,
    ScanContext,
    Scanner,
)
from bastion.artifacts.scanners.keras import KerasConfigScanner
from bastion.artifacts.scanners.npy import NpyScanner
from bastion.artifacts.scanners.onnx_model import OnnxScanner
from bastion.artifacts.scanners.pickle_stream import PickleScanner
from bastion.artifacts.scanners.safetensors_header import SafetensorsScanner
from bastion.artifacts.scanners.sevenzip import SevenZipScanner
from bastion.artifacts.scanners.tar_archive import TarScanner
from bastion.artifacts.scanners.zip_archive import ZipScanner

__all__ = [
    "SCANNERS",
    "BudgetExceeded",
    "CompressedScanner",
    "Hdf5Scanner",
    "KerasConfigScanner",
    "NpyScanner",
    "OnnxScanner",
    "PickleRole",
    "PickleScanner",
    "SafetensorsScanner",
    "ScanContext",
    "Scanner",
    "SevenZipScanner",
    "TarScanner",
    "ZipScanner",
]

#: Every scanner, in detection order.
SCANNERS: tuple[Scanner, ...] = (
    ZipScanner(),
    TarScanner(),
    SevenZipScanner(),
    CompressedScanner(),
    NpyScanner(),
    SafetensorsScanner(),
    Hdf5Scanner(),
    OnnxScanner(),
    KerasConfigScanner(),
    PickleScanner(),
)
