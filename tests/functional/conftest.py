"""Fixtures for tests through HTTP: one app per model type, the lifespan running.

Every answer the in-process client receives is checked against the response model the OpenAPI schema promises
for it (see ``check_answer``): a test that only looks at one key still catches a wrong or extra key elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.server.app import create_app
from ml_production_service.server.schemas import BatchResponse, ErrorResponse, HealthResponse, PredictResponse

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
MODEL_TYPES = [pytest.param(model_type, id=model_type.value) for model_type in ModelType]
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}

SUCCESS_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/predict"): PredictResponse,
    ("POST", "/predict/batch"): BatchResponse,
    ("GET", "/health"): HealthResponse,
    ("GET", "/health/ready"): HealthResponse,
}
"""The model of each route's 200 answer."""
NOT_READY_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("GET", "/health"): HealthResponse,
    ("GET", "/health/ready"): HealthResponse,
}
"""Routes whose 503 is a status report, not an error."""


def load_testdata(name: str) -> Any:
    """A payload file from tests/testdata."""
    return json.loads((TESTDATA / name).read_text(encoding="utf-8"))


def answer_model(method: str, path: str, status: int) -> type[BaseModel] | None:
    """The model an answer to ``method path`` with ``status`` must validate as; ``None`` when none is declared."""
    route = (method, path)
    if status == 200:
        return SUCCESS_MODELS.get(route)
    if status == 503 and route in NOT_READY_MODELS:
        return NOT_READY_MODELS[route]
    if status >= 400:
        return ErrorResponse
    return None


def check_answer(response: httpx2.Response) -> None:
    """Fail unless the answer matches its response model: strict types, no key the model does not declare.

    Every 4xx and 5xx answer is JSON in the one error shape, and its ``request_id`` is the ``X-Request-ID``
    header's. A ``HEAD`` answer has no body to check.
    """
    request = response.request
    if request.method == "HEAD":
        return
    model = answer_model(request.method, request.url.path, response.status_code)
    if model is None:
        return
    response.read()
    where = f"{request.method} {request.url.path} answered {response.status_code}"
    content_type = response.headers.get("content-type", "")
    assert content_type == "application/json", f"{where} with Content-Type {content_type!r}: {response.content!r}"
    try:
        answer = model.model_validate_json(response.content, strict=True, extra="forbid")
    except ValidationError as error:
        raise AssertionError(f"{where}, which is not a {model.__name__}: {error}\n{response.content!r}") from None
    if isinstance(answer, ErrorResponse):
        assert answer.request_id == response.headers.get("x-request-id"), f"{where} with another request id"


class CheckedClient(TestClient):
    """A ``TestClient`` that checks every answer it receives with ``check_answer``."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_hooks = {"response": [check_answer]}


@pytest.fixture(scope="module", params=MODEL_TYPES)
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """A client of the service serving each model type in turn."""
    config = ServiceConfig(model_type=request.param, log_level="WARNING", log_format="json")
    with CheckedClient(create_app(config)) as test_client:
        yield test_client


def make_client(**settings: Any) -> TestClient:
    """A client for a service built from explicit settings (use as a context manager)."""
    settings.setdefault("log_level", "WARNING")
    settings.setdefault("log_format", "json")
    return CheckedClient(create_app(ServiceConfig(**settings)))
