"""Model artifacts: static scanning (and, beside it, signing and verification) (stable API).

Scanning never imports, unpickles or loads what it reads: :func:`scan_paths` is ``bastion
scan``; the formats live in :mod:`bastion.artifacts.scanners`, the pickle analyser in
:mod:`bastion.artifacts.pickle_scan`, the JSON and SARIF reports in
:mod:`bastion.artifacts.report`.
"""

from bastion.artifacts.findings import (
    Atlas,
    FileResult,
    Finding,
    ScanReport,
    ScanStatus,
    Severity,
)
from bastion.artifacts.pickle_scan import (
    PickleAnalysis,
    PickleLimits,
    analyze_pickle,
    looks_like_pickle,
)
from bastion.artifacts.provenance import DataDigest, Provenance
from bastion.artifacts.report import (
    report_summary,
    report_to_dict,
    report_to_sarif,
)
from bastion.artifacts.scan import (
    ScanTarget,
    collect_targets,
    scan_bytes,
    scan_file,
    scan_paths,
    scan_targets,
)
from bastion.artifacts.signing import SignOptions, SignResult, sign
from bastion.artifacts.verification import VerifiedModel, default_signature_path, verify

__all__ = [
    "Atlas",
    "DataDigest",
    "FileResult",
    "Finding",
    "PickleAnalysis",
    "PickleLimits",
    "Provenance",
    "ScanReport",
    "ScanStatus",
    "ScanTarget",
    "Severity",
    "SignOptions",
    "SignResult",
    "VerifiedModel",
    "analyze_pickle",
    "collect_targets",
    "default_signature_path",
    "looks_like_pickle",
    "report_summary",
    "report_to_dict",
    "report_to_sarif",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "scan_targets",
    "sign",
    "verify",
]
