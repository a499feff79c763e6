"""Pure ASGI middleware: request ids, the body size limit and deadline, one canonical log line per request."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_production_service.logging import get_logger
from ml_production_service.server.errors import ApiError, BodyTooLarge, send_error
from ml_production_service.server.lifecycle import SHUTDOWN
from ml_production_service.server.metrics import IN_FLIGHT, observe_request

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that went away before its answer; counted and logged apart from server errors."""
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
logger = get_logger("ml_production_service.access")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, otherwise a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return value.decode("ascii")
    return secrets.token_hex(16)


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


class RequestContextMiddleware:
    """Tags each request with an id, bounds its body in size and time, and logs one line when it ends."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float, model_info: dict[str, str | None]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.model_info = model_info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = scope["headers"]
        request_id = request_id_from(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        limit = self.max_body_bytes
        timeout_s = self.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        received = 0
        body_done = False

        async def receive_limited() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout_s) from None
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
        seconds = time.perf_counter() - started
        route = scope.get("route")
        # The route template, never the raw path, so that metrics keep a bounded set of labels.
        observe_request(getattr(route, "path", "unmatched"), scope["method"], status, seconds)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"][:256],
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            **self.model_info,
        }
        key_id = scope["state"].get("key_id")
        if key_id is not None:
            fields["key_id"] = key_id  # the id, never the key
        if status >= 500:
            logger.error("request", **fields)
        elif status == CLIENT_CLOSED_REQUEST:
            logger.info("request_aborted", **fields)
        else:
            logger.info("request", **fields)
