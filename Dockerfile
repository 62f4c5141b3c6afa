# syntax=docker/dockerfile:1
#
# The bastion gateway (`bastion serve`): OIP v2 inference behind every guard, as a non-root
# process on a read-only root filesystem. tests/test_dockerfile.py checks the properties below.
#
# Build:
#   docker build -t bastion-gateway .
# Create the workspace once, on a volume (set BASTION_KEY_PASSPHRASE to encrypt its key):
#   docker run --rm --read-only --tmpfs /tmp -v bastion-data:/data bastion-gateway init
# Run:
#   docker run -d --name bastion --read-only --tmpfs /tmp:rw,noexec,nosuid,size=64m \
#     --cap-drop ALL --security-opt no-new-privileges:true \
#     -v bastion-data:/data -p 127.0.0.1:8080:8080 \
#     -e BASTION_KEY_PASSPHRASE -e BASTION_DATABASE_URL -e BASTION_REDIS_URL \
#     bastion-gateway
# Secrets (BASTION_API_KEY, BASTION_KEY_PASSPHRASE, database passwords) are given at run time
# only (`-e NAME` passes the caller's variable without writing it on the command line, or use
# an orchestrator's secrets); no ENV or ARG of this file holds one, so no layer does.
#
# Base image: python:3.11.14-slim-bookworm pinned by the digest of its multi-architecture
# index. The digest was taken from public Dockerfiles that pin this tag (Docker Hub could not
# be reached from the machine this was written on); before relying on it, confirm it with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
# and update both FROM lines together when moving to a newer patch release.

# ---------------------------------------------------------------------------- build stage
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# The runtime dependencies only: requirements-runtime.lock is requirements.lock filtered to
# `[project] dependencies` and what they require (scripts/gen_runtime_requirements.py), so no
# torch, ray or test tool. --no-deps: the lock is complete, nothing is resolved here;
# --only-binary: no source distribution is built. The virtual environment has no pip of its own.
RUN python -m venv --without-pip /opt/bastion
COPY requirements-runtime.lock /tmp/requirements-runtime.lock
RUN python -m pip --python /opt/bastion/bin/python install --no-deps --only-binary=:all: \
        -r /tmp/requirements-runtime.lock

# bastion itself, as a wheel built with pinned build tools (pyproject's build-system).
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN python -m pip install --no-deps setuptools==80.9.0 wheel==0.45.1 \
    && python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src \
    && python -m pip --python /opt/bastion/bin/python install --no-deps /wheels/bastion-*.whl

# ---------------------------------------------------------------------------- runtime stage
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# A fixed, unprivileged UID/GID (volume permissions are predictable), no login shell, no home
# but the workspace. pip and setuptools are not needed at run time: removed.
RUN groupadd --system --gid 10001 bastion \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin bastion \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data \
    && python -m pip uninstall --yes --quiet pip setuptools wheel

COPY --from=build /opt/bastion /opt/bastion

# The workspace (bastion.toml, the SQLite database, the artifact store, the workspace key)
# lives on the /data volume: the root filesystem can be read-only. Bytecode was compiled at
# install time and is never written at run time.
ENV PATH=/opt/bastion/bin:$PATH \
    BASTION_HOME=/data \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
WORKDIR /data

USER 10001:10001

EXPOSE 8080

# No curl in a slim image: the standard library asks the liveness endpoint (any error or a
# non-2xx answer raises, and the check fails).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=3)"]

ENTRYPOINT ["bastion"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
