"""Read and validate JSON request bodies in one pass (pydantic's JSON parser, no intermediate dicts)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ml_production_service.server.errors import ApiError, from_validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def read_json(request: Request, model: type[ModelT]) -> ModelT:
    """Validate the body as ``model``; 415 for another content type, 400 for bad JSON, 422 for bad fields."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {content_type or 'none'}",
            [{"field": "content-type", "rule": "media_type", "message": "expected application/json"}],
        )
    body = await request.body()
    if not body.strip():
        raise ApiError(
            400,
            "empty_body",
            "request body is empty: send a JSON object",
            [{"field": "body", "rule": "required", "message": "a JSON object is required"}],
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise from_validation_error(error) from None
