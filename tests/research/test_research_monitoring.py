"""Reference profiles and golden predictions: made with every candidate, and recorded for registry models without
retraining them (refresh-reference), exactly as a run would have."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_production_service import fast_path, features
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.factory import load_fitted
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.predictors.base import IntegrityError
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.reference import GoldenMismatchError, bin_index, golden_rows
from ml_production_service.registry import model_dir, read_manifest, sha256_file
from research.experiments import evaluation
from research.experiments.common import FamilyConfig, load_dataset
from research.experiments.experiment import Run, run_experiment
from research.experiments.monitoring import (
    RefreshError,
    cross_validated_top_probabilities,
    reference_for,
    refresh_reference,
)
from research.experiments.promotion import PromotionError, main, promote
from tests.research.conftest import SMALL, Workspace

TREE = ModelType.DECISION_TREE
TEN_FOLD = replace(SMALL, folds=10, repeats=1, nested=False)
"""The refresh's own protocol (stratified 10-fold, seed 42) on the small data: a run and a refresh must agree."""


@pytest.fixture(scope="module")
def ten_fold_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Its own folders: a run under another protocol must not become the latest run the report tests read."""
    root = tmp_path_factory.mktemp("ten-fold")
    return Workspace(root / "results", root / "models")


@pytest.fixture(scope="module")
def ten_fold_run(ten_fold_workspace: Workspace) -> Run:
    """The committed decision-tree recipe, validated by one stratified 10-fold on every 5th row."""
    return run_experiment(FamilyConfig.load(TREE), TEN_FOLD, ten_fold_workspace.results, ten_fold_workspace.models)


def _candidate_folder(workspace: Workspace, run: Run) -> Path:
    return model_dir(workspace.models / run.run_id, run.model_type)


def _registry_of(tmp_path: Path, folder: Path, model_type: ModelType) -> Path:
    """A registry holding a copy of ``folder`` as its ``model_type``."""
    registry = tmp_path / "registry"
    shutil.copytree(folder, model_dir(registry, model_type))
    return registry


def _strip(registry: Path, model_type: ModelType, *keys: str, **updates: Any) -> bytes:
    """Remove ``keys`` from the manifest (as written before they existed) and apply ``updates``; the new bytes."""
    path = model_dir(registry, model_type) / MANIFEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in keys:
        data.pop(key)
    data.update(updates)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path.read_bytes()


def _artifacts(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.name != MANIFEST_FILE}


def test_a_candidate_carries_the_reference_of_its_runs_out_of_fold_predictions(tree_run: Run, workspace: Any) -> None:
    """The confidence profile is the run's first CV repeat (3-fold here), the same as cross_val_predict on those
    folds; the feature profile and prior are the training rows'; the golden predictions are the artifact's."""
    manifest = read_manifest(workspace.models / tree_run.run_id, TREE)
    data = load_dataset(every=5)
    assert manifest.reference is not None and manifest.golden is not None
    top = cross_validated_top_probabilities(FamilyConfig.load(TREE).build(), data, seed=42, folds=3)
    expected = reference_for(
        data, top, "top-class probability of out-of-fold predictions, stratified 3-fold (shuffled, seed 42)"
    )
    assert manifest.reference == expected
    assert manifest.reference.rows == 30
    assert data.fingerprint in manifest.reference.source and "\n" not in manifest.reference.source
    assert manifest.reference.class_prior == dict.fromkeys(data.class_labels, 1 / 3)
    petal_width = manifest.reference.features["petal_width"]
    counts = np.bincount(
        [bin_index(petal_width.edges, v) for v in data.features[:, 3]], minlength=len(petal_width.fractions)
    )
    assert petal_width.fractions == (counts / 30).tolist()
    predictor = load_fitted(workspace.models / tree_run.run_id, TREE, fast_path=False)
    np.testing.assert_array_equal(manifest.golden.probabilities, predictor.predict_proba(golden_rows()))


def test_the_heuristic_reference_says_its_confidences_are_in_sample(heuristic_run: Run, workspace: Any) -> None:
    """The rules are one-hot and learn nothing: their confidence is 1 on every row, and the source says in-sample."""
    manifest = read_manifest(workspace.models / heuristic_run.run_id, ModelType.HEURISTIC)
    assert manifest.reference is not None and manifest.golden is not None
    assert "confidence: in-sample rule confidences" in manifest.reference.source
    assert manifest.reference.confidence.edges == [1.0]
    assert manifest.reference.confidence.fractions == [0.0, 1.0]
    rules = HeuristicPredictor().predict_proba(golden_rows())
    np.testing.assert_array_equal(manifest.golden.probabilities, rules)


def test_partition_probabilities_needs_a_partition() -> None:
    """Out-of-fold predictions are assembled only from splits that predict every row exactly once."""
    data = load_dataset(every=5)
    splits = evaluation.repeated_splits(data, replace(SMALL, folds=3, repeats=1))
    probabilities = [np.ones((len(test), 3)) / 3 for _, test in splits]
    assert evaluation.partition_probabilities(data, splits, probabilities).shape == (30, 3)
    with pytest.raises(ValueError, match="exactly once"):
        evaluation.partition_probabilities(data, splits[:2], probabilities[:2])


def test_refresh_records_exactly_what_the_run_recorded_without_touching_the_artifacts(
    tmp_path: Path, ten_fold_workspace: Workspace, ten_fold_run: Run
) -> None:
    """A candidate stripped of its reference and golden predictions (a schema-1 manifest) gets back the very same
    manifest from refresh-reference: same bins, same out-of-fold confidences, same golden rows; artifact bytes kept."""
    folder = _candidate_folder(ten_fold_workspace, ten_fold_run)
    registry = _registry_of(tmp_path, folder, TREE)
    _strip(registry, TREE, "reference", "golden", schema_version=1)
    outcome = refresh_reference(registry, TREE, load_dataset(every=5))
    assert outcome.startswith("decision_tree: reference profile and golden predictions recorded in ")
    assert f"model.joblib sha256 {sha256_file(folder / 'model.joblib')}" in outcome
    refreshed = model_dir(registry, TREE)
    assert (refreshed / MANIFEST_FILE).read_bytes() == (folder / MANIFEST_FILE).read_bytes()
    assert _artifacts(refreshed) == _artifacts(folder)


@pytest.mark.parametrize("model_type", [pytest.param(m, id=m.value) for m in ModelType])
def test_the_committed_registry_holds_what_refresh_computes(tmp_path: Path, model_type: ModelType) -> None:
    """registry/prd's references and golden predictions are reproducible: refreshing them changes no byte."""
    folder = model_dir(DEFAULT_REGISTRY_DIR, model_type)
    registry = _registry_of(tmp_path, folder, model_type)
    refresh_reference(registry, model_type)
    assert {p.name: p.read_bytes() for p in model_dir(registry, model_type).iterdir()} == {
        p.name: p.read_bytes() for p in folder.iterdir()
    }


