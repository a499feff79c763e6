"""The data plane: every protocol's predictions pass through here, and only here.

Routes translate their wire format (named features, V2 tensors, any later one) into rows and back; running the
model (inline or in a thread), timing it and counting what it answered happen once, in ``DataPlane``. Anything
that must see every served row (guards, monitoring) belongs here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from ml_production_service.features import FloatArray
from ml_production_service.predictors.base import BasePredictor, Prediction
from ml_production_service.server.metrics import observe_predictions
from ml_production_service.server.schemas import BatchRequest, batch_request_model

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scores:
    """A tensor answer: class probabilities ``[n, classes]``, each row's class index, and the model's seconds."""

    probabilities: FloatArray
    classes: np.ndarray
    seconds: float


class DataPlane:
    """The loaded predictor, the limits it serves under, and the one way to call it.

    It runs inline on the event loop when a prediction takes microseconds (measured at start-up), else in a
    thread. One object carries all of it: every dependency a route declares costs every request.
    """

    __slots__ = ("batch_model", "inline", "max_batch_size", "predictor", "warmup_us")

    def __init__(self, predictor: BasePredictor, inline: bool, warmup_us: float, max_batch_size: int) -> None:
        self.predictor = predictor
        self.inline = inline
        self.warmup_us = warmup_us
        self.max_batch_size = max_batch_size
        self.batch_model: type[BatchRequest] = batch_request_model(max_batch_size)

    @property
    def model_type(self) -> str:
        """The served model's type (the V2 model name)."""
        return self.predictor.model_type

    @property
    def version(self) -> str:
        """The served model's version."""
        return self.predictor.version

    async def run(self, function: Callable[..., T], *args: object) -> tuple[T, float]:
        """Call ``function(*args)`` without holding up the event loop; return its result and seconds spent."""
        started = time.perf_counter()
        result = function(*args) if self.inline else await run_in_threadpool(function, *args)
        return result, time.perf_counter() - started

    async def predict_one(self, row: FloatArray) -> tuple[Prediction, float]:
        """One row ``[4]``: its prediction and the model's seconds."""
        prediction, seconds = await self.run(self.predictor.predict_one, row)
        observe_predictions(self.model_type, self.version, (prediction.label,))
        return prediction, seconds

    async def predict_many(self, rows: FloatArray) -> tuple[list[Prediction], float]:
        """Rows ``[n, 4]``: their predictions in order and the model's seconds."""
        predictions, seconds = await self.run(self.predictor.predict_many, rows)
        observe_predictions(self.model_type, self.version, (p.label for p in predictions))
        return predictions, seconds

    async def scores(self, rows: FloatArray) -> Scores:
        """Rows ``[n, 4]`` as tensors (what V2 answers)."""
        probabilities, seconds = await self.run(self.predictor.predict_proba, rows)
        classes = np.argmax(probabilities, axis=1)
        labels = self.predictor.class_labels
        observe_predictions(self.model_type, self.version, (labels[i] for i in classes.tolist()))
        return Scores(probabilities, classes, seconds)

    async def explain(self, row: FloatArray) -> dict[str, Any]:
        """Why the model answers what it does for one row (not counted: the prediction was)."""
        explanation, _ = await self.run(self.predictor.explain, row)
        return explanation
