"""Property, through HTTP: an accepted row is answered 200 with finite numbers on every model and path; a value
just outside the accepted domain is a 422 (named-feature API) or a 400 (V2), never a 5xx.

The named-feature API and V2 FP64 accept float64 values in [MIN_MEASUREMENT_CM, MAX_MEASUREMENT_CM]; V2 FP32
accepts the float32 values v with float32(MIN) <= v <= float32(MAX), compared in float32 precision.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from tests.functional.conftest import make_client

MIN = MIN_MEASUREMENT_CM
MAX = MAX_MEASUREMENT_CM
MIN32 = float(np.float32(MIN))  # 0.009999999776482582, just below MIN in float64
MAX32 = float(np.float32(MAX))
IRIS: list[list[float]] = np.asarray(load_iris().data, dtype=np.float64).tolist()
IRIS_VALUES: tuple[float, ...] = tuple(sorted({value for row in IRIS for value in row}))
CLASSES = ("setosa", "versicolor", "virginica")
WIDEST_RATIOS = [[MAX, MIN, MAX, MIN], [MIN, MAX, MIN, MAX]]


def _up(value: float, width: type[np.floating[Any]] = np.float64) -> float:
    return float(np.nextafter(width(value), width(math.inf)))


def _down(value: float, width: type[np.floating[Any]] = np.float64) -> float:
    return float(np.nextafter(width(value), width(-math.inf)))


def _rows(measurement: st.SearchStrategy[float], corners: list[list[float]]) -> st.SearchStrategy[list[float]]:
    return st.one_of(
        st.sampled_from(corners),
        st.sampled_from(IRIS),
        st.lists(measurement, min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)),
    )


def _corners(low: float, high: float) -> list[list[float]]:
    return [list(corner) for corner in itertools.product((low, high), repeat=len(FEATURE_NAMES))]


EDGES64 = (MIN, _up(MIN), _down(MAX), MAX)
measurement64: st.SearchStrategy[float] = st.one_of(
    st.sampled_from(EDGES64),
    st.sampled_from(IRIS_VALUES),
    st.floats(min_value=MIN, max_value=MAX, allow_nan=False, allow_infinity=False),
)
row64 = _rows(measurement64, _corners(MIN, MAX))

EDGES32 = (MIN32, _up(MIN32, np.float32), _down(MAX32, np.float32), MAX32)
IRIS32 = np.asarray(IRIS, dtype=np.float32).astype(np.float64).tolist()
measurement32: st.SearchStrategy[float] = st.one_of(
    st.sampled_from(EDGES32),
    st.sampled_from(sorted({value for row in IRIS32 for value in row})),
    st.floats(min_value=MIN32, max_value=MAX32, allow_nan=False, allow_infinity=False, width=32),
)
row32 = st.one_of(
    st.sampled_from(_corners(MIN32, MAX32)),
    st.sampled_from(IRIS32),
    st.lists(measurement32, min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)),
)

OUTSIDE64 = (_down(MIN), _up(MAX), 0.0, -0.0, -MIN, -1.0, -MAX, 5e-324, -5e-324, 1e308, -1e308)
"""Finite float64 values just outside the accepted domain, and the ones that used to slip through."""
outside64: st.SearchStrategy[float] = st.one_of(
    st.sampled_from(OUTSIDE64),
    st.floats(max_value=_down(MIN), allow_nan=False, allow_infinity=False),
    st.floats(min_value=_up(MAX), allow_nan=False, allow_infinity=False),
)
OUTSIDE32 = (_down(MIN32, np.float32), _up(MAX32, np.float32), 0.0, -0.0, -MIN32, -1.0, 1e-45, 3e38, -3e38)
outside32: st.SearchStrategy[float] = st.one_of(
    st.sampled_from(OUTSIDE32),
    st.sampled_from((math.nan, math.inf, -math.inf)),  # the binary extension can carry them; JSON cannot
    st.floats(max_value=_down(MIN32, np.float32), allow_nan=False, allow_infinity=False, width=32),
    st.floats(min_value=_up(MAX32, np.float32), allow_nan=False, allow_infinity=False, width=32),
)

PROPERTY = settings(deadline=None, derandomize=True, database=None)
SERVED = [
    pytest.param((model_type, fast), id=f"{model_type.value}-{'fast' if fast else 'joblib'}")
    for model_type in ModelType
    for fast in (True, False)
]


@pytest.fixture(scope="module", params=SERVED)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, ModelType]]:
    """One client per model type and fast-path setting, its lifespan running, shared by every example."""
    model_type, fast = request.param
    with make_client(model_type=model_type, fast_path=fast) as client:
        yield client, model_type


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_numbers(value: Any, where: str = "body") -> Iterator[tuple[str, float]]:
    """Every number in a parsed JSON value; a null or a non-finite number fails with its location."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _finite_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _finite_numbers(item, f"{where}[{index}]")
    elif _is_number(value):
        assert math.isfinite(value), f"{where} = {value!r}"
        yield where, float(value)
    else:  # orjson writes NaN and infinities as null: no explanation holds a null otherwise
        assert value is not None, f"{where} is null"


