"""The model registry: versions, stages, approvals, and the artifact store (stable API).

:class:`Registry` takes a model version from registration (scanned, signature verified,
stored content-addressed) through staging and an approval to production, under separation of
duties, with every step in the audit log; :class:`ArtifactStore` is the content-addressed
store under the workspace. The gateway serves :meth:`Registry.production` through
:meth:`Registry.checkout` and :func:`bastion.artifacts.loading.load_model`.

The names below are loaded on first use (PEP 562 ``__getattr__`` over an explicit table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy_exports

if TYPE_CHECKING:
    from bastion.registry.registry import (
        MAX_COMMENT_CHARS,
        VERSION_PATTERN,
        Approval,
        ModelVersion,
        Registry,
        Stage,
        check_version,
    )
    from bastion.registry.store import (
        DIGEST_PATTERN,
        ArtifactStore,
        StagedModel,
        StoredFile,
        digest_of_files,
    )

__all__ = [
    "DIGEST_PATTERN",
    "MAX_COMMENT_CHARS",
    "VERSION_PATTERN",
    "Approval",
    "ArtifactStore",
    "ModelVersion",
    "Registry",
    "Stage",
    "StagedModel",
    "StoredFile",
    "check_version",
    "digest_of_files",
]

_EXPORTS: dict[str, str] = {
    "Approval": "bastion.registry.registry",
    "ArtifactStore": "bastion.registry.store",
    "DIGEST_PATTERN": "bastion.registry.store",
    "MAX_COMMENT_CHARS": "bastion.registry.registry",
    "ModelVersion": "bastion.registry.registry",
    "Registry": "bastion.registry.registry",
    "Stage": "bastion.registry.registry",
    "StagedModel": "bastion.registry.store",
    "StoredFile": "bastion.registry.store",
    "VERSION_PATTERN": "bastion.registry.registry",
    "check_version": "bastion.registry.registry",
    "digest_of_files": "bastion.registry.store",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
