"""Live monitoring through HTTP: every protocol's rows counted in their reference bins, extrapolation reported in
the answer and counted, refused inputs counted by field and rule, the reference exported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from ml_production_service.manifest import ModelManifest
from ml_production_service.reference import bin_index
from ml_production_service.server.monitoring import field_label
from tests.functional.conftest import SETOSA, make_client

FAR = {"sepal_length": 99.0, "sepal_width": 0.01, "petal_length": 99.0, "petal_width": 0.01}


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    with make_client(model_type="random_forest") as client:
        yield client


def _manifest(http: TestClient) -> ModelManifest:
    return http.app.state.data_plane.predictor.manifest  # type: ignore[attr-defined,no-any-return]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scraped(http: TestClient, name: str, **labels: str) -> float:
    """The value after a scrape of /metrics, which flushes the worker's gathered row counts first."""
    assert http.get("/metrics").status_code == 200
    return _value(name, **labels)


def _bin(http: TestClient, feature: str, value: float) -> str:
    reference = _manifest(http).reference
    assert reference is not None
    return str(bin_index(reference.features[feature].edges, value))


def test_every_protocol_counts_its_rows_in_their_reference_bins(http: TestClient) -> None:
    """A /predict row, a two-row batch and a three-row V2 tensor: six rows in petal_length's bin of 1.4 cm."""
    labels = {"model_type": "random_forest", "feature": "petal_length", "bin": _bin(http, "petal_length", 1.4)}
    before = _scraped(http, "mps_input_bin_total", **labels)
    confidence_before = _value("mps_prediction_confidence_count", model_type="random_forest")
    assert http.post("/predict", json=SETOSA).status_code == 200
    assert http.post("/predict/batch", json={"instances": [SETOSA, SETOSA]}).status_code == 200
    tensor = {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2] * 3}
    assert http.post("/v2/models/random_forest/infer", json={"inputs": [tensor]}).status_code == 200
    assert _scraped(http, "mps_input_bin_total", **labels) == before + 6
    assert _value("mps_prediction_confidence_count", model_type="random_forest") == confidence_before + 6


def test_extrapolation_is_said_in_the_answer_and_counted(http: TestClient) -> None:
    """Inputs outside the training range are named in ``out_of_range`` (absent otherwise), per batch row too."""
    low = {"model_type": "random_forest", "feature": "sepal_width", "side": "low"}
    high = {"model_type": "random_forest", "feature": "petal_length", "side": "high"}
    before = (_scraped(http, "mps_input_out_of_range_total", **low), _value("mps_input_out_of_range_total", **high))
    answer = http.post("/predict", json=FAR).json()
    assert answer["out_of_range"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert "out_of_range" not in http.post("/predict", json=SETOSA).json()
    batch = http.post("/predict/batch", json={"instances": [SETOSA, FAR]}).json()["predictions"]
    assert "out_of_range" not in batch[0] and batch[1]["out_of_range"][0] == "sepal_length"
    assert _scraped(http, "mps_input_out_of_range_total", **low) == before[0] + 2
    assert _value("mps_input_out_of_range_total", **high) == before[1] + 2


def test_refused_inputs_are_counted_by_field_and_rule(http: TestClient) -> None:
    """A value under the floor on /predict and on V2 count under the feature's name and the rule."""
    named = {"field": "petal_width", "rule": "greater_than_equal"}
    v2 = {"field": "petal_width", "rule": "range"}
    before = (_value("mps_validation_errors_total", **named), _value("mps_validation_errors_total", **v2))
    assert http.post("/predict", json={**SETOSA, "petal_width": 0}).status_code == 422
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.0]}
    assert http.post("/v2/models/random_forest/infer", json={"inputs": [tensor]}).status_code == 400
    assert _value("mps_validation_errors_total", **named) == before[0] + 1
    assert _value("mps_validation_errors_total", **v2) == before[1] + 1


def test_the_reference_and_the_model_age_are_exported(http: TestClient) -> None:
    """Reference fractions, class prior, confidence mean and the promotion time are on /metrics."""
    manifest = _manifest(http)
    reference = manifest.reference
    assert reference is not None
    fractions = reference.features["sepal_length"].fractions
    for b, fraction in enumerate(fractions):
        labels = {"model_type": "random_forest", "feature": "sepal_length", "bin": str(b)}
        assert _value("mps_input_reference_fraction", **labels) == pytest.approx(fraction)
    assert _value("mps_reference_class_fraction", model_type="random_forest", predicted_class="setosa") == (
        pytest.approx(reference.class_prior["setosa"])
    )
    assert 0.34 < _value("mps_reference_confidence_mean", model_type="random_forest") <= 1.0
    created = _value("mps_model_created_timestamp_seconds", model_type="random_forest", model_version=manifest.version)
    assert created == pytest.approx(manifest.created_at.timestamp())


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("petal_width", "petal_width"),
        ("instances[3].sepal_length", "sepal_length"),
        ("inputs[0].data[2][1]", "sepal_width"),
        ("inputs[0].data[0][9]", "inputs"),
        ("instances", "instances"),
        ("k" * 80, "other"),
        ("content-type", "other"),
    ],
)
def test_field_labels_are_a_bounded_set(field: str, label: str) -> None:
    """Whatever the client sent, the label is a feature, a request part, or ``other``."""
    assert field_label(field) == label


def test_the_payload_log_writes_sampled_rows_of_every_protocol(tmp_path: Path) -> None:
    """MPS_PAYLOAD_LOG_SAMPLE=1: one JSON line per served row, with request id, model, inputs, answer."""
    log = tmp_path / "payload.jsonl"
    with make_client(model_type="decision_tree", payload_log_sample=1.0, payload_log_path=log) as client:
        client.post("/predict", json=SETOSA, headers={"x-request-id": "one"})
        client.post("/predict/batch", json={"instances": [SETOSA, FAR]}, headers={"x-request-id": "two"})
        tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [6.3, 3.3, 6.0, 2.5]}
        client.post("/v2/models/decision_tree/infer", json={"inputs": [tensor]}, headers={"x-request-id": "three"})
        client.post("/predict", json={**SETOSA, "petal_width": 0})  # refused: not served, not logged
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["one", "two", "two", "three"]
    assert all(line["event"] == "payload" and line["model_type"] == "decision_tree" for line in lines)
    assert lines[0]["inputs"] == SETOSA and lines[2]["inputs"] == FAR
    assert lines[3]["prediction"] == "virginica" and set(lines[3]["probabilities"]) == {
        "setosa",
        "versicolor",
        "virginica",
    }
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_the_payload_log_is_off_by_default_and_samples_a_fraction(tmp_path: Path) -> None:
    """Off by default; at 0.3 about a third of the rows are written (a 1,000-row batch: within 200..400)."""
    with make_client() as client:
        assert client.app.state.data_plane.payload is None  # type: ignore[attr-defined]
    log = tmp_path / "payload.jsonl"
    with make_client(payload_log_sample=0.3, payload_log_path=log) as client:
        client.post("/predict/batch", json={"instances": [SETOSA] * 1000})
    assert 200 <= len(log.read_text().splitlines()) <= 400
