"""The real server command (the one ``make api-run``, ``make serve`` and the image run), started for real."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR
from tests.functional.server_process import REPOSITORY, SERVER_COMMAND, running_server, server_env

pytestmark = pytest.mark.slow
MODEL_TYPES = ["heuristic", "decision_tree", "random_forest", "xgboost"]


def _post(url: str, payload: dict[str, float], request_id: str) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": request_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.load(response))


@pytest.mark.parametrize("model_type", [pytest.param(m, id=m) for m in MODEL_TYPES])
def test_server_command_serves_each_model_and_api_validate_reports_accuracy(model_type: str) -> None:
    """The server command serves every model; make api-validate's script prints >= 95% over HTTP."""
    with running_server(MPS_MODEL_TYPE=model_type) as server:
        validate = subprocess.run(
            [sys.executable, "scripts/api_validate.py", "--url", server.url],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        answer = _post(
            f"{server.url}/predict",
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
            "req-42",
        )
    assert validate.returncode == 0, validate.stderr
    assert f"model {model_type} " in validate.stdout
    counted = re.search(r"(\d+)/(\d+) iris rows correct", validate.stdout)
    assert counted is not None, validate.stdout
    assert int(counted[1]) / int(counted[2]) >= 0.95
    assert answer["prediction"] == "setosa"
    assert answer["model_type"] == model_type


def test_logs_are_json_lines_with_one_canonical_line_per_request() -> None:
    """Every log line, uvicorn's included, is JSON; each request logs one line with id, model and latency."""
    with running_server(MPS_MODEL_TYPE="decision_tree") as server:
        _post(
            f"{server.url}/predict",
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
            "trace-7",
        )
        code, stderr = server.stop()
    assert code in (0, -signal.SIGTERM), "uvicorn re-raises SIGTERM after a graceful shutdown"
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)
    requests = [r for r in records if r["event"] == "request" and r.get("request_id") == "trace-7"]
    assert len(requests) == 1
    line = requests[0]
    assert {"method": "POST", "path": "/predict", "status": 200, "model_type": "decision_tree"}.items() <= line.items()
    assert line["model_version"] and line["latency_ms"] > 0
    assert not [r for r in records if "POST /predict HTTP" in r["event"]], (
        "uvicorn's own access line must not repeat it"
    )


def test_host_and_port_come_from_the_environment() -> None:
    """MPS_API_HOST and MPS_API_PORT decide where the server listens (running_server sets both)."""
    with running_server() as server, urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:  # noqa: S310
        assert json.load(response)["status"] == "healthy"


def test_flipped_byte_in_artifact_stops_start_up(tmp_path: Path) -> None:
    """One flipped byte in a registry artifact makes start-up fail, non-zero, naming the integrity check."""
    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY_DIR, registry)
    artifact = registry / "random_forest" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    result = subprocess.run(
        SERVER_COMMAND,
        cwd=REPOSITORY,
        env=server_env(MPS_MODEL_TYPE="random_forest", MPS_REGISTRY_DIR=str(registry), MPS_API_PORT="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    failure = [r for r in lines if r["event"] == "startup_failed"]
    assert len(failure) == 1
    assert "integrity check failed" in failure[0]["error"]


def test_an_artifact_changed_after_start_up_refuses_explanations_not_predictions(tmp_path: Path) -> None:
    """A worker loads the original model at the first ?explain (issue 15); if its artifact changed on disk since
    start-up, that request gets a 503 naming the integrity check, and predictions go on from the checked fast path."""
    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY_DIR, registry)
    row = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
    with running_server(MPS_MODEL_TYPE="random_forest", MPS_REGISTRY_DIR=str(registry), MPS_WORKERS="1") as server:
        artifact = registry / "random_forest" / "model.joblib"
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0x01
        artifact.write_bytes(bytes(data))
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(f"{server.url}/predict?explain=true", row, "explain-after-change")
        answer = json.loads(refused.value.read())
        assert refused.value.code == 503
        assert answer["code"] == "explanations_unavailable" and "integrity" in answer["error"]
        assert _post(f"{server.url}/predict", row, "predict-after-change")["prediction"] == "virginica"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param("MPS_MODEL_TYPE", "neural_net", "heuristic, decision_tree, random_forest, xgboost", id="model"),
        pytest.param("MPS_LOG_FORMAT", "xml", "json, console", id="log-format"),
        pytest.param("MPS_API_PORT", "99999", "less than or equal to 65535", id="port"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line(variable: str, value: str, expected: str) -> None:
    """A bad MPS_* value exits 2 with one line naming the variable, the value and the allowed values."""
    result = subprocess.run(
        SERVER_COMMAND,
        cwd=REPOSITORY,
        env=server_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert variable in lines[0] and repr(value) in lines[0] and expected in lines[0]
