"""Property: every row the API accepts gives finite features, probabilities and explanations on every model.

The accepted domain is every finite measurement in [MIN_MEASUREMENT_CM, MAX_MEASUREMENT_CM]; a value just inside
an edge (5e-324 used to be accepted) once made an engineered ratio overflow float32 and every fitted model fail.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.features import (
    ENGINEERED_FEATURE_NAMES,
    FEATURE_NAMES,
    MAX_MEASUREMENT_CM,
    MIN_MEASUREMENT_CM,
    FloatArray,
    engineer_features,
)
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.heuristic import RULES
from ml_production_service.predictors.ml_model import MLModelPredictor

MIN = MIN_MEASUREMENT_CM
MAX = MAX_MEASUREMENT_CM
IRIS: list[list[float]] = np.asarray(load_iris().data, dtype=np.float64).tolist()

EDGES: tuple[float, ...] = (
    MIN,
    float(np.nextafter(MIN, math.inf)),
    float(np.nextafter(MAX, 0.0)),
    MAX,
)
"""The accepted domain's edges and the floats just inside them."""

IRIS_VALUES: tuple[float, ...] = tuple(sorted({value for row in IRIS for value in row}))
CORNERS: list[list[float]] = [list(corner) for corner in itertools.product((MIN, MAX), repeat=len(FEATURE_NAMES))]
"""Every row made of the two edges; (100, 0.01, 100, 0.01) has the largest ratios, (0.01, 100, 0.01, 100) the least."""
WIDEST_RATIOS = [[MAX, MIN, MAX, MIN], [MIN, MAX, MIN, MAX]]

measurement: st.SearchStrategy[float] = st.one_of(
    st.sampled_from(EDGES),
    st.sampled_from(IRIS_VALUES),
    st.floats(min_value=MIN, max_value=MAX, allow_nan=False, allow_infinity=False),
)
row_strategy: st.SearchStrategy[list[float]] = st.one_of(
    st.sampled_from(CORNERS),
    st.sampled_from(IRIS),
    st.lists(measurement, min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)),
)

PROPERTY = settings(deadline=None, derandomize=True, database=None)
MODEL_TYPES = [pytest.param(model_type, id=model_type.value) for model_type in ModelType]
FAST_PATH = [pytest.param(True, id="fast"), pytest.param(False, id="joblib")]
PROBABILITY_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def predictors() -> dict[tuple[ModelType, bool], BasePredictor]:
    """Every promoted model, served with the fast path on and off (built once for the module)."""
    return {
        (model_type, fast): get_predictor(ServiceConfig(model_type=model_type, fast_path=fast))
        for model_type in ModelType
        for fast in (True, False)
    }


def _predictor(
    predictors: dict[tuple[ModelType, bool], BasePredictor], model_type: ModelType, fast_path: bool
) -> BasePredictor:
    predictor = predictors[(model_type, fast_path)]
    # The setting must reach the predictor, or the two parametrisations would test one path twice.
    if isinstance(predictor, MLModelPredictor):
        assert predictor.uses_fast_path is fast_path
    return predictor


