"""The Open Inference Protocol (V2) over REST, as KServe and Triton define it; the model name is the model type."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ml_production_service import __version__
from ml_production_service.features import FEATURE_NAMES
from ml_production_service.server.body import read_body, request_header
from ml_production_service.server.dataplane import DataPlane
from ml_production_service.server.deps import PlaneDep, get_data_plane
from ml_production_service.server.errors import echo
from ml_production_service.server.openapi import ANY_ROUTE, BODY_ROUTE, INFER_ANSWER, INFER_BODY, MODEL_ROUTE, errors
from ml_production_service.server.v2_codec import (
    BINARY_HEADER,
    check_content_type,
    encode_response,
    input_rows,
    parse_request,
    requested_outputs,
    v2_error,
)

router = APIRouter(prefix="/v2", tags=["v2"], responses=ANY_ROUTE)
MODEL_ERRORS = {**MODEL_ROUTE, **errors(404)}
SERVER_NAME = "ml-production-service"
BINARY_HEADER_BYTES = BINARY_HEADER.encode()


def _check_model(plane: DataPlane, name: str, version: str | None = None) -> None:
    if name != plane.model_type:
        raise v2_error(404, f"model '{echo(name)}' is not served here; this server serves '{plane.model_type}'", "name")
    if version is not None and version != plane.version:
        raise v2_error(404, f"model '{name}' has no version '{echo(version)}'; it serves '{plane.version}'", "version")


# Routes match in order: infer, the hot path, comes first. Each path form has its own function, so that the
# unversioned one takes no stray ``?version=`` query parameter.
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {200: INFER_ANSWER, **MODEL_ERRORS, **BODY_ROUTE}


@router.post("/models/{name}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer(request: Request, plane: PlaneDep, name: str) -> Response:
    """Classify an FP32/FP64 tensor [N, 4]; outputs ``predict`` (INT64 [N]) and ``predict_proba`` (FP64 [N, C])."""
    return await _infer(request, plane, name, None)


@router.post("/models/{name}/versions/{version}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer_version(request: Request, plane: PlaneDep, name: str, version: str) -> Response:
    """``infer`` for the named version (the manifest's)."""
    return await _infer(request, plane, name, version)


async def _infer(request: Request, plane: DataPlane, name: str, version: str | None) -> Response:
    _check_model(plane, name, version)
    header_length = request_header(request, BINARY_HEADER_BYTES)
    check_content_type(request_header(request, b"content-type") or "", header_length is not None)
    inference, binary = parse_request(await read_body(request), header_length)
    rows = input_rows(inference, binary, plane.max_batch_size)
    wanted = requested_outputs(inference)
    scores = await plane.scores(rows, request.scope["state"])
    header: dict[str, Any] = {"model_name": name, "model_version": plane.version}
    if inference.id is not None:
        header["id"] = inference.id
    tensors = {"predict": scores.classes, "predict_proba": scores.probabilities}
    body, headers = encode_response(header, tensors, wanted)
    headers["server-timing"] = f"model;dur={scores.seconds * 1000:.3f}"
    return Response(body, headers=headers)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """The server is up."""
    return {"live": True}


@router.get("/health/ready", dependencies=[Depends(get_data_plane)], responses=MODEL_ROUTE)
async def server_ready() -> dict[str, bool]:
    """The server is ready: its model is loaded (503 before)."""
    return {"ready": True}


@router.get("/models/{name}", responses=MODEL_ERRORS)
async def model_metadata(plane: PlaneDep, name: str) -> dict[str, Any]:
    """Inputs, outputs, versions and class order of the served model."""
    return _metadata(plane, name, None)


@router.get("/models/{name}/versions/{version}", responses=MODEL_ERRORS)
async def model_version_metadata(plane: PlaneDep, name: str, version: str) -> dict[str, Any]:
    """``model_metadata`` for the named version (the manifest's)."""
    return _metadata(plane, name, version)


def _metadata(plane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    _check_model(plane, name, version)
    manifest = plane.predictor.manifest
    classes = len(manifest.class_labels)
    return {
        "name": name,
        "versions": [manifest.version],
        "platform": manifest.recipe.estimator,
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(FEATURE_NAMES)]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, classes]},
        ],
        "parameters": {"feature_names": manifest.feature_names, "classes": manifest.class_labels},
    }


@router.get("/models/{name}/ready", responses=MODEL_ERRORS)
async def model_ready(plane: PlaneDep, name: str) -> dict[str, Any]:
    """The named model is loaded and ready."""
    _check_model(plane, name)
    return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", responses=MODEL_ERRORS)
async def model_version_ready(plane: PlaneDep, name: str, version: str) -> dict[str, Any]:
    """``model_ready`` for the named version (the manifest's)."""
    _check_model(plane, name, version)
    return {"name": name, "ready": True}
