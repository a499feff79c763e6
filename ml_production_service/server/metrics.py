"""Prometheus metrics: requests, latency histograms, predictions by class, model load and identity.

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``python -m ml_production_service`` does it
for ``MPS_WORKERS > 1``) and every worker's samples are aggregated on each scrape.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "mps_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "mps_http_request_duration_seconds", "HTTP request latency by route.", ["route"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("mps_http_requests_in_flight", "Requests being served now.", multiprocess_mode="livesum")
PREDICTIONS = Counter(
    "mps_predictions_total",
    "Rows predicted, by model and predicted class.",
    ["model_type", "model_version", "predicted_class"],
)
MODEL_LOAD = Gauge("mps_model_load_seconds", "Seconds the model took to load.", ["model_type"], multiprocess_mode="max")
MODEL_INFO = Gauge(
    "mps_model_info",
    "The served model; the value is always 1.",
    ["model_type", "model_version", "sha256"],
    multiprocess_mode="max",
)


AUTH_REJECTED = Counter("mps_auth_rejected_total", "Requests refused 401, by reason.", ["reason"])
RATE_LIMITED = Counter("mps_rate_limited_total", "Requests refused 429, by key id.", ["key_id"])
LIMITER_ERRORS = Counter(
    "mps_rate_limit_storage_errors_total",
    "Limiter calls whose storage (Redis) failed, by policy.",
    ["policy"],
)
SHED = Counter("mps_shed_total", "Prediction requests answered 503 overloaded (MPS_MAX_IN_FLIGHT) before their body.")
MODEL_TIMEOUTS = Counter(
    "mps_model_timeouts_total", "Model calls past MPS_REQUEST_TIMEOUT_S (answered 504; the late result dropped)."
)


# Monitoring: live rows against the reference profile (see server/monitoring.py and deploy/prometheus/rules.yml).
INPUT_BINS = Counter(
    "mps_input_bin_total", "Served rows by reference bin, per input feature.", ["model_type", "feature", "bin"]
)
REFERENCE_FRACTION = Gauge(
    "mps_input_reference_fraction",
    "Training fraction of each reference bin (constant: for comparing in PromQL).",
    ["model_type", "feature", "bin"],
    multiprocess_mode="max",
)
REFERENCE_CLASS_FRACTION = Gauge(
    "mps_reference_class_fraction",
    "Training class prior.",
    ["model_type", "predicted_class"],
    multiprocess_mode="max",
)
REFERENCE_CONFIDENCE_MEAN = Gauge(
    "mps_reference_confidence_mean",
    "Mean top-class probability at promotion (out of fold for fitted models).",
    ["model_type"],
    multiprocess_mode="max",
)
INPUT_OUT_OF_RANGE = Counter(
    "mps_input_out_of_range_total",
    "Served rows with an input outside the training range.",
    ["model_type", "feature", "side"],
)
VALIDATION_ERRORS = Counter("mps_validation_errors_total", "Refused inputs by field and rule.", ["field", "rule"])
CONFIDENCE = Histogram(
    "mps_prediction_confidence",
    "Top-class probability of each served row.",
    ["model_type"],
    buckets=(0.34, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
MODEL_CREATED = Gauge(
    "mps_model_created_timestamp_seconds",
    "Unix time the served model was promoted.",
    ["model_type", "model_version"],
    multiprocess_mode="max",
)


@lru_cache(maxsize=4096)
def _request_series(route: str, method: str, status: int) -> tuple[Any, Any]:
    # Label lookups take a lock and build a key: resolve each series once (routes are templates, so few).
    return REQUESTS.labels(route, method, str(status)), LATENCY.labels(route)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one finished request and its latency."""
    requests, latency = _request_series(route, method, status)
    requests.inc()
    latency.observe(seconds)


class PredictionCounter:
    """``mps_predictions_total`` of one model: each class's series resolved on its first row, then counted without
    a lookup or a tally per request (a ``Counter`` of one label costs more than the increment)."""

    def __init__(self, model_type: str, model_version: str, labels: Sequence[str]) -> None:
        self.model_type = model_type
        self.model_version = model_version
        self.labels = labels
        self.series: list[Any] = [None] * len(labels)

    def _series(self, index: int) -> Any:
        series = self.series[index]
        if series is None:  # a class never predicted has no series yet, as before any row
            series = self.series[index] = PREDICTIONS.labels(self.model_type, self.model_version, self.labels[index])
        return series

    def one(self, index: int) -> None:
        """One row predicted as class ``index``."""
        self._series(index).inc()

    def many(self, indices: Sequence[int]) -> None:
        """Rows predicted as these class indices."""
        if len(indices) == 1:
            self._series(indices[0]).inc()
            return
        counts = np.bincount(np.asarray(indices, dtype=np.intp), minlength=len(self.labels)).tolist()
        for index, count in enumerate(counts):
            if count:
                self._series(index).inc(count)


def observe_model(model_type: str, model_version: str, sha256: str | None, load_seconds: float) -> None:
    """Record the loaded model's identity and load time."""
    MODEL_LOAD.labels(model_type).set(load_seconds)
    MODEL_INFO.labels(model_type, model_version, sha256 or "none").set(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, owned by another user
        return True
    return True


def forget_dead_workers(folder: str) -> list[int]:
    """Drop the live gauges (requests in flight) of workers that died without cleaning up (``kill -9``, OOM).

    Counters and histograms of a dead worker are kept: they must never go down. Returns the pids forgotten.
    """
    dead = []
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid_text = path.stem.rpartition("_")[2]
        if pid_text.isascii() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            dead.append(int(pid_text))
    for pid in sorted(set(dead)):
        with suppress(FileNotFoundError):  # another worker's scrape removed it first
            mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
    return sorted(set(dead))


def render() -> tuple[bytes, str]:
    """The exposition text for a scrape: this process's metrics, or every worker's in multiprocess mode."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder:
        forget_dead_workers(folder)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
