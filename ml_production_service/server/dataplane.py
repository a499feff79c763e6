"""The data plane: every protocol's predictions pass through here, and only here.

Routes translate their wire format (named features, V2 tensors, any later one) into rows and back; admitting the
rows against the client's rate limit, running the model (inline or in a thread, with a deadline), timing it and
counting what it answered happen once, in ``DataPlane``. Anything that must see every served row belongs here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from ml_production_service.features import FloatArray
from ml_production_service.guard import ANONYMOUS, RateLimiter, StorageUnavailable
from ml_production_service.logging import get_logger
from ml_production_service.predictors.base import BasePredictor, Prediction
from ml_production_service.server.errors import ApiError
from ml_production_service.server.metrics import LIMITER_ERRORS, MODEL_TIMEOUTS, RATE_LIMITED, PredictionCounter
from ml_production_service.server.monitoring import Monitor
from ml_production_service.server.payload import PayloadLog
from ml_production_service.server.schemas import BatchRequest, batch_request_model

T = TypeVar("T")
State = dict[str, Any]
"""The request's ASGI state: ``client`` and ``key_id`` (set by the access middleware), ``ratelimit`` (set here)."""
logger = get_logger("ml_production_service.dataplane")


@dataclass(frozen=True, slots=True)
class Scores:
    """A tensor answer: class probabilities ``[n, classes]``, each row's class index, and the model's seconds."""

    probabilities: FloatArray
    classes: np.ndarray
    seconds: float
    out_of_range: list[list[str]]


@dataclass(frozen=True, slots=True)
class Guard:
    """The data plane's settings: the rate limiter, its outage policy, the model call's deadline, the payload log."""

    limiter: RateLimiter | None = None
    fail_open: bool = True
    request_timeout_s: float = 10.0
    payload_sample: float = 0.0
    payload_path: Path | None = None


