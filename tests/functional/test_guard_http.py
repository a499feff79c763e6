"""The guard through HTTP, in-process: API keys (401), per-client rate limits (429), the model deadline (504)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ml_production_service.server.dataplane import DataPlane, Guard
from tests.functional.conftest import SETOSA, make_client

KEY = "mps_test-key-alice"
V2_BODY = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2] * 2}]}


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# test keys\nalice:{hashlib.sha256(KEY.encode()).hexdigest()}\n", encoding="utf-8")
    return path


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("mps_auth_rejected_total", {"reason": reason}) or 0.0


def test_without_a_key_predictions_are_401_and_probes_stay_open(keys_file: Path) -> None:
    """No key, or a wrong one: 401 in the error shape with a Bearer challenge; probes and metrics answer."""
    with make_client(api_keys_file=keys_file) as client:
        missing, invalid = _rejected("missing"), _rejected("invalid")
        response = client.post("/predict", json=SETOSA)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized" and "Bearer" in response.headers["www-authenticate"]
        wrong = client.post("/predict", json=SETOSA, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["details"][0]["rule"] == "invalid"
        assert client.get("/model").status_code == 401
        for path in ("/health", "/health/live", "/health/ready", "/v2/health/ready", "/metrics"):
            assert client.get(path).status_code == 200, path
        assert _rejected("missing") == missing + 2 and _rejected("invalid") == invalid + 1


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_the_right_key_in_either_header_is_served(keys_file: Path, header: str) -> None:
    """``Authorization: Bearer <key>`` and ``X-API-Key: <key>`` both work, on the named API and V2."""
    value = f"Bearer {KEY}" if header == "authorization" else KEY
    with make_client(api_keys_file=keys_file) as client:
        assert client.post("/predict", json=SETOSA, headers={header: value}).status_code == 200
        assert client.post("/v2/models/heuristic/infer", json=V2_BODY, headers={header: value}).status_code == 200


def test_protect_ops_closes_the_probes_too(keys_file: Path) -> None:
    """MPS_AUTH_PROTECT_OPS=true: health and metrics need the key as well."""
    with make_client(api_keys_file=keys_file, auth_protect_ops=True) as client:
        assert client.get("/health/live").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/health/live", headers={"x-api-key": KEY}).status_code == 200


def test_a_client_over_its_limit_gets_429_with_quota_headers() -> None:
    """Within the limit: 200 with RateLimit-*; over it: 429 with Retry-After, counted by key id."""
    with make_client(rate_limit="3/minute") as client:
        before = REGISTRY.get_sample_value("mps_rate_limited_total", {"key_id": "anonymous"}) or 0.0
        answers = [client.post("/predict", json=SETOSA) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert all(a.headers["ratelimit-limit"] == "3" for a in answers)
        refused = answers[-1]
        assert refused.json()["code"] == "rate_limited" and 1 <= int(refused.headers["retry-after"]) <= 60
        assert REGISTRY.get_sample_value("mps_rate_limited_total", {"key_id": "anonymous"}) == before + 1
        assert client.get("/health/live").status_code == 200, "probes are not charged"


def test_a_batch_costs_its_rows_on_every_protocol() -> None:
    """A two-row V2 request and a two-row batch cost two each; a batch larger than the limit says so."""
    with make_client(rate_limit="5/minute") as client:
        assert client.post("/v2/models/heuristic/infer", json=V2_BODY).headers["ratelimit-remaining"] == "3"
        batch = client.post("/predict/batch", json={"instances": [SETOSA, SETOSA]})
        assert batch.headers["ratelimit-remaining"] == "1"
        too_big = client.post("/predict/batch", json={"instances": [SETOSA] * 6})
        assert too_big.status_code == 429 and "costs 6 rows, more than the limit" in too_big.json()["error"]


def test_keyed_clients_have_a_budget_each(keys_file: Path, tmp_path: Path) -> None:
    """With keys on, the budget is the key's: another key starts full."""
    other = "mps_test-key-bob"
    keys_file.write_text(
        keys_file.read_text() + f"bob:{hashlib.sha256(other.encode()).hexdigest()}\n", encoding="utf-8"
    )
    with make_client(api_keys_file=keys_file, rate_limit="1/minute") as client:
        assert client.post("/predict", json=SETOSA, headers={"x-api-key": KEY}).status_code == 200
        assert client.post("/predict", json=SETOSA, headers={"x-api-key": KEY}).status_code == 429
        assert client.post("/predict", json=SETOSA, headers={"x-api-key": other}).status_code == 200


def test_everything_off_installs_no_access_layer() -> None:
    """The default (no keys, no limit) adds no middleware and no header: it costs nothing."""
    with make_client() as client:
        layers = [m.cls.__name__ for m in client.app.user_middleware]  # type: ignore[attr-defined]
        assert layers == ["RequestContextMiddleware"]
        assert "ratelimit-limit" not in client.post("/predict", json=SETOSA).headers


def test_a_model_call_past_the_deadline_is_504() -> None:
    """A model call in a thread that outlives MPS_REQUEST_TIMEOUT_S answers 504 at the deadline, counted."""
    with make_client(model_type="random_forest", inline_predict_max_us=0.0, request_timeout_s=0.2) as client:
        plane: DataPlane = client.app.state.data_plane  # type: ignore[attr-defined]
        assert not plane.inline and plane.guard == Guard(None, True, 0.2)
        original = plane.predictor.predict_one

        def slow(row: Any) -> Any:
            time.sleep(1.0)
            return original(row)

        before = REGISTRY.get_sample_value("mps_model_timeouts_total") or 0.0
        plane.predictor.predict_one = slow  # type: ignore[method-assign]
        try:
            started = time.monotonic()
            response = client.post("/predict", json=SETOSA)
            waited = time.monotonic() - started
        finally:
            plane.predictor.predict_one = original  # type: ignore[method-assign]
        assert response.status_code == 504 and response.json()["code"] == "model_timeout"
        assert waited < 0.9, "answered at the deadline, not when the thread finished"
        assert REGISTRY.get_sample_value("mps_model_timeouts_total") == before + 1
        assert client.post("/predict", json=SETOSA).status_code == 200
