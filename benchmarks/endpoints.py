"""The routes under load: what each request sends, how many rows it carries, and what a good answer holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.client import http_request
from benchmarks.inprocess import iris_rows
from benchmarks.processes import ServerError
from ml_production_service.features import FEATURE_NAMES

ROW = [6.3, 3.3, 6.0, 2.5]
"""The single row every single-row request sends (a virginica; every model reads all four features)."""


@dataclass(frozen=True)
class Endpoint:
    """One route under load: what each request sends, how many rows it carries, and what a good answer holds."""

    name: str
    path: str
    body: bytes | None
    rows: int
    valid: Callable[[bytes], bool]
    headers: dict[str, str] = field(default_factory=dict)

    def check(self, server: str, url: str) -> None:
        """Send one request and fail unless it is answered 200 with a body ``valid`` accepts (before any load)."""
        status, answer = http_request(url, self.path, self.body, self.headers)
        if status != 200 or not self.valid(answer):
            raise ServerError(f"{server} {self.path} answered {status}: {answer[:300]!r}")


def _has(*keys: str) -> Callable[[bytes], bool]:
    def valid(answer: bytes) -> bool:
        parsed = orjson.loads(answer)
        return isinstance(parsed, dict) and all(key in parsed for key in keys)

    return valid


def _batch_of(rows: int) -> Callable[[bytes], bool]:
    return lambda answer: len(orjson.loads(answer).get("predictions", [])) == rows


def _v2_probabilities(answer: bytes) -> bool:
    outputs = {output["name"]: output for output in orjson.loads(answer).get("outputs", [])}
    return "predict_proba" in outputs and len(outputs["predict_proba"]["data"]) in (3, 1)


def named_row(row: list[float]) -> dict[str, float]:
    """One row as the named-feature JSON object of ``/predict``."""
    return dict(zip(FEATURE_NAMES, row, strict=True))


def single_json(row: list[float] = ROW) -> bytes:
    """The named-feature body of ``/predict`` (ours and the baseline's)."""
    return orjson.dumps(named_row(row))


def batch_json(rows: int) -> bytes:
    """A ``/predict/batch`` body of ``rows`` iris rows."""
    data = iris_rows()
    return orjson.dumps({"instances": [named_row(data[i % len(data)].tolist()) for i in range(rows)]})


def v2_body(row: list[float], outputs: tuple[str, ...] = ("predict_proba",)) -> bytes:
    """A V2 JSON request for one row; asks only for ``outputs`` (MLServer calls the model once per output)."""
    request: dict[str, Any] = {
        "inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
        "outputs": [{"name": name} for name in outputs],
    }
    return json.dumps(request).encode()


def ceiling_endpoints() -> list[Endpoint]:
    """The ceiling answers anything; it gets the same body as /predict."""
    return [Endpoint("constant", "/predict", single_json(), 1, lambda _: True)]


def bare_endpoints() -> list[Endpoint]:
    """The bare FastAPI route: the /predict body, read and answered with a constant."""
    return [Endpoint("/predict", "/predict", single_json(), 1, _has("prediction"))]


def baseline_endpoints() -> list[Endpoint]:
    """The tutorial app's one route."""
    return [Endpoint("/predict", "/predict", single_json(), 1, _has("prediction"))]


def v2_endpoint(model: str, row: list[float] = ROW) -> Endpoint:
    """V2 infer of one row, asking for ``predict_proba`` only."""
    return Endpoint("v2 infer", f"/v2/models/{model}/infer", v2_body(row), 1, _v2_probabilities)


def ours_predict_endpoint(headers: dict[str, str] | None = None) -> Endpoint:
    """Our /predict of one row, sending ``headers`` too (an API key)."""
    valid = _has("prediction", "probabilities", "model_version")
    return Endpoint("/predict", "/predict", single_json(), 1, valid, dict(headers or {}))


def ours_endpoints(model: str, batch_rows: int) -> list[Endpoint]:
    """Our /predict, /predict/batch (``batch_rows`` rows a request) and V2 infer."""
    return [
        ours_predict_endpoint(),
        Endpoint("/predict/batch", "/predict/batch", batch_json(batch_rows), batch_rows, _batch_of(batch_rows)),
        v2_endpoint(model),
    ]
