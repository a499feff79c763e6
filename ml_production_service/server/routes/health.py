"""Health routes: liveness, readiness, and a summary."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ml_production_service import __version__
from ml_production_service.server.deps import ServiceStatus, StatusDep
from ml_production_service.server.openapi import ANY_ROUTE
from ml_production_service.server.schemas import HealthResponse

router = APIRouter(tags=["health"], responses=ANY_ROUTE)
STATUS: dict[int | str, dict[str, Any]] = {200: {"model": HealthResponse}, 503: {"model": HealthResponse}}


def _health(status: ServiceStatus) -> JSONResponse:
    body = HealthResponse(
        status="healthy" if status.ready else "unhealthy",
        ready=status.ready,
        model_type=status.model_type,
        model_version=status.model_version,
        service_version=__version__,
    )
    return JSONResponse(body.model_dump(), status_code=200 if status.ready else 503)


@router.get("/health", response_model=None, responses=STATUS)
async def health(status: StatusDep) -> JSONResponse:
    """Healthy (200) once the model is loaded and warmed; 503 otherwise."""
    return _health(status)


@router.get("/health/ready", response_model=None, responses=STATUS)
async def ready(status: StatusDep) -> JSONResponse:
    """Ready (200) to take predictions; 503 until the model is loaded and from SIGTERM on."""
    return _health(status)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and answering (says nothing about the model)."""
    return {"status": "alive"}
