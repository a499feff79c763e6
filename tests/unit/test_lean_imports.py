"""A serving process imports only what its model serves: checked in clean interpreters, through the real app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, REPOSITORY_ROOT, ModelType
from ml_production_service.factory import proof
from ml_production_service.preflight import PROVEN_ENV
from ml_production_service.registry import read_manifest

pytestmark = pytest.mark.slow  # each test starts a clean interpreter
LIBRARIES = ("sklearn", "xgboost", "onnxruntime", "joblib", "scipy", "skl2onnx")
ROW = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
SCRIPT = f"""
import json, sys
from fastapi.testclient import TestClient
from ml_production_service.configs import ServiceConfig
from ml_production_service.server.app import create_app

def imported():
    return sorted({{name.split(".")[0] for name in sys.modules}} & set({LIBRARIES!r}))

answers = {{}}
with TestClient(create_app(ServiceConfig(model_type=sys.argv[1]))) as client:
    answers["predict"] = client.post("/predict", json={ROW!r}).json()["prediction"]
    answers["serving"] = imported()
    answers["explanation"] = client.post("/predict?explain=true", json={ROW!r}).json()["explanation"]["method"]
    answers["explained"] = imported()
print(json.dumps(answers))
"""


def _serve(model_type: ModelType, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, model_type.value],
        cwd=REPOSITORY_ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MPS_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answers


def test_the_heuristic_serves_and_explains_without_any_model_library() -> None:
    """The heuristic's app answers and explains with no scikit-learn, XGBoost, ONNX Runtime, joblib or SciPy."""
    answers = _serve(ModelType.HEURISTIC)
    assert answers == {"predict": "virginica", "serving": [], "explanation": "rule", "explained": []}


def test_a_proven_fitted_model_serves_on_onnx_runtime_alone_until_it_explains() -> None:
    """With the server command's proof, XGBoost serves through ONNX Runtime only; its first explanation loads the
    Pipeline, and with it scikit-learn and XGBoost."""
    proven = proof(read_manifest(DEFAULT_REGISTRY_DIR, ModelType.XGBOOST))
    assert proven is not None
    answers = _serve(ModelType.XGBOOST, **{PROVEN_ENV: proven})
    assert answers["predict"] == "virginica"
    assert answers["serving"] == ["onnxruntime"]
    assert answers["explanation"] == "tree_shap"
    assert {"sklearn", "xgboost", "joblib"} <= set(answers["explained"])
