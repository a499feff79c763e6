"""The Open Inference Protocol (V2): the unmodified tritonclient against the real server, and raw HTTP edge cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from tritonclient.utils import InferenceServerException

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES
from tests.functional.conftest import MODEL_TYPES, make_client
from tests.functional.server_process import RunningServer, running_server

IRIS = load_iris().data.astype(np.float64)


@pytest.fixture(scope="module", params=MODEL_TYPES)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, str]]:
    """The real server command serving each model type in turn."""
    with running_server(MPS_MODEL_TYPE=request.param.value) as running:
        yield running, request.param.value


def _client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def _infer(
    client: triton.InferenceServerClient, name: str, rows: np.ndarray, dtype: str, binary: bool
) -> triton.InferResult:
    tensor = triton.InferInput("input-0", list(rows.shape), dtype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in ("predict", "predict_proba")]
    return client.infer(name, [tensor], outputs=outputs, request_id="req-9")


@pytest.mark.slow
def test_tritonclient_sees_server_and_model_live_and_ready(server: tuple[RunningServer, str]) -> None:
    """tritonclient reports the server live and ready and the served model ready; another name is not."""
    running, name = server
    client = _client(running)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name)
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.slow
def test_tritonclient_model_metadata_gives_tensors_and_class_order(server: tuple[RunningServer, str]) -> None:
    """Model metadata names the [N, 4] input, both outputs and the class order predict indexes into."""
    running, name = server
    metadata = _client(running).get_model_metadata(name)
    assert metadata["name"] == name
    assert metadata["inputs"][0]["shape"] == [-1, 4]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"predict": "INT64", "predict_proba": "FP64"}
    assert metadata["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]
    version = metadata["versions"][0]
    assert _client(running).is_model_ready(name, model_version=version)
    assert not _client(running).is_model_ready(name, model_version="not-a-version")


@pytest.mark.slow
@pytest.mark.parametrize("binary", [pytest.param(False, id="json"), pytest.param(True, id="binary")])
@pytest.mark.parametrize("dtype", ["FP32", "FP64"])
def test_tritonclient_infer_matches_predict(server: tuple[RunningServer, str], binary: bool, dtype: str) -> None:
    """tritonclient infer, JSON or binary, FP32 or FP64, gives the same answers as /predict/batch."""
    running, name = server
    rows = IRIS.astype(np.float32 if dtype == "FP32" else np.float64)
    result = _infer(_client(running), name, rows, dtype, binary)
    assert result.get_response()["id"] == "req-9"
    predicted = result.as_numpy("predict")
    probabilities = result.as_numpy("predict_proba")
    assert predicted.dtype == np.int64 and predicted.shape == (150,)
    assert probabilities.shape == (150, 3)
    with make_client(model_type=name) as http:
        batch = http.post(
            "/predict/batch",
            json={"instances": [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in rows]},
        ).json()
    labels = ["setosa", "versicolor", "virginica"]
    assert [labels[i] for i in predicted] == [p["prediction"] for p in batch["predictions"]]
    expected = np.array([[p["probabilities"][label] for label in labels] for p in batch["predictions"]])
    np.testing.assert_allclose(probabilities, expected, atol=1e-12)


@pytest.mark.slow
def test_tritonclient_default_outputs_are_binary_and_complete(server: tuple[RunningServer, str]) -> None:
    """Without an outputs list tritonclient asks for binary data; both outputs come back."""
    running, name = server
    tensor = triton.InferInput("x", [2, 4], "FP64")
    tensor.set_data_from_numpy(IRIS[:2])
    result = _client(running).infer(name, [tensor])
    assert result.as_numpy("predict").tolist() == [0, 0]
    assert result.as_numpy("predict_proba").shape == (2, 3)


@pytest.mark.slow
def test_tritonclient_only_requested_output_is_returned(server: tuple[RunningServer, str]) -> None:
    """Asking for predict_proba alone returns it alone."""
    running, name = server
    tensor = triton.InferInput("x", [1, 4], "FP64")
    tensor.set_data_from_numpy(IRIS[:1], binary_data=False)
    result = _client(running).infer(
        name, [tensor], outputs=[triton.InferRequestedOutput("predict_proba", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    assert result.as_numpy("predict") is None


@pytest.mark.slow
def test_tritonclient_errors_for_wrong_model_and_bad_values(server: tuple[RunningServer, str]) -> None:
    """Another model's name is a 404; a negative value is a 400 naming the feature; both via tritonclient."""
    running, name = server
    client = _client(running)
    other = next(m.value for m in ModelType if m.value != name)
    with pytest.raises(InferenceServerException, match="not served here") as missing:
        _infer(client, other, IRIS[:1], "FP64", True)
    assert missing.value.status() == "404"
    bad = IRIS[:3].copy()
    bad[2, 3] = -1.0
    with pytest.raises(InferenceServerException, match="row 2 petal_width") as invalid:
        _infer(client, name, bad, "FP64", True)
    assert invalid.value.status() == "400"


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    """An in-process client serving the decision tree."""
    with make_client(model_type="decision_tree") as client:
        yield client


