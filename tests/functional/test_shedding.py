"""Load shedding (``MPS_MAX_IN_FLIGHT``) in the real server command, under real overload.

One worker, ``MPS_MAX_IN_FLIGHT=4``: slow clients send a prediction's head and part of its body, so their
requests stay in flight (uvicorn tasks awaiting the body) for up to ``MPS_BODY_TIMEOUT_S``. Raw HTTP/1.1 over
sockets on 127.0.0.1; every wait is bounded; the server is stopped at the end.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.functional.conftest import SETOSA
from tests.functional.server_process import (
    Answer,
    RunningServer,
    answered_within,
    parse_answer,
    read_all,
    running_server,
    server_address,
)

pytestmark = pytest.mark.slow
IN_FLIGHT = 4
SLOW_CLIENTS = 8
BODY_TIMEOUT_S = 5
BODY = json.dumps(SETOSA).encode().ljust(100)  # trailing spaces are JSON whitespace: exactly Content-Length 100
SENT_FIRST = 10
"""Body bytes a slow client sends before stalling."""
ANSWER_BOUND_S = 2.0
"""A generous bound for an answer that needs no body: far below the slow clients' body timeout."""
V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2]]}]}
).encode()
SHED_TOTAL = re.compile(r"^mps_shed_total ([0-9.e+]+)$", re.MULTILINE)


def _head(method: str, path: str, length: int | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    if length is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return (head + "\r\n").encode()


def _request(address: tuple[str, int], method: str, path: str, body: bytes | None = None) -> tuple[Answer, float]:
    """One request on a new connection: its parsed answer, and how long the answer took."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(_head(method, path, None if body is None else len(body)) + (body or b""))
        answer = parse_answer(read_all(connection))
    return answer, time.monotonic() - started


def _overloaded(answer: Answer) -> bool:
    """A 503 ``overloaded`` answer in the JSON error shape, with Retry-After, a request id, Connection: close."""
    status, headers, body = answer
    payload = json.loads(body)
    return (
        status == 503
        and payload["code"] == "overloaded"
        and set(payload) == {"error", "code", "details", "request_id"}
        and headers["content-type"] == "application/json"
        and headers["retry-after"] == "1"
        and headers["connection"] == "close"
        and headers["x-request-id"] == payload["request_id"]
    )


def _shed_total(address: tuple[str, int]) -> float:
    (status, _, body), _ = _request(address, "GET", "/metrics")
    assert status == 200
    match = SHED_TOTAL.search(body.decode())
    assert match is not None, "mps_shed_total is exported"
    return float(match.group(1))


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with running_server(MPS_MAX_IN_FLIGHT=str(IN_FLIGHT), MPS_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S)) as running:
        yield running


def test_predictions_past_the_in_flight_limit_are_shed_while_health_and_metrics_answer(
    server: RunningServer,
) -> None:
    """Eight stalled predictions: four are held, four are shed at once; further predictions (named and V2) get
    503 ``overloaded`` with Retry-After in well under the body timeout, while /health/live and /metrics answer
    200 and count every shed request; once the held requests end, predictions are served again; the log has
    ``requests_shed`` lines, fewer than the requests shed."""
    address = server_address(server)
    shed_before = _shed_total(address)
    with ExitStack() as stack:
        slow = [stack.enter_context(socket.create_connection(address, timeout=10)) for _ in range(SLOW_CLIENTS)]
        for connection in slow:
            connection.sendall(_head("POST", "/predict", len(BODY)) + BODY[:SENT_FIRST])
        answered = answered_within(slow, SLOW_CLIENTS - IN_FLIGHT, ANSWER_BOUND_S)
        slow_shed = [parse_answer(read_all(connection)) for connection in slow if connection in answered]
        held = [connection for connection in slow if connection not in answered]

        overloaded = [
            _request(address, "POST", "/predict", BODY),
            _request(address, "POST", "/predict/batch", b'{"instances": [' + BODY + b"]}"),
            _request(address, "POST", "/v2/models/heuristic/infer", V2_BODY),
        ]
        (live_status, _, live_body), _ = _request(address, "GET", "/health/live")
        shed_during = _shed_total(address)

        for connection in held:  # the slow clients finish (or have timed out: either ends the request)
            connection.sendall(BODY[SENT_FIRST:])
        finished = [parse_answer(read_all(connection)) for connection in held]
    (served_status, _, served_body), _ = _request(address, "POST", "/predict", BODY)
    _, log = server.stop()

    assert len(held) == IN_FLIGHT, f"{len(held)} slow requests held, {len(slow_shed)} shed"
    assert len(slow_shed) == SLOW_CLIENTS - IN_FLIGHT and all(_overloaded(answer) for answer in slow_shed)
    assert all(_overloaded(answer) for answer, _ in overloaded), [answer for answer, _ in overloaded]
    assert max(elapsed for _, elapsed in overloaded) < ANSWER_BOUND_S
    assert (live_status, json.loads(live_body)["status"]) == (200, "alive")
    assert shed_during == shed_before + SLOW_CLIENTS - IN_FLIGHT + len(overloaded)
    for status, _, body in finished:
        assert (status, json.loads(body).get("code")) in {(200, None), (408, "body_timeout")}
    assert (served_status, json.loads(served_body)["prediction"]) == (200, "setosa")
    shed_lines = [json.loads(line) for line in log.splitlines() if '"requests_shed"' in line]
    assert shed_lines and all(line["max_in_flight"] == IN_FLIGHT for line in shed_lines)
    assert len(shed_lines) < SLOW_CLIENTS - IN_FLIGHT + len(overloaded), "one line a second, not one per request"


def test_health_and_metrics_answer_while_every_slot_is_held(server: RunningServer) -> None:
    """With the worker full of stalled predictions, every health route and /metrics still answer 200, and a
    GET to a prediction path is not shed (405 from the app, not 503)."""
    address = server_address(server)
    with ExitStack() as stack:
        slow = [stack.enter_context(socket.create_connection(address, timeout=10)) for _ in range(IN_FLIGHT)]
        for connection in slow:
            connection.sendall(_head("POST", "/predict", len(BODY)) + BODY[:SENT_FIRST])
        assert not answered_within(slow, 1, 0.5), "the stalled predictions are held, not answered"
        statuses = {
            path: _request(address, "GET", path)[0][0]
            for path in ("/health", "/health/live", "/health/ready", "/v2/health/live", "/metrics", "/model")
        }
        get_predict = _request(address, "GET", "/predict")[0][0]
        still_full = _request(address, "POST", "/predict", BODY)[0]
        for connection in slow:
            connection.sendall(BODY[SENT_FIRST:])
    assert statuses == dict.fromkeys(statuses, 200)
    assert get_predict == 405
    assert _overloaded(still_full), "the slots were still held: a prediction is shed"
