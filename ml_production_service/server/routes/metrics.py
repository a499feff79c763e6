"""The Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from ml_production_service.server.metrics import render

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Metrics in the Prometheus text format."""
    body, content_type = render()
    return Response(body, media_type=content_type)
