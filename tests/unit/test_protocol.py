"""``server/protocol.py`` and ``server/supervisor.py`` driven in-process, the protocol on a fake transport.

The real server command runs the same code in ``tests/functional/test_connection_limits.py``,
``test_shedding.py`` and ``test_deploy_sigterm.py``; these tests reach the branches a socket cannot time reliably
(pipelining, a response half-written at SIGTERM, a flood of refusals, an exact in-flight count).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from uvicorn.server import ServerState
from uvicorn.supervisors import multiprocess

from ml_production_service.configs import ServiceConfig
from ml_production_service.server.lifecycle import SHUTDOWN
from ml_production_service.server.protocol import (
    LINGER_BYTES,
    SHEDDING,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    ServerConfig,
    _RefusalLog,
)
from ml_production_service.server.supervisor import GracefulMultiprocess, GracefulProcess, GracefulServer

LIMITS = ConnectionLimits(
    max_header_bytes=1024, header_timeout_s=0.05, max_connections=2, drain_grace_s=0.05, max_in_flight=0
)
GET = b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"
IN_FLIGHT = 3
SHEDDING_LIMITS = dataclasses.replace(LIMITS, max_connections=100, max_in_flight=IN_FLIGHT)


class FakeTransport:
    """What the protocol needs from an asyncio transport, recording what it is told."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.paused = False
        self.eof_supported = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return self.eof_supported

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class App:
    """An ASGI app answering 200 ``ok``; ``/slow`` waits for ``release``, ``/stream`` sends its start first."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        self.calls += 1
        while (await receive()).get("more_body"):
            pass
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        if scope["path"] == "/stream":
            await send(start)
            await self.release.wait()
        elif scope["path"] == "/slow":
            await self.release.wait()
            await send(start)
        else:
            await send(start)
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    asyncio.set_event_loop(event_loop)
    yield event_loop
    event_loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _serving() -> Iterator[None]:
    SHUTDOWN.reset()
    yield
    SHUTDOWN.reset()


class Connection:
    """One protocol on a fake transport, on a real event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: ServerState, app: App, limits: ConnectionLimits) -> None:
        config = ServerConfig(
            app, limits=limits, timeout_keep_alive=5.0, timeout_graceful_shutdown=1.0, lifespan="off", log_config=None
        )
        config.load()
        self.loop = loop
        self.protocol = LimitedHttpToolsProtocol(config, state, {}, _loop=loop)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def run(self, seconds: float = 0.0) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def answers(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Every response written so far: status, headers, body."""
        answers = []
        data = bytes(self.transport.written)
        while data:
            head, _, rest = data.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
            length = int(headers.get("content-length", "0"))
            answers.append((int(status_line.split()[1]), headers, rest[:length]))
            data = rest[length:]
        return answers


@pytest.fixture
def connect(loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., Connection]]:
    state = ServerState()
    apps: list[App] = []

    def _connect(app: App | None = None, limits: ConnectionLimits = LIMITS) -> Connection:
        apps.append(app or App())
        return Connection(loop, state, apps[-1], limits)

    yield _connect
    # Release what a test left waiting, so that no task is still pending when the loop closes.
    for app in apps:
        app.release.set()
    for _ in range(10):
        if not state.tasks:
            break
        loop.run_until_complete(asyncio.sleep(0))


def _error(answer: tuple[int, dict[str, str], bytes]) -> dict[str, Any]:
    status, headers, body = answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    payload: dict[str, Any] = json.loads(body)
    assert set(payload) == {"error", "code", "details", "request_id"}
    return payload


# --- limits ----------------------------------------------------------------------------------------------------


def test_limits_come_from_the_service_config_and_the_grace_never_outlasts_keep_alive() -> None:
    """The drain grace is 1 s, or the keep-alive timeout when that is shorter."""
    config = ServiceConfig(
        max_header_bytes=2048, header_timeout_s=3, max_connections=7, keep_alive_timeout_s=0.5, max_in_flight=9
    )
    assert ConnectionLimits.from_config(config) == ConnectionLimits(2048, 3.0, 7, 0.5, 9)
    assert ConnectionLimits.from_config(ServiceConfig()).drain_grace_s == 1.0
    assert ConnectionLimits.from_config(ServiceConfig(max_in_flight=0)).max_in_flight == 0


def test_a_request_within_the_limits_is_served_and_kept_alive(connect: Callable[..., Connection]) -> None:
    """A normal request reaches the app; the connection stays open for the next one."""
    connection = connect()
    connection.send(GET)
    connection.run()
    assert [(status, body) for status, _, body in connection.answers()] == [(200, b"ok")]
    assert not connection.transport.closed
    assert connection.protocol.header_timer is None


def test_complete_head_over_the_limit_is_431_and_never_reaches_the_app(connect: Callable[..., Connection]) -> None:
    """A head that arrives whole but too large is answered 431 in the JSON error shape, then the connection closes."""
    app = App()
    connection = connect(app)
    connection.send(b"GET /ok HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
    connection.run()
    [answer] = connection.answers()
    assert answer[0] == 431
    assert _error(answer)["code"] == "headers_too_large"
    assert answer[1]["x-request-id"] == _error(answer)["request_id"]
    assert app.calls == 0
    assert connection.transport.eof, "the answer is followed by FIN; reading goes on to drain the client"


def test_head_that_never_ends_is_cut_after_one_more_read(connect: Callable[..., Connection]) -> None:
    """Bytes of an unfinished head are counted per read: past the limit it is 431, later bytes are dropped."""
    connection = connect()
    connection.send(b"GET /ok HTTP/1.1\r\nX-Big: ")
    connection.send(b"a" * 600)
    assert connection.answers() == []
    connection.send(b"a" * 600)
    [answer] = connection.answers()
    assert answer[0] == 431
    for _ in range(LINGER_BYTES // 65536 + 1):  # what the client still sends is read and dropped, up to a bound
        connection.send(b"a" * 65536)
    assert connection.transport.closed
    assert len(connection.answers()) == 1


def test_malformed_request_is_400_in_the_json_shape(connect: Callable[..., Connection]) -> None:
    """What httptools cannot parse is answered 400 ``invalid_http`` (uvicorn's is plain text)."""
    connection = connect()
    connection.send(b"NOT HTTP AT ALL\r\n\r\n")
    [answer] = connection.answers()
    assert answer[0] == 400
    assert _error(answer)["code"] == "invalid_http"


def test_header_deadline_answers_408_to_a_request_that_has_begun(connect: Callable[..., Connection]) -> None:
    """A partial request line still incomplete at the deadline is answered 408 and closed."""
    connection = connect()
    connection.send(b"GET /o")
    connection.run(0.15)
    [answer] = connection.answers()
    assert answer[0] == 408
    assert _error(answer)["code"] == "header_timeout"


def test_header_deadline_closes_a_silent_connection_without_an_answer(connect: Callable[..., Connection]) -> None:
    """A connection that sent nothing by the deadline is closed quietly."""
    connection = connect()
    connection.run(0.15)
    assert connection.transport.closed
    assert connection.answers() == []


def test_header_deadline_after_the_connection_closed_does_nothing(connect: Callable[..., Connection]) -> None:
    """A deadline that fires once the transport is already closing writes nothing."""
    connection = connect()
    connection.send(b"GET /o")
    connection.transport.close()
    connection.run(0.15)
    assert connection.answers() == []


def test_error_answer_on_a_transport_without_half_close_is_still_sent(connect: Callable[..., Connection]) -> None:
    """Where the transport cannot send FIN alone (TLS), the answer is written and the linger closes it."""
    connection = connect()
    connection.transport.eof_supported = False
    connection.send(b"BAD\r\n\r\n")
    assert [status for status, _, _ in connection.answers()] == [400]
    assert not connection.transport.eof
    assert connection.protocol.timeout_keep_alive_task is not None


def test_header_deadline_applies_again_to_the_next_request_on_a_kept_alive_connection(
    connect: Callable[..., Connection],
) -> None:
    """After an answer, the next request's head gets the deadline from its first bytes."""
    connection = connect()
    connection.send(GET)
    connection.run()
    connection.send(b"GET /ok HT")
    assert connection.protocol.header_timer is not None
    connection.run(0.15)
    assert [status for status, _, _ in connection.answers()] == [200, 408]


def test_connections_past_the_limit_are_refused_with_503_without_reading(connect: Callable[..., Connection]) -> None:
    """With ``max_connections`` open, the next connection gets 503 ``too_many_connections`` and is closed."""
    first, second = connect(), connect()
    refused = connect()
    [answer] = refused.answers()
    assert answer[0] == 503
    assert answer[1]["retry-after"] == "1"
    assert _error(answer)["code"] == "too_many_connections"
    assert refused.transport.closed
    refused.send(GET)  # anything that still arrives is dropped
    refused.protocol.connection_lost(None)
    assert len(refused.answers()) == 1
    assert refused.protocol not in refused.protocol.connections
    first.protocol.connection_lost(None)
    third = connect()
    assert not third.transport.closed, "a slot freed by a closed connection is taken again"
    assert second.protocol in third.protocol.connections


def test_refusals_are_logged_once_a_second_with_a_count() -> None:
    """A flood of refused connections writes one line per second, not one per connection."""
    log = _RefusalLog(interval_s=1.0)
    log.note(now=10.0, limit=5)
    assert log.pending == 0
    log.note(now=10.5, limit=5)
    log.note(now=10.9, limit=5)
    assert log.pending == 2
    log.note(now=11.2, limit=5)
    assert log.pending == 0
    assert (SHEDDING.event, SHEDDING.limit_name) == ("requests_shed", "max_in_flight")


def test_pipelined_request_over_the_limit_closes_the_connection_after_the_answer_in_progress(
    connect: Callable[..., Connection],
) -> None:
    """A bad request behind one still being answered cannot be answered in the middle: the first answer
    completes with Connection: close, the bad one is dropped."""
    app = App()
    connection = connect(app)
    connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /ok HTTP/1.1\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
    connection.run()
    assert connection.answers() == []
    connection.send(b"a" * (LINGER_BYTES + 1))  # dropped, and it does not cut the answer in progress
    assert not connection.transport.closed
    app.release.set()
    connection.run()
    [answer] = connection.answers()
    assert answer[0] == 200 and answer[1]["connection"] == "close"
    assert connection.transport.closed
    assert app.calls == 1


def test_header_deadline_of_a_pipelined_request_lets_the_answer_in_progress_finish(
    connect: Callable[..., Connection],
) -> None:
    """The deadline of a request queued behind a slow answer closes the connection after that answer."""
    app = App()
    connection = connect(app)
    connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /o")
    connection.run(0.15)
    assert connection.answers() == []
    app.release.set()
    connection.run()
    assert [(status, headers["connection"]) for status, headers, _ in connection.answers()] == [(200, "close")]


def test_upgrade_requests_are_served_as_plain_requests(connect: Callable[..., Connection]) -> None:
    """No WebSocket protocol is configured: an Upgrade request gets an ordinary answer."""
    connection = connect()
    connection.send(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    connection.run()
    assert [status for status, _, _ in connection.answers()] == [200]


# --- load shedding --------------------------------------------------------------------------------------------


def _post(path: str, body: bytes = b"{}", headers: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + headers + b"\r\n" + body


def _hold(connect: Callable[..., Connection], app: App, requests: int) -> list[Connection]:
    """``requests`` connections whose requests stay in flight (as uvicorn tasks) until ``app.release``."""
    held = [connect(app, SHEDDING_LIMITS) for _ in range(requests)]
    for connection in held:
        connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    held[0].run()
    assert len(held[0].protocol.tasks) == requests
    return held


def _shed_count() -> float:
    return REGISTRY.get_sample_value("mps_shed_total") or 0.0


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/predict", id="predict"),
        pytest.param("/predict?explain=true", id="predict-query"),
        pytest.param("/predict/batch", id="batch"),
        pytest.param("/%70redict", id="percent-encoded"),
        pytest.param("http://t/predict", id="absolute-form"),
        pytest.param("/v2/models/heuristic/infer", id="v2-infer"),
        pytest.param("/v2/models/heuristic/versions/1.2.0/infer", id="v2-version-infer"),
    ],
)
def test_prediction_over_the_in_flight_limit_is_shed_before_its_body(
    connect: Callable[..., Connection], target: str
) -> None:
    """With ``max_in_flight`` requests held, a prediction gets 503 ``overloaded`` with Retry-After from its head
    alone: the app never sees it, the counter counts it, the connection closes, later body bytes are dropped."""
    app = App()
    _hold(connect, app, IN_FLIGHT)
    before = _shed_count()
    connection = connect(app, SHEDDING_LIMITS)
    head = _post(target, b"x" * 100)[:-90]  # the head and 10 of 100 body bytes
    connection.send(head)
    connection.run()
    [answer] = connection.answers()
    payload = _error(answer)
    assert (answer[0], payload["code"], answer[1]["retry-after"]) == (503, "overloaded", "1")
    assert payload["details"] == [{"field": "request", "rule": "max_in_flight", "message": "at most 3 per worker"}]
    assert answer[1]["x-request-id"] == payload["request_id"] and len(payload["request_id"]) == 32
    assert app.calls == IN_FLIGHT
    assert len(connection.protocol.tasks) == IN_FLIGHT
    assert _shed_count() == before + 1
    assert connection.transport.eof, "the answer is followed by FIN; the rest of the body is read and dropped"
    connection.send(b"x" * 90)
    assert len(connection.answers()) == 1 and app.calls == IN_FLIGHT
    assert connection.protocol.timeout_keep_alive_task is not None, "the linger closes it, as after any rejection"


def test_shed_answer_keeps_the_clients_request_id(connect: Callable[..., Connection]) -> None:
    """A sane ``X-Request-ID`` is echoed as the middleware would; an unsafe one is replaced."""
    app = App()
    _hold(connect, app, IN_FLIGHT)
    kept, replaced = connect(app, SHEDDING_LIMITS), connect(app, SHEDDING_LIMITS)
    kept.send(_post("/predict", headers=b"X-Request-ID: trace-7\r\n"))
    replaced.send(_post("/predict", headers=b"X-Request-ID: a b\r\n"))
    [(_, kept_headers, kept_body)] = kept.answers()
    [(_, replaced_headers, _)] = replaced.answers()
    assert kept_headers["x-request-id"] == "trace-7" == json.loads(kept_body)["request_id"]
    assert replaced_headers["x-request-id"] not in {"a b", "trace-7"}


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n", id="health-live"),
        pytest.param(b"GET /health/ready HTTP/1.1\r\nHost: t\r\n\r\n", id="health-ready"),
        pytest.param(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", id="v2-health"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", id="metrics"),
        pytest.param(b"GET /model HTTP/1.1\r\nHost: t\r\n\r\n", id="model"),
        pytest.param(b"GET /v2/models/heuristic HTTP/1.1\r\nHost: t\r\n\r\n", id="v2-metadata"),
        pytest.param(b"GET /v2/models/heuristic/versions/1 HTTP/1.1\r\nHost: t\r\n\r\n", id="v2-version-metadata"),
        pytest.param(b"GET /v2/models/heuristic/ready HTTP/1.1\r\nHost: t\r\n\r\n", id="v2-model-ready"),
        pytest.param(b"GET /predict HTTP/1.1\r\nHost: t\r\n\r\n", id="get-predict"),
        pytest.param(_post("/health/live"), id="post-health"),
        pytest.param(_post("/predict/"), id="post-predict-slash"),
        pytest.param(_post("/predictions"), id="post-other-path"),
        pytest.param(_post("/v2/models/a/b/infer"), id="post-v2-extra-segment"),
        pytest.param(_post("/v2/models/heuristic"), id="post-v2-metadata"),
    ],
)
def test_requests_that_do_not_run_the_model_are_served_over_the_limit(
    connect: Callable[..., Connection], request_bytes: bytes
) -> None:
    """Health, metrics, metadata, GETs and POSTs to other paths reach the app whatever the load."""
    app = App()
    _hold(connect, app, IN_FLIGHT)
    connection = connect(app, SHEDDING_LIMITS)
    connection.send(request_bytes)
    connection.run()
    assert [(status, body) for status, _, body in connection.answers()] == [(200, b"ok")]
    assert app.calls == IN_FLIGHT + 1


