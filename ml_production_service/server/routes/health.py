"""Health routes: liveness, readiness, and a summary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ml_production_service import __version__
from ml_production_service.server.lifecycle import SHUTDOWN
from ml_production_service.server.openapi import ANY_ROUTE
from ml_production_service.server.schemas import HealthResponse

router = APIRouter(tags=["health"], responses=ANY_ROUTE)
STATUS: dict[int | str, dict[str, Any]] = {200: {"model": HealthResponse}, 503: {"model": HealthResponse}}


def _health(request: Request) -> JSONResponse:
    state = request.app.state
    served = getattr(state, "served", None)
    ready = served is not None and bool(getattr(state, "ready", False)) and not SHUTDOWN.draining
    body = HealthResponse(
        status="healthy" if ready else "unhealthy",
        ready=ready,
        model_type=state.config.model_type.value,
        model_version=served.predictor.version if served is not None else None,
        service_version=__version__,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/health", response_model=None, responses=STATUS)
async def health(request: Request) -> JSONResponse:
    """Healthy (200) once the model is loaded and warmed; 503 otherwise."""
    return _health(request)


@router.get("/health/ready", response_model=None, responses=STATUS)
async def ready(request: Request) -> JSONResponse:
    """Ready (200) to take predictions; 503 until the model is loaded and while shutting down."""
    return _health(request)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and answering (says nothing about the model)."""
    return {"status": "alive"}
