"""Connection-level limits of the real server command: header size, header deadline, open connections, start-up checks.

Each test starts ``python -m ml_production_service`` (one worker unless said otherwise) on 127.0.0.1 and a free
port, talks raw HTTP/1.1 over sockets, and stops the server at the end.
"""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.functional.server_process import (
    REPOSITORY,
    SERVER_COMMAND,
    answered_within,
    parse_answer,
    read_all,
    running_server,
    server_address,
    server_env,
)

pytestmark = pytest.mark.slow
CHUNK = b"a" * 65536
STREAMED_BYTES = 50 * 2**20
RSS_GROWTH_LIMIT_KB = 4096


def _parse(data: bytes) -> tuple[int, dict[str, str], Any]:
    status, headers, body = parse_answer(data)
    return status, headers, json.loads(body)


def _error_code(data: bytes, status: int) -> str:
    """The ``code`` of a JSON error answer, checking its status, shape and ``Connection: close``."""
    got, headers, payload = _parse(data)
    assert got == status, data[:200]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert set(payload) == {"error", "code", "details", "request_id"}
    return str(payload["code"])


def _get(address: tuple[str, int], path: str) -> bytes:
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        return read_all(connection)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _stream_header_until_cut(address: tuple[str, int], limit: int) -> tuple[int, bytes]:
    """Send a header that never ends until the server cuts the connection (or ``limit`` bytes); bytes sent, answer."""
    sent = 0
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        try:
            while sent < limit:
                connection.sendall(CHUNK)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent, read_all(connection)


def test_header_over_the_limit_is_431_and_streaming_50_mb_of_header_costs_no_memory() -> None:
    """A 20 KB header is answered 431 JSON; 50 MB of header bytes streamed at the worker leave its RSS flat."""
    with running_server() as server:
        address = server_address(server)
        with socket.create_connection(address, timeout=10) as connection:
            connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            assert _error_code(read_all(connection), 431) == "headers_too_large"
        _stream_header_until_cut(address, STREAMED_BYTES)  # warm-up: first-use allocations are not growth
        before = _rss_kb(server.process.pid)
        total, connections, answers = 0, 0, []
        deadline = time.monotonic() + 30
        while total < STREAMED_BYTES and connections < 200 and time.monotonic() < deadline:
            # Each connection streams until the server cuts it: one that stopped short of the header limit would
            # rightly wait for the header timeout (408) instead.
            sent, answer = _stream_header_until_cut(address, STREAMED_BYTES)
            total, connections = total + sent, connections + 1
            answers.append(answer)
        growth = _rss_kb(server.process.pid) - before
        live = _get(address, "/health/live")
    assert total >= STREAMED_BYTES, f"only {total} bytes streamed in {connections} connections"
    assert connections > 1, "the server cut each endless header early instead of reading 50 MB of it"
    assert growth < RSS_GROWTH_LIMIT_KB, f"worker RSS grew {growth} KB"
    assert all(_error_code(answer, 431) == "headers_too_large" for answer in answers if answer)
    assert live.startswith(b"HTTP/1.1 200 ")


def test_request_line_that_stalls_is_answered_408_within_the_header_timeout() -> None:
    """With MPS_HEADER_TIMEOUT_S=1, 100 stalled partial request lines get 408 JSON and a silent connection is
    closed without an answer; the server keeps serving (and SIGINT, Ctrl-C, then stops it with exit 0)."""
    with running_server(MPS_HEADER_TIMEOUT_S="1") as server:
        address = server_address(server)
        started = time.monotonic()
        stalled = [socket.create_connection(address, timeout=10) for _ in range(100)]
        silent = socket.create_connection(address, timeout=10)
        try:
            for connection in stalled:
                connection.sendall(b"GET /health/li")
            answers = [read_all(connection) for connection in stalled]
            elapsed = time.monotonic() - started
            silent_answer = read_all(silent)
            live = _get(address, "/health/live")
        finally:
            for connection in [*stalled, silent]:
                connection.close()
        server.process.send_signal(signal.SIGINT)
        interrupted = server.process.wait(timeout=20)
    assert interrupted == 0, "Ctrl-C stops the server cleanly"
    assert {_error_code(answer, 408) for answer in answers} == {"header_timeout"}
    assert 0.9 <= elapsed < 5, f"answered after {elapsed:.1f} s"
    assert silent_answer == b"", "a connection that sent nothing is closed without an answer"
    assert live.startswith(b"HTTP/1.1 200 ")


