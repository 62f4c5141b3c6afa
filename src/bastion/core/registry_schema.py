"""Tables of the model registry (see :mod:`bastion.registry`; stable API).

They are declared in ``core`` because the workspace has one database and one sequence of
migrations (:data:`bastion.core.storage.MIGRATIONS`); the rules over them live in
:mod:`bastion.registry`.

``registry_models`` has one row per model name, with its per-model opt-in to pickle loading.
``registry_versions`` has one row per registered version: where its files are in the
content-addressed store (``files``: a JSON list of ``{"path", "digest", "size"}``), the
signature bundle they verified against, the scan that passed, and its stage.
``registry_approvals`` records who approved a version for production; the registry refuses an
approval by the principal who registered the version.
"""

from __future__ import annotations

import sqlalchemy as sa

from bastion.core.storage import metadata

__all__ = ["TABLES", "registry_approvals", "registry_models", "registry_versions"]

registry_models = sa.Table(
    "registry_models",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    # Loading a pickle-based version for serving needs this explicit, audited opt-in.
    sa.Column("allow_pickle", sa.Boolean, nullable=False, default=False),
)

registry_versions = sa.Table(
    "registry_versions",
    metadata,
    sa.Column(
        "model",
        sa.String(100),
        sa.ForeignKey("registry_models.name"),
        primary_key=True,
    ),
    sa.Column("version", sa.String(64), primary_key=True),
    # Registration order within a model (1, 2, ...): "latest" and default version numbers.
    sa.Column("ordinal", sa.Integer, nullable=False),
    # Digest of the canonical list of files: the version's identity in the store.
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False, index=True),
    sa.Column("files", sa.Text, nullable=False),
    # The signature bundle (JSON text) the files verified against at registration.
    sa.Column("bundle", sa.Text, nullable=False),
    sa.Column("signer_key_id", sa.String(64), nullable=False),
    # Summary of the scan that passed (JSON text).
    sa.Column("scan", sa.Text, nullable=False),
    sa.Column("registered_at", sa.String(40), nullable=False),
    sa.Column("registered_by", sa.String(200), nullable=False),
    sa.Column("stage_changed_at", sa.String(40), nullable=False),
    sa.Column("stage_changed_by", sa.String(200), nullable=False),
)

registry_approvals = sa.Table(
    "registry_approvals",
    metadata,
    sa.Column("model", sa.String(100), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("approver", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("approved_at", sa.String(40), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["model", "version"], ["registry_versions.model", "registry_versions.version"]
    ),
)

TABLES: tuple[sa.Table, ...] = (registry_models, registry_versions, registry_approvals)
