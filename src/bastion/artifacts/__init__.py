"""Model artifacts: static scanning (and, beside it, signing and verification) (stable API).

Scanning never imports, unpickles or loads what it reads: :func:`scan_paths` is ``bastion
scan``; the formats live in :mod:`bastion.artifacts.scanners`, the pickle analyser in
:mod:`bastion.artifacts.pickle_scan`, the JSON and SARIF reports in
:mod:`bastion.artifacts.report`.

The names below are loaded on first use (PEP 562 ``__getattr__`` over an explicit table):
``import bastion.artifacts.scan`` then costs the scanner's own imports, not signing's
(model-signing, cryptography) or the workspace database's, which matters to the start-up
of ``bastion scan``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy_exports

if TYPE_CHECKING:
    from bastion.artifacts.findings import (
        Atlas,
        FileResult,
        Finding,
        ScanReport,
        ScanStatus,
        Severity,
    )
    from bastion.artifacts.loading import (
        ModelFormat,
        detect_format,
        load_model,
    )
    from bastion.artifacts.pickle_scan import (
        PickleAnalysis,
        PickleLimits,
        analyze_pickle,
        looks_like_pickle,
    )
    from bastion.artifacts.provenance import (
        DataDigest,
        Provenance,
    )
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
    from bastion.artifacts.signing import (
        SignOptions,
        SignResult,
        sign,
    )
    from bastion.artifacts.unpickler import (
        RestrictedUnpickler,
        load_pickle_file,
        restricted_loads,
    )
    from bastion.artifacts.verification import (
        VerifiedModel,
        default_signature_path,
        verify,
    )

__all__ = [
    "Atlas",
    "DataDigest",
    "FileResult",
    "Finding",
    "ModelFormat",
    "PickleAnalysis",
    "PickleLimits",
    "Provenance",
    "RestrictedUnpickler",
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
    "detect_format",
    "load_model",
    "load_pickle_file",
    "looks_like_pickle",
    "report_summary",
    "report_to_dict",
    "report_to_sarif",
    "restricted_loads",
    "scan_bytes",
    "scan_file",
    "scan_paths",
    "scan_targets",
    "sign",
    "verify",
]

#: Where each public name lives.
_EXPORTS: dict[str, str] = {
    "Atlas": "bastion.artifacts.findings",
    "DataDigest": "bastion.artifacts.provenance",
    "FileResult": "bastion.artifacts.findings",
    "Finding": "bastion.artifacts.findings",
    "ModelFormat": "bastion.artifacts.loading",
    "PickleAnalysis": "bastion.artifacts.pickle_scan",
    "PickleLimits": "bastion.artifacts.pickle_scan",
    "Provenance": "bastion.artifacts.provenance",
    "RestrictedUnpickler": "bastion.artifacts.unpickler",
    "ScanReport": "bastion.artifacts.findings",
    "ScanStatus": "bastion.artifacts.findings",
    "ScanTarget": "bastion.artifacts.scan",
    "Severity": "bastion.artifacts.findings",
    "SignOptions": "bastion.artifacts.signing",
    "SignResult": "bastion.artifacts.signing",
    "VerifiedModel": "bastion.artifacts.verification",
    "analyze_pickle": "bastion.artifacts.pickle_scan",
    "collect_targets": "bastion.artifacts.scan",
    "default_signature_path": "bastion.artifacts.verification",
    "detect_format": "bastion.artifacts.loading",
    "load_model": "bastion.artifacts.loading",
    "load_pickle_file": "bastion.artifacts.unpickler",
    "looks_like_pickle": "bastion.artifacts.pickle_scan",
    "report_summary": "bastion.artifacts.report",
    "report_to_dict": "bastion.artifacts.report",
    "report_to_sarif": "bastion.artifacts.report",
    "restricted_loads": "bastion.artifacts.unpickler",
    "scan_bytes": "bastion.artifacts.scan",
    "scan_file": "bastion.artifacts.scan",
    "scan_paths": "bastion.artifacts.scan",
    "scan_targets": "bastion.artifacts.scan",
    "sign": "bastion.artifacts.signing",
    "verify": "bastion.artifacts.verification",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