def test_refresh_refuses_other_training_data(tmp_path: Path, ten_fold_workspace: Workspace, ten_fold_run: Run) -> None:
    """A model trained on 30 rows cannot be profiled on 150: the recorded fingerprint decides."""
    registry = _registry_of(tmp_path, _candidate_folder(ten_fold_workspace, ten_fold_run), TREE)
    with pytest.raises(RefreshError, match="the training data's sha256 is .* the manifest records"):
        refresh_reference(registry, TREE)


def test_refresh_does_not_bless_a_changed_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the feature transform changed, a model with golden predictions is refused, and its manifest kept."""
    registry = _registry_of(tmp_path, model_dir(DEFAULT_REGISTRY_DIR, ModelType.RANDOM_FOREST), ModelType.RANDOM_FOREST)
    before = (model_dir(registry, ModelType.RANDOM_FOREST) / MANIFEST_FILE).read_bytes()
    original = features.engineer_features

    def inverted(raw: Any) -> Any:
        engineered = original(raw)
        engineered[:, 4] = 1.0 / engineered[:, 4]
        return engineered

    monkeypatch.setattr(features, "engineer_features", inverted)
    monkeypatch.setattr(fast_path, "engineer_features", inverted)
    with pytest.raises(GoldenMismatchError, match="a refresh does not bless a changed model"):
        refresh_reference(registry, ModelType.RANDOM_FOREST)
    assert (model_dir(registry, ModelType.RANDOM_FOREST) / MANIFEST_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("updates", "problem"),
    [
        pytest.param({"metrics": {"training_accuracy": 0.5}}, "its manifest recorded 0.5000 at promotion", id="acc"),
        pytest.param(
            {"recipe": {"estimator": "DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}}},
            "no longer reproduces the artifact",
            id="recipe",
        ),
    ],
)
def test_refresh_without_golden_predictions_checks_what_else_the_manifest_recorded(
    tmp_path: Path, ten_fold_workspace: Workspace, ten_fold_run: Run, updates: dict[str, Any], problem: str
) -> None:
    """A schema-1 manifest has no golden predictions: its training accuracy and its recipe must still hold."""
    registry = _registry_of(tmp_path, _candidate_folder(ten_fold_workspace, ten_fold_run), TREE)
    data = json.loads((model_dir(registry, TREE) / MANIFEST_FILE).read_text(encoding="utf-8"))
    merged = {key: {**data[key], **value} for key, value in updates.items()}
    stripped = _strip(registry, TREE, "reference", "golden", **merged)
    with pytest.raises(RefreshError, match=problem):
        refresh_reference(registry, TREE, load_dataset(every=5))
    assert (model_dir(registry, TREE) / MANIFEST_FILE).read_bytes() == stripped


def test_refresh_that_the_service_would_refuse_restores_the_manifest(
    tmp_path: Path, ten_fold_workspace: Workspace, ten_fold_run: Run
) -> None:
    """A tampered fast path is found when the refreshed model is loaded as served: the old manifest is put back."""
    registry = _registry_of(tmp_path, _candidate_folder(ten_fold_workspace, ten_fold_run), TREE)
    onnx_file = model_dir(registry, TREE) / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-10] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    stripped = _strip(registry, TREE, "reference", "golden")
    with pytest.raises(IntegrityError, match="integrity check failed"):
        refresh_reference(registry, TREE, load_dataset(every=5))
    assert (model_dir(registry, TREE) / MANIFEST_FILE).read_bytes() == stripped


def test_the_refresh_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make refresh-reference MODEL=...` prints one line per model and exits 0; a refusal exits 1 and says why;
    promote and rollback still need --model."""
    registry = _registry_of(tmp_path, model_dir(DEFAULT_REGISTRY_DIR, ModelType.HEURISTIC), ModelType.HEURISTIC)
    assert main(["refresh-reference", "--model", "heuristic", "--registry-dir", str(registry)]) == 0
    assert capsys.readouterr().out.startswith("heuristic: reference profile and golden predictions recorded in ")
    assert main(["refresh-reference", "--registry-dir", str(registry)]) == 1  # all models: the others are missing
    assert "no manifest at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["promote"])
    assert caught.value.code == 2
    assert "promote needs --model" in capsys.readouterr().err


def test_promotion_refuses_a_candidate_without_a_reference(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """A candidate made before reference profiles existed is not promoted: production would have nothing to watch."""
    models = tmp_path / "models"
    shutil.copytree(workspace.models / tree_run.run_id, models / tree_run.run_id)
    _strip(models / tree_run.run_id, TREE, "reference")
    with pytest.raises(PromotionError, match="has no reference profile or golden predictions"):
        promote(TREE, tree_run.run_id, results_dir=workspace.results, models_dir=models, registry_dir=tmp_path / "prd")
    assert not (tmp_path / "prd" / TREE.value).exists()
