"""Graceful shutdown of the image's command: SIGTERM lets in-flight requests finish (within MPS_GRACEFUL_TIMEOUT_S),
turns readiness 503 at once and drains keep-alive connections without resetting a request already sent."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

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


# --- SIGTERM under keep-alive load ------------------------------------------------------------------------------

LOAD_THREADS = 16
LOAD_BEFORE_SIGNAL_S = 1.5
LOAD_MAX_S = 10.0
PREDICT_BODY = json.dumps(ROW).encode()


@dataclass
class Outcome:
    """One request of the keep-alive load: when it was sent and what came back (or how it failed)."""

    request_id: str
    sent: float
    status: int | None = None
    connection: str | None = None
    error: str | None = None


def _keep_alive_client(
    address: tuple[str, int], index: int, signalled: threading.Event, outcomes: list[Outcome]
) -> None:
    """POST /predict in a loop on one keep-alive connection; reconnect only before the signal; stop at an error."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    deadline = time.monotonic() + LOAD_MAX_S
    headers = {"Content-Type": "application/json"}
    try:
        for number in range(100_000):
            if time.monotonic() > deadline:
                break
            if connection.sock is None:
                if signalled.is_set():
                    break  # a client of a stopping server goes elsewhere; the listening socket is closing
                connection.connect()
            outcome = Outcome(f"ka-{index}-{number}", time.monotonic())
            outcomes.append(outcome)
            try:
                connection.request(
                    "POST", "/predict", body=PREDICT_BODY, headers={**headers, "X-Request-ID": outcome.request_id}
                )
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                outcome.error = type(error).__name__
                break
            outcome.status, outcome.connection = response.status, response.getheader("connection")
    finally:
        connection.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_keep_alive_load_answers_every_request_already_sent(workers: str) -> None:
    """16 keep-alive clients post /predict in a loop; SIGTERM lands in the middle. No request sent on an open
    connection is reset, every request the server read is answered, every answer to a request sent after the
    signal says Connection: close, and readiness is 503 on the very next request."""
    with running_server(_command(), MPS_WORKERS=workers) as server:
        host, port = server.url.removeprefix("http://").split(":")
        address = (host, int(port))
        probe = http.client.HTTPConnection(*address, timeout=10)
        probe.request("GET", "/health/ready")
        assert probe.getresponse().read()
        signalled = threading.Event()
        outcomes: list[list[Outcome]] = [[] for _ in range(LOAD_THREADS)]
        clients = [
            threading.Thread(target=_keep_alive_client, args=(address, i, signalled, outcomes[i]), daemon=True)
            for i in range(LOAD_THREADS)
        ]
        for client in clients:
            client.start()
        time.sleep(LOAD_BEFORE_SIGNAL_S)
        signalled.set()
        server.process.send_signal(signal.SIGTERM)
        signal_sent = time.monotonic()
        probe.request("GET", "/health/ready")  # on a connection that was idle when the signal came
        ready = probe.getresponse()
        ready_status, ready_connection = ready.status, ready.getheader("connection")
        ready.read()
        probe.close()
        for client in clients:
            client.join(timeout=LOAD_MAX_S + 5)
        exit_code = server.process.wait(timeout=30)
        _, log = server.stop()
    assert exit_code in CLEAN_EXIT, log
    assert (ready_status, ready_connection) == (503, "close")
    every = [outcome for per_client in outcomes for outcome in per_client]
    failed = [outcome for outcome in every if outcome.error is not None]
    assert failed == [], f"{len(failed)} requests sent on open keep-alive connections failed: {failed[:5]}"
    assert {outcome.status for outcome in every} == {200}
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    read_by_server = {r["request_id"] for r in records if r["event"] == "request" and r["request_id"].startswith("ka-")}
    assert read_by_server == {outcome.request_id for outcome in every}
    after = [outcome for outcome in every if outcome.sent > signal_sent]
    assert after, "the load went on after the signal"
    assert {outcome.connection for outcome in after} == {"close"}
    assert len(every) > 10 * LOAD_THREADS, "the load had not started"
