"""Prediction routes: one row, or a batch."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ml_production_service.predictors.base import ModelLoadError, Prediction
from ml_production_service.server.body import read_json
from ml_production_service.server.deps import PlaneDep
from ml_production_service.server.errors import JSON, ApiError, JsonAnswer
from ml_production_service.server.openapi import ANY_ROUTE, BODY_ROUTE, MODEL_ROUTE
from ml_production_service.server.schemas import (
    BatchRequest,
    BatchResponse,
    IrisFeatures,
    PredictResponse,
    max_fields,
)

router = APIRouter(tags=["predict"])

SINGLE_ROW_FIELDS = max_fields(1)
ERRORS = {**ANY_ROUTE, **BODY_ROUTE, **MODEL_ROUTE}


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    }


def _server_timing(model_seconds: float) -> list[tuple[bytes, bytes]]:
    return [(b"server-timing", b"model;dur=%.3f" % (model_seconds * 1000))]


EXPLAIN_DESCRIPTION = "Add the reason for the prediction."
EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "description": EXPLAIN_DESCRIPTION, "default": False, "title": "Explain"},
    "description": EXPLAIN_DESCRIPTION,
}
"""``?explain``, documented as FastAPI documents a ``Query`` parameter (it is read by ``explain_flag``)."""
_BOOL = TypeAdapter(bool)


def explain_flag(request: Request) -> bool:
    """``?explain`` as FastAPI's ``Query`` parameter reads it (its last value, pydantic's bool; 422 naming
    ``query.explain`` otherwise), without its per-request work when, as almost always, there is no query."""
    if not request.scope["query_string"]:
        return False
    values = request.query_params.getlist("explain")
    if not values:
        return False
    try:
        return _BOOL.validate_python(values[-1])
    except ValidationError as error:
        errors = [{**e, "loc": ("query", "explain")} for e in error.errors(include_url=False)]
        raise RequestValidationError(errors) from None


@router.post(
    "/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERRORS},
    openapi_extra={"parameters": [EXPLAIN_PARAMETER], **_body(IrisFeatures.__name__)},
)
async def predict(request: Request, plane: PlaneDep) -> Response:
    """Classify one flower from its four measurements in centimetres."""
    explain = explain_flag(request)
    row = (await read_json(request, IrisFeatures, SINGLE_ROW_FIELDS)).to_row()
    prediction, seconds, outside = await plane.predict_one(row, request.scope["state"])
    payload: dict[str, Any] = {
        "prediction": prediction.label,
        "probabilities": prediction.probabilities,
        "model_type": plane.model_type,
        "model_version": plane.version,
    }
    if outside:
        payload["out_of_range"] = outside
    if explain:
        if not plane.predictor.explainer_loaded:  # the first explanation loads the original model: not on the loop
            try:
                await run_in_threadpool(plane.predictor.load_explainer)
            except ModelLoadError as error:  # its artifact changed or went away since start-up: an operator's fault
                raise ApiError(
                    503,
                    "explanations_unavailable",
                    f"the original model cannot be loaded to explain ({error}); predictions without ?explain still "
                    "work, a restart re-checks the registry",
                ) from None
        payload["explanation"] = await plane.explain(row)
    return JsonAnswer(orjson.dumps(payload), _server_timing(seconds))


@router.post(
    "/predict/batch",
    response_model=None,
    responses={200: {"model": BatchResponse}, **ERRORS},
    openapi_extra=_body(BatchRequest.__name__),
)
async def predict_batch(request: Request, plane: PlaneDep) -> Response:
    """Classify up to ``MPS_MAX_BATCH_SIZE`` flowers; one invalid row rejects the batch."""
    limit = plane.max_batch_size
    try:
        # The row count is checked before any row is validated (the model's max_length).
        batch = await read_json(request, plane.batch_model, max_fields(limit))
    except ApiError as error:
        if error.details and error.details[0]["field"] == "instances" and error.details[0]["rule"] == "too_long":
            raise ApiError(
                413,
                "batch_too_large",
                f"batch has more than {limit} rows, the limit (MPS_MAX_BATCH_SIZE)",
                [{"field": "instances", "rule": "max_length", "message": f"at most {limit} rows"}],
            ) from None
        raise
    predictions, seconds, outside = await plane.predict_many(batch.to_rows(), request.scope["state"])
    payload = {
        "predictions": [_row(p, o) for p, o in zip(predictions, outside, strict=True)],
        "model_type": plane.model_type,
        "model_version": plane.version,
    }
    return JsonAnswer(orjson.dumps(payload), _server_timing(seconds))


def _row(prediction: Prediction, outside: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"prediction": prediction.label, "probabilities": prediction.probabilities}
    if outside:
        row["out_of_range"] = outside
    return row
