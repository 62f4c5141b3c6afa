"""One scanner per model-file format, listed explicitly in :data:`SCANNERS` (stable API).

Detection runs every scanner's ``matches`` on the content, in this order, and scans the content
as every format that matches (see :meth:`~.interface.ScanContext.scan_content`). Containers come
first so a polyglot's archive reading is reported before its pickle reading.

Rule ids of the scanners and the driver (the pickle analyser's ``PICKLE-*`` rules are listed in
:mod:`bastion.artifacts.pickle_scan`); severities are the defaults, ``-`` where it depends:

=============================== ======== ===================================================
``SCAN-MALFORMED``              high     a known format that does not parse (fails closed)
``SCAN-LIMIT-*``                high     a limit: ``TIME``, ``MEMORY``, ``SIZE``, ``DEPTH``,
                                         ``MEMBERS``, ``EXPANDED``, ``RATIO`` (bombs),
                                         ``HEADER``, ``PICKLES``, ``NODES``, ``OBJECTS``
``SCAN-WORKER-CRASHED``         high     the worker scanning the file died
``SCAN-INTERNAL-ERROR``         high     a scanner bug (the file fails closed)
``SCAN-UNCONFIRMED-FORMAT``     info     sniffed bytes that only looked like a weak format
``FORMAT-MISMATCH``             high     named like a model, content is no known format
``POLYGLOT``                    medium   valid as several formats; each was scanned
``SYMLINK-ESCAPE``              high     a link in a scanned folder leaves it (not followed)
``ZIP-PREFIX-DATA``             -        data before the archive (high: another archive)
``ZIP-DIRECTORY-DIFFERENTIAL``  high     miniz (torch) and zipfile read different directories
``ZIP-HIDDEN-ENTRY``            medium   a local entry the directory does not list
``ZIP-DUPLICATE-NAME``          medium   two members with one name (both scanned)
``ZIP-NAME-MISMATCH``           medium   directory and local header disagree on a name
``ZIP-OVERLAPPING-ENTRIES``     high     members share bytes (overlap zip bomb)
``ZIP-SIZE-MISMATCH``           medium   a member's declared size is not its size
``TAR-DUPLICATE-NAME``          medium   two tar members with one name
``ARCHIVE-PATH-TRAVERSAL``      high     a member path that leaves the extraction folder
``ARCHIVE-LINK``                -        a tar link member (high when it points outside)
``ARCHIVE-ODD-NAME``            medium   control characters or backslashes in a name
``ARCHIVE-SPECIAL-FILE``        medium   a device or FIFO tar member
``ARCHIVE-UNSUPPORTED``         high     a 7z archive (not opened: fails closed)
``COMPRESSED-TRAILING-DATA``    low      bytes after a compressed stream
``TORCHSCRIPT-ARCHIVE``         medium   TorchScript: torch.load runs its code
``TORCH-SEVERAL-DATA-PKL``      medium   more than one ``data.pkl``
``NPY-OBJECT-ARRAY``            low      an object array (its pickle is analysed)
``NPY-TRAILING-DATA``           low      bytes after the array data
``NPY-LARGE-HEADER``            medium   a header numpy refuses without allow_pickle
``SAFETENSORS-MALFORMED``       high     header not a JSON object of valid tensor entries
``SAFETENSORS-OFFSETS``         high     offsets out of bounds, overlapping or with gaps
``SAFETENSORS-DTYPE-SHAPE``     high     a byte range that does not fit dtype and shape
``SAFETENSORS-DUPLICATE-KEY``   high     a header key given twice
``ONNX-EXTERNAL-DATA-PATH``     -        external data outside the folder (high) or missing
``ONNX-CUSTOM-DOMAIN``          high     operators that need a custom (native) library
``ONNX-RUNTIME-DOMAIN``         low      ONNX Runtime's contrib operators
``KERAS-LAMBDA-BYTECODE``       critical marshalled Python bytecode in a Lambda
``KERAS-DANGEROUS-MODULE``      critical a config object from os, subprocess, builtins, ...
``KERAS-CUSTOM-OBJECT``         high     a config object from outside Keras
``KERAS-LAMBDA-FUNCTION``       high     a Lambda calling a named Python function
``KERAS-FUNCTION-CALL``         high     a Keras function that is no activation/loss/metric
``KERAS-EXTERNAL-LOAD``         high     a layer that loads another artifact (TFSMLayer)
``KERAS-TORCH-MODULE``          high     TorchModuleWrapper (its payload is scanned too)
``HDF5-EXTERNAL-FILE``          -        external link/storage/VDS (high when outside)
``PICKLE-TRAILING-DATA``        -        bytes after the last pickle (high when loaded)
``PICKLE-NOT-A-PICKLE``         info     a sniffed member that is no valid pickle
=============================== ======== ===================================================
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
