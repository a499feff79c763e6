"""Research runs: reproducible training, complete metrics.json, figures and reports that are written."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import joblib
import numpy as np
import pytest

from ml_production_service import __version__
from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from research.experiments.common import FamilyConfig, load_dataset
from research.experiments.experiment import Run
from research.experiments.stats import corrected_paired_test, mcnemar, wilson_interval

FITTED = [pytest.param(m, id=m.value) for m in ModelType if m is not ModelType.HEURISTIC]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model_type", FITTED)
def test_training_twice_gives_identical_predictions_and_bytes(model_type: ModelType) -> None:
    """The same recipe on the same rows gives the same predictions and the same artifact bytes (sha256)."""
    config = FamilyConfig.load(model_type)
    data = load_dataset(every=5)
    everything = load_dataset()
    first = config.build().fit(data.features, data.targets)
    second = config.build().fit(data.features, data.targets)
    np.testing.assert_array_equal(first.predict_proba(everything.features), second.predict_proba(everything.features))

    def digest(model: object) -> str:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return hashlib.sha256(buffer.getvalue()).hexdigest()

    assert digest(first) == digest(second)


def test_metrics_json_has_the_fingerprint_code_and_library_versions_seed_and_parameters(tree_run: Run) -> None:
    """metrics.json says which data, code, libraries, seed and hyperparameters produced the numbers."""
    metrics = json.loads((tree_run.directory / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["sha256"] == load_dataset(every=5).fingerprint
    assert metrics["data"]["rows"] == 30
    assert metrics["code"]["package_version"] == __version__
    assert len(metrics["code"]["source_sha256"]) == 64
    assert "git_commit" in metrics["code"]
    assert {"python", "scikit-learn", "xgboost", "numpy", "matplotlib", "scipy"} <= set(metrics["libraries"])
    assert metrics["seed"] == 42
    assert metrics["parameters"]["max_depth"] == 4 and metrics["parameters"]["random_state"] == 42
    assert metrics["protocol"]["folds"] == 3 and metrics["protocol"]["repeats"] == 2


def test_a_run_reports_every_validation_and_serving_number(tree_run: Run) -> None:
    """LOOCV, repeated CV, nested CV, per-class scores, confusion matrix, latency, memory and sizes are all there."""
    m = tree_run.metrics
    assert len(m["loocv"]["predicted"]) == 30 and sum(map(sum, m["loocv"]["confusion_matrix"])) == 30
    assert set(m["loocv"]["per_class"]) == {"setosa", "versicolor", "virginica"}
    lo, hi = m["loocv"]["accuracy_ci95"]
    assert lo <= m["loocv"]["accuracy"] <= hi
    assert len(m["repeated_cv"]["fold_accuracy"]) == 6
    assert len(m["nested_cv"]["fold_accuracy"]) == 3 and m["nested_cv"]["inner_folds"] == 2
    assert m["oob"] is None  # a single tree has no out-of-bag rows
    latency = m["serving"]["latency"]
    assert latency["pipeline"]["single_row_us_median"] > 0 and latency["fast_path"]["batch_1000_ms_median"] > 0
    assert m["serving"]["memory"]["load_and_predict_bytes"] >= 0
    assert {"manifest.json", "model.joblib"} <= set(m["serving"]["artifact_bytes"])
    assert m["candidate"]["recipe_reproduces_artifact"] is True


def test_figures_and_report_are_written(tree_run: Run) -> None:
    """A run leaves PNGs of its confusion matrix, tree, importances and CV scores, and a report that shows them."""
    expected = {"confusion_matrix.png", "tree.png", "feature_importances.png", "cv_scores.png"}
    assert set(tree_run.metrics["figures"]) == expected
    report = (tree_run.directory / "report.md").read_text(encoding="utf-8")
    for name in expected:
        data = (tree_run.directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2_000
        assert f"]({name})" in report


def test_the_candidate_serves_through_the_service_loader(tree_run: Run, workspace: Any) -> None:
    """The candidate folder loads with the service's own checks and predicts what the run's final fit predicts."""
    candidates = workspace.models / tree_run.run_id
    predictor = get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=candidates))
    data = load_dataset(every=5)
    expected = FamilyConfig.load(ModelType.DECISION_TREE).build().fit(data.features, data.targets)
    rows = load_dataset().features
    np.testing.assert_allclose(predictor.predict_proba(rows), expected.predict_proba(rows), atol=1e-6)
    assert predictor.manifest.metrics["run_id"] == tree_run.run_id


def test_the_heuristic_scores_the_same_under_every_protocol(heuristic_run: Run) -> None:
    """The rules learn nothing, so leave-one-out, k-fold and all-rows accuracy agree (all in-sample)."""
    m = heuristic_run.metrics
    assert m["loocv"]["accuracy"] == pytest.approx(m["training"]["accuracy_on_training_rows"])
    assert m["repeated_cv"]["accuracy_mean"] == pytest.approx(m["loocv"]["accuracy"])
    assert m["nested_cv"] is None and m["oob"] is None
    assert set(m["serving"]["artifact_bytes"]) == {"manifest.json"}


def test_intervals_and_paired_tests_say_when_a_difference_is_noise() -> None:
    """Identical fold scores are within noise; a consistent gap is not; McNemar counts disagreeing rows."""
    lo, hi = wilson_interval(144, 150)
    assert 0.91 < lo < 0.96 < hi < 0.99
    same = corrected_paired_test(np.array([0.9, 1.0, 0.95]), np.array([0.9, 1.0, 0.95]), 0.5)
    assert same.within_noise and same.p_value == 1.0
    apart = corrected_paired_test(np.full(20, 1.0), np.array([0.8, 0.85] * 10), 0.1)
    assert not apart.within_noise and apart.difference > 0
    counts = mcnemar(np.array([True, True, False, True]), np.array([True, False, True, False]))
    assert (counts.only_a_right, counts.only_b_right) == (2, 1)
