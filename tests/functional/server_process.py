"""Start the real server command on 127.0.0.1 and a free port, and stop it (test helper)."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPOSITORY = Path(__file__).resolve().parents[2]
SERVER_COMMAND = [sys.executable, "-m", "ml_production_service"]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    """A started server process and where it listens."""

    process: subprocess.Popen[str]
    url: str
    log: IO[str]

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, wait, and return the exit code and everything it logged."""
        terminate(self.process, timeout)
        self.log.seek(0)
        return self.process.returncode, self.log.read()


def terminate(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def answered_within(
    connections: list[socket.socket], count: int, timeout: float, settle: float = 0.0
) -> set[socket.socket]:
    """Wait until ``count`` of ``connections`` have something to read (or the time is up), then ``settle`` seconds
    more for stragglers; those connections."""
    ready: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        while len(ready) < count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                ready.add(key.fileobj)  # type: ignore[arg-type]
                selector.unregister(key.fileobj)
        if settle:
            time.sleep(settle)
            for key, _ in selector.select(timeout=0):
                ready.add(key.fileobj)  # type: ignore[arg-type]
    return ready


def server_env(**settings: str) -> dict[str, str]:
    """The environment for a server: this one, minus any MPS_* variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPS_")}
    env.update({"MPS_API_HOST": "127.0.0.1", "MPS_WORKERS": "1", "MPS_LOG_FORMAT": "json"})
    env.update(settings)
    return env


def wait_ready(url: str, process: subprocess.Popen[str], log: IO[str] | None = None, timeout: float = 60.0) -> None:
    """Poll /health/ready until 200; fail if the process exits (showing its log) or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = ""
            if log is not None:
                log.seek(0)
                output = log.read()
            raise RuntimeError(f"server exited with {process.returncode}: {output}")
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


@contextmanager
def running_server(command: list[str] | None = None, **settings: str) -> Iterator[RunningServer]:
    """Run the server command until the block ends; it always gets SIGTERM (then SIGKILL) at the end."""
    port = free_port()
    env = server_env(MPS_API_PORT=str(port), **settings)
    # Logs go to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        process = subprocess.Popen(
            command or SERVER_COMMAND, cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
        server = RunningServer(process, f"http://127.0.0.1:{port}", log)
        try:
            wait_ready(server.url, process, log)
            yield server
        finally:
            server.stop()


Answer = tuple[int, dict[str, str], bytes]
"""A raw HTTP answer: status, headers (lower-case names), body (cut at its Content-Length)."""


def server_address(server: RunningServer) -> tuple[str, int]:
    """The (host, port) a running server listens on, for raw sockets."""
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def read_all(connection: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (a reset after its answer keeps the answer)."""
    connection.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while len(data) < 2**20 and time.monotonic() < deadline and (chunk := connection.recv(65536)):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def parse_answer(data: bytes) -> Answer:
    """Status, headers and body of one raw HTTP answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body[: int(headers.get("content-length", len(body)))]
