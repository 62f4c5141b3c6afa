"""The core of bastion: workspace, keys, storage and the audit log (stable API).

Everything else in bastion builds on these; ``core`` imports nothing else of bastion.

The names below are loaded on first use (PEP 562 ``__getattr__`` over an explicit table), so
that ``import bastion.core.workspace`` does not pay for SQLAlchemy until a database is opened:
it matters to the start-up of every command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.core.audit import (
        AUDIT_HEAD_NAME,
        CHECKPOINT_DOMAIN,
        EVENT_DOMAIN,
        GENESIS_HASH,
        JSON,
        AuditEvent,
        AuditHead,
        AuditLog,
        AuditRecord,
        AuditVerification,
        Checkpoint,
        canonical_json,
        checkpoint_message,
        event_hash,
    )
    from bastion.core.digests import (
        DigestRequest,
        FileDigest,
        HashAlgorithm,
        Part,
        digest_bytes,
        digest_files,
        digest_path,
        shard_bounds,
    )
    from bastion.core.keys import (
        KeyAlgorithm,
        PrivateKey,
        PublicKey,
        algorithm_of,
        generate_key,
        key_id,
        load_private_key,
        load_public_key,
        public_pem,
        sign_bytes,
        verify_bytes,
        write_keypair,
    )
    from bastion.core.principals import (
        KEY_PREFIX,
        MODEL_NAME_PATTERN,
        PERMISSIONS,
        ApiKey,
        CreatedKey,
        KeyStore,
        KeyTable,
        Permission,
        Principal,
        Role,
        api_keys,
        check_model_name,
        hash_secret,
        parse_duration,
    )
    from bastion.core.storage import (
        MIGRATIONS,
        Database,
        Migration,
        metadata,
        open_database,
        sqlite_url,
    )
    from bastion.core.workspace import (
        CONFIG_NAME,
        DEFAULT_DIRNAME,
        Workspace,
        current_actor,
        find_workspace,
        init_workspace,
        key_passphrase,
        workspace_path,
    )

__all__ = [
    "AUDIT_HEAD_NAME",
    "CHECKPOINT_DOMAIN",
    "CONFIG_NAME",
    "DEFAULT_DIRNAME",
    "EVENT_DOMAIN",
    "GENESIS_HASH",
    "JSON",
    "KEY_PREFIX",
    "MIGRATIONS",
    "MODEL_NAME_PATTERN",
    "PERMISSIONS",
    "ApiKey",
    "AuditEvent",
    "AuditHead",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "Checkpoint",
    "CreatedKey",
    "Database",
    "DigestRequest",
    "FileDigest",
    "HashAlgorithm",
    "KeyAlgorithm",
    "KeyStore",
    "KeyTable",
    "Migration",
    "Part",
    "Permission",
    "Principal",
    "PrivateKey",
    "PublicKey",
    "Role",
    "Workspace",
    "algorithm_of",
    "api_keys",
    "canonical_json",
    "check_model_name",
    "checkpoint_message",
    "current_actor",
    "digest_bytes",
    "digest_files",
    "digest_path",
    "event_hash",
    "find_workspace",
    "generate_key",
    "hash_secret",
    "init_workspace",
    "key_id",
    "key_passphrase",
    "load_private_key",
    "load_public_key",
    "metadata",
    "open_database",
    "parse_duration",
    "public_pem",
    "shard_bounds",
    "sign_bytes",
    "sqlite_url",
    "verify_bytes",
    "workspace_path",
    "write_keypair",
]

_EXPORTS: dict[str, str] = {
    "AUDIT_HEAD_NAME": "bastion.core.audit",
    "ApiKey": "bastion.core.principals",
    "AuditEvent": "bastion.core.audit",
    "AuditHead": "bastion.core.audit",
    "AuditLog": "bastion.core.audit",
    "AuditRecord": "bastion.core.audit",
    "AuditVerification": "bastion.core.audit",
    "CHECKPOINT_DOMAIN": "bastion.core.audit",
    "CONFIG_NAME": "bastion.core.workspace",
    "Checkpoint": "bastion.core.audit",
    "CreatedKey": "bastion.core.principals",
    "DEFAULT_DIRNAME": "bastion.core.workspace",
    "Database": "bastion.core.storage",
    "DigestRequest": "bastion.core.digests",
    "EVENT_DOMAIN": "bastion.core.audit",
    "FileDigest": "bastion.core.digests",
    "GENESIS_HASH": "bastion.core.audit",
    "HashAlgorithm": "bastion.core.digests",
    "JSON": "bastion.core.audit",
    "KEY_PREFIX": "bastion.core.principals",
    "KeyAlgorithm": "bastion.core.keys",
    "KeyStore": "bastion.core.principals",
    "KeyTable": "bastion.core.principals",
    "MIGRATIONS": "bastion.core.storage",
    "MODEL_NAME_PATTERN": "bastion.core.principals",
    "Migration": "bastion.core.storage",
    "PERMISSIONS": "bastion.core.principals",
    "Part": "bastion.core.digests",
    "Permission": "bastion.core.principals",
    "Principal": "bastion.core.principals",
    "PrivateKey": "bastion.core.keys",
    "PublicKey": "bastion.core.keys",
    "Role": "bastion.core.principals",
    "Workspace": "bastion.core.workspace",
    "algorithm_of": "bastion.core.keys",
    "api_keys": "bastion.core.principals",
    "canonical_json": "bastion.core.audit",
    "check_model_name": "bastion.core.principals",
    "checkpoint_message": "bastion.core.audit",
    "current_actor": "bastion.core.workspace",
    "digest_bytes": "bastion.core.digests",
    "digest_files": "bastion.core.digests",
    "digest_path": "bastion.core.digests",
    "event_hash": "bastion.core.audit",
    "find_workspace": "bastion.core.workspace",
    "generate_key": "bastion.core.keys",
    "hash_secret": "bastion.core.principals",
    "init_workspace": "bastion.core.workspace",
    "key_id": "bastion.core.keys",
    "key_passphrase": "bastion.core.workspace",
    "load_private_key": "bastion.core.keys",
    "load_public_key": "bastion.core.keys",
    "metadata": "bastion.core.storage",
    "open_database": "bastion.core.storage",
    "parse_duration": "bastion.core.principals",
    "public_pem": "bastion.core.keys",
    "shard_bounds": "bastion.core.digests",
    "sign_bytes": "bastion.core.keys",
    "sqlite_url": "bastion.core.storage",
    "verify_bytes": "bastion.core.keys",
    "workspace_path": "bastion.core.workspace",
    "write_keypair": "bastion.core.keys",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
