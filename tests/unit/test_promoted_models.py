"""Every model promoted to registry/prd loads, verifies, matches this environment and is accurate."""

from __future__ import annotations

import numpy as np
import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import installed_library_versions
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import load_artifact, model_dir, read_manifest, sha256_file

FITTED = [pytest.param(m, id=m.value) for m in ModelType if m is not ModelType.HEURISTIC]
CLASS_LABELS = ["setosa", "versicolor", "virginica"]


def test_every_model_type_is_promoted() -> None:
    """registry/prd has a manifest for every model type the service offers."""
    for model_type in ModelType:
        assert read_manifest(DEFAULT_REGISTRY_DIR, model_type).model_type is model_type


@pytest.mark.parametrize("model_type", FITTED)
def test_promoted_artifact_verifies_and_describes_itself(model_type: ModelType) -> None:
    """The committed artifact passes its sha256 check and its manifest lists the service's features and classes."""
    _, manifest = load_artifact(DEFAULT_REGISTRY_DIR, model_type)
    folder = model_dir(DEFAULT_REGISTRY_DIR, model_type)
    assert manifest.feature_names == list(FEATURE_NAMES)
    assert manifest.class_labels == CLASS_LABELS
    assert manifest.artifact is not None
    assert manifest.sha256 == sha256_file(folder / manifest.artifact)
    assert manifest.fast_path is not None
    assert manifest.fast_path.sha256 == sha256_file(folder / manifest.fast_path.artifact)


@pytest.mark.parametrize("model_type", FITTED)
def test_promoted_artifact_was_trained_with_the_installed_libraries(model_type: ModelType) -> None:
    """Each artifact loads without MPS_ALLOW_VERSION_MISMATCH: its library versions are the installed ones."""
    _, manifest = load_artifact(DEFAULT_REGISTRY_DIR, model_type)
    installed = installed_library_versions()
    # Python itself is left out: the lock file supports 3.11-3.13 with the same library versions.
    libraries = {name: v for name, v in manifest.library_versions.items() if name != "python"}
    assert libraries == {name: installed[name] for name in libraries}
    assert set(libraries) == set(installed) - {"python"}


@pytest.mark.parametrize("model_type", FITTED)
def test_promoted_artifact_is_at_least_95_percent_accurate_on_iris(
    model_type: ModelType, iris_rows: FloatArray, iris_labels: list[str]
) -> None:
    """The served model gets at least 95% of scikit-learn's iris rows right."""
    pipeline, manifest = load_artifact(DEFAULT_REGISTRY_DIR, model_type)
    predictor = MLModelPredictor(pipeline, manifest)
    predicted = [p.label for p in predictor.predict_many(iris_rows)]
    assert np.mean(np.array(predicted) == np.array(iris_labels)) >= 0.95


def test_promoted_heuristic_manifest_matches_the_rules(iris_rows: FloatArray, iris_labels: list[str]) -> None:
    """The promoted heuristic manifest is accepted by the rules, which get at least 95% of iris right."""
    manifest = read_manifest(DEFAULT_REGISTRY_DIR, ModelType.HEURISTIC)
    predictor = HeuristicPredictor(manifest)
    accuracy = np.mean(np.array([p.label for p in predictor.predict_many(iris_rows)]) == np.array(iris_labels))
    assert accuracy >= 0.95