def test_prediction_one_under_the_limit_is_served(connect: Callable[..., Connection]) -> None:
    """With ``max_in_flight - 1`` requests held the prediction becomes the last one allowed; the next is shed."""
    app = App()
    _hold(connect, app, IN_FLIGHT - 1)
    served, shed = connect(app, SHEDDING_LIMITS), connect(app, SHEDDING_LIMITS)
    served.send(_post("/predict")[:-1])  # in flight until its last byte
    shed.send(_post("/predict"))
    served.send(b"}")
    served.run()
    assert [status for status, _, _ in served.answers()] == [200]
    assert [status for status, _, _ in shed.answers()] == [503]
    assert app.calls == IN_FLIGHT


def test_no_shedding_when_the_limit_is_off(connect: Callable[..., Connection]) -> None:
    """``max_in_flight=0``: a prediction is served however many requests are held."""
    app = App()
    off = dataclasses.replace(SHEDDING_LIMITS, max_in_flight=0)
    held = [connect(app, off) for _ in range(20)]
    for connection in held:
        connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    connection = connect(app, off)
    connection.send(_post("/predict"))
    connection.run()
    assert [status for status, _, _ in connection.answers()] == [200]
    assert len(connection.protocol.tasks) == 20


def test_shed_tasks_free_their_slot_when_answered(connect: Callable[..., Connection]) -> None:
    """The count is live: once held requests are answered, predictions are served again."""
    app = App()
    _hold(connect, app, IN_FLIGHT)
    first = connect(app, SHEDDING_LIMITS)
    first.send(_post("/predict"))
    app.release.set()
    first.run()
    assert len(first.protocol.tasks) == 0
    again = connect(app, SHEDDING_LIMITS)
    again.send(_post("/predict"))
    again.run()
    assert [status for status, _, _ in first.answers()] == [503]
    assert [status for status, _, _ in again.answers()] == [200]