def _assert_probabilities(probabilities: dict[str, Any]) -> None:
    assert tuple(probabilities) == CLASSES
    values = list(probabilities.values())
    assert all(_is_number(p) and math.isfinite(p) and 0.0 <= p <= 1.0 + 1e-6 for p in values), probabilities
    assert math.fsum(values) == pytest.approx(1.0, abs=1e-6)


def _ok(response: Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def _named(row: list[float]) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, row, strict=True))


def _binary_infer(client: TestClient, model_type: ModelType, rows: list[list[float]], datatype: str) -> Response:
    """A V2 infer request in the binary tensor data extension: JSON header, then the raw little-endian tensor."""
    raw = np.asarray(rows, dtype="<f4" if datatype == "FP32" else "<f8").tobytes()
    tensor = {
        "name": "input-0",
        "shape": [len(rows), len(FEATURE_NAMES)],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"id": "prop", "inputs": [tensor]}).encode()
    return client.post(
        f"/v2/models/{model_type.value}/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )


def _json_infer(client: TestClient, model_type: ModelType, rows: list[list[float]]) -> Response:
    tensor = {"name": "input-0", "shape": [len(rows), len(FEATURE_NAMES)], "datatype": "FP64", "data": rows}
    return client.post(f"/v2/models/{model_type.value}/infer", json={"id": "prop", "inputs": [tensor]})


def _assert_v2_outputs(body: dict[str, Any], model_type: ModelType, rows: int) -> list[list[float]]:
    assert body["model_name"] == model_type.value
    assert body["id"] == "prop"
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64" and outputs["predict"]["shape"] == [rows]
    assert outputs["predict_proba"]["datatype"] == "FP64" and outputs["predict_proba"]["shape"] == [rows, 3]
    flat = outputs["predict_proba"]["data"]
    assert len(flat) == rows * 3 and all(_is_number(p) and math.isfinite(p) for p in flat), flat
    probabilities = np.asarray(flat, dtype=np.float64).reshape(rows, 3)
    assert ((probabilities >= 0.0) & (probabilities <= 1.0 + 1e-6)).all(), probabilities
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert outputs["predict"]["data"] == probabilities.argmax(axis=1).tolist()
    return probabilities.tolist()


@settings(PROPERTY, max_examples=25)
@given(row=row64)
@example(row=WIDEST_RATIOS[0])
@example(row=WIDEST_RATIOS[1])
@example(row=[_up(MIN)] * 4)
def test_predict_and_explain_answer_accepted_rows_with_finite_numbers(
    served: tuple[TestClient, ModelType], row: list[float]
) -> None:
    """/predict and /predict?explain=true answer 200 with finite probabilities and a finite explanation."""
    client, model_type = served
    plain = _ok(client.post("/predict", json=_named(row)))
    assert plain["model_type"] == model_type.value
    _assert_probabilities(plain["probabilities"])
    assert plain["prediction"] == max(plain["probabilities"], key=plain["probabilities"].__getitem__)
    explained = _ok(client.post("/predict", params={"explain": "true"}, json=_named(row)))
    assert explained["prediction"] == plain["prediction"]
    assert explained["probabilities"] == plain["probabilities"]
    assert isinstance(explained["explanation"], dict) and explained["explanation"]["method"]
    list(_finite_numbers(explained["explanation"], "explanation"))


@settings(PROPERTY, max_examples=20)
@given(rows=st.lists(row64, min_size=1, max_size=5))
@example(rows=WIDEST_RATIOS)
@example(rows=_corners(MIN, MAX)[:5])
def test_batch_answers_accepted_rows_with_finite_probabilities(
    served: tuple[TestClient, ModelType], rows: list[list[float]]
) -> None:
    """/predict/batch with 1..5 accepted rows answers 200, one finite prediction per row, in order."""
    client, model_type = served
    body = _ok(client.post("/predict/batch", json={"instances": [_named(row) for row in rows]}))
    assert body["model_type"] == model_type.value
    assert len(body["predictions"]) == len(rows)
    for prediction in body["predictions"]:
        _assert_probabilities(prediction["probabilities"])


@settings(PROPERTY, max_examples=20)
@given(rows64=st.lists(row64, min_size=1, max_size=5), rows32=st.lists(row32, min_size=1, max_size=5))
@example(rows64=WIDEST_RATIOS, rows32=[[MAX32, MIN32, MAX32, MIN32], [MIN32, MAX32, MIN32, MAX32]])
@example(rows64=[list(EDGES64)], rows32=[list(EDGES32)])
@example(rows64=[[MIN] * 4], rows32=[[MIN32] * 4])
def test_v2_infer_answers_accepted_tensors_with_finite_probabilities(
    served: tuple[TestClient, ModelType], rows64: list[list[float]], rows32: list[list[float]]
) -> None:
    """V2 infer answers 200 with finite probabilities: JSON FP64, binary FP64, and binary FP32 (float32 domain)."""
    client, model_type = served
    from_json = _assert_v2_outputs(_ok(_json_infer(client, model_type, rows64)), model_type, len(rows64))
    from_binary = _assert_v2_outputs(_ok(_binary_infer(client, model_type, rows64, "FP64")), model_type, len(rows64))
    assert from_binary == from_json  # the same float64 values, whichever encoding carried them
    _assert_v2_outputs(_ok(_binary_infer(client, model_type, rows32, "FP32")), model_type, len(rows32))


@settings(PROPERTY, max_examples=20)
@given(row=row64, column=st.integers(0, len(FEATURE_NAMES) - 1), bad=outside64)
@example(row=IRIS[0], column=3, bad=5e-324)
@example(row=IRIS[0], column=0, bad=_down(MIN))
@example(row=IRIS[0], column=1, bad=_up(MAX))
@example(row=IRIS[0], column=2, bad=1e308)
def test_values_just_outside_the_domain_are_422_on_predict(
    served: tuple[TestClient, ModelType], row: list[float], column: int, bad: float
) -> None:
    """/predict (with or without explain) and /predict/batch refuse an out-of-domain value with a 422 naming it."""
    client, _ = served
    payload = _named([bad if index == column else value for index, value in enumerate(row)])
    field = FEATURE_NAMES[column]
    for params in ({}, {"explain": "true"}):
        response = client.post("/predict", params=params, json=payload)
        assert response.status_code == 422, (response.status_code, response.text)
        body = response.json()
        assert body["code"] == "validation_error"
        assert [detail["field"] for detail in body["details"]] == [field]
    batch = client.post("/predict/batch", json={"instances": [_named(row), payload]})
    assert batch.status_code == 422, (batch.status_code, batch.text)
    assert [detail["field"] for detail in batch.json()["details"]] == [f"instances[1].{field}"]


@settings(PROPERTY, max_examples=20)
@given(
    rows64=st.lists(row64, min_size=1, max_size=3),
    rows32=st.lists(row32, min_size=1, max_size=3),
    position=st.tuples(st.integers(0, 2), st.integers(0, len(FEATURE_NAMES) - 1)),
    bad64=outside64,
    bad32=outside32,
)
@example(rows64=[IRIS[0]], rows32=[IRIS32[0]], position=(0, 3), bad64=5e-324, bad32=1e-45)
@example(rows64=[IRIS[0]], rows32=[IRIS32[0]], position=(0, 0), bad64=_down(MIN), bad32=_down(MIN32, np.float32))
@example(rows64=[IRIS[0]], rows32=[IRIS32[0]], position=(0, 1), bad64=_up(MAX), bad32=_up(MAX32, np.float32))
@example(rows64=[IRIS[0]], rows32=[IRIS32[0]], position=(0, 2), bad64=1e308, bad32=math.nan)
@example(rows64=[IRIS[0]], rows32=[[MIN32] * 4], position=(0, 2), bad64=-5e-324, bad32=math.inf)
def test_values_just_outside_the_domain_are_400_on_v2(
    served: tuple[TestClient, ModelType],
    rows64: list[list[float]],
    rows32: list[list[float]],
    position: tuple[int, int],
    bad64: float,
    bad32: float,
) -> None:
    """V2 infer refuses an out-of-domain value with a 400 naming its row and feature: JSON FP64, binary FP64/FP32."""
    client, model_type = served
    for rows, bad, datatype in ((rows64, bad64, "FP64"), (rows32, bad32, "FP32")):
        row, column = position[0] % len(rows), position[1]
        tensor = [list(values) for values in rows]
        tensor[row][column] = bad
        responses = [_binary_infer(client, model_type, tensor, datatype)]
        if datatype == "FP64":
            responses.append(_json_infer(client, model_type, tensor))
        for response in responses:
            assert response.status_code == 400, (datatype, tensor, response.status_code, response.text)
            assert f"row {row} {FEATURE_NAMES[column]}=" in response.json()["error"], response.text
