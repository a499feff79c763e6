"""Unlucky and hostile clients against the real server command: slow bodies, aborted uploads, a stop mid-request."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from ml_production_service.server.metrics import forget_dead_workers
from tests.functional.server_process import RunningServer, running_server

HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"


def _connect(server: RunningServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _log_lines(server: RunningServer) -> list[dict[str, object]]:
    server.log.seek(0)
    return [json.loads(line) for line in server.log.read().splitlines() if line.startswith("{")]


def _metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


@pytest.mark.slow
def test_a_body_shorter_than_its_content_length_is_answered_408_at_the_deadline() -> None:
    """The reported hang: 10 of 200 declared bytes, then silence. Now a JSON 408 when MPS_BODY_TIMEOUT_S runs out."""
    with running_server(MPS_BODY_TIMEOUT_S="1") as server, _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(HEAD + b'{"sepal_le')
        status, headers, body = _read_answer(sock)
        waited = time.monotonic() - started
        assert status == 408
        answer = json.loads(body)
        assert answer["code"] == "body_timeout" and answer["request_id"] == headers["x-request-id"]
        assert headers["connection"] == "close"
        assert 0.9 <= waited < 5
        assert sock.recv(1) == b"", "the connection is closed after the 408"


@pytest.mark.slow
def test_an_aborted_upload_is_counted_499_with_one_quiet_line() -> None:
    """A client that leaves mid-upload is not a server error: status 499, one INFO line, no traceback."""
    with running_server() as server:
        for _ in range(3):
            with _connect(server) as sock:
                sock.sendall(HEAD + b'{"sepal_length": 5.1')
                time.sleep(0.2)
        deadline = time.monotonic() + 5
        while 'status="499"' not in _metrics(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        metrics = _metrics(server)
        assert 'mps_http_requests_total{method="POST",route="/predict",status="499"} 3.0' in metrics
        assert 'status="500"' not in metrics
        lines = _log_lines(server)
        aborted = [line for line in lines if line.get("event") == "request_aborted"]
        assert len(aborted) == 3 and all(line["level"] == "info" and line["status"] == 499 for line in aborted)
        server.log.seek(0)
        assert "Traceback" not in server.log.read()


@pytest.mark.slow
def test_a_request_cut_by_the_graceful_timeout_gets_the_json_error_shape() -> None:
    """SIGTERM while a body is still arriving: after MPS_GRACEFUL_TIMEOUT_S the request is answered 503 in JSON."""
    with running_server(MPS_GRACEFUL_TIMEOUT_S="1", MPS_BODY_TIMEOUT_S="30") as server, _connect(server) as sock:
        sock.sendall(HEAD + b'{"sepal_length": 5.1')
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        status, headers, body = _read_answer(sock)
        assert status == 503
        answer = json.loads(body)
        assert answer["code"] == "shutdown_timeout" and answer["request_id"] == headers["x-request-id"]
        assert headers["content-type"] == "application/json"
        # The one SIGTERM above stops it: stop() now would send a second one while it is still shutting down.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=30)
        code, output = server.stop()
        assert code in (0, -signal.SIGTERM), output[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child and /proc are Linux behaviour")
def test_in_flight_of_a_killed_worker_is_forgotten(tmp_path: Path) -> None:
    """A worker killed mid-request (kill -9, OOM) leaves its in-flight gauge at 1; the next scrape drops it."""
    script = (
        "import os, signal\n"
        "from ml_production_service.server.metrics import IN_FLIGHT, REQUESTS\n"
        "IN_FLIGHT.inc(); REQUESTS.labels('/predict', 'POST', '200').inc()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    killed = subprocess.run([sys.executable, "-c", script], env=env, check=False, timeout=60)
    assert killed.returncode == -signal.SIGKILL

    def scrape() -> dict[str, float]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
        return {s.name: s.value for family in registry.collect() for s in family.samples}

    assert scrape()["mps_http_requests_in_flight"] == 1.0
    assert forget_dead_workers(str(tmp_path)) != []
    after = scrape()
    assert after.get("mps_http_requests_in_flight", 0.0) == 0.0
    assert after["mps_http_requests_total"] == 1.0, "a dead worker's counters are kept"
    assert forget_dead_workers(str(tmp_path)) == []


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident size (VmHWM) plus its children's, from /proc."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    total = 0
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_amplifying_requests_keep_the_worker_small() -> None:
    """The reported attacks, several at once (two took a forest worker from 199 MB to 1.3 GB): the worker's peak
    resident size grows by less than 64 MB and every answer is a small 4xx."""
    batch = b'{"instances": [' + b",".join([b"{}"] * 200_000) + b"]}"
    keys = b"{" + b",".join(b'"k%d":1' % i for i in range(80_000)) + b"}"
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    outputs = json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}] * 10_000}).encode()
    attacks = [("/predict/batch", batch), ("/predict", keys), ("/v2/models/random_forest/infer", outputs)]
    with running_server(MPS_MODEL_TYPE="random_forest") as server:
        for path, body in attacks:  # once each first, so that one-off allocations are not counted as growth
            request = urllib.request.Request(
                f"{server.url}{path}", data=body, headers={"content-type": "application/json"}
            )
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=30)  # noqa: S310
            assert 400 <= answer.value.code < 500 and len(answer.value.read()) < 4096
        before = _peak_rss_kib(server.process.pid)

        def attack(index: int) -> int:
            path, body = attacks[index % len(attacks)]
            request = urllib.request.Request(
                f"{server.url}{path}", data=body, headers={"content-type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=30)  # noqa: S310
            except urllib.error.HTTPError as error:
                assert len(error.read()) < 4096
                return error.code
            return 200

        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(attack, range(24)))
        assert all(400 <= status < 500 for status in statuses)
        growth_mib = (_peak_rss_kib(server.process.pid) - before) / 1024
        assert growth_mib < 64, f"peak resident size grew by {growth_mib:.0f} MiB"