def test_pipelined_prediction_behind_an_answer_in_progress_is_not_shed(connect: Callable[..., Connection]) -> None:
    """A prediction queued behind its connection's answer in progress waits there instead of being shed (it
    adds no task until that answer is done; a shed answer could not be written before it anyway)."""
    app = App()
    _hold(connect, app, IN_FLIGHT - 1)
    connection = connect(app, SHEDDING_LIMITS)
    connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + _post("/predict"))
    connection.run()
    assert len(connection.protocol.tasks) == IN_FLIGHT
    app.release.set()
    connection.run()
    connection.run()
    assert [status for status, _, _ in connection.answers()] == [200, 200]
    assert not connection.transport.closed


# --- drain --------------------------------------------------------------------------------------------------------


def test_idle_connection_gets_a_grace_and_a_request_sent_in_it_is_answered_with_close(
    connect: Callable[..., Connection],
) -> None:
    """Shutdown does not close an idle keep-alive connection at once: a request already sent is answered."""
    connection = connect()
    connection.send(GET)
    connection.run()
    SHUTDOWN.begin()
    connection.protocol.shutdown()
    connection.protocol.shutdown()  # uvicorn's own shutdown calls it again: no second grace
    assert not connection.transport.closed
    connection.send(GET)
    connection.run()
    assert [(status, headers.get("connection")) for status, headers, _ in connection.answers()] == [
        (200, None),
        (200, "close"),
    ]
    assert connection.transport.closed


