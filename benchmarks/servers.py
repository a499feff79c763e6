"""The servers under load: how each starts on 127.0.0.1, when it is ready, how much memory it holds, how it stops."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
UVICORN_FLAGS = ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
"""The event loop and HTTP parser our server runs with; the reference apps get the same."""


class ServerError(RuntimeError):
    """A server did not start, or did not answer as expected."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: its command and environment, and the GET path that answers 200 once it is ready."""

    name: str
    """Which server: ceiling, baseline, ours, mlserver, ..."""
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


def base_env() -> dict[str, str]:
    """This process's environment without any MPS_* or BENCH_* variable (each server sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MPS_", "BENCH_"))}


def ceiling_spec() -> ServerSpec:
    """The raw ASGI app returning a constant JSON, on uvicorn like ours (no access log: nothing but the floor)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.apps.ceiling:app", "--host", HOST, "--port", str(port)]
    return ServerSpec("ceiling", None, [*command, *UVICORN_FLAGS, "--no-access-log"], port, "/")


def baseline_spec(model: str, registry_dir: Path) -> ServerSpec:
    """The tutorial FastAPI + joblib app for ``model``, on uvicorn like ours (its default access log on)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.apps.baseline:app", "--host", HOST, "--port", str(port)]
    env = {"BENCH_MODEL_TYPE": model, "BENCH_REGISTRY_DIR": str(registry_dir)}
    return ServerSpec("baseline", model, [*command, *UVICORN_FLAGS], port, "/openapi.json", env)


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


def http_request(
    url: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One request on a fresh connection; the status and the body."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})} if body is not None else {}
        connection.request("POST" if body is not None else "GET", path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return [grandchild for child in children for grandchild in (child, *_descendants(child))]


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of the process, and VmRSS summed over it and its descendants (MLServer's workers)."""
    tree = [pid, *_descendants(pid)]
    return {
        "rss_mb": _status_kb(pid, "VmRSS") / 1024,
        "hwm_mb": _status_kb(pid, "VmHWM") / 1024,
        "rss_tree_mb": sum(_status_kb(p, "VmRSS") for p in tree) / 1024,
        "processes": len(tree),
    }


@dataclass
class RunningServer:
    """A started server: its process, when it became ready, and where it logs."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    start_to_ready_s: float = 0.0

    def memory(self) -> dict[str, float]:
        """Its resident memory now (see ``memory_mb``)."""
        return memory_mb(self.process.pid)

    def log_tail(self, characters: int = 2000) -> str:
        """The end of what it wrote on stderr/stdout."""
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""


def _wait_ready(server: RunningServer, started: float, timeout_s: float) -> None:
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(
                f"{server.spec.name} exited with {server.process.returncode} before ready: {server.log_tail()}"
            )
        try:
            status, _ = http_request(server.spec.url, server.spec.ready_path, timeout=1.0)
        except OSError:
            status = 0
        if status == 200:
            server.start_to_ready_s = time.monotonic() - started
            return
        time.sleep(0.02)
    raise ServerError(f"{server.spec.name} not ready after {timeout_s:.0f} s: {server.log_tail()}")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the process we started (its own process group: its workers too), then SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Children that outlive their parent would hold the port and the CPU: end the group we created.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def running(spec: ServerSpec, log_dir: Path, timeout_s: float = 120.0) -> Iterator[RunningServer]:
    """Start ``spec`` in a new process group from the repository, wait for ready, and always stop it."""
    log_path = log_dir / f"{spec.name}-{spec.model or 'none'}-{spec.port}.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603
            spec.command,
            cwd=spec.cwd,
            env={**base_env(), **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(spec, process, log_path)
    try:
        _wait_ready(server, started, timeout_s)
        yield server
    finally:
        stop(process)


def check_answer(server: RunningServer, path: str, body: bytes | None, valid: Callable[[bytes], bool]) -> None:
    """Send one request and fail unless it is answered 200 with a body ``valid`` accepts (before any load)."""
    status, answer = http_request(server.spec.url, path, body)
    if status != 200 or not valid(answer):
        raise ServerError(f"{server.spec.name} {path} answered {status}: {answer[:300]!r}")
