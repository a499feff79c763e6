"""In-process latency of every model through the predictor's public methods: the served path and the original."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.datasets import load_iris

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import load_artifact

BATCH_ROWS = 1000


@dataclass(frozen=True)
class Budget:
    """How many timed calls to make (at most ``calls``, fewer if ``seconds`` run out, never fewer than ``floor``)."""

    calls: int
    seconds: float
    floor: int
    warmup: int


def iris_rows() -> np.ndarray:
    """The 150 iris rows ``[150, 4]`` in the service's feature order (bundled with scikit-learn: no download)."""
    return np.ascontiguousarray(load_iris().data, dtype=np.float64)


def time_calls(function: Callable[[Any], object], inputs: list[np.ndarray], budget: Budget) -> dict[str, float]:
    """Call ``function`` on ``inputs`` in turn; p50, p99, mean and the count of the timed calls, in microseconds."""
    for index in range(budget.warmup):
        function(inputs[index % len(inputs)])
    timings: list[int] = []
    deadline = time.perf_counter() + budget.seconds
    clock = time.perf_counter_ns
    for index in range(budget.calls):
        argument = inputs[index % len(inputs)]
        started = clock()
        function(argument)
        timings.append(clock() - started)
        if index + 1 >= budget.floor and time.perf_counter() > deadline:
            break
    return timing_summary(timings)


def timing_summary(timings: list[int]) -> dict[str, float]:
    """Median, p99 and mean in us of timings in ns, and how many."""
    micros = np.asarray(timings, dtype=np.float64) / 1e3
    return {
        "p50_us": float(np.percentile(micros, 50)),
        "p99_us": float(np.percentile(micros, 99)),
        "mean_us": float(micros.mean()),
        "calls": len(timings),
    }


def original_of(predictor: BasePredictor, config: ServiceConfig) -> BasePredictor | None:
    """The same model served by its unmodified joblib Pipeline; None for the heuristic (it has no artifact)."""
    if not predictor.manifest.model_type.is_fitted:
        return None
    original = getattr(predictor, "original", None)
    if isinstance(original, BasePredictor):
        return original
    pipeline, manifest = load_artifact(config.registry_dir, ModelType(predictor.model_type))
    return MLModelPredictor(pipeline, manifest)


def baseline_call(model: ModelType, config: ServiceConfig) -> tuple[Callable[[Any], object], Callable[[Any], object]]:
    """What the tutorial baseline's route calls for one row and for a batch (``pipeline.predict``, or the rules)."""
    if not model.is_fitted:

        def rules(row: np.ndarray) -> int:
            return 0 if row[2] < 2.0 else 1 if row[3] < 1.7 else 2  # the baseline app's thresholds

        return rules, lambda batch: [rules(row) for row in batch]
    pipeline, _ = load_artifact(config.registry_dir, model)
    return (lambda row: pipeline.predict(row.reshape(1, -1))), pipeline.predict


def measure_model(model: ModelType, single: Budget, batch: Budget) -> list[dict[str, Any]]:
    """Rows for one model: single-row ``predict_one`` and 1000-row ``predict_many``, served path and original."""
    config = ServiceConfig(model_type=model)
    served = get_predictor(config)
    rows = iris_rows()
    singles = [rows[i] for i in range(len(rows))]
    batches = [np.resize(np.roll(rows, shift, axis=0), (BATCH_ROWS, rows.shape[1])) for shift in range(0, 150, 15)]
    fast = bool(getattr(served, "uses_fast_path", False))
    paths: list[tuple[str, BasePredictor]] = [("fast" if fast else "served", served)]
    original = original_of(served, config)
    if original is not None:
        paths.append(("original", original))
    calls: list[tuple[str, Callable[[Any], object], Callable[[Any], object]]] = [
        (path, predictor.predict_one, predictor.predict_many) for path, predictor in paths
    ]
    calls.append(("baseline", *baseline_call(model, config)))
    results = []
    for path, one, many in calls:
        for kind, function, inputs, budget, rows_per_call in (
            ("single", one, singles, single, 1),
            ("batch", many, batches, batch, BATCH_ROWS),
        ):
            timing = time_calls(function, inputs, budget)
            results.append({"model": model.value, "path": path, "kind": kind, "rows": rows_per_call, **timing})
    return results


def measure(models: list[ModelType], single: Budget, batch: Budget) -> list[dict[str, Any]]:
    """Every model's rows, each with its p50 speed-up over the original and the baseline paths (>1 is faster).

    ``baseline`` is what the tutorial app's route calls (``pipeline.predict``: labels only, no probabilities).
    """
    results = [row for model in models for row in measure_model(model, single, batch)]
    for reference_path in ("original", "baseline"):
        p50 = {(r["model"], r["kind"]): r["p50_us"] for r in results if r["path"] == reference_path}
        for row in results:
            reference = p50.get((row["model"], row["kind"]))
            row[f"x_{reference_path}_p50"] = reference / row["p50_us"] if reference else None
    return results