def test_idle_connection_is_closed_when_the_grace_ends(connect: Callable[..., Connection]) -> None:
    """With no request in the grace, the idle connection closes after it, silently."""
    connection = connect()
    connection.send(GET)
    connection.run()
    connection.protocol.shutdown()
    connection.run(0.01)
    assert not connection.transport.closed
    connection.run(0.1)
    assert connection.transport.closed
    assert len(connection.answers()) == 1


def test_request_not_yet_answered_at_shutdown_is_answered_with_close(connect: Callable[..., Connection]) -> None:
    """A request in progress finishes; its answer says Connection: close."""
    app = App()
    connection = connect(app)
    connection.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    connection.run()
    connection.protocol.shutdown()
    app.release.set()
    connection.run()
    assert [(status, headers["connection"]) for status, headers, _ in connection.answers()] == [(200, "close")]
    assert connection.transport.closed


def test_answer_already_started_at_shutdown_finishes_then_the_connection_gets_the_grace(
    connect: Callable[..., Connection],
) -> None:
    """Headers already sent without Connection: close: the answer completes, then the short grace applies."""
    app = App()
    connection = connect(app)
    connection.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    connection.run()
    connection.protocol.shutdown()
    app.release.set()
    connection.run()
    assert [status for status, _, _ in connection.answers()] == [200]
    assert not connection.transport.closed
    connection.run(0.1)
    assert connection.transport.closed