def _request(rows: list[list[float]] | None = None, **overrides: object) -> dict[str, object]:
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows or [[5.1, 3.5, 1.4, 0.2]]}
    tensor.update(overrides)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(_request(datatype="INT32"), "expected FP32 or FP64", id="datatype"),
        pytest.param(_request(shape=[1, 3]), "expected [N, 4]", id="shape"),
        pytest.param(_request(shape=[2, 4]), "data must be 8 numbers, flat or as 2 rows of 4", id="count"),
        pytest.param(
            _request(data=["a", "b", "c", "d"]), "value 0 is 'a': every value must be a JSON number", id="strings"
        ),
        pytest.param(_request(data=[5.1, "3.5", 1.4, 0.2]), "value 1 is '3.5'", id="numeric-string"),
        pytest.param(_request(data=[5.1, True, 1.4, 0.2]), "value 1 is True", id="boolean"),
        pytest.param(_request(data=[[5.1, 3.5], [1.4, 0.2]]), "data must be 4 numbers", id="ragged"),
        pytest.param(_request(data=[5.1, 3.5, 1.4, 10**400]), "too large", id="huge-integer"),
        pytest.param(_request(data=None), "data must be 4 numbers", id="no-data"),
        pytest.param(_request(shape=["1", 4]), "shape[0]: Input should be a valid integer", id="string-shape"),
        pytest.param(_request(shape=[True, 4]), "shape[0]: Input should be a valid integer", id="boolean-shape"),
        pytest.param(_request(shape=[1] * 9), "shape: List should have at most 8 items", id="long-shape"),
        pytest.param(_request(datatype="FP64" * 100), "datatype: String should have at most 256", id="long-datatype"),
        pytest.param({**_request(), "id": "i" * 257}, "id: String should have at most 256", id="long-id"),
        pytest.param(
            {**_request(), "outputs": [{"name": "predict"}] * 10_000}, "outputs: List should have at most 2", id="many"
        ),
        pytest.param(
            {**_request(), "parameters": {"binary_data_output": "yes"}}, "must be true or false", id="flag-type"
        ),
        pytest.param(_request(parameters={"binary_data_size": True}), "True binary bytes declared", id="size-type"),
        pytest.param(_request([[5.1, 3.5, 1.4, 0]]), "row 0 petal_width", id="zero"),
        pytest.param({**_request(), "priority": 1}, "priority: Extra inputs are not permitted", id="unknown-key"),
        pytest.param(_request(dims=[1]), "dims: Extra inputs are not permitted", id="unknown-tensor-key"),
        pytest.param(_request([[5.1, 1e9, 1.4, 0.2]]), "row 0 sepal_width", id="huge"),
        pytest.param({"inputs": []}, "exactly one input", id="no-inputs"),
        pytest.param({"outputs": []}, "inputs: Field required", id="missing-inputs"),
        pytest.param({**_request(), "outputs": [{"name": "logits"}]}, "unknown output 'logits'", id="unknown-output"),
    ],
)
def test_bad_v2_requests_get_400_with_error(http: TestClient, payload: dict[str, object], message: str) -> None:
    """Malformed V2 requests get a 400 whose "error" says what is wrong."""
    response = http.post("/v2/models/decision_tree/infer", json=payload)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_v2_json_nan_and_broken_binary_header_are_400(http: TestClient) -> None:
    """NaN in JSON data, and a binary header longer than the body, are 400s, not 500s."""
    nan = http.post(
        "/v2/models/decision_tree/infer",
        content=b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[NaN,1,1,1]}]}',
    )
    assert nan.status_code == 400
    assert "finite" in nan.json()["error"]
    broken = http.post(
        "/v2/models/decision_tree/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    assert broken.status_code == 400
    header = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","parameters":{"binary_data_size":32}}]}'
    short = http.post(
        "/v2/models/decision_tree/infer",
        content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "binary bytes declared" in short.json()["error"]


def test_v2_version_paths_and_unknown_version(http: TestClient) -> None:
    """The /versions/{version}/ forms serve the loaded version and 404 any other."""
    version = http.get("/model").json()["version"]
    assert http.get(f"/v2/models/decision_tree/versions/{version}").status_code == 200
    ok = http.post(f"/v2/models/decision_tree/versions/{version}/infer", json=_request())
    assert ok.json()["outputs"][0]["data"] == [0]
    assert ok.json()["model_version"] == version
    assert http.get("/v2/models/decision_tree/versions/0/ready").status_code == 404
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.slow
def test_readme_tritonclient_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's tritonclient snippet runs as written against the real server."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    with running_server() as running:
        exec(snippet.replace("localhost:8000", running.url.removeprefix("http://")), {})  # noqa: S102
    assert "['setosa', 'virginica']" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({"content-type": "text/plain"}, 415, "unsupported_media_type", id="text-plain"),
        pytest.param({"content-type": "application/octet-stream"}, 415, "unsupported_media_type", id="octet-no-binary"),
        pytest.param({"content-type": "application/json"}, 200, None, id="json"),
        pytest.param({}, 200, None, id="none-as-tritonclient-sends"),
        pytest.param(
            {"Inference-Header-Content-Length": "\u00b2".encode()}, 400, "v2_error", id="unicode-digit-length"
        ),
        pytest.param({"Inference-Header-Content-Length": "9" * 5000}, 400, "v2_error", id="5000-digit-length"),
        pytest.param({"Inference-Header-Content-Length": "-1"}, 400, "v2_error", id="negative-length"),
    ],
)
def test_v2_content_type_and_binary_header_are_checked(
    http: TestClient, headers: dict[str, str | bytes], status: int, code: str | None
) -> None:
    """V2 takes JSON (or no Content-Type, as tritonclient sends); a bad binary-header length is a 400, never 500."""
    response = http.post("/v2/models/decision_tree/infer", content=orjson.dumps(_request()), headers=headers)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code


def test_v2_binary_request_accepts_octet_stream_and_refuses_stray_bytes(http: TestClient) -> None:
    """With the binary extension, application/octet-stream is fine; binary bytes no input declared are a 400."""
    header = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
    rows = np.array([[0.01, 100, 0.01, 100]], dtype=np.float32).tobytes()  # float32(0.01) < 0.01 is still in range
    headers = {"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"}
    ok = http.post("/v2/models/decision_tree/infer", content=header + rows, headers=headers)
    assert ok.status_code == 200, ok.text
    stray = orjson.dumps(_request())
    response = http.post(
        "/v2/models/decision_tree/infer",
        content=stray + b"\0" * 16,
        headers={"Inference-Header-Content-Length": str(len(stray))},
    )
    assert response.status_code == 400
    assert "no input declares binary_data_size" in response.json()["error"]


def test_v2_answer_echoes_a_bounded_id_and_only_declared_outputs(http: TestClient) -> None:
    """The id comes back as sent (it is at most 256 characters), and only the outputs asked for, once each."""
    response = http.post(
        "/v2/models/decision_tree/infer", json={**_request(), "id": "i" * 256, "outputs": [{"name": "predict"}]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "i" * 256
    assert [o["name"] for o in body["outputs"]] == ["predict"]
