"""Pure ASGI middleware: request ids, the body size limit, one canonical log line per request."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml_production_service.logging import get_logger
from ml_production_service.server.errors import JSON, ApiError, BodyTooLarge, error_body
from ml_production_service.server.metrics import IN_FLIGHT, observe_request

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
logger = get_logger("ml_production_service.access")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, otherwise a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return value.decode("ascii")
    return secrets.token_hex(16)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestContextMiddleware:
    """Tags each request with an id, enforces the body limit, and logs one line when it ends."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, model_info: dict[str, str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
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
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        IN_FLIGHT.inc()
        try:
            declared = _content_length(headers)
            if declared is not None and declared > limit:
                await self._send_error(send_with_id, BodyTooLarge(limit), request_id)
            else:
                await self.app(scope, receive_limited, send_with_id)
        except Exception:
            logger.exception("unhandled_error", request_id=request_id, path=scope["path"])
            if not response_started:
                error = ApiError(500, "internal_error", "internal server error; the request id identifies the log line")
                await self._send_error(send_with_id, error, request_id)
        finally:
            IN_FLIGHT.dec()
            self._finish(scope, request_id, status, started)

    @staticmethod
    async def _send_error(send: Send, error: ApiError, request_id: str) -> None:
        body = error_body(error, request_id)
        headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _finish(self, scope: Scope, request_id: str, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        # The route template, never the raw path, so that metrics keep a bounded set of labels.
        observe_request(getattr(route, "path", "unmatched"), scope["method"], status, seconds)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            **self.model_info,
        }
        if status >= 500:
            logger.error("request", **fields)
        else:
            logger.info("request", **fields)
