"""DataPlane: the one way every protocol runs the model (inline or in a thread), times it and counts its answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from uuid import uuid4

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from ml_production_service.features import FloatArray
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.heuristic import default_heuristic_manifest
from ml_production_service.server import dataplane
from ml_production_service.server.dataplane import DataPlane, Scores

T = TypeVar("T")
LABELS = ["a", "b", "c"]
ROWS = np.array([[5.0, 3.0, 1.0, 0.1], [6.0, 3.0, 5.0, 2.0], [6.5, 3.0, 5.5, 1.5]])
PROBABILITIES = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])


class _Recorder(BasePredictor):
    """Answers row ``i`` with ``PROBABILITIES[i % 3]`` and records the thread each call ran on."""

    def __init__(self) -> None:
        version = f"unit-{uuid4().hex}"  # a version of its own: the prediction counters start at zero
        super().__init__(default_heuristic_manifest().model_copy(update={"class_labels": LABELS, "version": version}))
        self.threads: list[int] = []

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        self.threads.append(threading.get_ident())
        return PROBABILITIES[np.arange(len(rows)) % len(PROBABILITIES)]

    def explain(self, row: FloatArray) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        return {"method": "recorded", "first": float(row[0])}


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _counted(predictor: BasePredictor) -> dict[str, float]:
    """``mps_predictions_total`` for this predictor's model and version, by class."""
    counts = {}
    for label in predictor.class_labels:
        labels = {"model_type": predictor.model_type, "model_version": predictor.version, "predicted_class": label}
        counts[label] = REGISTRY.get_sample_value("mps_predictions_total", labels) or 0.0
    return counts


class _Clock:
    """A perf_counter that advances by the given steps, so that measured durations are exact."""

    def __init__(self, *steps: float) -> None:
        self.now = 100.0
        self.steps: Iterator[float] = iter(steps)

    def perf_counter(self) -> float:
        self.now += next(self.steps, 0.0)
        return self.now


@pytest.fixture
def predictor() -> _Recorder:
    return _Recorder()


def test_the_plane_reports_the_predictors_model_and_limits(predictor: _Recorder) -> None:
    """Model type, version and the batch limit come from what the plane was built with."""
    plane = DataPlane(predictor, inline=True, warmup_us=12.5, max_batch_size=2)
    assert (plane.model_type, plane.version) == ("heuristic", predictor.version)
    assert (plane.inline, plane.warmup_us, plane.max_batch_size) == (True, 12.5, 2)
    assert plane.predictor is predictor


def test_the_batch_model_enforces_the_planes_batch_limit(predictor: _Recorder) -> None:
    """``batch_model`` accepts up to ``max_batch_size`` rows and refuses one more by count."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=2)
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    assert len(plane.batch_model.model_validate({"instances": [row, row]}).instances) == 2
    with pytest.raises(ValidationError) as caught:
        plane.batch_model.model_validate({"instances": [row] * 3})
    assert caught.value.errors()[0]["type"] == "too_long"


def test_inline_runs_on_the_event_loop_thread(predictor: _Recorder) -> None:
    """A fast model is called directly, on the thread running the event loop."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)

    async def predict() -> int:
        await plane.predict_one(ROWS[0], {})
        return threading.get_ident()

    loop_thread = _run(predict())
    assert predictor.threads == [loop_thread]


def test_a_slow_model_runs_in_a_worker_thread(predictor: _Recorder) -> None:
    """A model too slow for the event loop is called in a thread pool, for every kind of call."""
    plane = DataPlane(predictor, inline=False, warmup_us=1e6, max_batch_size=10)

    async def calls() -> int:
        await plane.predict_one(ROWS[0], {})
        await plane.predict_many(ROWS, {})
        await plane.scores(ROWS, {})
        await plane.explain(ROWS[0])
        return threading.get_ident()

    loop_thread = _run(calls())
    assert len(predictor.threads) == 4
    assert loop_thread not in predictor.threads


@pytest.mark.parametrize("inline", [True, False])
def test_run_returns_the_result_and_the_seconds_it_took(monkeypatch: pytest.MonkeyPatch, inline: bool) -> None:
    """``run`` passes the arguments through and measures the call alone, in seconds."""
    monkeypatch.setattr(dataplane, "time", _Clock(0.0, 0.25))
    plane = DataPlane(_Recorder(), inline=inline, warmup_us=1.0, max_batch_size=10)
    result, seconds = _run(plane.run(lambda a, b: a + b, 2, 3))
    assert result == 5
    assert seconds == 0.25


def test_predict_one_answers_the_row_and_counts_its_class(predictor: _Recorder) -> None:
    """One row: its prediction, labelled from the manifest, counted once under its class."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)
    prediction, seconds, _ = _run(plane.predict_one(ROWS[1], {}))
    assert (prediction.label, prediction.class_index) == ("a", 0)  # row 0 of the answer: a single row
    assert prediction.probabilities == dict(zip(LABELS, PROBABILITIES[0], strict=True))
    assert seconds >= 0
    assert _counted(predictor) == {"a": 1.0, "b": 0.0, "c": 0.0}


def test_predict_many_answers_rows_in_order_and_counts_every_row(predictor: _Recorder) -> None:
    """A batch: one prediction per row, in order; each row counted under its class."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)
    rows = np.vstack([ROWS, ROWS[:2]])  # classes a, c, b, a, c
    predictions, _, _ = _run(plane.predict_many(rows, {}))
    assert [p.label for p in predictions] == ["a", "c", "b", "a", "c"]
    assert _counted(predictor) == {"a": 2.0, "b": 1.0, "c": 2.0}
    _run(plane.predict_many(ROWS[:1], {}))
    assert _counted(predictor)["a"] == 3.0


def test_scores_are_tensors_and_are_counted_by_class(predictor: _Recorder) -> None:
    """What V2 answers: the probability matrix, each row's class index and the model's seconds."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)
    scores = _run(plane.scores(ROWS, {}))
    assert isinstance(scores, Scores)
    np.testing.assert_array_equal(scores.probabilities, PROBABILITIES)
    assert scores.classes.tolist() == [0, 2, 1]
    assert scores.seconds >= 0
    assert _counted(predictor) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_explain_answers_the_reason_and_counts_nothing(predictor: _Recorder) -> None:
    """An explanation goes with a prediction that was already counted: it adds nothing to the counters."""
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)
    assert _run(plane.explain(ROWS[2])) == {"method": "recorded", "first": 6.5}
    assert _counted(predictor) == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_the_seconds_reported_are_the_models_own(monkeypatch: pytest.MonkeyPatch, predictor: _Recorder) -> None:
    """predict_one, predict_many and scores each report the time spent in the model call."""
    monkeypatch.setattr(dataplane, "time", _Clock(0.0, 0.001, 0.0, 0.002, 0.0, 0.003))
    plane = DataPlane(predictor, inline=True, warmup_us=1.0, max_batch_size=10)
    assert _run(plane.predict_one(ROWS[0], {}))[1] == pytest.approx(0.001)
    assert _run(plane.predict_many(ROWS, {}))[1] == pytest.approx(0.002)
    assert _run(plane.scores(ROWS, {})).seconds == pytest.approx(0.003)
