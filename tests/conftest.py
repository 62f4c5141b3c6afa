"""Fixtures shared by the whole suite: an isolated workspace and a CLI runner."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bastion.cli import main
from bastion.core.workspace import Workspace, init_workspace


@dataclass(frozen=True)
class CliResult:
    """What one ``bastion`` invocation returned and wrote."""

    code: int
    out: str
    err: str


@pytest.fixture
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, isolated BASTION_HOME; the current folder is ``tmp_path``."""
    home = tmp_path / "workspace"
    for name in ("BASTION_KEY_PASSPHRASE", "BASTION_DATABASE_URL", "BASTION_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_HOME", str(home))
    monkeypatch.setenv("BASTION_ACTOR", "tester")
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def workspace(bastion_home: Path) -> Iterator[Workspace]:
    """A freshly initialised workspace at ``bastion_home``."""
    ws, created = init_workspace()
    assert created
    yield ws
    ws.close()


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Call ``bastion`` in process: ``cli("scan", path) -> CliResult``."""

    def run(*argv: str | Path) -> CliResult:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


#: The PostgreSQL server of the services tests (trust auth); TEST_POSTGRES_URL overrides it.
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (``bastion_test_<random>``), dropped after.

    Tests using it carry ``@pytest.mark.services``. With no server, the test is skipped with
    the reason, except in CI (``CI=true``), where a missing service is a failure.
    """
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    params = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "dbname": url.database or "postgres",
        "connect_timeout": 5,
    }
    if url.password:
        params["password"] = url.password
    name = f"bastion_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(autocommit=True, **params)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {url.render_as_string()}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(autocommit=True, **params) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


#: The Redis server of the services tests; TEST_REDIS_URL overrides it.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The Redis server of the services tests, checked reachable.

    Tests using it carry ``@pytest.mark.services`` and keep their keys under a prefix of their
    own (``redis_prefix``). With no server, the test is skipped with the reason, except in CI
    (``CI=true``), where a missing service is a failure (as for ``postgres_url``).
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {REDIS_URL}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of one test's own in ``redis_url``'s database; its keys are deleted after."""
    import redis

    prefix = f"bastion_test_{secrets.token_hex(6)}:"
    yield prefix
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def check_schema() -> Callable[[str, dict[str, Any]], None]:
    """Validate a JSON document against the committed schema ``bastion/schemas/NAME.json``."""

    def check(name: str, document: dict[str, Any]) -> None:
        schema = json.loads((files("bastion") / "schemas" / f"{name}.json").read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft202012Validator(schema).validate(document)

    return check
