"""Health, metadata, request ids, documentation and error handling through HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from ml_production_service import __version__
from ml_production_service.configs import ModelType
from ml_production_service.features import MIN_MEASUREMENT_CM
from ml_production_service.server.dataplane import DataPlane
from tests.functional.conftest import SETOSA, make_client


def test_health_is_healthy_once_the_model_is_loaded(client: TestClient) -> None:
    """/health and /health/ready answer 200 with the model identity once the lifespan has loaded it."""
    for path in ("/health", "/health/ready"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert body["ready"] is True
        assert body["model_version"] == client.get("/model").json()["version"]
        assert body["service_version"] == __version__
    assert client.get("/health/live").json() == {"status": "alive"}


def test_health_is_503_before_the_lifespan_has_run() -> None:
    """Without a loaded model, readiness is 503 and /predict refuses with 503, while liveness is 200."""
    client = make_client()  # not entered: the lifespan has not loaded a model
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health").json()["status"] == "unhealthy"
    assert client.get("/health/live").status_code == 200
    response = client.post("/predict", json=SETOSA)
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"


def test_model_endpoint_returns_the_manifest(client: TestClient) -> None:
    """/model shows what is served: type, version, features, classes, library versions, metrics."""
    body = client.get("/model").json()
    assert body["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert body["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert {"python", "scikit-learn", "numpy", "xgboost"} <= set(body["library_versions"])
    if body["model_type"] != ModelType.HEURISTIC:
        assert len(body["sha256"]) == 64
        assert body["metrics"]["loocv_accuracy"] >= 0.9


def test_request_id_is_kept_or_made(client: TestClient) -> None:
    """An incoming X-Request-ID comes back unchanged; without one, a new id is returned."""
    kept = client.post("/predict", json=SETOSA, headers={"X-Request-ID": "trace-123"})
    assert kept.headers["x-request-id"] == "trace-123"
    made = client.post("/predict", json=SETOSA)
    assert len(made.headers["x-request-id"]) == 32
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


def test_openapi_documents_bodies_with_examples(client: TestClient) -> None:
    """/openapi.json documents the request bodies, their limits and examples; /docs renders."""
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/IrisFeatures"}
    features = schema["components"]["schemas"]["IrisFeatures"]
    assert features["examples"][0]["sepal_length"] == 5.1
    assert features["additionalProperties"] is False
    assert features["properties"]["petal_width"]["minimum"] == MIN_MEASUREMENT_CM
    assert "BatchRequest" in schema["components"]["schemas"]
    assert client.get("/openapi.json").json() == schema
    assert client.get("/docs").status_code == 200


def test_unexpected_error_is_a_json_500_with_request_id() -> None:
    """A bug inside a route still answers JSON in the error shape, never a plain-text page."""
    with make_client() as client:

        def boom() -> None:
            raise RuntimeError("bug")

        client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
        response = client.get("/boom", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal server error; the request id identifies the log line",
        "code": "internal_error",
        "details": [],
        "request_id": "r-1",
    }


@pytest.mark.parametrize(
    ("threshold_us", "inline"), [pytest.param(0.0, False, id="slow-to-thread"), pytest.param(1e9, True, id="fast")]
)
def test_slow_models_run_off_the_event_loop(threshold_us: float, inline: bool) -> None:
    """A model slower than MPS_INLINE_PREDICT_MAX_US runs in a worker thread; a faster one inline."""
    with make_client(model_type="random_forest", inline_predict_max_us=threshold_us) as client:
        served = client.app.state.data_plane  # type: ignore[attr-defined]
        assert served.inline is inline
        assert served.warmup_us > 0
        assert client.post("/predict", json=SETOSA).status_code == 200


def test_threaded_prediction_leaves_the_loop_free() -> None:
    """While a slow prediction runs in a thread, other coroutines keep running."""
    with make_client() as client:
        predictor = client.app.state.data_plane.predictor  # type: ignore[attr-defined]
    served = DataPlane(predictor, inline=False, warmup_us=0.0, max_batch_size=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        task = asyncio.create_task(ticker())
        await served.run(time.sleep, 0.3)
        task.cancel()

    asyncio.run(scenario())
    assert ticks >= 10
