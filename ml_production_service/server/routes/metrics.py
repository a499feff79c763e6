"""The Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from ml_production_service.server.deps import MaybePlaneDep
from ml_production_service.server.metrics import render
from ml_production_service.server.openapi import ANY_ROUTE

router = APIRouter(tags=["metrics"], responses=ANY_ROUTE)
TEXT: dict[int | str, dict[str, Any]] = {
    200: {"description": "The Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


@router.get("/metrics", response_class=Response, responses=TEXT)
def metrics(plane: MaybePlaneDep) -> Response:
    """Metrics in the Prometheus text format."""
    if plane is not None:
        plane.monitor.flush()  # this worker's gathered row counts, so that a scrape sees every answered row
    body, content_type = render()
    return Response(body, media_type=content_type)
