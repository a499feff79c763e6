"""Amplification: whatever the body, the answer is small and the work is bounded by the service's own limits."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from ml_production_service.server.errors import MAX_ECHO_CHARS, MAX_ERROR_DETAILS
from tests.functional.conftest import SETOSA, make_client

MAX_ERROR_ANSWER = 4096
"""No error answer is larger than this, whatever the request (ten details of cut text, plus the summary)."""


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    with make_client(model_type="random_forest") as client:
        yield client


def _post(http: TestClient, path: str, body: bytes) -> tuple[int, dict[str, object], int]:
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    return response.status_code, response.json(), len(response.content)


def test_a_batch_of_200000_empty_objects_is_refused_by_count_with_a_small_answer(http: TestClient) -> None:
    """The reported attack (600 KB, once answered with 68.7 MB after 7 s): now 413 on the row count alone."""
    body = b'{"instances": [' + b",".join([b"{}"] * 200_000) + b"]}"
    status, answer, size = _post(http, "/predict/batch", body)
    assert status == 413 and answer["code"] == "batch_too_large"
    assert size < MAX_ERROR_ANSWER


def test_a_full_batch_of_invalid_rows_lists_ten_details_and_counts_the_rest(http: TestClient) -> None:
    """1,000 empty rows are 4,000 errors: the answer lists ten, says how many more, and stays small."""
    body = b'{"instances": [' + b",".join([b"{}"] * 1000) + b"]}"
    status, answer, size = _post(http, "/predict/batch", body)
    assert status == 422
    assert len(answer["details"]) == MAX_ERROR_DETAILS  # type: ignore[arg-type]
    assert answer["details_omitted"] == 4000 - MAX_ERROR_DETAILS
    assert "(and 3995 more)" in str(answer["error"])
    assert size < MAX_ERROR_ANSWER


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_body_of_unknown_fields_is_refused_before_per_field_work(http: TestClient, path: str) -> None:
    """170,000 unknown fields in 1 MB would be 170,000 pydantic errors: refused on the count of ':' instead."""
    keys = b",".join(b'"k%d":1' % i for i in range(80_000))
    body = b"{" + keys + b"}" if path == "/predict" else b'{"instances": [{' + keys + b"}]}"
    status, answer, size = _post(http, path, body)
    assert status == 422 and answer["details"][0]["rule"] == "max_fields"  # type: ignore[index]
    assert size < MAX_ERROR_ANSWER


def test_broken_json_with_many_colons_is_still_invalid_json(http: TestClient) -> None:
    """The field count does not hide a syntax error: broken JSON is 400 whatever it holds."""
    status, answer, _ = _post(http, "/predict", b'{"a":' * 5000)
    assert status == 400 and answer["code"] == "invalid_json"


def test_unknown_field_names_and_values_are_echoed_cut(http: TestClient) -> None:
    """A 100,000-character field name comes back cut to MAX_ECHO_CHARS, in the details and the message."""
    name = "k" * 100_000
    status, answer, size = _post(http, "/predict", orjson.dumps({**SETOSA, name: 1}))
    assert status == 422
    detail = answer["details"][0]  # type: ignore[index]
    assert detail["rule"] == "extra_forbidden"
    assert len(detail["field"]) == MAX_ECHO_CHARS and detail["field"].endswith("...")
    assert size < MAX_ERROR_ANSWER


def test_v2_outputs_repeated_10000_times_are_refused_with_a_small_answer(http: TestClient) -> None:
    """Once answered with 270 MB: the outputs list is bounded by the declared outputs."""
    request = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}],
        "outputs": [{"name": "predict_proba"}] * 10_000,
    }
    response = http.post("/v2/models/random_forest/infer", content=orjson.dumps(request))
    assert response.status_code == 400
    assert len(response.content) < MAX_ERROR_ANSWER


def test_v2_data_of_junk_is_refused_on_its_count_before_any_value_is_read(http: TestClient) -> None:
    """250,000 strings in V2 data: the count disagrees with the shape, one error, a small answer."""
    request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ["x"] * 250_000}]}
    response = http.post("/v2/models/random_forest/infer", content=orjson.dumps(request))
    assert response.status_code == 400
    assert "data must be 4 numbers" in response.json()["error"]
    assert len(response.content) < MAX_ERROR_ANSWER


def test_a_long_request_id_is_replaced_and_a_long_v2_id_refused(http: TestClient) -> None:
    """Only a sane X-Request-ID (<= 128 token characters) is kept; a V2 id over 256 characters is a 400."""
    response = http.post("/predict", json=SETOSA, headers={"x-request-id": "r" * 129})
    assert response.headers["x-request-id"] != "r" * 129 and len(response.headers["x-request-id"]) == 32
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1] * 4}
    request = {"id": "i" * 10_000, "inputs": [tensor]}
    answer = http.post("/v2/models/random_forest/infer", content=orjson.dumps(request))
    assert answer.status_code == 400 and len(answer.content) < MAX_ERROR_ANSWER


def test_query_errors_are_bounded_too(http: TestClient) -> None:
    """FastAPI's own validation (the explain flag) answers in the same shape."""
    response = http.post("/predict?explain=" + "x" * 10_000, json=SETOSA)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert len(response.content) < MAX_ERROR_ANSWER


def test_head_answers_every_get_route_without_a_body(http: TestClient) -> None:
    """HEAD on the probes (and every other GET route) answers like GET, headers only."""
    for path in ("/health", "/health/live", "/health/ready", "/v2/health/ready", "/model", "/metrics"):
        response = http.head(path)
        assert response.status_code == 200, path
        assert response.content == b""


def test_docs_are_served_from_the_package_not_a_cdn(http: TestClient) -> None:
    """/docs points at local assets that are served; nothing refers to a CDN."""
    page = http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "/docs/assets/swagger-ui-bundle.js" in page.text
    script = http.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 100_000
    assert http.get("/docs/assets/..%2Fcore.py").status_code == 404
    assert http.get("/docs/assets/index.html").status_code == 404
    assert http.get("/redoc").status_code == 404


def test_docs_can_be_turned_off() -> None:
    """MPS_DOCS_ENABLED=false: no /docs, no assets; the schema stays."""
    with make_client(docs_enabled=False) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/docs/assets/swagger-ui.css").status_code == 404
        assert client.get("/openapi.json").status_code == 200
