"""Run Debian's real redis-server on 127.0.0.1 and a free port for a test; kill and restart it (test helper).

The rate-limit tests count in it as the compose stack's variants do in its `redis` service, and check the outage
policy (MPS_RATE_LIMIT_FAIL_OPEN) by killing it mid-test and bringing it back on the same port.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.functional.deploy_helpers import system_tool
from tests.functional.server_process import free_port, terminate

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process (no persistence, in its own directory) and the port it keeps across restarts."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The storage URL MPS_RATE_LIMIT_STORAGE takes: ``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A client of this server (database 0) that tries once: a dead server fails at once, not after retries."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            db=0,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def log(self) -> str:
        """Everything the server has logged (it logs to a file in its directory)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start the server and wait until it answers PING; fail with its log if it exits or time runs out."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            system_tool("redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",  # no AOF: a restart starts empty, as the compose service does
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client(timeout=0.5) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer PING on {self.port}:\n{self.log()}")
                time.sleep(0.05)

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost node would: nothing is flushed, the port stops answering at once."""
        if self.running():
            assert self.process is not None
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
        if self.process is not None:
            terminate(self.process, STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop it if it runs, then start it again on the same port (empty: nothing was persisted)."""
        self.stop()
        self.start()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started redis-server in a temporary directory; always stopped (SIGTERM, then SIGKILL) when the block ends."""
    with tempfile.TemporaryDirectory(prefix="mps-redis-") as directory:
        server = RedisServer(Path(directory))
        try:
            server.start()
            yield server
        finally:
            server.stop()
