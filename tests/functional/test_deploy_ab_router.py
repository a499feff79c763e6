"""The compose A/B router for real: Debian's nginx, rendered from the same template and variables as compose.

The split test puts it in front of two service processes. The front-door tests put it in front of a stub that
records every request it gets, so that what nginx turns away provably never reaches a service; they shorten
the header and keep-alive timeouts (10 s and 5 s in the template) to one second, and keep every other limit.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import re
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ml_production_service.server.errors import ApiError, error_body
from tests.functional.deploy_helpers import (
    compose_config,
    render_router_config,
    router_service,
    running_nginx,
    server_directives,
)
from tests.functional.server_process import REPOSITORY, free_port, running_server

pytestmark = pytest.mark.slow
REQUESTS = 400
RANDOM_FOREST_PERCENT = 70
SIGMAS = 4  # a correct 70/30 router fails this by chance about once in 16,000 runs
SHORT_TIMEOUT_S = 1.0  # the front-door tests' client_header_timeout and keepalive_timeout
MAX_BODY_BYTES = 1024 * 1024  # the template's client_max_body_size 1m
ERROR_KEYS = set(json.loads(error_body(ApiError(400, "code", "message"), "id")))
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _ab_check() -> ModuleType:
    """deploy/ab_check.py, the script `make service-validate` runs against the compose router."""
    spec = importlib.util.spec_from_file_location("ab_check", REPOSITORY / "deploy" / "ab_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_router_splits_traffic_by_weight_and_names_the_variant(tmp_path: Path) -> None:
    """Through the compose router's config, 70% go to random_forest within 4 sigma; the header names who answered."""
    compose_router = router_service(compose_config())["environment"]
    port = free_port()
    with ExitStack() as stack:
        # WARNING: running_server reads the log only at the end; 400 request lines would fill the pipe first.
        quiet = {"MPS_LOG_LEVEL": "WARNING"}
        forest = stack.enter_context(running_server(MPS_MODEL_TYPE="random_forest", **quiet))
        tree = stack.enter_context(running_server(MPS_MODEL_TYPE="decision_tree", **quiet))
        variables = {
            **compose_router,
            "AB_LISTEN": f"127.0.0.1:{port}",
            "AB_RANDOM_FOREST_ADDR": forest.url.removeprefix("http://"),
            "AB_DECISION_TREE_ADDR": tree.url.removeprefix("http://"),
            "AB_RANDOM_FOREST_PERCENT": str(RANDOM_FOREST_PERCENT),
        }
        site = tmp_path / "ab.conf"
        render_router_config(variables, site)
        router = stack.enter_context(running_nginx(site, port, tmp_path))
        counts = _ab_check().count_variants(router, REQUESTS)  # raises if a header and an answer disagree
        traced = urllib.request.Request(
            f"{router}/predict",
            data=json.dumps(
                {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Request-ID": "ab-trace-1"},
        )
        with urllib.request.urlopen(traced, timeout=10) as response:  # noqa: S310
            echoed = response.headers["X-Request-ID"]
    rendered = site.read_text(encoding="utf-8")
    assert "${" not in rendered and "$request_id" in rendered, "only the AB_ variables were substituted"
    assert set(counts) == {"random_forest", "decision_tree"} and sum(counts.values()) == REQUESTS
    expected = REQUESTS * RANDOM_FOREST_PERCENT / 100
    sigma = math.sqrt(REQUESTS * RANDOM_FOREST_PERCENT / 100 * (1 - RANDOM_FOREST_PERCENT / 100))
    assert abs(counts["random_forest"] - expected) <= SIGMAS * sigma, f"observed {dict(counts)}"
    assert echoed == "ab-trace-1", "the client's request id reaches the service through the router"


# --- the front door: what nginx turns away, and how ---------------------------------------------------------


class RecordingUpstream(ThreadingHTTPServer):
    """A stand-in for both variants: answers every request 200 with the size of the body it got, and records it."""

    daemon_threads = True
    request_queue_size = 256  # nginx may open a connection per finished upload at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.lock = threading.Lock()
        self.connections = 0
        self.paths: list[str] = []
        self.client_headers: dict[str, tuple[str | None, str | None]] = {}
        """X-Forwarded-For and X-Real-IP as each request path arrived."""

    @property
    def address(self) -> str:
        """host:port, as the template's AB_*_ADDR variables take it."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count each connection nginx opens."""
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def seen(self) -> tuple[int, list[str]]:
        """The connections and the request paths so far."""
        with self.lock:
            return self.connections, list(self.paths)


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the router's upstream pool expects
    server: RecordingUpstream

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        received = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.server.lock:
            self.server.paths.append(self.path)
            self.server.client_headers[self.path] = (self.headers["X-Forwarded-For"], self.headers["X-Real-IP"])
        answer = json.dumps({"path": self.path, "body_bytes": received}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet."""


@dataclass
class FrontDoor:
    """The compose router's config, in front of a recording stub, with one-second header and keep-alive timeouts."""

    port: int
    upstream: RecordingUpstream
    limit_conn: int


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    """nginx with the template as compose renders it, both variants being the stub; stopped, with it, at the end."""
    upstream = RecordingUpstream()
    thread = threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    work = tmp_path_factory.mktemp("router")
    port = free_port()
    variables = {
        **router_service(compose_config())["environment"],
        "AB_LISTEN": f"127.0.0.1:{port}",
        "AB_RANDOM_FOREST_ADDR": upstream.address,
        "AB_DECISION_TREE_ADDR": upstream.address,
    }
    short = f"{SHORT_TIMEOUT_S:g}s"
    overrides = {"client_header_timeout": short, "keepalive_timeout": short}
    render_router_config(variables, work / "ab.conf", overrides)
    try:
        with running_nginx(work / "ab.conf", port, work):
            yield FrontDoor(port, upstream, int(server_directives()["limit_conn"][1]))
    finally:
        upstream.shutdown()
        upstream.server_close()
        thread.join(timeout=5)


def request_head(target: str, *headers: str, body: str = "") -> bytes:
    """A request line and headers (Host and Connection: close added), CRLF-terminated, as bytes."""
    lines = [f"POST {target} HTTP/1.1" if body else f"GET {target} HTTP/1.1", "Host: router", *headers]
    if body:
        lines.append(body)
    return ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers and body of the answer waiting on ``sock``."""
    with closing(http.client.HTTPResponse(sock)) as response:
        response.begin()
        return response.status, response.headers, response.read()


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send ``data`` on a new connection and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # nginx may answer and close before it has read everything; the answer is still there to read.
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_response(sock)


def assert_json_error(answer: tuple[int, http.client.HTTPMessage, bytes], status: int, code: str) -> dict[str, str]:
    """``answer`` is ``status`` in the service's error shape, with the request id in both header and body."""
    got, headers, body = answer
    assert got == status, body
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert set(error) == ERROR_KEYS, error
    assert error["code"] == code and error["error"] and error["details"] == []
    assert error["request_id"] == headers["X-Request-ID"] and REQUEST_ID.fullmatch(error["request_id"])
    return dict(error)


@pytest.mark.parametrize(
    ("headers", "target", "status", "code"),
    [
        pytest.param([f"X-Big: {'a' * 9000}"], "/predict", 431, "headers_too_large", id="one-9KiB-header-line"),
        pytest.param(
            [f"X-Big-{i}: {'a' * 6000}" for i in range(3)], "/predict", 431, "headers_too_large", id="18KiB-headers"
        ),
        pytest.param([], f"/predict?q={'a' * 9000}", 414, "uri_too_long", id="9KiB-request-line"),
        pytest.param([f"X-Big-{i}: {'a' * 6000}" for i in range(2)], "/predict", 200, "", id="12KiB-headers-pass"),
    ],
)
def test_router_answers_oversized_headers_itself_in_json(
    front_door: FrontDoor, headers: list[str], target: str, status: int, code: str
) -> None:
    """Headers over 16 KiB, a header line or request line over 8 KiB: JSON 431/414 from nginx, nothing forwarded."""
    before = front_door.upstream.seen()
    answer = exchange(front_door.port, request_head(target, "X-Request-ID: limit-trace-1", *headers))
    if status == 200:
        assert answer[0] == 200 and json.loads(answer[2])["path"] == target, "12 KiB of headers are served"
        return
    error = assert_json_error(answer, status, code)
    if status == 414:  # nginx stopped before the headers: the client's id is unknown, nginx's own stands in
        assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    else:
        assert error["request_id"] == "limit-trace-1", "the client's request id names nginx's answer too"
    assert "X-Model-Variant" not in answer[1], "no variant answered"
    assert front_door.upstream.seen() == before, "the service got no connection and no request"


@pytest.mark.parametrize(
    ("tag", "sent", "forwarded"),
    [
        pytest.param("direct", [], "127.0.0.1", id="direct-client"),
        pytest.param("proxied", ["X-Forwarded-For: 203.0.113.7"], "203.0.113.7, 127.0.0.1", id="behind-a-proxy"),
        pytest.param(
            "forged",
            ["X-Forwarded-For: 198.51.100.1", "X-Real-IP: 198.51.100.2"],
            "198.51.100.1, 127.0.0.1",
            id="forged",
        ),
    ],
)
def test_router_tells_the_service_the_address_it_saw(
    front_door: FrontDoor, tag: str, sent: list[str], forwarded: str
) -> None:
    """X-Forwarded-For reaches the service with the address nginx saw appended last (the hop the service believes,
    from MPS_TRUSTED_PROXIES only), and X-Real-IP is that address whatever the client sent."""
    target = f"/predict?client={tag}"
    status, _, _ = exchange(front_door.port, request_head(target, *sent))
    assert status == 200
    assert front_door.upstream.client_headers[target] == (forwarded, "127.0.0.1")


def test_router_answers_a_malformed_request_in_json_with_its_own_id(front_door: FrontDoor) -> None:
    """A request line nginx cannot parse is a JSON 400 carrying nginx's request id; nothing is forwarded."""
    before = front_door.upstream.seen()
    error = assert_json_error(exchange(front_door.port, b"NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request")
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"]), "nginx's $request_id"
    assert front_door.upstream.seen() == before


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize("encoding", ["content-length", "chunked"])
@pytest.mark.parametrize("size", [MAX_BODY_BYTES, MAX_BODY_BYTES + 1], ids=["1MiB", "1MiB+1"])
def test_router_takes_bodies_up_to_1mib_and_answers_larger_ones_413_in_json(
    front_door: FrontDoor, encoding: str, size: int
) -> None:
    """1 MiB (MPS_MAX_BODY_BYTES) reaches the service whole; one byte more is nginx's JSON 413, not forwarded."""
    body = b"a" * size
    framing = f"Content-Length: {size}" if encoding == "content-length" else "Transfer-Encoding: chunked"
    head = request_head(f"/predict?{encoding}={size}", framing, body="Content-Type: application/json")
    before = front_door.upstream.seen()
    answer = exchange(front_door.port, head + (body if encoding == "content-length" else _chunked(body)))
    if size <= MAX_BODY_BYTES:
        assert answer[0] == 200 and json.loads(answer[2])["body_bytes"] == size
        return
    error = assert_json_error(answer, 413, "body_too_large")
    assert str(MAX_BODY_BYTES) in error["error"]
    assert front_door.upstream.seen()[1] == before[1], "the service got no request"


def _wait_closed(sock: socket.socket, trickle: bytes = b"", interval: float = 0.1, limit: float = 5.0) -> bytes:
    """Send ``trickle`` a byte per ``interval`` until nginx closes ``sock``; what nginx sent (fails after ``limit``)."""
    received = b""
    deadline = time.monotonic() + limit
    for step in range(int(limit / interval) + 1):
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # reset_timedout_connection on
                return received
            if not data:
                return received
            received += data
        elif step < len(trickle):
            try:
                sock.sendall(trickle[step : step + 1])
            except (BrokenPipeError, ConnectionResetError):
                return received
        if time.monotonic() > deadline:
            break
    pytest.fail(f"nginx kept the connection open for {limit} s")


@pytest.mark.parametrize(
    ("opening", "trickle"),
    [
        pytest.param(b"", b"", id="silent-connection"),
        pytest.param(b"POST /predict HTTP/1.1\r\nHost: router\r\nX-Slow: a", b"", id="partial-header-then-stall"),
        pytest.param(b"", b"POST /predict HTTP/1.1\r\nHost: router\r\nX-Slow: " + b"a" * 100, id="header-trickled"),
    ],
)
def test_router_cuts_a_client_that_does_not_finish_its_headers_in_time(
    front_door: FrontDoor, opening: bytes, trickle: bytes
) -> None:
    """Silent, stalled or trickling (a byte per 0.1 s) headers: closed at client_header_timeout, nothing sent."""
    before = front_door.upstream.seen()
    with socket.create_connection(("127.0.0.1", front_door.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(opening)
        received = _wait_closed(sock, trickle)
        elapsed = time.monotonic() - started
    assert received == b"", "nginx answers a timed-out client nothing"
    assert SHORT_TIMEOUT_S * 0.8 <= elapsed <= SHORT_TIMEOUT_S + 2, f"closed after {elapsed:.2f} s"
    assert front_door.upstream.seen() == before, "the service never saw the connection"


def test_router_closes_an_idle_keep_alive_connection_after_keepalive_timeout(front_door: FrontDoor) -> None:
    """After an answer, a connection left idle is closed at keepalive_timeout (5 s in the template, 1 s here)."""
    with socket.create_connection(("127.0.0.1", front_door.port), timeout=5) as sock:
        sock.sendall(b"GET /router/health HTTP/1.1\r\nHost: router\r\n\r\n")
        with closing(sock.makefile("rb")) as stream:
            assert stream.readline().startswith(b"HTTP/1.1 200")
            while stream.readline() not in (b"\r\n", b""):
                pass
            assert stream.read(3) == b"ok\n"
        started = time.monotonic()
        assert _wait_closed(sock) == b""
        elapsed = time.monotonic() - started
    assert SHORT_TIMEOUT_S * 0.8 <= elapsed <= SHORT_TIMEOUT_S + 2, f"closed after {elapsed:.2f} s"


def test_router_holds_slow_uploads_itself_and_answers_503_in_json_past_the_per_address_limit(
    front_door: FrontDoor,
) -> None:
    """limit_conn uploads from one address wait in nginx, not the service; the next request is a JSON 503."""
    held: list[socket.socket] = []
    try:
        for index in range(front_door.limit_conn):
            sock = socket.create_connection(("127.0.0.1", front_door.port), timeout=10)
            held.append(sock)
            sock.sendall(request_head(f"/predict?held={index}", "Content-Length: 2", body="X-Slow: 1") + b"{")
        # A probe nginx reads before it has counted every held request still passes; a few more, then a 503.
        answer = None
        deadline = time.monotonic() + 5
        for _ in range(20):
            answer = exchange(front_door.port, request_head("/predict?probe"))
            if answer[0] == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer is not None
        assert_json_error(answer, 503, "too_many_connections")
        assert not [p for p in front_door.upstream.seen()[1] if "held=" in p], "no unfinished upload was forwarded"
        for sock in held:
            sock.sendall(b"}")
        for index, sock in enumerate(held):
            status, _, body = read_response(sock)
            assert status == 200 and json.loads(body) == {"path": f"/predict?held={index}", "body_bytes": 2}
    finally:
        for sock in held:
            sock.close()
    assert exchange(front_door.port, request_head("/predict?after"))[0] == 200, "the address is served again"
