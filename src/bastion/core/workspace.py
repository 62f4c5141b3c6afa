"""The workspace: a folder holding settings, database, artifact store and keys (stable API).

Layout::

    .bastion/               (or $BASTION_HOME)
      bastion.toml          settings
      bastion.db            SQLite database (WAL), unless database_url is set
      store/                content-addressed artifact store
      keys/workspace.key    the workspace signing key (0600, optionally encrypted)
      keys/workspace.pub
      audit.head            the audit log's latest signed checkpoint (see bastion.core.audit)

:func:`find_workspace` locates one, :func:`init_workspace` creates one; neither ever changes
an existing workspace.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config import Settings, default_toml, load_settings
from bastion.core.keys import (
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    generate_key,
    load_private_key,
    load_public_key,
    write_keypair,
)
from bastion.errors import WorkspaceError

if TYPE_CHECKING:
    # The database layer (SQLAlchemy) is imported when a database is first opened, not at
    # start-up: `bastion scan` and `bastion verify` without a workspace never need it.
    from bastion.core.audit import AuditLog
    from bastion.core.storage import Database

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_DIRNAME",
    "Workspace",
    "current_actor",
    "find_workspace",
    "init_workspace",
    "key_passphrase",
    "workspace_path",
]

logger = logging.getLogger(__name__)

DEFAULT_DIRNAME = ".bastion"
CONFIG_NAME = "bastion.toml"
DATABASE_NAME = "bastion.db"
KEY_PREFIX = "keys/workspace"


def workspace_path(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where the workspace is or would be: ``$BASTION_HOME`` or ``./.bastion``."""
    env = os.environ if environ is None else environ
    home = env.get("BASTION_HOME")
    if home:
        return Path(home).expanduser()
    return (cwd or Path.cwd()) / DEFAULT_DIRNAME


def key_passphrase(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The workspace key's passphrase from ``BASTION_KEY_PASSPHRASE``, if set."""
    env = os.environ if environ is None else environ
    value = env.get("BASTION_KEY_PASSPHRASE")
    return value.encode() if value else None


def current_actor(environ: Mapping[str, str] | None = None) -> str:
    """Who is acting: ``$BASTION_ACTOR``, else ``user@host``."""
    env = os.environ if environ is None else environ
    actor = env.get("BASTION_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@dataclass
class Workspace:
    """An existing workspace. Get one from :func:`find_workspace` or :func:`init_workspace`."""

    root: Path
    settings: Settings
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def store_path(self) -> Path:
        return self.root / "store"

    @property
    def private_key_path(self) -> Path:
        return self.root / (KEY_PREFIX + ".key")

    @property
    def public_key_path(self) -> Path:
        return self.root / (KEY_PREFIX + ".pub")

    @property
    def database_url(self) -> str:
        from bastion.core.storage import sqlite_url

        return self.settings.database_url or sqlite_url(self.root / DATABASE_NAME)

    @cached_property
    def database(self) -> Database:
        """The workspace database, migrated to this bastion's schema on first use."""
        from bastion.core.storage import open_database

        return open_database(self.database_url)

    def signing_key(self) -> PrivateKey:
        """The workspace private key (passphrase from ``BASTION_KEY_PASSPHRASE``)."""
        return load_private_key(self.private_key_path, key_passphrase(self.environ))

    def public_key(self) -> PublicKey:
        """The workspace public key."""
        return load_public_key(self.public_key_path)

    def actor(self) -> str:
        """Who is acting in this process (see :func:`current_actor`)."""
        return current_actor(self.environ)

    def audit(self) -> AuditLog:
        """The workspace audit log: checkpoints signed by the workspace key.

        The private key is loaded only when a checkpoint is due (an encrypted key needs
        ``BASTION_KEY_PASSPHRASE`` then, not for every append); the latest checkpoint is
        also kept in ``audit.head`` in this folder.
        """
        from bastion.core.audit import AUDIT_HEAD_NAME, AuditLog

        return AuditLog(
            self.database,
            actor=self.actor(),
            signing_key=self.signing_key,
            public_key=self.public_key,
            checkpoint_interval=self.settings.audit.checkpoint_interval,
            head_path=self.root / AUDIT_HEAD_NAME,
        )

    def close(self) -> None:
        """Release the database connections, if any were opened."""
        if "database" in self.__dict__:
            self.database.dispose()


def find_workspace(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Workspace:
    """Open the workspace at :func:`workspace_path`.

    Raises:
        WorkspaceError: there is none (run ``bastion init``), or it is incomplete.
        ConfigError: its settings are invalid.
    """
    env = dict(os.environ if environ is None else environ)
    root = workspace_path(cwd, env)
    config = root / CONFIG_NAME
    if not config.is_file():
        raise WorkspaceError(f"no bastion workspace at {root}: run 'bastion init' first")
    return Workspace(root=root, settings=load_settings(config, env), environ=env)


def init_workspace(
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    algorithm: KeyAlgorithm = KeyAlgorithm.ED25519,
) -> tuple[Workspace, bool]:
    """Create a workspace, or open the existing one unchanged.

    Returns:
        The workspace and whether this call created it.

    Raises:
        WorkspaceError: the folder cannot be created, or a partial workspace is in the way.
        ConfigError, StorageError, KeyMaterialError: from the parts it creates.
    """
    env = dict(os.environ if environ is None else environ)
    root = workspace_path(cwd, env)
    if (root / CONFIG_NAME).is_file():
        return find_workspace(cwd, env), False
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        raise WorkspaceError(
            f"{root} exists, is not empty and has no {CONFIG_NAME}: refusing to touch it"
        )
    settings = load_settings(None, env)  # validates BASTION_* overrides before writing
    try:
        (root / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "store").mkdir(exist_ok=True, mode=0o700)
        root.chmod(0o700)
    except OSError as exc:
        raise WorkspaceError(f"cannot create workspace at {root}: {exc.strerror}") from exc
    workspace = Workspace(root=root, settings=settings, environ=env)
    write_keypair(root / KEY_PREFIX, generate_key(algorithm), key_passphrase(env))
    workspace.database.migrate()
    # The settings file is written last: its presence is what marks a complete workspace.
    tmp = root / (CONFIG_NAME + ".tmp")
    try:
        tmp.write_text(default_toml(), encoding="utf-8")
        tmp.replace(root / CONFIG_NAME)
    except OSError as exc:
        raise WorkspaceError(f"cannot write {root / CONFIG_NAME}: {exc.strerror}") from exc
    logger.info("created workspace at %s", root)
    return workspace, True
