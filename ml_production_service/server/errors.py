"""The service's HTTP errors and the one JSON shape every error answer has.

Every error answer is bounded whatever the request: at most ``MAX_ERROR_DETAILS`` details (the rest counted
in ``details_omitted``), and every echoed name or message cut to ``MAX_ECHO_CHARS``.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Send

JSON = "application/json"
MAX_ERROR_DETAILS = 10
"""Most per-field details one error answer carries; the others are counted, not listed."""
MAX_ECHO_CHARS = 80
"""Longest piece of client input (a field name, a value) an error answer repeats."""


class ApiError(Exception):
    """An error the client can act on: a status, a stable code, a one-line message and per-field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        *,
        total_details: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        all_details = details or []
        self.details = all_details[:MAX_ERROR_DETAILS]
        total = len(all_details) if total_details is None else total_details
        self.details_omitted = max(total - len(self.details), 0)
        self.headers = headers


class BodyTooLarge(ApiError):
    """The request body is larger than ``MPS_MAX_BODY_BYTES``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "body_too_large",
            f"request body exceeds the limit of {limit} bytes (MPS_MAX_BODY_BYTES)",
            [{"field": "body", "rule": "max_bytes", "message": f"at most {limit} bytes"}],
            headers={"connection": "close"},  # the rest of the body is not read: the connection cannot be reused
        )


def echo(value: object) -> str:
    """Client input as it may appear in an answer: its text, cut to ``MAX_ECHO_CHARS``."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def error_body(error: ApiError, request_id: str | None) -> bytes:
    """Serialise an error in the service's one error shape."""
    payload: dict[str, Any] = {
        "error": error.message,
        "code": error.code,
        "details": error.details,
        "request_id": request_id,
    }
    if error.details_omitted > 0:
        payload["details_omitted"] = error.details_omitted
    return orjson.dumps(payload)


async def send_error(send: Send, error: ApiError, request_id: str | None) -> None:
    """Answer ``error`` from pure ASGI code (middleware), headers included."""
    body = error_body(error, request_id)
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonAnswer(Response):
    """A JSON answer whose headers are written as bytes at once: Starlette's ``Response`` takes them as a dict and
    lowercases and encodes each, a few microseconds of every prediction's answer."""

    media_type = JSON

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", _JSON_BYTES), *(headers or ())]


_JSON_BYTES = JSON.encode()


def error_response(error: ApiError, request_id: str | None, headers: dict[str, str] | None = None) -> Response:
    """An error as a JSON response."""
    merged = {**(error.headers or {}), **(headers or {})}
    return Response(error_body(error, request_id), status_code=error.status, media_type=JSON, headers=merged or None)


def field_name(location: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """``("instances", 3, "petal_length")`` -> ``instances[3].petal_length``; empty -> ``body``."""
    name = prefix
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{echo(part)}" if name else echo(part))
    return name or "body"


def details_from(errors: list[Any], prefix: str = "") -> list[dict[str, str]]:
    """Per-field details from pydantic/FastAPI error dicts (at most ``MAX_ERROR_DETAILS`` of them)."""
    return [
        {
            "field": field_name(tuple(e.get("loc", ())), prefix),
            "rule": echo(str(e.get("type"))),
            "message": echo(str(e.get("msg"))),
        }
        for e in errors[:MAX_ERROR_DETAILS]
    ]


def summary(details: list[dict[str, str]], total: int) -> str:
    """``field: message; ...`` for the first few details, and how many more there are."""
    shown = details[:5]
    text = "; ".join(f"{d['field']}: {d['message']}" for d in shown)
    return text + (f" (and {total - len(shown)} more)" if total > len(shown) else "")


def from_validation_error(error: ValidationError) -> ApiError:
    """A body that failed validation: 400 if it is not JSON at all, 422 if it breaks a field's rule.

    The caller bounds how many errors a body can produce (see ``body.read_json``), so converting them is bounded.
    """
    errors = error.errors(include_url=False, include_input=False)
    total = len(errors)
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(
            400, "invalid_json", f"request body is not valid JSON: {echo(errors[0]['msg'])}", details_from(errors)
        )
    details = details_from(errors)
    return ApiError(
        422,
        "validation_error",
        f"request validation failed: {summary(details, total)}",
        details,
        total_details=total,
    )
