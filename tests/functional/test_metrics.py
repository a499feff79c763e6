"""Prometheus metrics through /metrics, in one process and aggregated across worker processes."""

from __future__ import annotations

import json
import urllib.request

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.conftest import SETOSA
from tests.functional.server_process import running_server


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_latency_predictions_and_model(client: TestClient) -> None:
    """A prediction moves the request counter, the latency histogram and the per-class counter."""
    model = client.get("/model").json()
    before = _samples(client.get("/metrics").text)
    assert client.post("/predict", json=SETOSA).status_code == 200
    assert client.post("/predict/batch", json={"instances": [SETOSA, SETOSA]}).status_code == 200
    assert client.get("/nope").status_code == 404
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("mps_http_requests_total", route="/predict", method="POST", status="200") == 1
    assert delta("mps_http_request_duration_seconds_count", route="/predict") == 1
    assert delta("mps_http_requests_total", route="unmatched", method="GET", status="404") == 1
    identity = {"model_type": model["model_type"], "model_version": model["version"]}
    assert delta("mps_predictions_total", predicted_class="setosa", **identity) == 3
    sha = model["sha256"] or "none"
    assert _value(after, "mps_model_info", sha256=sha, **identity) == 1
    assert _value(after, "mps_model_load_seconds", model_type=model["model_type"]) > 0
    assert ("mps_http_requests_in_flight", frozenset()) in after


@pytest.mark.slow
def test_metrics_add_up_across_worker_processes() -> None:
    """With two workers, every scrape counts the requests that both workers served."""
    requests = 30
    with running_server(MPS_WORKERS="2", MPS_MODEL_TYPE="decision_tree") as server:
        for _ in range(requests):
            request = urllib.request.Request(
                f"{server.url}/predict",
                data=json.dumps(SETOSA).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        scrapes = []
        for _ in range(6):
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:  # noqa: S310
                scrapes.append(_samples(response.read().decode()))
    counts = {_value(s, "mps_http_requests_total", route="/predict", method="POST", status="200") for s in scrapes}
    assert counts == {requests}
