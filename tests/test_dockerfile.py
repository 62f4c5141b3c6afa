"""The gateway's Dockerfile and .dockerignore, checked from the files (no image is built).

The seed checklist: a slim base pinned by digest, a multi-stage build installing the locked
runtime dependencies without resolving, a non-root user with a fixed UID set before the
command, no secret in any layer, a health check without curl, the workspace on a volume, and a
build context that never carries the virtual environment, the workspace or keys.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"

_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
_EXACT_TAG_RE = re.compile(r":\d+\.\d+\.\d+(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$")
_SECRET_NAME_RE = re.compile(
    r"(KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|CREDENTIAL|PRIVATE|AUTH)", re.IGNORECASE
)
# Names that contain a secret-looking word but hold no secret (explained, not guessed).
_NOT_SECRET_NAMES: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, continuation lines joined (backslash escape)."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text("utf-8"))


def of(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [n for n, i in enumerate(instructions) if i.keyword == "FROM"]
    return instructions[starts[-1] :]


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    words = shlex.split(instruction.arguments)
    if len(words) == 2 and "=" not in words[0]:  # legacy `ENV NAME value`
        return [(words[0], words[1])]
    return [tuple(w.split("=", 1)) if "=" in w else (w, "") for w in words]  # type: ignore[misc]


# ----------------------------------------------------------------------------- the parser


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\nUSER 1\n")
    assert [(i.keyword, i.arguments, i.line) for i in parsed] == [
        ("FROM", "a AS b", 2),
        ("RUN", "x  && y", 3),
        ("USER", "1", 6),
    ]


# ----------------------------------------------------------------------------- base image


def test_every_base_image_is_slim_and_pinned(instructions: list[Instruction]) -> None:
    froms = of(instructions, "FROM")
    assert len(froms) >= 2, "a multi-stage build: dependencies are built apart from the image"
    stages = set()
    for instruction in froms:
        words = instruction.arguments.split()
        image = words[0]
        if image in stages:
            continue  # FROM an earlier stage
        assert "slim" in image, image
        assert _DIGEST_RE.search(image) or _EXACT_TAG_RE.search(image), image
        assert _EXACT_TAG_RE.search(image), f"an exact patch tag, not a moving one: {image}"
        assert image.startswith("python:3.11."), image
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    bases = {i.arguments.split()[0] for i in froms}
    assert len(bases) == 1, f"one base for every stage: {bases}"
    assert _DIGEST_RE.search(next(iter(bases))), "pinned by digest"


def test_nothing_is_latest_or_fetched_with_add(instructions: list[Instruction]) -> None:
    text = DOCKERFILE.read_text("utf-8")
    assert not re.search(r"\blatest\b", text)
    for instruction in of(instructions, "ADD"):
        assert not re.search(r"(https?|ftp|git)://|git@", instruction.arguments), instruction
    assert of(instructions, "ADD") == [], "COPY only: ADD unpacks archives and fetches URLs"


# ----------------------------------------------------------------------------- user


def test_a_fixed_non_root_user_runs_the_command(instructions: list[Instruction]) -> None:
    final = final_stage(instructions)
    users = [n for n, i in enumerate(final) if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    user = final[users[-1]].arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"a numeric, fixed UID: {user}"
    assert int(uid) >= 1000
    assert not gid or (gid.isdigit() and int(gid) != 0)
    commands = [n for n, i in enumerate(final) if i.keyword in ("CMD", "ENTRYPOINT")]
    assert commands
    assert all(users[-1] < n for n in commands), "USER comes before CMD and ENTRYPOINT"
    created = " ".join(i.arguments for i in of(final, "RUN"))
    assert f"--uid {uid}" in created, "the user is created with that UID"
    assert all(i.keyword != "USER" or i.arguments not in ("root", "0") for i in final)


# ----------------------------------------------------------------------------- secrets


def test_no_secret_lives_in_env_or_arg(instructions: list[Instruction]) -> None:
    pairs: list[tuple[str, str]] = []
    for instruction in of(instructions, "ENV"):
        pairs += env_pairs(instruction)
    for instruction in of(instructions, "ARG"):
        name, _, default = instruction.arguments.partition("=")
        pairs.append((name, default))
    for name, value in pairs:
        assert name in _NOT_SECRET_NAMES or not _SECRET_NAME_RE.search(name), name
        assert "bst_" not in value, name
        assert not re.search(r"[A-Za-z0-9+/_-]{32,}", value), name  # nothing key-shaped
    copied = " ".join(i.arguments for i in of(instructions, "COPY"))
    for forbidden in (".bastion", ".key", ".pem", ".env", "keys/"):
        assert forbidden not in copied, forbidden


def test_secrets_are_documented_as_run_time_only() -> None:
    text = DOCKERFILE.read_text("utf-8")
    assert "BASTION_API_KEY" in text
    assert "-e BASTION_KEY_PASSPHRASE" in text
    assert "--read-only" in text
    assert "--tmpfs /tmp" in text


# ----------------------------------------------------------------------------- running


def test_healthcheck_asks_the_liveness_endpoint_with_python(
    instructions: list[Instruction],
) -> None:
    (check,) = of(instructions, "HEALTHCHECK")
    assert "/v2/health/live" in check.arguments
    assert "127.0.0.1:8080" in check.arguments
    assert "python" in check.arguments
    assert not re.search(r"\b(curl|wget)\b", check.arguments)
    exec_form = check.arguments[check.arguments.index("CMD") + 3 :].strip()
    argv = json.loads(exec_form)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")  # the probe is valid Python


def test_serve_on_8080_with_the_workspace_on_a_volume(instructions: list[Instruction]) -> None:
    final = final_stage(instructions)
    assert [i.arguments for i in of(final, "EXPOSE")] == ["8080"]
    (entrypoint,) = of(final, "ENTRYPOINT")
    (cmd,) = of(final, "CMD")
    argv = json.loads(entrypoint.arguments) + json.loads(cmd.arguments)
    assert argv == ["bastion", "serve", "--host", "0.0.0.0", "--port", "8080"]  # noqa: S104
    env = dict(pair for i in of(final, "ENV") for pair in env_pairs(i))
    assert env["BASTION_HOME"] == "/data"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # a read-only root filesystem
    (volume,) = of(final, "VOLUME")
    assert json.loads(volume.arguments) == ["/data"]
    assert "chown 10001:10001 /data" in " ".join(i.arguments for i in of(final, "RUN"))


def test_dependencies_come_from_the_runtime_lock_without_resolving(
    instructions: list[Instruction],
) -> None:
    runs = [i.arguments for i in of(instructions, "RUN") if "install" in i.arguments]
    lock_installs = [r for r in runs if "requirements-runtime.lock" in r]
    assert lock_installs
    for run in runs:
        if "pip" in run and " install" in run and "uninstall" not in run:
            assert "--no-deps" in run, run
    assert any("--only-binary=:all:" in r for r in lock_installs)
    copied = [i.arguments for i in of(instructions, "COPY")]
    assert any(c.startswith("requirements-runtime.lock ") for c in copied)
    assert not any("requirements.lock " in c for c in copied), "never the dev lock"


# ----------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = _pattern_regex(pattern.strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".bastion/bastion.db",
        ".bastion/keys/workspace.key",
        ".git/config",
        "src/bastion/.bastion/bastion.toml",
        "src/bastion/__pycache__/x.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        "tests/core/test_principals.py",
        "requirements.lock",
        "keys/workspace.key",
        "signing.pem",
        "src/model.key",
        ".env",
        "notes/HELPERS.md",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert excluded(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "requirements-runtime.lock",
        "src/bastion/__init__.py",
        "src/bastion/cli/keys.py",
        "src/bastion/core/keys.py",
        "src/bastion/schemas/keys-create.json",
        "src/bastion/py.typed",
    ],
)
def test_dockerignore_lets_the_build_inputs_in(path: str) -> None:
    assert not excluded(path, dockerignore_patterns())


def test_dockerignore_names_the_workspace_and_venv_explicitly() -> None:
    patterns = dockerignore_patterns()
    assert "**/.bastion" in patterns
    assert "**/.venv" in patterns
    assert "**/*.key" in patterns


def test_every_copied_source_is_in_the_build_context(instructions: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    for instruction in of(instructions, "COPY"):
        words = instruction.arguments.split()
        if any(w.startswith("--from=") for w in words):
            continue
        for source in words[:-1]:
            assert not excluded(source.rstrip("/"), patterns), source
            assert (ROOT / source).exists(), source


# ----------------------------------------------------------------------------- runtime lock


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_runtime_requirements", ROOT / "scripts" / "gen_runtime_requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_runtime_lock_is_current() -> None:
    assert _generator().generate() == RUNTIME_LOCK.read_text("utf-8"), (
        "run .venv/bin/python scripts/gen_runtime_requirements.py"
    )


def test_the_runtime_lock_is_the_dev_lock_cut_to_the_runtime() -> None:
    runtime = _pins(RUNTIME_LOCK)
    full = _pins(ROOT / "requirements.lock")
    assert runtime.items() <= full.items(), "same pins as requirements.lock"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in runtime, name
        assert requirement.specifier.contains(runtime[name], prereleases=True), name
    assert "psycopg-binary" in runtime  # the [binary] extra is followed
    for dev_only in ("torch", "ray", "pytest", "mypy", "ruff", "hypothesis", "jsonschema"):
        assert dev_only not in runtime, dev_only
