"""The service's HTTP errors and the one JSON shape every error answer has."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

JSON = "application/json"


class ApiError(Exception):
    """An error the client can act on: a status, a stable code, a one-line message and per-field details."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


class BodyTooLarge(ApiError):
    """The request body is larger than ``MPS_MAX_BODY_BYTES``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "body_too_large",
            f"request body exceeds the limit of {limit} bytes (MPS_MAX_BODY_BYTES)",
            [{"field": "body", "rule": "max_bytes", "message": f"at most {limit} bytes"}],
        )


def error_body(error: ApiError, request_id: str | None) -> bytes:
    """Serialise an error in the service's one error shape."""
    return orjson.dumps(
        {"error": error.message, "code": error.code, "details": error.details, "request_id": request_id}
    )


def error_response(error: ApiError, request_id: str | None, headers: dict[str, str] | None = None) -> Response:
    """An error as a JSON response."""
    return Response(error_body(error, request_id), status_code=error.status, media_type=JSON, headers=headers)


def field_name(location: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """``("instances", 3, "petal_length")`` -> ``instances[3].petal_length``; empty -> ``body``."""
    name = prefix
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def details_from(errors: list[Any], prefix: str = "") -> list[dict[str, str]]:
    """Per-field details from pydantic/FastAPI error dicts."""
    return [
        {"field": field_name(tuple(e.get("loc", ())), prefix), "rule": str(e.get("type")), "message": str(e.get("msg"))}
        for e in errors
    ]


def from_validation_error(error: ValidationError) -> ApiError:
    """A body that failed validation: 400 if it is not JSON at all, 422 if it breaks a field's rule."""
    errors = error.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(
            400, "invalid_json", f"request body is not valid JSON: {errors[0]['msg']}", details_from(errors)
        )
    details = details_from(errors)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return ApiError(422, "validation_error", f"request validation failed: {summary}{more}", details)