def _nofile_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit for {pid}")


def test_connections_past_max_connections_are_refused_and_the_worker_stays_reachable() -> None:
    """MPS_MAX_CONNECTIONS=50 and 200 idle connections: 50 are held, 150 get 503 JSON; once some close, a new
    connection is served again. Started with a soft open-files limit of 100, the server raises it to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    command = ["prlimit", f"--nofile=100:{hard}", *SERVER_COMMAND]
    with running_server(command, MPS_MAX_CONNECTIONS="50", MPS_HEADER_TIMEOUT_S="60") as server:
        address = server_address(server)
        opened = [socket.create_connection(address, timeout=10) for _ in range(200)]
        try:
            ready = answered_within(opened, count=150, timeout=20, settle=0.5)  # the rest are held, not slow
            answered = [connection for connection in opened if connection in ready]
            refused = [read_all(connection) for connection in answered]
            held = [connection for connection in opened if connection not in answered]
            full = _get(address, "/health/live")
            for connection in held[:10]:
                connection.close()
            live = _retry_get(address, "/health/live", until=b"HTTP/1.1 200 ", timeout=10)
        finally:
            for connection in opened:
                connection.close()
        soft_limit = _nofile_soft_limit(server.process.pid)
    assert len(refused) == 150 and len(held) == 50
    assert {_error_code(answer, 503) for answer in refused} == {"too_many_connections"}
    assert _error_code(full, 503) == "too_many_connections", "a full worker refuses even /health/live"
    assert live.startswith(b"HTTP/1.1 200 ")
    assert soft_limit == hard


def _retry_get(address: tuple[str, int], path: str, until: bytes, timeout: float) -> bytes:
    """GET ``path`` on new connections until the answer starts with ``until`` (the server sees closes a bit later)."""
    deadline = time.monotonic() + timeout
    answer = _get(address, path)
    while not answer.startswith(until) and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = _get(address, path)
    return answer


def _start_up_failure(command: list[str], **settings: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the server command expecting it to refuse to start; its exit code and JSON log lines."""
    result = subprocess.run(
        command,
        cwd=REPOSITORY,
        env=server_env(MPS_API_PORT="1", **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, [json.loads(line) for line in result.stderr.splitlines() if line.strip()]


def test_open_files_limit_too_low_for_max_connections_stops_start_up_with_one_line() -> None:
    """A hard open-files limit below MPS_MAX_CONNECTIONS plus the margin: exit 2, one line naming both numbers."""
    command = ["prlimit", "--nofile=256:512", *SERVER_COMMAND]
    code, lines = _start_up_failure(command, MPS_MAX_CONNECTIONS="1000")
    assert code == 2
    [line] = lines
    assert line["event"] == "startup_failed"
    assert "needs 1064 file descriptors" in line["error"] and "limit is 256 (hard limit 512)" in line["error"]


@contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block (skips the test where mounting is not allowed)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); test_main.py covers the check itself")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("case", ["file", "read-only", "full"])
def test_unusable_metrics_folder_stops_start_up_with_one_json_line(case: str, tmp_path: Path) -> None:
    """A metrics folder that is a file, read-only (for root too) or full stops a 2-worker start with exit 1 and
    one ``startup_failed`` line naming the folder, before any worker starts or anything is written there."""
    if case == "file":
        folder = tmp_path / "metrics"
        folder.write_text("not a folder")
        problem, code, lines = (
            "is not a directory",
            *_start_up_failure(SERVER_COMMAND, MPS_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(folder)),
        )
    else:
        options = "ro,size=1m" if case == "read-only" else "size=8m"
        with _tmpfs(tmp_path / "metrics", options) as folder:
            code, lines = _start_up_failure(SERVER_COMMAND, MPS_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(folder))
            leftovers = list(folder.iterdir())
        assert leftovers == []
        problem = "is not writable (Read-only file system)" if case == "read-only" else "MiB free, at least 64 MiB"
    assert code == 1
    [line] = lines
    assert line["event"] == "startup_failed" and line["folder"] == str(folder)
    assert problem in line["error"] and str(folder) in line["error"]


def test_metrics_folder_checks_run_with_one_worker_when_the_variable_is_set(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR set by hand puts even one worker in multiprocess mode: it is checked too."""
    code, lines = _start_up_failure(
        [sys.executable, "-m", "ml_production_service"], PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing")
    )
    assert code == 1
    assert [line["event"] for line in lines] == ["startup_failed"]
    assert "does not exist" in lines[0]["error"]
