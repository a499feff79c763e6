"""Connection limits and a graceful drain for uvicorn's httptools protocol.

uvicorn with httptools has no limit on the size of a request's line and headers, no deadline for them, and
no cap on open connections; its shutdown closes idle keep-alive connections in the same instant, racing a
request a client has already sent on one. ``LimitedHttpToolsProtocol`` adds the limits (``MPS_MAX_HEADER_BYTES``,
``MPS_HEADER_TIMEOUT_S``, ``MPS_MAX_CONNECTIONS``), load shedding (``MPS_MAX_IN_FLIGHT``) and a short drain grace
(``server/supervisor.py`` starts the drain at SIGTERM). Every error answered here has the service's JSON error
shape and closes its connection.

Shedding lives here, not in a middleware: a model that runs inline on the event loop never yields during a
request, so a middleware's own count stays at 1 however many requests wait; the real queue is uvicorn's task
set (one task per request whose head is read and whose answer is not complete).

This module must not import ``prometheus_client`` (directly or through the app): the supervisor imports it,
and prometheus_client writes into ``PROMETHEUS_MULTIPROC_DIR`` as soon as its metrics are defined.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ml_production_service.configs import ServiceConfig
from ml_production_service.logging import get_logger
from ml_production_service.server.errors import JSON, ApiError, error_body
from ml_production_service.server.lifecycle import SHUTDOWN

DRAIN_GRACE_S = 1.0
"""After SIGTERM, how long an idle keep-alive connection stays open for a request already on its way."""
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024
"""After an error answer, what the client may still send (read and dropped) before the connection closes: a
client still writing would otherwise get a TCP reset and lose the answer."""
REQUEST_LINE_OVERHEAD = 14
"""Bytes of a request line and head besides the method and the target: two spaces, ``HTTP/1.1``, two CRLF."""
HEADER_OVERHEAD = 4
"""Bytes of a header line besides its name and value: ``": "`` and CRLF."""
RETRY_AFTER = b"retry-after: 1\r\n"
PREDICTION_PATH = re.compile(r"/(?:predict(?:/batch)?|v2/models/[^/]+(?:/versions/[^/]+)?/infer)")
"""The routes that run the model (Starlette's ``{name}`` matches ``[^/]+``); only a POST to one is shed."""

logger = get_logger("ml_production_service.connections")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection limits of one worker, from the service's configuration."""

    max_header_bytes: int
    header_timeout_s: float
    max_connections: int
    drain_grace_s: float
    max_in_flight: int
    """Requests (uvicorn tasks) one worker holds before it sheds a prediction; 0: never shed."""

    @classmethod
    def from_config(cls, config: ServiceConfig) -> ConnectionLimits:
        """The limits ``config`` sets; the drain grace never outlasts the keep-alive timeout."""
        return cls(
            max_header_bytes=config.max_header_bytes,
            header_timeout_s=config.header_timeout_s,
            max_connections=config.max_connections,
            drain_grace_s=min(DRAIN_GRACE_S, config.keep_alive_timeout_s),
            max_in_flight=config.max_in_flight,
        )


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration, serving ``LimitedHttpToolsProtocol`` with ``limits`` (pickled into each worker)."""

    def __init__(
        self,
        app: str | Callable[..., Any],
        *,
        limits: ConnectionLimits,
        timeout_keep_alive: float,
        timeout_graceful_shutdown: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            http=LimitedHttpToolsProtocol,
            ws="none",  # the service has no WebSocket routes; an upgrade request is served as a plain request
            # uvicorn annotates both as int but only hands them to loop.call_later and asyncio.wait_for (seconds).
            timeout_keep_alive=timeout_keep_alive,  # type: ignore[arg-type]
            timeout_graceful_shutdown=timeout_graceful_shutdown,  # type: ignore[arg-type]
            **kwargs,
        )
        self.limits = limits


def error_response_bytes(error: ApiError, request_id: str | None, extra_headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 error answer in the service's JSON shape that closes its connection."""
    body = error_body(error, request_id)
    request_id_header = b"x-request-id: " + request_id.encode() + b"\r\n" if request_id else b""
    return b"".join(
        [
            STATUS_LINE[error.status],
            b"content-type: " + JSON.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            request_id_header,
            extra_headers,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def headers_too_large(limit: int) -> ApiError:
    """The request line and headers are over ``MPS_MAX_HEADER_BYTES``."""
    return ApiError(
        431,
        "headers_too_large",
        f"request line and headers exceed the limit of {limit} bytes (MPS_MAX_HEADER_BYTES)",
        [{"field": "headers", "rule": "max_bytes", "message": f"at most {limit} bytes"}],
    )


def header_timeout(seconds: float) -> ApiError:
    """The request line and headers did not arrive within ``MPS_HEADER_TIMEOUT_S``."""
    return ApiError(
        408,
        "header_timeout",
        f"request line and headers not received within {seconds:g} s (MPS_HEADER_TIMEOUT_S)",
        [{"field": "headers", "rule": "timeout", "message": f"within {seconds:g} s"}],
    )


def too_many_connections(limit: int) -> ApiError:
    """The worker already holds ``MPS_MAX_CONNECTIONS`` connections."""
    return ApiError(
        503,
        "too_many_connections",
        f"this worker already holds {limit} connections (MPS_MAX_CONNECTIONS); retry shortly",
        [{"field": "connection", "rule": "max_connections", "message": f"at most {limit} per worker"}],
    )


def overloaded(limit: int) -> ApiError:
    """The worker already holds ``MPS_MAX_IN_FLIGHT`` requests: a prediction is shed before its body is read."""
    return ApiError(
        503,
        "overloaded",
        f"this worker already holds {limit} requests (MPS_MAX_IN_FLIGHT); retry shortly",
        [{"field": "request", "rule": "max_in_flight", "message": f"at most {limit} per worker"}],
    )


class _RefusalLog:
    """Refusals come in floods: log the first, then one line a second with how many followed."""

    def __init__(
        self, event: str = "connections_refused", limit_name: str = "max_connections", interval_s: float = 1.0
    ) -> None:
        self.event = event
        self.limit_name = limit_name
        self.interval_s = interval_s
        self.pending = 0
        self.last_logged: float | None = None

    def note(self, now: float, limit: int) -> None:
        self.pending += 1
        if self.last_logged is None or now - self.last_logged >= self.interval_s:
            logger.warning(self.event, count=self.pending, **{self.limit_name: limit})
            self.pending = 0
            self.last_logged = now


REFUSALS = _RefusalLog()
SHEDDING = _RefusalLog("requests_shed", "max_in_flight")


class HeadWithBody:
    """The transport one answer is written through: its head (status line and headers, written at
    ``http.response.start``) waits for the first body bytes and leaves with them in one ``write``, one system call
    per answer instead of two (a send on loopback costs about 9 µs on this machine). A head that no body follows
    (HEAD, a 204, a streamed answer still computing) leaves at the end of the event loop's pass."""

    __slots__ = ("first", "held", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.first = True
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        """The first write is held (until the next one, or the end of the pass); the next ones go out at once."""
        if self.first:
            self.first = False
            self.held = data
            self.loop.call_soon(self.flush)
            return
        held = self.held
        if held is not None:
            self.held = None
            data = held + data
        self.transport.write(data)

    def flush(self) -> None:
        """Write what is held."""
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        """Flush, then close the connection."""
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self.transport.is_closing()


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request that has already been answered with an error."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, a header deadline, a connection cap and a drain.

    - Request line plus headers over ``max_header_bytes``: 431, counted while they arrive (a header that never
      ends is cut after one more read, not buffered) and exactly once they are complete.
    - A request whose line and headers are not complete ``header_timeout_s`` after the connection opened (or,
      on a kept-alive connection, after its first bytes arrived): 408; a connection that sent nothing in that
      time is closed without an answer, as uvicorn's keep-alive timeout does.
    - A connection past ``max_connections`` open in this worker: 503 at once, nothing read.
    - A prediction whose head completes while the worker holds ``max_in_flight`` requests: 503 ``overloaded``
      before any body byte is read. Health, metrics, metadata and every GET are always served; so is a
      pipelined request queued behind an answer in progress (it becomes a task only when that answer is done).
    - After SIGTERM every answer carries ``Connection: close``; an idle connection stays open ``drain_grace_s``
      for a request already on the wire (answered, then closed) instead of being closed in the same instant.
    """

    def __init__(
        self,
        config: ServerConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        # 0 (off) becomes a bound no task count reaches: the normal path is one len() and one comparison.
        self.shed_at = config.limits.max_in_flight or sys.maxsize
        self.header_timer: asyncio.TimerHandle | None = None
        self.in_head = False  # a request has begun and its headers are not complete
        self.head_bytes = 0  # bytes of that request received so far (counted per read)
        self.closing = False  # answered with an error (or refused): what arrives now is dropped
        self.lingered = 0
        self.draining = False

    # --- connection ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # connection_lost closes it
            self.closing = True
            REFUSALS.note(self.loop.time(), self.limits.max_connections)
            transport.write(error_response_bytes(too_many_connections(self.limits.max_connections), None, RETRY_AFTER))
            transport.close()
            return
        super().connection_made(transport)
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self.header_timeout_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            self._drop(len(data))
            return
        self._unset_keepalive_if_required()
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            # Our own callbacks raise _Rejected after answering; anything else is a malformed request.
            if not self.closing:
                self.reject(ApiError(400, "invalid_http", f"the request is not valid HTTP/1.1: {error}"))
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSocket routes: served as a plain request
            return
        if self.in_head and not self.closing:
            if self.head_bytes > self.limits.max_header_bytes:
                self.reject(headers_too_large(self.limits.max_header_bytes))
            elif self.header_timer is None:
                self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self.header_timeout_handler)

    # --- parser callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Bytes of this read before the request began are not counted: at most one read goes uncounted.
        self.in_head = True
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._cancel_header_timer()
        size = len(self.url) + len(self.parser.get_method()) + REQUEST_LINE_OVERHEAD
        for name, value in self.headers:
            size += len(name) + len(value) + HEADER_OVERHEAD
        if size > self.limits.max_header_bytes:
            self.reject(headers_too_large(self.limits.max_header_bytes))
            raise _Rejected
        if len(self.tasks) >= self.shed_at and self._is_prediction():
            self.shed()
            raise _Rejected
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            if SHUTDOWN.draining:
                self.cycle.keep_alive = False

    # --- limits --------------------------------------------------------------------------------------------

    def header_timeout_handler(self) -> None:
        """The header deadline passed: 408 if a request had begun, else close quietly."""
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.in_head:
            self.reject(header_timeout(self.limits.header_timeout_s))
        else:  # armed at connection_made and cancelled once a head is complete: no request is in progress
            self.transport.close()

    def _is_prediction(self) -> bool:
        """A POST to a route that runs the model, on a connection with no answer in progress."""
        if self.parser.get_method() != b"POST" or (self.cycle is not None and not self.cycle.response_complete):
            return False
        # The path as uvicorn hands it to the app (query and absolute form dropped, percent-decoded).
        path = httptools.parse_url(self.url).path.decode("ascii")
        return PREDICTION_PATH.fullmatch(unquote(path) if "%" in path else path) is not None

    def shed(self) -> None:
        """Answer 503 ``overloaded`` to the prediction whose head just completed, count it, and close."""
        # Imported here, not at the top: only workers shed, and the supervisor must never load prometheus_client.
        from ml_production_service.server.metrics import SHED
        from ml_production_service.server.middleware import request_id_from

        SHED.inc()
        SHEDDING.note(self.loop.time(), self.limits.max_in_flight)
        self._answer_and_close(overloaded(self.limits.max_in_flight), request_id_from(self.headers), RETRY_AFTER)

    def reject(self, error: ApiError) -> None:
        """Answer ``error`` and close; if a response is being written, let it finish and close after it."""
        request_id = secrets.token_hex(16)
        logger.info("request_rejected", request_id=request_id, status=error.status, code=error.code, client=self.client)
        self._answer_and_close(error, request_id)

    def _answer_and_close(self, error: ApiError, request_id: str, extra_headers: bytes = b"") -> None:
        self.closing = True
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request went wrong while the one before it is answered: close after that answer.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.write(error_response_bytes(error, request_id, extra_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # Keep reading (and dropping) for a moment, so that a client still sending can read the answer.
        self.flow.resume_reading()
        self.timeout_keep_alive_task = self.loop.call_later(LINGER_S, self.timeout_keep_alive_handler)

    def _drop(self, size: int) -> None:
        self.lingered += size
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.lingered > LINGER_BYTES and not answering and not self.transport.is_closing():
            self.transport.close()

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    # --- graceful drain ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain: finish the request in progress and close; give an idle connection a short grace first."""
        if self.draining:
            return
        self.draining = True
        # The keep-alive timer armed after each answer from now on is the grace (see on_response_complete).
        self.timeout_keep_alive = self.limits.drain_grace_s  # type: ignore[assignment]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:
                cycle.keep_alive = False
            return
        if self.in_head or self.closing or self.transport.is_closing():
            return  # a request being received is answered with Connection: close (or 408 by its deadline)
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.limits.drain_grace_s, self.timeout_keep_alive_handler)
