"""Dependencies the routes declare: the served model, reached through FastAPI's injection."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ml_production_service.predictors.base import BasePredictor
from ml_production_service.server.errors import ApiError
from ml_production_service.server.schemas import BatchRequest, batch_request_model

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The loaded predictor, the limits it serves under, and how to call it: inline when it answers in
    microseconds, else in a thread. One dependency carries all of it: each dependency costs every request."""

    predictor: BasePredictor
    inline: bool
    warmup_us: float
    max_batch_size: int
    batch_model: type[BatchRequest]

    @classmethod
    def build(cls, predictor: BasePredictor, inline: bool, warmup_us: float, max_batch_size: int) -> ServedModel:
        """The served model with the batch request type its batch limit implies."""
        return cls(predictor, inline, warmup_us, max_batch_size, batch_request_model(max_batch_size))

    async def run(self, function: Callable[..., T], *args: object) -> tuple[T, float]:
        """Call ``function(*args)`` without holding up the event loop; return its result and seconds spent."""
        started = time.perf_counter()
        result = function(*args) if self.inline else await run_in_threadpool(function, *args)
        return result, time.perf_counter() - started


async def get_served_model(request: Request) -> ServedModel:
    """The model the lifespan loaded; 503 while there is none (async: a sync dependency costs a thread hop)."""
    served: ServedModel | None = getattr(request.app.state, "served", None)
    if served is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    return served


ModelDep = Annotated[ServedModel, Depends(get_served_model)]
