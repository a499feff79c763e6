"""Fixtures for tests through HTTP: one app per model type, the lifespan running."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.server.app import create_app

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
MODEL_TYPES = [pytest.param(model_type, id=model_type.value) for model_type in ModelType]
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def load_testdata(name: str) -> Any:
    """A payload file from tests/testdata."""
    return json.loads((TESTDATA / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=MODEL_TYPES)
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """A client of the service serving each model type in turn."""
    config = ServiceConfig(model_type=request.param, log_level="WARNING", log_format="json")
    with TestClient(create_app(config)) as test_client:
        yield test_client


def make_client(**settings: Any) -> TestClient:
    """A client for a service built from explicit settings (use as a context manager)."""
    settings.setdefault("log_level", "WARNING")
    settings.setdefault("log_format", "json")
    return TestClient(create_app(ServiceConfig(**settings)))