def test_request_being_received_at_shutdown_is_answered_with_close(connect: Callable[..., Connection]) -> None:
    """Half a head at shutdown: the rest is read and the answer closes the connection."""
    connection = connect()
    connection.send(b"GET /ok HTTP/1.1\r\n")
    SHUTDOWN.begin()
    connection.protocol.shutdown()
    connection.send(b"Host: t\r\n\r\n")
    connection.run()
    assert [(status, headers["connection"]) for status, headers, _ in connection.answers()] == [(200, "close")]


def test_server_signal_turns_readiness_off_and_drains_on_the_next_loop_pass(
    loop: asyncio.AbstractEventLoop, connect: Callable[..., Connection]
) -> None:
    """SIGTERM sets the shutdown flag in the handler itself and starts every connection's drain right after."""
    connection = connect()
    server = GracefulServer(connection.protocol.config)
    server.server_state.connections.add(connection.protocol)

    async def signal_now() -> None:
        server.handle_exit(signal.SIGTERM, None)
        assert SHUTDOWN.draining and server.should_exit
        assert not connection.protocol.draining
        await asyncio.sleep(0)
        assert connection.protocol.draining
        server.handle_exit(signal.SIGTERM, None)  # a second signal does not drain twice

    loop.run_until_complete(signal_now())


