"""Model metadata: the served model's manifest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ml_production_service.server.deps import PlaneDep
from ml_production_service.server.openapi import ANY_ROUTE, MODEL_ROUTE

router = APIRouter(tags=["model"], responses={**ANY_ROUTE, **MODEL_ROUTE})


@router.get("/model")
async def model_metadata(plane: PlaneDep) -> dict[str, Any]:
    """The loaded model's manifest: type, version, sha256, features, classes, metrics, library versions."""
    return plane.predictor.manifest.model_dump(mode="json")