class DataPlane:
    """The loaded predictor, the limits it serves under, and the one way to call it.

    It runs inline on the event loop when a prediction takes microseconds (measured at start-up), else in a
    thread. One object carries all of it: every dependency a route declares costs every request.
    """

    __slots__ = (
        "batch_model",
        "guard",
        "inline",
        "max_batch_size",
        "monitor",
        "payload",
        "predicted",
        "predictor",
        "warmup_us",
        "_last_outage_log",
    )

    def __init__(
        self,
        predictor: BasePredictor,
        inline: bool,
        warmup_us: float,
        max_batch_size: int,
        guard: Guard | None = None,
    ) -> None:
        self.predictor = predictor
        self.inline = inline
        self.warmup_us = warmup_us
        self.max_batch_size = max_batch_size
        self.batch_model: type[BatchRequest] = batch_request_model(max_batch_size)
        self.guard = guard or Guard()
        self.monitor = Monitor(predictor.manifest)
        self.predicted = PredictionCounter(predictor.model_type, predictor.version, predictor.class_labels)
        self.payload = (
            PayloadLog(self.guard.payload_sample, self.guard.payload_path, predictor.model_type, predictor.version)
            if self.guard.payload_sample > 0
            else None
        )
        self._last_outage_log = 0.0

    @property
    def model_type(self) -> str:
        """The served model's type (the V2 model name)."""
        return self.predictor.model_type

    @property
    def version(self) -> str:
        """The served model's version."""
        return self.predictor.version

    async def run(self, function: Callable[..., T], *args: object) -> tuple[T, float]:
        """Call ``function(*args)`` without holding up the event loop; return its result and seconds spent.

        In a thread it has ``MPS_REQUEST_TIMEOUT_S``: past it the answer is 504 and the thread's result, when it
        comes, is dropped (a thread cannot be stopped).
        """
        started = time.perf_counter()
        if self.inline:
            result = function(*args)
        else:
            try:
                with anyio.fail_after(self.guard.request_timeout_s):
                    result = await anyio.to_thread.run_sync(partial(function, *args), abandon_on_cancel=True)
            except TimeoutError:
                MODEL_TIMEOUTS.inc()
                raise ApiError(
                    504,
                    "model_timeout",
                    f"the model did not answer within {self.guard.request_timeout_s:g} s (MPS_REQUEST_TIMEOUT_S)",
                ) from None
        return result, time.perf_counter() - started

    async def admit(self, state: State, rows: int) -> None:
        """Charge ``rows`` to the request's client; 429 over its limit (the quota headers go in ``state``)."""
        limiter = self.guard.limiter
        if limiter is None:
            return
        try:
            quota = await limiter.hit(state.get("client", "unknown"), rows)
        except StorageUnavailable as error:
            self._storage_failed(error)
            return
        headers = quota.headers()
        retry_after = headers.pop("retry-after", None)
        state["ratelimit"] = [(name.encode(), value.encode()) for name, value in headers.items()]
        if retry_after is not None:
            RATE_LIMITED.labels(state.get("key_id") or ANONYMOUS).inc()
            why = f"this request costs {rows} rows, more than the limit" if rows > quota.limit else "limit reached"
            message = f"rate limit of {quota.limit} rows exceeded ({why}); retry in {retry_after} s (MPS_RATE_LIMIT)"
            raise ApiError(
                429,
                "rate_limited",
                message,
                [{"field": "rate_limit", "rule": "max_rows", "message": f"at most {quota.limit} rows per window"}],
                headers={"retry-after": retry_after},
            )

    def _storage_failed(self, error: StorageUnavailable) -> None:
        policy = "open" if self.guard.fail_open else "closed"
        LIMITER_ERRORS.labels(policy).inc()
        now = time.monotonic()
        if now - self._last_outage_log >= 10.0:  # an outage fails every request: one line per 10 s is enough
            self._last_outage_log = now
            logger.warning("rate_limit_storage_error", error=str(error), policy=policy)
        if not self.guard.fail_open:
            raise ApiError(
                503,
                "rate_limit_unavailable",
                "the rate limiter's storage does not answer; retry shortly (MPS_RATE_LIMIT_FAIL_OPEN=false)",
                headers={"retry-after": "1"},
            )

    async def predict_one(self, row: FloatArray, state: State) -> tuple[Prediction, float, list[str]]:
        """One row ``[4]``: its prediction, the model's seconds, and its inputs outside the training range."""
        if self.guard.limiter is not None:
            await self.admit(state, 1)
        if self.inline:  # the common case, without the coroutine of ``run``
            started = time.perf_counter()
            prediction = self.predictor.predict_one(row)
            seconds = time.perf_counter() - started
        else:
            prediction, seconds = await self.run(self.predictor.predict_one, row)
        self.predicted.one(prediction.class_index)
        outside = self.monitor.observe_one(row, prediction.probabilities[prediction.label])
        if self.payload is not None:
            self.payload.record(
                state.get("request_id"), row.reshape(1, -1), [prediction.label], [prediction.probabilities]
            )
        return prediction, seconds, outside

    async def predict_many(self, rows: FloatArray, state: State) -> tuple[list[Prediction], float, list[list[str]]]:
        """Rows ``[n, 4]``: their predictions in order, the model's seconds, and each row's out-of-range inputs."""
        if self.guard.limiter is not None:
            await self.admit(state, len(rows))
        predictions, seconds = await self.run(self.predictor.predict_many, rows)
        self.predicted.many([p.class_index for p in predictions])
        top = np.array([p.probabilities[p.label] for p in predictions], dtype=np.float64)
        if self.payload is not None:
            labels = [p.label for p in predictions]
            self.payload.record(state.get("request_id"), rows, labels, [p.probabilities for p in predictions])
        return predictions, seconds, self.monitor.observe_many(rows, top)

    async def scores(self, rows: FloatArray, state: State) -> Scores:
        """Rows ``[n, 4]`` as tensors (what V2 answers)."""
        if self.guard.limiter is not None:
            await self.admit(state, len(rows))
        probabilities, seconds = await self.run(self.predictor.predict_proba, rows)
        classes = np.argmax(probabilities, axis=1)
        labels = self.predictor.class_labels
        self.predicted.many(classes.tolist())
        outside = self.monitor.observe_many(rows, probabilities[np.arange(len(classes)), classes])
        if self.payload is not None:
            named = [dict(zip(labels, row, strict=True)) for row in probabilities.tolist()]
            self.payload.record(state.get("request_id"), rows, [labels[i] for i in classes.tolist()], named)
        return Scores(probabilities, classes, seconds, outside)

    async def explain(self, row: FloatArray) -> dict[str, Any]:
        """Why the model answers what it does for one row (not charged or counted: its prediction was)."""
        explanation, _ = await self.run(self.predictor.explain, row)
        return explanation
