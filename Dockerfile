# syntax=docker/dockerfile:1
# The service image: runtime dependencies from uv.lock, the package, and the promoted models in registry/prd.
# Base and uv are pinned by exact version tag (add @sha256:<digest> once you can resolve it with
# `docker buildx imagetools inspect <image>`); the runtime stage has no uv, no compiler, no dev tools.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11.14-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, from the lock file only: this layer is rebuilt when uv.lock changes, not the code.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-default-groups --no-install-project --no-editable
# Then the package itself (README.md is the package's readme, which the build backend reads).
COPY README.md ./
COPY ml_production_service ./ml_production_service
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-default-groups --no-editable

FROM python:3.11.14-slim-bookworm AS runtime
# A real user and group (uid/gid 10001), so runAsNonRoot can check the numeric USER below.
RUN groupadd --system --gid 10001 mps \
    && useradd --system --uid 10001 --gid mps --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mps
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY registry/prd /app/registry/prd
# Only MPS_* variables configure the service; these are the image's defaults (README, "Configuration").
# MPS_REGISTRY_DIR is set because the package is installed in the virtualenv, not beside registry/.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPS_REGISTRY_DIR=/app/registry/prd \
    MPS_API_HOST=0.0.0.0 \
    MPS_API_PORT=8000 \
    MPS_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
# The slim image has no curl: the check is the interpreter's urllib against the configured port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MPS_API_PORT', '8000') + '/health/ready', timeout=2)"]
CMD ["python", "-m", "ml_production_service"]
