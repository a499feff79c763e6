"""The servers under load and how each starts on 127.0.0.1: the ceiling, the bare route, the tutorial baseline, ours.

MLServer's spec is in ``benchmarks.peers``; ``benchmarks.processes`` runs any spec.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import REPOSITORY

HOST = "127.0.0.1"
UVICORN_FLAGS = ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
"""The event loop and HTTP parser our server runs with; the reference apps get the same."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: its command and environment, and the GET path that answers 200 once it is ready."""

    name: str
    """Which server: ceiling, bare, baseline, ours, mlserver, ..."""
    model: str | None
    command: list[str]
    port: int
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """What distinguishes this server from another of the same name (recorded with its results)."""
    cwd: Path = REPOSITORY

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://{HOST}:{self.port}"


def _uvicorn(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), *UVICORN_FLAGS]


def ceiling_spec() -> ServerSpec:
    """The raw ASGI app returning a constant JSON, on uvicorn like ours (no access log: nothing but the floor)."""
    port = free_port()
    return ServerSpec("ceiling", None, [*_uvicorn("benchmarks.apps.ceiling:app", port), "--no-access-log"], port, "/")


def bare_spec() -> ServerSpec:
    """The framework's ceiling: a bare FastAPI route reading the body and returning a constant ``Response``, on
    uvicorn like ours, without an access log (what FastAPI and Starlette cost, nothing of ours)."""
    port = free_port()
    command = [*_uvicorn("benchmarks.apps.bare:app", port), "--no-access-log"]
    return ServerSpec("bare", None, command, port, "/openapi.json")


def baseline_spec(model: str, registry_dir: Path) -> ServerSpec:
    """The tutorial FastAPI + joblib app for ``model``, on uvicorn like ours, without its access log."""
    port = free_port()
    env = {"BENCH_MODEL_TYPE": model, "BENCH_REGISTRY_DIR": str(registry_dir)}
    command = [*_uvicorn("benchmarks.apps.baseline:app", port), "--no-access-log"]
    return ServerSpec("baseline", model, command, port, "/openapi.json", env)


def ours_spec(model: str, name: str = "ours", **settings: str) -> ServerSpec:
    """``python -m ml_production_service`` for ``model``: one worker, logs on at INFO; ``settings`` are MPS_*."""
    port = free_port()
    env = {
        "MPS_MODEL_TYPE": model,
        "MPS_API_HOST": HOST,
        "MPS_API_PORT": str(port),
        "MPS_WORKERS": "1",
        "MPS_LOG_LEVEL": "INFO",
        "MPS_LOG_FORMAT": "json",
        **settings,
    }
    command = [sys.executable, "-m", "ml_production_service"]
    return ServerSpec(name, model, command, port, "/health/ready", env, dict(settings))
