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
    "ExtractionSettings",
    "GatewaySettings",
    "OutputPolicy",
    "OutputSettings",
    "RateLimitSettings",
    "ScanSettings",
    "Settings",
    "SigningSettings",
    "default_toml",
    "load_settings",
]

#: Variables under the BASTION_ prefix that are not settings.
NON_SETTING_VARIABLES = frozenset(
    {"BASTION_HOME", "BASTION_KEY_PASSPHRASE", "BASTION_ACTOR", "BASTION_DEBUG", "BASTION_API_KEY"}
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


class RateLimitSettings(_Section):
    """Sliding-window request limits of the gateway, per API key and per client address."""

    per_key_per_minute: int = Field(default=100, ge=1)
    per_address_per_minute: int = Field(default=100, ge=1)
    # Namespace of the counters in Redis (with redis_url), so gateways can share one server.
    redis_prefix: str = Field(default="bastion:rl:", min_length=1, max_length=200)


class OutputPolicy(_Section):
    """What a role is shown of a prediction (output hardening against extraction/inversion).

    ``scores``: every class score; ``top-k``: the ``top_k`` best classes and their scores;
    ``label``: the predicted class only. Scores are rounded to ``decimals`` and, if
    ``noise_std`` is positive, perturbed by Gaussian noise of that scale before rounding.
    """

    mode: Literal["scores", "top-k", "label"] = "scores"
    top_k: int = Field(default=1, ge=1, le=1000)
    decimals: int = Field(default=4, ge=0, le=12)
    noise_std: float = Field(default=0.0, ge=0.0, le=1.0)


class OutputSettings(_Section):
    """Output hardening per role."""

    data_scientist: OutputPolicy = OutputPolicy()
    ml_engineer: OutputPolicy = OutputPolicy()
    sre: OutputPolicy = OutputPolicy()
    admin: OutputPolicy = OutputPolicy(mode="label")
    client: OutputPolicy = OutputPolicy(mode="top-k", top_k=1, decimals=2)


class ExtractionSettings(_Section):
    """PRADA model-extraction detection per key (Juuti et al. 2019, arXiv:1805.02628)."""

    enabled: bool = True
    # Shapiro-Wilk W below this over a key's minimum query distances raises the alert.
    threshold: float = Field(default=0.90, gt=0.0, lt=1.0)
    min_queries: int = Field(default=50, ge=10)
    # Bounds on the state kept per key, whatever a client sends.
    max_points_per_class: int = Field(default=256, ge=8)
    max_distances: int = Field(default=512, ge=16)
    max_keys: int = Field(default=10_000, ge=1)
    idle_seconds: float = Field(default=3600.0, gt=0)
    block: bool = False
    # Examine queries in a worker process (python -m bastion.gateway.extraction) rather than
    # on the gateway's event loop: the request path then only queues and frames them.
    worker_process: bool = True


class GatewaySettings(_Section):
    """``bastion serve``: where it listens and the limits of each guard."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=16, ge=4, le=256)
    max_json_elements: int = Field(default=200_000, ge=1)
    max_batch: int = Field(default=256, ge=1)
    concurrency: int = Field(default=32, ge=1)
    timeout_seconds: float = Field(default=5.0, gt=0)
    key_refresh_seconds: float = Field(default=5.0, gt=0)
    audit_batch_size: int = Field(default=256, ge=1)
    audit_flush_seconds: float = Field(default=0.25, gt=0)
    audit_queue_max: int = Field(default=100_000, ge=1)
    # How long a graceful shutdown keeps retrying to write the audit records still queued.
    audit_shutdown_seconds: float = Field(default=30.0, gt=0)
    audit_payloads: bool = False
    # A predict measured to take less than this runs on the event loop (a thread-pool hop
    # costs ~0.1 ms); anything slower runs in a thread, under the timeout. 0: always a thread.
    inline_max_seconds: float = Field(default=0.002, ge=0, le=1.0)
    # When Redis or the database is unreachable: refuse with 503 (closed) or serve (open).
    fail_open: bool = False
    rate_limit: RateLimitSettings = RateLimitSettings()
    output: OutputSettings = OutputSettings()
    extraction: ExtractionSettings = ExtractionSettings()


class Settings(_Section):
    """All settings of a workspace."""

    database_url: str = ""
    redis_url: str = ""
    scan: ScanSettings = ScanSettings()
    signing: SigningSettings = SigningSettings()
    audit: AuditSettings = AuditSettings()
    gateway: GatewaySettings = GatewaySettings()


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
    for name, field in Settings.model_fields.items():
        if _is_section(field.annotation):
            _section_lines(getattr(s, name), name, lines)
    return "\n".join(lines) + "\n"


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section_lines(section: BaseModel, dotted: str, lines: list[str]) -> None:
    lines += ["", f"[{dotted}]"]
    nested: list[tuple[str, BaseModel]] = []
    for key, field in type(section).model_fields.items():
        value = getattr(section, key)
        if _is_section(field.annotation):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in nested:
        _section_lines(value, f"{dotted}.{key}", lines)


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


def _apply_environment(
    data: dict[str, Any],
    env: Mapping[str, str],
    model: type[BaseModel] = Settings,
    prefix: str = "BASTION",
) -> None:
    # Nested sections nest the variable names: gateway.rate_limit.per_key_per_minute is
    # BASTION_GATEWAY_RATE_LIMIT_PER_KEY_PER_MINUTE.
    for name, field in model.model_fields.items():
        annotation = field.annotation
        variable = f"{prefix}_{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = data.setdefault(name, {})
            if not isinstance(section, dict):
                continue  # validation reports the wrong type
            _apply_environment(section, env, annotation, variable)
            if not section:
                del data[name]
        else:
            value = env.get(variable)
            if value is not None:
                data[name] = value


def _describe(exc: ValidationError, path: Path | None) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    where = f" in {path}" if path is not None else ""
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{key}'{where}"
    return f"invalid setting '{key}'{where}: {error['msg']}"
