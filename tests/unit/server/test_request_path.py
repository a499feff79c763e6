"""The request path's cheap parts: one timer for every body deadline, the answer's head written with its body,
request ids without a system call, the class counts without a tally, the body read without a generator."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client import REGISTRY
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from ml_production_service.server.body import read_body, request_header
from ml_production_service.server.metrics import PredictionCounter
from ml_production_service.server.middleware import BodyDeadlines, RequestIds
from ml_production_service.server.protocol import HeadWithBody


async def _read_until_cancelled(deadlines: BodyDeadlines, deadline: float) -> str:
    """Wait for body bytes that never come, as a request task does; say how it ended."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.watch(task, deadline)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if deadlines.timed_out(task):
            return f"timed out at {asyncio.get_running_loop().time() - deadline:+.2f}"
        raise
    finally:
        deadlines.reading.pop(task, None)
    return "answered"  # pragma: no cover - the event is never set


def test_one_timer_times_out_each_read_at_its_own_deadline() -> None:
    """A read registered after another but due before it re-arms the timer earlier; each read is cancelled at its
    own deadline (not before, and not a timer period late), and a cancellation that is not a deadline's is not
    turned into a timeout."""

    async def main() -> tuple[list[str], bool]:
        deadlines = BodyDeadlines()
        now = asyncio.get_running_loop().time()
        late = asyncio.create_task(_read_until_cancelled(deadlines, now + 0.3))
        await asyncio.sleep(0)
        early = asyncio.create_task(_read_until_cancelled(deadlines, now + 0.1))
        other = asyncio.create_task(_read_until_cancelled(deadlines, now + 10))
        await asyncio.sleep(0)
        other.cancel()
        results = [await early, await late]
        with pytest.raises(asyncio.CancelledError):
            await other
        return results, deadlines.timer is None and not deadlines.reading

    results, idle = asyncio.run(main())
    assert [text[:10] for text in results] == ["timed out "] * 2
    assert all(0 <= float(text.rpartition(" ")[2]) < 0.1 for text in results), results
    assert idle, "the timer is not re-armed once no read is pending"


def test_the_head_waits_for_the_body_and_leaves_with_it() -> None:
    """The first write (the head) is held; the next one sends both in one write; a head alone leaves at the end
    of the loop's pass; close sends what is held before closing."""

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        seen = []

        def received() -> bytes:
            try:
                return theirs.recv(65536)
            except BlockingIOError:
                return b""

        answer = HeadWithBody(transport, loop)
        answer.write(b"HEAD|")
        seen.append(received())
        answer.write(b"body")
        seen.append(received())
        alone = HeadWithBody(transport, loop)
        alone.write(b"head-only")
        await asyncio.sleep(0)
        seen.append(received())
        closing = HeadWithBody(transport, loop)
        closing.write(b"last")
        assert not closing.is_closing()
        closing.close()
        await asyncio.sleep(0.01)
        seen.append(received())
        assert closing.is_closing()
        closing.flush()  # nothing held, connection closed: nothing to do
        late = HeadWithBody(transport, loop)
        late.write(b"after the close")
        late.flush()  # held, but the connection is closed: dropped, not written
        seen.append(received())
        theirs.close()
        return seen

    assert asyncio.run(main()) == [b"", b"HEAD|body", b"head-only", b"last", b""]


def test_request_ids_are_unique_hex_of_the_usual_length() -> None:
    """New ids are 32 hex digits like secrets.token_hex(16), unique within a worker and across two middlewares."""
    first, second = RequestIds(), RequestIds()
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)


def test_prediction_counter_counts_each_class_and_creates_a_series_on_its_first_row() -> None:
    """One row or many, each class's mps_predictions_total grows by its rows; a class never predicted has no
    series."""
    counter = PredictionCounter("unit_counter", "v1", ("setosa", "versicolor", "virginica"))

    def count(label: str) -> float | None:
        labels = {"model_type": "unit_counter", "model_version": "v1", "predicted_class": label}
        return REGISTRY.get_sample_value("mps_predictions_total", labels)

    counter.one(2)
    counter.many([0])
    counter.many([0, 2, 2, 0, 0])
    assert (count("setosa"), count("versicolor"), count("virginica")) == (4.0, None, 3.0)


def _request(messages: list[Message]) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": [(b"x-a", b"1")]}

    async def receive() -> Message:
        return messages.pop(0)

    return Request(scope, receive)


def test_read_body_joins_the_chunks_and_raises_when_the_client_left() -> None:
    """The body in several messages is joined; a disconnect before its end is ClientDisconnect, as
    Request.body raises it; a header is found by its lowercase name, a missing one is None."""
    chunks: list[Message] = [
        {"type": "http.request", "body": part, "more_body": more} for part, more in ((b"ab", True), (b"c", False))
    ]
    assert asyncio.run(read_body(_request(chunks))) == b"abc"
    cut: list[Message] = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(_request(cut)))
    request = _request([])
    assert (request_header(request, b"x-a"), request_header(request, b"x-b")) == ("1", None)
