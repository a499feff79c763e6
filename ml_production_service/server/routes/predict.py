"""Prediction routes: one row, or a batch."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ml_production_service.predictors.base import Prediction
from ml_production_service.server.body import read_json
from ml_production_service.server.deps import PlaneDep
from ml_production_service.server.errors import JSON, ApiError
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


def _server_timing(model_seconds: float) -> dict[str, str]:
    return {"server-timing": f"model;dur={model_seconds * 1000:.3f}"}


@router.post(
    "/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERRORS},
    openapi_extra=_body(IrisFeatures.__name__),
)
async def predict(
    request: Request,
    plane: PlaneDep,
    explain: Annotated[bool, Query(description="Add the reason for the prediction.")] = False,
) -> Response:
    """Classify one flower from its four measurements in centimetres."""
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
        payload["explanation"] = await plane.explain(row)
    return Response(orjson.dumps(payload), media_type=JSON, headers=_server_timing(seconds))


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
    return Response(orjson.dumps(payload), media_type=JSON, headers=_server_timing(seconds))


def _row(prediction: Prediction, outside: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"prediction": prediction.label, "probabilities": prediction.probabilities}
    if outside:
        row["out_of_range"] = outside
    return row
