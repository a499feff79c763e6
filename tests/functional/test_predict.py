"""/predict and /predict/batch through HTTP, for every model type."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from ml_production_service.features import FEATURE_NAMES
from tests.functional.conftest import SETOSA, load_testdata, make_client

BAD_INPUTS = load_testdata("bad_inputs.json")
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


def _raw_body(case: dict[str, Any]) -> bytes:
    if "body_hex" in case:
        return bytes.fromhex(case["body_hex"])
    if "body_repeat" in case:
        text, count = case["body_repeat"]
        return (text * count).encode()
    return str(case["body"]).encode()


def test_predict_answers_label_probabilities_and_model(client: TestClient) -> None:
    """A valid flower gets its label, a probability per class summing to one, and the model's identity."""
    response = client.post("/predict", json=SETOSA)
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] == "setosa"
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert math.isclose(sum(body["probabilities"].values()), 1.0, rel_tol=1e-6)
    assert max(body["probabilities"], key=body["probabilities"].get) == "setosa"
    model = client.get("/model").json()
    assert body["model_type"] == model["model_type"]
    assert body["model_version"] == model["version"]
    assert "explanation" not in body
    assert response.headers["server-timing"].startswith("model;dur=")


def test_integer_measurements_are_accepted(client: TestClient) -> None:
    """Whole-number centimetres (JSON integers) are valid measurements."""
    response = client.post("/predict", json={"sepal_length": 6, "sepal_width": 3, "petal_length": 5, "petal_width": 2})
    assert response.status_code == 200


def test_every_model_gets_at_least_95_percent_of_iris_right_over_http(client: TestClient) -> None:
    """The served model classifies the 150 iris rows with at least 95% accuracy."""
    iris = load_iris()
    rows = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in iris.data]
    response = client.post("/predict/batch", json={"instances": rows})
    assert response.status_code == 200
    predicted = [p["prediction"] for p in response.json()["predictions"]]
    accuracy = sum(p == iris.target_names[t] for p, t in zip(predicted, iris.target, strict=True)) / len(rows)
    assert accuracy >= 0.95


def test_batch_answers_each_row_in_order(client: TestClient) -> None:
    """A batch answers one prediction per row, in request order, matching /predict."""
    response = client.post("/predict/batch", json={"instances": [SETOSA, VIRGINICA, SETOSA]})
    assert response.status_code == 200
    body = response.json()
    labels = [p["prediction"] for p in body["predictions"]]
    assert labels == ["setosa", "virginica", "setosa"]
    single = client.post("/predict", json=VIRGINICA).json()
    assert body["predictions"][1]["probabilities"] == pytest.approx(single["probabilities"])
    assert body["model_type"] == single["model_type"]


def test_one_bad_row_rejects_the_batch_naming_index_and_field(client: TestClient) -> None:
    """A single invalid row rejects the whole batch, and the error names the row index and the field."""
    bad = {**SETOSA, "petal_width": -1}
    response = client.post("/predict/batch", json={"instances": [SETOSA, SETOSA, bad]})
    assert response.status_code == 422
    detail = response.json()["details"][0]
    assert detail["field"] == "instances[2].petal_width"
    assert detail["rule"] == "greater_than_equal"


def test_empty_batch_is_rejected(client: TestClient) -> None:
    """An empty list of instances is a client error, not an empty answer."""
    response = client.post("/predict/batch", json={"instances": []})
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "instances"


def test_batch_over_the_limit_is_refused() -> None:
    """More rows than MPS_MAX_BATCH_SIZE get a 413 that names the limit."""
    with make_client(max_batch_size=3) as client:
        response = client.post("/predict/batch", json={"instances": [SETOSA] * 4})
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert "MPS_MAX_BATCH_SIZE" in response.json()["error"]


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in BAD_INPUTS])
def test_bad_input_gets_a_4xx_naming_field_and_rule(client: TestClient, case: dict[str, Any]) -> None:
    """Every malformed request gets a JSON 4xx naming the field and the rule; the service stays up."""
    content_type = case.get("content_type", "application/json")
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=_raw_body(case), headers=headers)
    assert response.status_code == case["status"], response.text
    body = response.json()
    assert set(body) == {"error", "code", "details", "request_id"}
    assert body["error"]
    assert {"field": case["field"], "rule": case["rule"]}.items() <= body["details"][0].items()
    assert body["request_id"] == response.headers["x-request-id"]
    assert client.post("/predict", json=SETOSA).status_code == 200


def test_body_over_the_limit_is_413_even_when_valid_json() -> None:
    """A body larger than MPS_MAX_BODY_BYTES is refused with 413 before it is parsed."""
    padded = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}' + b" " * 2048
    with make_client(max_body_bytes=1024) as client:
        response = client.post("/predict", content=padded, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["code"] == "body_too_large"
        assert response.json()["details"][0]["rule"] == "max_bytes"


def test_chunked_body_over_the_limit_is_413() -> None:
    """A body sent without Content-Length is counted as it arrives and refused past the limit."""

    def chunks() -> Any:
        yield b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2'
        for _ in range(40):
            yield b" " * 100
        yield b"}"

    with make_client(max_body_bytes=1024) as client:
        response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert client.post("/predict", json=SETOSA).status_code == 200


def test_get_on_predict_is_405_json(client: TestClient) -> None:
    """GET /predict is 405 in the service's error shape, with the Allow header."""
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


def test_unknown_path_is_404_json(client: TestClient) -> None:
    """An unknown path is a JSON 404."""
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_bad_query_parameter_is_422_naming_it(client: TestClient) -> None:
    """?explain=maybe names the query parameter in a 422."""
    response = client.post("/predict?explain=maybe", json=SETOSA)
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "query.explain"


def test_explain_is_off_by_default_and_present_when_asked(client: TestClient) -> None:
    """?explain=true adds an explanation of the kind the model supports."""
    response = client.post("/predict?explain=true", json=VIRGINICA)
    assert response.status_code == 200
    explanation = response.json()["explanation"]
    expected = {
        "heuristic": "rule",
        "decision_tree": "decision_path",
        "random_forest": "tree_path",
        "xgboost": "tree_shap",
    }[response.json()["model_type"]]
    assert explanation["method"] == expected


def test_explanation_adds_up_to_the_answer(client: TestClient) -> None:
    """Contributions plus bias give the model's output; a decision path ends where the features lead."""
    body = client.post("/predict?explain=true", json=VIRGINICA).json()
    explanation = body["explanation"]
    probabilities = body["probabilities"]
    if explanation["method"] == "rule":
        assert explanation["rule"] == "otherwise -> virginica"
    elif explanation["method"] == "decision_path":
        steps = explanation["path"]
        assert steps, "a fitted tree splits at least once"
        for step in steps:
            went_left = step["value"] <= step["threshold"]
            assert step["direction"] == ("<=" if went_left else ">")
    else:
        totals = {
            label: explanation["bias"][label] + sum(explanation["contributions"][label].values())
            for label in probabilities
        }
        if explanation["output_space"] == "margin":
            exponentials = {label: math.exp(total) for label, total in totals.items()}
            totals = {label: value / sum(exponentials.values()) for label, value in exponentials.items()}
        assert totals == pytest.approx(probabilities, abs=1e-5)
