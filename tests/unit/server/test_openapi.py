"""The OpenAPI additions: error statuses in the one shape, a V2 body schema that agrees with the codec, pinned paths."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ml_production_service.configs import ServiceConfig
from ml_production_service.features import MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from ml_production_service.server.app import create_app
from ml_production_service.server.errors import ApiError
from ml_production_service.server.openapi import (
    ANY_ROUTE,
    BODY_ROUTE,
    INFERENCE_REQUEST,
    MODEL_ROUTE,
    V2_DOCUMENTED_ROWS,
    errors,
    pin_path_values,
)
from ml_production_service.server.schemas import ErrorResponse
from ml_production_service.server.v2_codec import input_rows, parse_request, requested_outputs

MAX_ROWS = 1000
VALIDATOR = jsonschema.Draft202012Validator(INFERENCE_REQUEST)


def _codec_accepts(body: dict[str, Any]) -> bool:
    """Whether the V2 codec takes ``body`` all the way to rows and outputs."""
    try:
        request, binary = parse_request(json.dumps(body).encode(), None)
        input_rows(request, binary, MAX_ROWS)
        requested_outputs(request)
    except ApiError:
        return False
    return True


def _tensor(rows: int, **changes: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [rows, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2] * rows, **changes}


# errors


def test_errors_documents_each_status_with_the_error_model() -> None:
    """Each status given answers ErrorResponse; nothing else is added."""
    assert errors(404, 503) == {404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
    assert errors() == {}


def test_prediction_routes_document_every_status_they_can_answer() -> None:
    """A key refused (401), a limit hit (429), a deadline passed (504), overload (503) and the body's errors are all
    documented on the prediction routes; metadata routes carry the shared ones but no body errors."""
    with TestClient(create_app(ServiceConfig(log_level="WARNING", log_format="json"))) as client:
        schema = client.get("/openapi.json").json()
    every = {"400", "401", "405", "408", "413", "415", "422", "429", "503", "504"}
    for path in ("/predict", "/predict/batch", "/v2/models/{name}/infer"):
        assert every <= set(schema["paths"][path]["post"]["responses"]), path
    model = set(schema["paths"]["/model"]["get"]["responses"])
    assert {"401", "405", "408", "413", "503"} <= model and not {"415", "429"} & model
    assert set(ANY_ROUTE) | set(BODY_ROUTE) | set(MODEL_ROUTE) == {int(status) for status in every}


# the V2 request body: the schema and the codec agree


def test_the_documented_example_is_valid_and_accepted() -> None:
    """The example the docs show passes the schema and the codec."""
    for example in INFERENCE_REQUEST["examples"]:
        VALIDATOR.validate(example)
        assert _codec_accepts(example)


@pytest.mark.parametrize("rows", V2_DOCUMENTED_ROWS)
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("value", [MIN_MEASUREMENT_CM, MAX_MEASUREMENT_CM, 5])
def test_bodies_the_schema_allows_are_accepted(rows: int, datatype: str, value: float) -> None:
    """Every documented row count and datatype, at both ends of the range, is valid for both."""
    body = {
        "id": "r1",
        "parameters": {"binary_data_output": False},
        "inputs": [_tensor(rows, datatype=datatype, data=[value] * 4 * rows)],
        "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}],
    }
    VALIDATOR.validate(body)
    assert _codec_accepts(body)


def _without_outputs(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "outputs"}


REFUSED: list[Any] = [
    pytest.param({"inputs": []}, id="no-input"),
    pytest.param({"inputs": [_tensor(1), _tensor(1)]}, id="two-inputs"),
    pytest.param({"inputs": [_tensor(1)], "extra": 1}, id="unknown-key"),
    pytest.param({"inputs": [_tensor(1, colour="red")]}, id="unknown-tensor-key"),
    pytest.param({"inputs": [_tensor(1, datatype="INT64")]}, id="other-datatype"),
    pytest.param({"inputs": [_tensor(1, shape=[1, 3])]}, id="three-columns"),
    pytest.param({"inputs": [_tensor(1, data=[5.1, 3.5, 1.4])]}, id="too-few-values"),
    pytest.param({"inputs": [_tensor(1, data=[5.1, 3.5, 1.4, "0.2"])]}, id="string-value"),
    pytest.param({"inputs": [_tensor(1, data=[5.1, 3.5, 1.4, 0.0])]}, id="zero"),
    pytest.param({"inputs": [_tensor(1, data=[5.1, 3.5, 1.4, 100.5])]}, id="over-the-maximum"),
    pytest.param({"inputs": [_tensor(1, data=[5.1, 3.5, 1.4, float(np.nextafter(0.01, 0))])]}, id="under-the-minimum"),
    pytest.param({"inputs": [_tensor(1, name="n" * 257)]}, id="long-name"),
    pytest.param({"id": "i" * 257, "inputs": [_tensor(1)]}, id="long-id"),
    pytest.param({"inputs": [_tensor(1)], "outputs": [{"name": "logits"}]}, id="unknown-output"),
    pytest.param({"inputs": [_tensor(1)], "outputs": [{"name": "predict"}] * 3}, id="three-outputs"),
    pytest.param({"inputs": [_tensor(1)], "parameters": {"binary_data_output": "yes"}}, id="flag-not-a-boolean"),
    pytest.param(
        {"inputs": [_tensor(1)], "outputs": [{"name": "predict", "parameters": {"binary_data": 1}}]},
        id="output-flag-not-a-boolean",
    ),
]


@pytest.mark.parametrize("body", REFUSED)
def test_bodies_the_codec_refuses_are_invalid_in_the_schema(body: dict[str, Any]) -> None:
    """What the codec answers 400 to, the schema does not allow: schemathesis never expects a 200 for it."""
    assert not _codec_accepts(body)
    assert not VALIDATOR.is_valid(body)


# pin_path_values


def _schema() -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "paths": {
            "/v2/models/{name}/versions/{version}/infer": {"post": {"parameters": [name, version]}},
            "/v2/models/{name}": {"get": {"parameters": [copy.deepcopy(name)]}, "head": {}},
            "/predict": {"post": {"parameters": [{"name": "version", "in": "query", "schema": {"type": "string"}}]}},
            "/things/{id}": {"get": {"parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}]}},
        }
    }


def test_name_and_version_path_values_are_pinned_to_the_served_model() -> None:
    """Every ``{name}`` and ``{version}`` path parameter takes exactly one value: the served one."""
    schema = _schema()
    pin_path_values(schema, "xgboost", "20260101.000000")
    paths = schema["paths"]
    name, version = paths["/v2/models/{name}/versions/{version}/infer"]["post"]["parameters"]
    assert name["schema"] == {"type": "string", "enum": ["xgboost"]}
    assert version["schema"] == {"type": "string", "enum": ["20260101.000000"]}
    assert paths["/v2/models/{name}"]["get"]["parameters"][0]["schema"]["enum"] == ["xgboost"]
    assert name["required"] is True  # the rest of the parameter is kept


def test_other_parameters_are_left_alone() -> None:
    """A query parameter called ``version`` and other path parameters keep their schemas."""
    schema = _schema()
    pin_path_values(schema, "xgboost", "1")
    untouched = _schema()["paths"]
    assert schema["paths"]["/predict"] == untouched["/predict"]
    assert schema["paths"]["/things/{id}"] == untouched["/things/{id}"]
    assert schema["paths"]["/v2/models/{name}"]["head"] == {}


def test_a_schema_without_paths_is_left_as_it_is() -> None:
    """Nothing to pin is not an error."""
    schema: dict[str, Any] = {"openapi": "3.1.0"}
    pin_path_values(schema, "heuristic", "1")
    assert schema == {"openapi": "3.1.0"}