def _numbers(value: Any, where: str = "explanation") -> Iterator[tuple[str, float]]:
    """Every number in a JSON-ready value, with its location; anything not JSON-ready fails the test."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where} has a non-string key {key!r}"
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{where}[{index}]")
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int | float):
        yield where, float(value)
    else:
        raise AssertionError(f"{where} is a {type(value).__name__}, not a JSON value: {value!r}")


def _assert_probabilities(probabilities: FloatArray, rows: int) -> None:
    assert probabilities.shape == (rows, 3)
    assert probabilities.dtype == np.float64
    assert np.isfinite(probabilities).all(), probabilities
    assert (probabilities >= 0.0).all(), probabilities
    assert (probabilities <= 1.0 + PROBABILITY_TOLERANCE).all(), probabilities
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=PROBABILITY_TOLERANCE)


@settings(PROPERTY, max_examples=300)
@given(rows=st.lists(row_strategy, min_size=1, max_size=20))
@example(rows=CORNERS)
@example(rows=IRIS)
@example(rows=WIDEST_RATIOS)
@example(rows=[[EDGES[1], EDGES[2], EDGES[1], EDGES[2]], [EDGES[2], EDGES[1], EDGES[2], EDGES[1]]])
def test_engineered_features_of_accepted_rows_are_finite_in_float64_and_float32(rows: list[list[float]]) -> None:
    """Areas and ratios of accepted rows stay within [1e-4, 1e4]: finite and non-zero in float64 and float32."""
    features = engineer_features(rows)
    assert features.shape == (len(rows), len(ENGINEERED_FEATURE_NAMES))
    np.testing.assert_array_equal(features[:, : len(FEATURE_NAMES)], rows)
    casts: list[npt.NDArray[np.floating[Any]]] = [features, features.astype(np.float32)]
    for cast in casts:
        assert np.isfinite(cast).all(), (cast.dtype, rows)
        assert (cast > 0).all(), (cast.dtype, rows)  # no area or ratio underflows to 0
    # MIN * MIN and MIN / MAX are both 1e-4; MAX * MAX and MAX / MIN are both 1e4 (up to one rounding).
    assert (features >= (MIN * MIN) * (1 - 1e-12)).all()
    assert (features <= (MAX * MAX) * (1 + 1e-12)).all()


@pytest.mark.parametrize("fast_path", FAST_PATH)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
@settings(PROPERTY, max_examples=40)
@given(rows=st.lists(row_strategy, min_size=1, max_size=5))
@example(rows=WIDEST_RATIOS)
@example(rows=CORNERS)
@example(rows=[[EDGES[1]] * 4, [EDGES[2]] * 4])
def test_probabilities_of_accepted_rows_are_finite_and_sum_to_one(
    predictors: dict[tuple[ModelType, bool], BasePredictor],
    model_type: ModelType,
    fast_path: bool,
    rows: list[list[float]],
) -> None:
    """predict_proba on one row and on small batches gives finite probabilities that sum to 1."""
    predictor = _predictor(predictors, model_type, fast_path)
    batch = np.asarray(rows, dtype=np.float64)
    batch_probabilities = predictor.predict_proba(batch)
    _assert_probabilities(batch_probabilities, len(rows))
    for index, row in enumerate(batch):
        single = predictor.predict_proba(row.reshape(1, -1))
        _assert_probabilities(single, 1)
        np.testing.assert_allclose(single[0], batch_probabilities[index], rtol=0, atol=PROBABILITY_TOLERANCE)
        # The single-row route the service takes (the heuristic has its own plain-Python one).
        prediction = predictor.predict_one(row)
        values = list(prediction.probabilities.values())
        assert all(math.isfinite(p) for p in values), prediction
        assert math.fsum(values) == pytest.approx(1.0, abs=PROBABILITY_TOLERANCE)
        assert prediction.class_index == int(np.argmax(single[0]))
        assert prediction.label == predictor.class_labels[prediction.class_index]


@pytest.mark.parametrize("fast_path", FAST_PATH)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
@settings(PROPERTY, max_examples=30)
@given(row=row_strategy)
@example(row=WIDEST_RATIOS[0])
@example(row=WIDEST_RATIOS[1])
@example(row=[MIN] * 4)
@example(row=[MAX] * 4)
@example(row=[EDGES[1], EDGES[2], EDGES[1], EDGES[2]])
def test_explanations_of_accepted_rows_hold_only_finite_numbers(
    predictors: dict[tuple[ModelType, bool], BasePredictor],
    model_type: ModelType,
    fast_path: bool,
    row: list[float],
) -> None:
    """explain(row) returns a JSON-ready dict of finite numbers that agrees with the prediction."""
    predictor = _predictor(predictors, model_type, fast_path)
    raw = np.asarray(row, dtype=np.float64)
    explanation = predictor.explain(raw)
    numbers = list(_numbers(explanation))
    bad = [(where, value) for where, value in numbers if not math.isfinite(value)]
    assert not bad, f"non-finite numbers in the explanation of {row}: {bad}"
    json.dumps(explanation, allow_nan=False)  # serialisable as strict JSON
    prediction = predictor.predict_one(raw)
    method = explanation["method"]
    if model_type is ModelType.HEURISTIC:
        assert method == "rule"
        assert explanation["rule"] == RULES[prediction.class_index]
        return
    assert isinstance(predictor, MLModelPredictor)
    original = np.asarray(predictor.pipeline.predict_proba(raw.reshape(1, -1)), dtype=np.float64)[0]
    if model_type is ModelType.DECISION_TREE:
        assert method == "decision_path"
        assert explanation["path"], "a fitted tree's path has at least one split"
        for step in explanation["path"]:
            assert (step["value"] <= step["threshold"]) == (step["direction"] == "<="), step
        return
    labels = predictor.class_labels
    bias = np.array([explanation["bias"][label] for label in labels])
    contributions = np.array([sum(explanation["contributions"][label].values()) for label in labels])
    if model_type is ModelType.RANDOM_FOREST:
        assert method == "tree_path"
        np.testing.assert_allclose(bias + contributions, original, rtol=0, atol=1e-9)
    else:
        assert method == "tree_shap"
        margins = bias + contributions
        softmax = np.exp(margins - margins.max()) / np.exp(margins - margins.max()).sum()
        np.testing.assert_allclose(softmax, original, rtol=0, atol=1e-5)
