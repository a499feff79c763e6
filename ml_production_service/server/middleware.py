"""Pure ASGI middleware: request ids, the body size limit and deadline, one canonical log line per request."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import secrets
from collections.abc import Callable
from time import perf_counter
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_production_service.logging import get_logger, log_line
from ml_production_service.server.errors import ApiError, BodyTooLarge, send_error
from ml_production_service.server.lifecycle import SHUTDOWN
from ml_production_service.server.metrics import IN_FLIGHT, observe_request

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that went away before its answer; counted and logged apart from server errors."""
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
LOGGER_NAME = "ml_production_service.access"
logger = get_logger(LOGGER_NAME)


def request_id_from(headers: list[tuple[bytes, bytes]], new_id: Callable[[], str] | None = None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, otherwise a new one (``new_id()``, else random)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return value.decode("ascii")
    return new_id() if new_id is not None else secrets.token_hex(16)


class RequestIds:
    """New request ids: 32 hex digits, a random half drawn once and a counter, unique without a system call each
    (``secrets`` reads the kernel's random source per id). Built with the app's middleware, so once per worker."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(secrets.randbelow(1 << 32))

    def __call__(self) -> str:
        """The next id."""
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length; ``None`` when absent or not a plain number (the server's parser judges those)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if _CONTENT_LENGTH.fullmatch(value) else None
    return None


class BodyTimeout(ApiError):
    """The body did not arrive in full within ``MPS_BODY_TIMEOUT_S`` (a slow client, or fewer bytes than declared)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            "body_timeout",
            f"request body not received in full within {seconds:g} s (MPS_BODY_TIMEOUT_S)",
            [{"field": "body", "rule": "timeout", "message": f"within {seconds:g} s"}],
            headers={"connection": "close"},
        )


SHUTDOWN_TIMEOUT = ApiError(
    503,
    "shutdown_timeout",
    "the server stopped before this request finished (MPS_GRACEFUL_TIMEOUT_S); retry it",
    headers={"connection": "close", "retry-after": "1"},
)


class BodyDeadlines:
    """The body reads in progress and their deadlines, watched by one timer for all of them.

    ``asyncio.timeout_at`` around each read arms and cancels a timer per request: on uvloop about 10 µs, a tenth of
    a served request. Here a read costs two dictionary operations; the timer is armed at the earliest pending
    deadline, and when it fires, the tasks whose deadline has passed are cancelled (``receive`` turns that into
    408). It stays armed while reads come and go, so that under load it is re-armed about once per timeout.
    """

    def __init__(self) -> None:
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def watch(self, task: asyncio.Task[Any], deadline: float) -> None:
        """``task`` now waits for body bytes until ``deadline`` (the event loop's clock)."""
        self.reading[task] = deadline
        if deadline < self.timer_at:  # the first read since the timer fired, or an older request's read
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = asyncio.get_running_loop().call_at(when, self._check)

    def _check(self) -> None:
        self.timer, self.timer_at = None, math.inf
        now = asyncio.get_running_loop().time()
        for task, deadline in list(self.reading.items()):
            if deadline <= now:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()
        if self.reading:
            self._arm(min(self.reading.values()))

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task``'s cancellation was its deadline (then it is not cancelled any more), not anyone else's."""
        if task not in self.expired:
            return False
        self.expired.discard(task)
        task.uncancel()
        return True


class RequestContextMiddleware:
    """Tags each request with an id, bounds its body in size and time, and logs one line when it ends."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float, model_info: dict[str, str | None]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.model_info = model_info
        self.new_id = RequestIds()
        self.deadlines = BodyDeadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        headers = scope["headers"]
        request_id = request_id_from(headers, self.new_id)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        limit = self.max_body_bytes
        timeout_s = self.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        received = 0
        body_done = False

        deadlines = self.deadlines

        async def receive_limited() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            task = asyncio.current_task()
            assert task is not None  # uvicorn and Starlette's test client run each request in a task
            deadlines.watch(task, deadline)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if deadlines.timed_out(task):
                    raise BodyTimeout(timeout_s) from None
                raise
            finally:
                deadlines.reading.pop(task, None)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                body_done = not message.get("more_body", False)
            return message

        IN_FLIGHT.inc()
        try:
            declared = content_length(headers)
            if declared is not None and declared > limit:
                await send_error(send_with_id, BodyTooLarge(limit), request_id)
            elif scope["method"] == "HEAD":
                # HEAD is GET without the body (RFC 9110): the app sees GET; the server, which keeps the original
                # scope, sends the headers only. The OpenAPI schema lists GET alone.
                inner = {**scope, "method": "GET"}
                try:
                    await self.app(inner, receive_limited, send_with_id)
                finally:
                    scope["route"] = inner.get("route")  # the route template labels the metrics
            else:
                await self.app(scope, receive_limited, send_with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST  # the client left mid-upload: not a server error, and nobody to answer
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when MPS_GRACEFUL_TIMEOUT_S runs out after SIGTERM: answer
            # in the JSON shape if nothing was sent yet. Any other cancellation is not ours to swallow.
            if not SHUTDOWN.draining:
                raise
            if not response_started:
                await send_error(send_with_id, SHUTDOWN_TIMEOUT, request_id)
        except Exception:
            logger.exception("unhandled_error", request_id=request_id, path=scope["path"])
            if not response_started:
                error = ApiError(500, "internal_error", "internal server error; the request id identifies the log line")
                await send_error(send_with_id, error, request_id)
        finally:
            IN_FLIGHT.dec()
            self._finish(scope, request_id, status, started)

    def _finish(self, scope: Scope, request_id: str, status: int, started: float) -> None:
        seconds = perf_counter() - started
        route = scope.get("route")
        method = scope["method"]
        # The route template, never the raw path, so that metrics keep a bounded set of labels.
        observe_request(getattr(route, "path", "unmatched"), method, status, seconds)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "path": scope["path"][:256],
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            **self.model_info,
        }
        key_id = scope["state"].get("key_id")
        if key_id is not None:
            fields["key_id"] = key_id  # the id, never the key
        if status >= 500:
            log_line(logger, LOGGER_NAME, "error", "request", fields)
        elif status == CLIENT_CLOSED_REQUEST:
            log_line(logger, LOGGER_NAME, "info", "request_aborted", fields)
        else:
            log_line(logger, LOGGER_NAME, "info", "request", fields)