def test_server_signal_before_the_loop_runs_only_sets_the_flags() -> None:
    """A signal with no event loop running (still starting) sets the flags and nothing else."""
    server = GracefulServer(ServerConfig("x:y", limits=LIMITS, timeout_keep_alive=5, timeout_graceful_shutdown=1))
    server.handle_exit(signal.SIGINT, None)
    assert SHUTDOWN.draining and server.should_exit


# --- supervisor ---------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """uvicorn's supervisor installs handlers for many signals: give the test process its own back."""
    saved = {sig: signal.getsignal(sig) for sig in multiprocess.SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_worker_processes_serve_with_the_graceful_server() -> None:
    """Each worker process builds a GracefulServer from the pickled configuration."""
    config = ServerConfig("x:y", limits=LIMITS, timeout_keep_alive=5, timeout_graceful_shutdown=1)
    process = GracefulProcess(config, [])
    assert isinstance(process.server, GracefulServer)
    assert process.server is process.server


class _Recorded:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid


def test_supervisor_passes_sigterm_to_workers_at_once(restore_signals: None) -> None:
    """SIGTERM to the supervisor reaches every live worker in the handler; it is also queued as uvicorn does."""
    config = ServerConfig("x:y", limits=LIMITS, timeout_keep_alive=5, timeout_graceful_shutdown=1, workers=2)
    supervisor = GracefulMultiprocess(config, [])
    assert signal.getsignal(signal.SIGTERM) == supervisor.forward_sigterm
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        supervisor.processes = [_Recorded(sleeper.pid), _Recorded(None), _Recorded(gone.pid)]  # type: ignore[list-item]
        supervisor.forward_sigterm(signal.SIGTERM, None)
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()
    assert supervisor.signal_queue == [signal.SIGTERM]


def test_supervisor_creates_graceful_workers_only_while_it_runs(restore_signals: None) -> None:
    """Within run(), every worker uvicorn's supervisor creates is a GracefulProcess; the name is restored after."""
    seen: list[type] = []

    class Supervisor(GracefulMultiprocess):
        def init_processes(self) -> None:
            seen.append(multiprocess.Process)
            self.should_exit.set()

    config = ServerConfig("x:y", limits=LIMITS, timeout_keep_alive=5, timeout_graceful_shutdown=1, workers=2)
    original = multiprocess.Process
    Supervisor(config, []).run()
    assert seen == [GracefulProcess]
    assert multiprocess.Process is original
