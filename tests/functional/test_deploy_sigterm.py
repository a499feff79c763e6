"""Graceful shutdown of the image's command: SIGTERM lets in-flight requests finish, within MPS_GRACEFUL_TIMEOUT_S."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
import urllib.request

import pytest

from tests.functional.server_process import RunningServer, running_server
from tests.functional.test_deployment import image_command

pytestmark = pytest.mark.slow
ROW = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
BATCH_ROWS = 1000
IN_FLIGHT = 6
BODY = json.dumps({"instances": [ROW] * BATCH_ROWS}).encode()
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful shutdown


def _command() -> list[str]:
    """The image's CMD, run by this interpreter (the image's `python` is its virtualenv's)."""
    command = image_command()
    return [sys.executable, *command[1:]]


def _start_half_sent_batch(server: RunningServer, request_id: str) -> socket.socket:
    """Open a connection and send a /predict/batch request's headers and half its body."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\nX-Request-ID: {request_id}\r\n\r\n"
    ).encode()
    connection.sendall(head + BODY[: len(BODY) // 2])
    return connection


def _read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``connection`` (read until the server closes it)."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def _wait_in_flight(server: RunningServer, count: int, timeout: float = 20.0) -> None:
    """Wait until the server counts ``count`` requests in flight (besides the /metrics scrape asking)."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:  # noqa: S310
            match = re.search(r"^mps_http_requests_in_flight (\S+)$", response.read().decode(), re.MULTILINE)
        seen = float(match.group(1)) if match else 0.0
        if seen >= count + 1:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{seen - 1:.0f} of {count} requests in flight after {timeout} s")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_answers_every_in_flight_request_then_exits(workers: str) -> None:
    """Requests still arriving when SIGTERM lands all get a complete 200 answer, then the server exits cleanly."""
    with running_server(
        _command(), MPS_MODEL_TYPE="random_forest", MPS_WORKERS=workers, MPS_GRACEFUL_TIMEOUT_S="20"
    ) as server:
        connections = [_start_half_sent_batch(server, f"inflight-{i}") for i in range(IN_FLIGHT)]
        try:
            _wait_in_flight(server, IN_FLIGHT)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the server is shutting down while the bodies are still arriving
            assert server.process.poll() is None, "the server waits for the requests in flight"
            for connection in connections:
                connection.sendall(BODY[len(BODY) // 2 :])
            answers = [_read_response(connection) for connection in connections]
        finally:
            for connection in connections:
                connection.close()
        exit_code = server.process.wait(timeout=20)
        _, log = server.stop()
    assert exit_code in CLEAN_EXIT, log
    for index, (status, headers, body) in enumerate(answers):
        assert status == 200
        assert headers["x-request-id"] == f"inflight-{index}"
        assert int(headers["content-length"]) == len(body)
        predictions = json.loads(body)["predictions"]
        assert len(predictions) == BATCH_ROWS and {p["prediction"] for p in predictions} == {"virginica"}
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    answered = [r for r in records if r["event"] == "request" and r.get("request_id", "").startswith("inflight-")]
    assert sorted(r["status"] for r in answered) == [200] * IN_FLIGHT


def test_graceful_timeout_bounds_how_long_a_stuck_request_delays_shutdown() -> None:
    """A client that never finishes its request holds shutdown for MPS_GRACEFUL_TIMEOUT_S, not forever."""
    timeout_s = 2
    with running_server(
        _command(), MPS_MODEL_TYPE="random_forest", MPS_WORKERS="1", MPS_GRACEFUL_TIMEOUT_S=str(timeout_s)
    ) as server:
        stuck = _start_half_sent_batch(server, "stuck")
        try:
            _wait_in_flight(server, 1)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            exit_code = server.process.wait(timeout=timeout_s + 15)
            waited = time.monotonic() - started
            stuck.settimeout(5)
            leftover = stuck.recv(65536)  # the server closed the connection: the client is not left hanging
        finally:
            stuck.close()
        _, log = server.stop()
    assert exit_code in CLEAN_EXIT, log
    assert timeout_s - 0.5 <= waited < timeout_s + 10, f"exited {waited:.1f} s after SIGTERM"
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 ")
