"""Dependencies the routes declare: the data plane and the service's status, reached through FastAPI's injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ml_production_service.server.dataplane import DataPlane
from ml_production_service.server.errors import ApiError
from ml_production_service.server.lifecycle import SHUTDOWN


async def get_data_plane(request: Request) -> DataPlane:
    """The data plane the lifespan built; 503 while there is none (async: a sync dependency costs a thread hop)."""
    plane: DataPlane | None = getattr(request.app.state, "data_plane", None)
    if plane is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    return plane


async def find_data_plane(request: Request) -> DataPlane | None:
    """The data plane, or None before the model is loaded (for routes that answer either way)."""
    plane: DataPlane | None = getattr(request.app.state, "data_plane", None)
    return plane


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What the health routes report: ready or not, and which model."""

    ready: bool
    model_type: str
    model_version: str | None


async def get_status(request: Request) -> ServiceStatus:
    """Ready once the model is loaded and warmed, until SIGTERM (then 503 at once, while requests drain)."""
    state = request.app.state
    plane: DataPlane | None = getattr(state, "data_plane", None)
    ready = plane is not None and bool(getattr(state, "ready", False)) and not SHUTDOWN.draining
    return ServiceStatus(ready, state.config.model_type.value, plane.version if plane is not None else None)


PlaneDep = Annotated[DataPlane, Depends(get_data_plane)]
MaybePlaneDep = Annotated[DataPlane | None, Depends(find_data_plane)]
StatusDep = Annotated[ServiceStatus, Depends(get_status)]
