"""The functional suite's client checks every answer against its response model: it must refuse what is wrong.

These run the check against a stand-in app that answers on the service's paths with shapes chosen per test, so
that a change which silently stopped the check (or loosened it) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.functional.conftest import CheckedClient, answer_model

PREDICTION = {
    "prediction": "setosa",
    "probabilities": {"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0},
    "model_type": "heuristic",
    "model_version": "v1",
}
HEALTH = {"status": "healthy", "ready": True, "model_type": "heuristic", "model_version": "v1", "service_version": "1"}
ERROR = {"error": "bad", "code": "validation_error", "details": [], "request_id": "rid"}


@pytest.fixture
def answers() -> Iterator[tuple[CheckedClient, dict[str, Response]]]:
    """A checked client of an app answering each path with whatever the test puts in the dict."""
    replies: dict[str, Response] = {}
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "HEAD"])
    async def reply(path: str) -> Response:
        return replies["/" + path]

    with CheckedClient(app) as client:
        yield client, replies


def _json(body: Any, status: int = 200, **headers: str) -> Response:
    return JSONResponse(body, status_code=status, headers=headers or None)


def test_the_service_clients_are_checked_clients() -> None:
    """The fixtures' client class is a TestClient (what the tests annotate) with the check installed."""
    client = CheckedClient(FastAPI())
    assert isinstance(client, TestClient)
    assert len(client.event_hooks["response"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "model"),
    [
        ("POST", "/predict", 200, "PredictResponse"),
        ("POST", "/predict/batch", 200, "BatchResponse"),
        ("GET", "/health", 200, "HealthResponse"),
        ("GET", "/health/ready", 503, "HealthResponse"),
        ("GET", "/health", 404, "ErrorResponse"),
        ("POST", "/v2/models/heuristic/infer", 400, "ErrorResponse"),
        ("GET", "/predict", 405, "ErrorResponse"),
        ("POST", "/predict", 503, "ErrorResponse"),
        ("GET", "/nope", 500, "ErrorResponse"),
    ],
)
def test_each_answer_is_matched_to_its_model(method: str, path: str, status: int, model: str) -> None:
    """200s of the documented routes, the health 503 and every 4xx/5xx have a model."""
    found = answer_model(method, path, status)
    assert found is not None and found.__name__ == model


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/health/live", 200), ("GET", "/model", 200), ("POST", "/v2/models/x/infer", 200), ("GET", "/", 307)],
)
def test_answers_without_a_declared_model_are_not_checked(method: str, path: str, status: int) -> None:
    """Other successful answers have no response model to hold them to."""
    assert answer_model(method, path, status) is None


def test_answers_that_match_their_models_pass(answers: tuple[CheckedClient, dict[str, Response]]) -> None:
    """Correct answers go through untouched."""
    client, replies = answers
    replies["/predict"] = _json({**PREDICTION, "explanation": {"method": "rule"}})
    row = {"prediction": "setosa", "probabilities": PREDICTION["probabilities"]}
    replies["/predict/batch"] = _json({"predictions": [row, row], "model_type": "t", "model_version": "v"})
    replies["/health"] = _json({**HEALTH, "ready": False, "model_version": None}, 503)
    replies["/nope"] = _json(ERROR, 404, **{"x-request-id": "rid"})
    replies["/health/live"] = _json({"anything": "goes"})
    assert client.post("/predict").status_code == 200
    assert client.post("/predict/batch").status_code == 200
    assert client.get("/health").status_code == 503
    assert client.get("/nope").status_code == 404
    assert client.get("/health/live").json() == {"anything": "goes"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "problem"),
    [
        pytest.param("POST", "/predict", {**PREDICTION, "extra": 1}, 200, "extra", id="extra-key"),
        pytest.param("POST", "/predict", {**PREDICTION, "model_version": 1}, 200, "model_version", id="int-as-str"),
        pytest.param(
            "POST", "/predict", {**PREDICTION, "probabilities": {"setosa": "1.0"}}, 200, "probabilities", id="str-float"
        ),
        pytest.param("POST", "/predict", {"prediction": "setosa"}, 200, "probabilities", id="missing-keys"),
        pytest.param(
            "POST",
            "/predict/batch",
            {"predictions": [{"prediction": "a", "probabilities": {}, "model_type": "t"}], "model_type": "t"},
            200,
            "predictions.0.model_type",
            id="extra-key-in-a-row",
        ),
        pytest.param("GET", "/health", {**HEALTH, "ready": "true"}, 200, "ready", id="string-boolean"),
        pytest.param("GET", "/health/ready", {"status": "unhealthy"}, 503, "ready", id="bare-503"),
        pytest.param("GET", "/nope", {"detail": "Not Found"}, 404, "error", id="starlette-error-shape"),
        pytest.param(
            "POST",
            "/predict",
            {**ERROR, "details": [{"field": "x", "rule": "r", "message": "m"}] * 11},
            422,
            "details",
            id="eleven-details",
        ),
        pytest.param("POST", "/predict", {**ERROR, "details_omitted": 0}, 422, "details_omitted", id="zero-omitted"),
    ],
)
def test_answers_that_break_their_models_fail_the_test(
    answers: tuple[CheckedClient, dict[str, Response]],
    method: str,
    path: str,
    body: dict[str, Any],
    status: int,
    problem: str,
) -> None:
    """A wrong type, a missing or extra key (at any depth) or an error in another shape fails, naming the route."""
    client, replies = answers
    replies[path] = _json(body, status, **{"x-request-id": "rid"})
    with pytest.raises(AssertionError) as caught:
        client.request(method, path)
    message = str(caught.value)
    assert f"{method} {path} answered {status}" in message
    assert problem in message


def test_an_error_that_is_not_json_fails_the_test(answers: tuple[CheckedClient, dict[str, Response]]) -> None:
    """Every 4xx and 5xx is JSON: a plain-text error fails."""
    client, replies = answers
    replies["/boom"] = PlainTextResponse("Internal Server Error", status_code=500)
    with pytest.raises(AssertionError, match="Content-Type 'text/plain"):
        client.get("/boom")


def test_an_error_naming_another_request_id_fails_the_test(answers: tuple[CheckedClient, dict[str, Response]]) -> None:
    """The body's request id is the X-Request-ID header's."""
    client, replies = answers
    replies["/nope"] = _json(ERROR, 404, **{"x-request-id": "another"})
    with pytest.raises(AssertionError, match="another request id"):
        client.get("/nope")


def test_head_answers_are_not_read(answers: tuple[CheckedClient, dict[str, Response]]) -> None:
    """A HEAD answer has no body, so there is nothing to check (and nothing to fail)."""
    client, replies = answers
    replies["/health"] = _json({"not": "a health answer"})
    assert client.head("/health").status_code == 200
