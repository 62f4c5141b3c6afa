"""Settings: ``bastion.toml`` in the workspace, overridden by ``BASTION_*`` variables (stable API).

Every key is declared here; an unknown key in the file is an error that names it. A variable
overrides the key of the same path, upper-cased and joined by ``_``: ``scan.timeout_seconds``
is ``BASTION_SCAN_TIMEOUT_SECONDS`` and ``database_url`` is ``BASTION_DATABASE_URL``.
Variables that are not settings (``BASTION_HOME``, ``BASTION_KEY_PASSPHRASE``,
``BASTION_ACTOR``) are read where they are used.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import ConfigError

__all__ = [
    "AuditSettings",
    "ScanSettings",
    "Settings",
    "SigningSettings",
    "default_toml",
    "load_settings",
]

#: Variables under the BASTION_ prefix that are not settings.
NON_SETTING_VARIABLES = frozenset(
    {"BASTION_HOME", "BASTION_KEY_PASSPHRASE", "BASTION_ACTOR", "BASTION_DEBUG"}
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScanSettings(_Section):
    """Limits of ``bastion scan``; every limit hit is a finding, never a pass."""

    timeout_seconds: float = Field(default=60.0, gt=0)
    memory_mb: int = Field(default=2048, ge=64)
    max_file_bytes: int = Field(default=64 * 2**30, gt=0)
    max_pickle_opcodes: int = Field(default=5_000_000, gt=0)
    max_archive_depth: int = Field(default=4, ge=0)
    max_archive_members: int = Field(default=10_000, gt=0)
    max_archive_total_bytes: int = Field(default=16 * 2**30, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1)
    max_header_bytes: int = Field(default=100 * 2**20, gt=0)
    workers: int = Field(default=0, ge=0, description="0: one per core")


class SigningSettings(_Section):
    """Defaults of ``bastion sign``."""

    hash_algorithm: Literal["sha256", "blake3"] = "sha256"
    shard_bytes: int = Field(default=256 * 2**20, ge=2**20)
    workers: int = Field(default=0, ge=0, description="0: one per core")


class AuditSettings(_Section):
    """The audit log: a checkpoint is signed every ``checkpoint_interval`` events."""

    checkpoint_interval: int = Field(default=100, ge=1)


class Settings(_Section):
    """All settings of a workspace."""

    database_url: str = ""
    redis_url: str = ""
    scan: ScanSettings = ScanSettings()
    signing: SigningSettings = SigningSettings()
    audit: AuditSettings = AuditSettings()


def default_toml() -> str:
    """Return the text of a new workspace's ``bastion.toml``, every default spelled out."""
    s = Settings()
    lines = [
        "# bastion workspace settings. Each key can be overridden by a BASTION_* variable:",
        "# scan.timeout_seconds -> BASTION_SCAN_TIMEOUT_SECONDS.",
        "",
        "# Empty: the embedded SQLite database in this folder. postgresql+psycopg://... for",
        "# several gateway replicas.",
        f"database_url = {_toml_value(s.database_url)}",
        f"redis_url = {_toml_value(s.redis_url)}",
    ]
    for name in ("scan", "signing", "audit"):
        section: BaseModel = getattr(s, name)
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in section.model_dump().items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (if given) and apply ``BASTION_*`` overrides.

    Args:
        path: the ``bastion.toml`` to read, or None for defaults only.
        environ: the variables to apply; the process environment by default.

    Raises:
        ConfigError: the file cannot be read or parsed, a key is unknown, or a value is invalid.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    _apply_environment(data, env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def _apply_environment(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = data.setdefault(name, {})
            if not isinstance(section, dict):
                continue  # validation reports the wrong type
            for key in annotation.model_fields:
                value = env.get(f"BASTION_{name.upper()}_{key.upper()}")
                if value is not None:
                    section[key] = value
        else:
            value = env.get(f"BASTION_{name.upper()}")
            if value is not None:
                data[name] = value


def _describe(exc: ValidationError, path: Path | None) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    where = f" in {path}" if path is not None else ""
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{key}'{where}"
    return f"invalid setting '{key}'{where}: {error['msg']}"
