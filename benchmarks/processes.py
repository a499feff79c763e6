"""Server processes: start one in its own process group, wait until it answers ready, read its memory, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from benchmarks.client import http_request
from benchmarks.servers import ServerSpec


class ServerError(RuntimeError):
    """A server did not start, or did not answer as expected."""


def base_env() -> dict[str, str]:
    """This process's environment without any MPS_* or BENCH_* variable (each server sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MPS_", "BENCH_"))}


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
    started: float = 0.0
    """When its process started (``time.monotonic``)."""

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


def _start(spec: ServerSpec, log_dir: Path) -> RunningServer:
    """Start ``spec`` in a new process group, its output into a log file; not yet ready."""
    log_path = log_dir / f"{spec.name}-{spec.model or 'none'}-{spec.port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            spec.command,
            cwd=spec.cwd,
            env={**base_env(), **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RunningServer(spec, process, log_path)


@contextmanager
def running(spec: ServerSpec, log_dir: Path, timeout_s: float = 120.0) -> Iterator[RunningServer]:
    """Start ``spec`` in a new process group, wait for ready, and always stop it."""
    with running_together([spec], log_dir, timeout_s) as (server,):
        yield server


@contextmanager
def running_together(specs: list[ServerSpec], log_dir: Path, timeout_s: float = 120.0) -> Iterator[list[RunningServer]]:
    """Start every spec at once (their start-ups overlap: side-by-side servers are ready sooner than one after the
    other), wait until each is ready, and always stop them all."""
    servers: list[RunningServer] = []
    try:
        for spec in specs:
            servers.append(_start(spec, log_dir))
            servers[-1].started = time.monotonic()
        for server in servers:
            _wait_ready(server, server.started, timeout_s)
        yield servers
    finally:
        for server in servers:
            stop(server.process)
