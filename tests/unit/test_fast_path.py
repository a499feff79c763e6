"""The ONNX fast path: parity with the original model is proven before it serves, and enforced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.fast_path import (
    PARITY_RANDOM_ROWS,
    PARITY_TOLERANCE,
    OnnxModel,
    ParityError,
    check_parity,
    export_onnx,
    parity_rows,
)
from ml_production_service.features import MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from ml_production_service.predictors.base import IntegrityError
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import sha256_file
from research.experiments.common import make_pipeline

FITTED = [pytest.param(m, id=m.value) for m in ModelType if m is not ModelType.HEURISTIC]


def test_parity_rows_are_iris_plus_random_rows_inside_the_accepted_range() -> None:
    """Parity is proven on the 150 iris rows and 10,000 rows the API would accept, the same every time."""
    rows = parity_rows()
    assert rows.shape == (150 + PARITY_RANDOM_ROWS, 4)
    np.testing.assert_array_equal(rows[:150], load_iris().data)
    assert (rows >= MIN_MEASUREMENT_CM).all() and (rows <= MAX_MEASUREMENT_CM).all()
    assert rows[150:].max() > 0.9 * MAX_MEASUREMENT_CM
    assert rows[150:].min() < 0.1  # the random rows reach down to the floor too, not just iris sizes
    np.testing.assert_array_equal(rows, parity_rows())


@pytest.mark.parametrize("model_type", FITTED)
def test_every_promoted_fast_path_matches_its_original(model_type: ModelType) -> None:
    """Each registry model serves through its fast path, with the original's labels and probabilities within 1e-6."""
    predictor = get_predictor(ServiceConfig(model_type=model_type))
    assert isinstance(predictor, MLModelPredictor)
    assert predictor.uses_fast_path
    assert predictor.manifest.fast_path is not None
    report = check_parity(predictor.pipeline, predictor.fast)  # type: ignore[arg-type]
    assert report.rows == 150 + PARITY_RANDOM_ROWS
    assert report.label_mismatches == 0
    assert report.max_abs_diff <= PARITY_TOLERANCE
    original = predictor.original
    assert not original.uses_fast_path
    rows = parity_rows()[:500]
    assert [p.label for p in predictor.predict_many(rows)] == [p.label for p in original.predict_many(rows)]


@pytest.mark.parametrize("model_type", FITTED)
def test_fast_path_can_be_switched_off(model_type: ModelType) -> None:
    """MPS_FAST_PATH=false serves the joblib Pipeline itself."""
    predictor = get_predictor(ServiceConfig(model_type=model_type, fast_path=False))
    assert isinstance(predictor, MLModelPredictor)
    assert not predictor.uses_fast_path


def _registry_copy(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    shutil.copytree(DEFAULT_REGISTRY_DIR, registry)
    return registry


def test_tampered_fast_path_stops_start_up(tmp_path: Path) -> None:
    """A modified model.onnx fails the integrity check before ONNX Runtime reads it."""
    registry = _registry_copy(tmp_path)
    onnx_file = registry / "decision_tree" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="integrity check failed"):
        get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=registry))


def test_fast_path_that_disagrees_refuses_to_start(tmp_path: Path) -> None:
    """A fast path of another model (valid sha256, wrong answers) is refused, naming how to recover."""
    registry = _registry_copy(tmp_path)
    rows = parity_rows()[:150]
    wrong = make_pipeline(DecisionTreeClassifier(max_depth=1, random_state=0)).fit(rows, np.arange(150) % 3)
    onnx_file = registry / "decision_tree" / "model.onnx"
    onnx_file.write_bytes(export_onnx(wrong))
    manifest_file = registry / "decision_tree" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["fast_path"]["sha256"] = sha256_file(onnx_file)
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ParityError, match="MPS_FAST_PATH=false"):
        get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=registry))
    served = get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=registry, fast_path=False))
    assert served.predict_many(rows[:1])[0].label == "setosa"


def test_check_parity_reports_shape_mismatch_as_failure() -> None:
    """A fast path answering another number of classes can never pass parity."""
    rows = parity_rows()[:150]
    two_classes = make_pipeline(DecisionTreeClassifier(random_state=0)).fit(rows, np.arange(150) % 2)
    three_classes = make_pipeline(DecisionTreeClassifier(random_state=0)).fit(rows, np.arange(150) % 3)
    report = check_parity(three_classes, OnnxModel(export_onnx(two_classes)), rows)
    assert not report.passed


@pytest.mark.parametrize("model_type", FITTED)
def test_export_is_deterministic(model_type: ModelType) -> None:
    """Exporting the same model twice gives the same ONNX bytes, so re-promotion is reproducible."""
    predictor = get_predictor(ServiceConfig(model_type=model_type, fast_path=False))
    assert isinstance(predictor, MLModelPredictor)
    assert export_onnx(predictor.pipeline) == export_onnx(predictor.pipeline)
