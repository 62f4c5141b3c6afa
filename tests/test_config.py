"""Settings: bastion.toml, BASTION_* overrides, validation naming the bad key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bastion.config import Settings, default_toml, load_settings
from bastion.errors import ConfigError


def test_defaults_without_file() -> None:
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.audit.checkpoint_interval == 100


def test_default_toml_round_trips_to_defaults() -> None:
    assert Settings.model_validate(tomllib.loads(default_toml())) == Settings()


def test_file_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[scan]\ntimeout_seconds = 5\n[signing]\nhash_algorithm = "blake3"\n')
    settings = load_settings(path, {})
    assert settings.scan.timeout_seconds == 5
    assert settings.signing.hash_algorithm == "blake3"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text("[scan]\ntimeout_seconds = 5\n")
    env = {
        "BASTION_SCAN_TIMEOUT_SECONDS": "7.5",
        "BASTION_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1/test",
    }
    settings = load_settings(path, env)
    assert settings.scan.timeout_seconds == 7.5
    assert settings.database_url.startswith("postgresql")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[scan]\ntimeout = 1\n", "scan.timeout"),
        ("[nonsense]\na = 1\n", "nonsense"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"unknown setting '{key}'"):
        load_settings(path, {})


def test_invalid_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text("[scan]\ntimeout_seconds = -1\n")
    with pytest.raises(ConfigError, match=r"invalid setting 'scan\.timeout_seconds'"):
        load_settings(path, {})


def test_invalid_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"scan\.workers"):
        load_settings(None, {"BASTION_SCAN_WORKERS": "many"})


@pytest.mark.parametrize(
    "content",
    [b"[scan\n", b"\xff\xfe\x00garbage", b"a = = 1", b"[scan]\ntimeout_seconds = 'x'\n"],
)
def test_malformed_file_is_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bastion.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        load_settings(path, {})


def test_unreadable_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {})


def test_section_of_wrong_type_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('scan = "fast"\n')
    with pytest.raises(ConfigError, match="scan"):
        load_settings(path, {"BASTION_SCAN_WORKERS": "2"})


def test_nested_sections_are_read_and_overridden(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        "[gateway]\nport = 9000\n[gateway.rate_limit]\nper_key_per_minute = 5\n"
        '[gateway.output.client]\nmode = "label"\n'
    )
    env = {
        "BASTION_GATEWAY_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "7",
        "BASTION_GATEWAY_EXTRACTION_BLOCK": "true",
    }
    settings = load_settings(path, env)
    assert settings.gateway.port == 9000
    assert settings.gateway.rate_limit.per_key_per_minute == 5
    assert settings.gateway.rate_limit.per_address_per_minute == 7
    assert settings.gateway.output.client.mode == "label"
    assert settings.gateway.output.sre.mode == "scores"
    assert settings.gateway.extraction.block is True


def test_default_toml_spells_out_nested_sections() -> None:
    text = default_toml()
    for header in ("[gateway]", "[gateway.rate_limit]", "[gateway.output.client]",
                   "[gateway.extraction]"):  # fmt: skip
        assert header in text
    assert tomllib.loads(text)["gateway"]["output"]["client"]["mode"] == "top-k"


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text("[gateway.output.client]\nmod = 'label'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'gateway\.output\.client\.mod'"):
        load_settings(path, {})
    with pytest.raises(ConfigError, match=r"gateway\.output\.client\.mode"):
        load_settings(None, {"BASTION_GATEWAY_OUTPUT_CLIENT_MODE": "everything"})
