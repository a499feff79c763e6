"""Read and validate JSON request bodies in one pass (pydantic's JSON parser, no intermediate dicts)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect, Request

from ml_production_service.server.errors import ApiError, from_validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


class _JsonProbe(BaseModel):
    """Any JSON object, every key skipped: a syntax check that creates no per-field error."""

    model_config = ConfigDict(extra="ignore")


def request_header(request: Request, name: bytes) -> str | None:
    """The request's first ``name`` header (lowercase bytes), as ``request.headers.get`` reads it, without building
    the headers mapping."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def is_json(content_type: str) -> bool:
    """``application/json`` or any ``+json`` media type, parameters ignored."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def unsupported_media_type(content_type: str, expected: str = "application/json") -> ApiError:
    """415 naming what was sent and what is expected."""
    return ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type must be {expected}, got {content_type[:80] or 'none'}",
        [{"field": "content-type", "rule": "media_type", "message": f"expected {expected}"}],
    )


def too_many_fields(count: int, limit: int) -> ApiError:
    """A body with more ``:`` than any valid request has fields: refused before it is validated field by field."""
    message = f"body has {count} fields (':'), more than any valid request ({limit})"
    return ApiError(
        422,
        "validation_error",
        f"request validation failed: body: {message}",
        [{"field": "body", "rule": "max_fields", "message": message}],
    )


async def read_body(request: Request) -> bytes:
    """The whole body, as ``Request.body`` reads it, without its async generator per request (for a route that
    reads the body once: the stream is consumed)."""
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect


async def read_json(request: Request, model: type[ModelT], max_fields: int) -> ModelT:
    """Validate the body as ``model``; 415 for another content type, 400 for bad JSON, 422 for bad fields.

    ``max_fields`` bounds the work an invalid body can cause: pydantic reports one error per unknown field, and a
    1 MiB body can hold 170,000 of them. Counting ``:`` is a C-speed upper bound on the number of fields, so a
    body with more than a valid request could have is refused before validation.
    """
    content_type = request_header(request, b"content-type") or ""
    if not is_json(content_type):
        raise unsupported_media_type(content_type)
    body = await read_body(request)
    if not body.strip():
        raise ApiError(
            400,
            "empty_body",
            "request body is empty: send a JSON object",
            [{"field": "body", "rule": "required", "message": "a JSON object is required"}],
        )
    fields = body.count(b":")
    try:
        if fields > max_fields:
            _JsonProbe.model_validate_json(body)  # broken JSON is still 400, whatever its colons
            raise too_many_fields(fields, max_fields)
        return model.model_validate_json(body)
    except ValidationError as error:
        raise from_validation_error(error) from None
