"""get_predictor: every model type builds from the registry, verified, ready to predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType, ServiceConfig
from ml_production_service.factory import PREDICTORS, get_predictor
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.predictors.base import ManifestError, VersionMismatchError
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import read_manifest

SETOSA = np.array([5.1, 3.5, 1.4, 0.2])
VIRGINICA = np.array([6.3, 3.3, 6.0, 2.5])
ALL_TYPES = [pytest.param(m, id=m.value) for m in ModelType]
FITTED = [pytest.param(m, id=m.value) for m in ModelType if m is not ModelType.HEURISTIC]


def test_every_model_type_has_a_constructor() -> None:
    """No MPS_MODEL_TYPE value is accepted by the config but unknown to the factory."""
    assert set(PREDICTORS) == set(ModelType)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_every_model_type_serves_from_the_promoted_registry(model_type: ModelType) -> None:
    """Each model type starts from registry/prd, reports the promoted version and classifies obvious rows."""
    predictor = get_predictor(ServiceConfig(model_type=model_type))
    assert predictor.model_type == model_type.value
    assert predictor.version == read_manifest(DEFAULT_REGISTRY_DIR, model_type).version
    assert predictor.class_labels == ("setosa", "versicolor", "virginica")
    assert predictor.predict_one(SETOSA).label == "setosa"
    assert predictor.predict_one(VIRGINICA).label == "virginica"
    expected = HeuristicPredictor if model_type is ModelType.HEURISTIC else MLModelPredictor
    assert isinstance(predictor, expected)


def test_heuristic_needs_no_registry(tmp_path: Path) -> None:
    """The heuristic starts from an empty registry folder, with its built-in manifest."""
    predictor = get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))
    assert isinstance(predictor, HeuristicPredictor)
    assert predictor.version.startswith("rules-")
    assert predictor.predict_one(SETOSA).label == "setosa"


def test_heuristic_uses_its_promoted_manifest(tmp_path: Path) -> None:
    """When a heuristic manifest is promoted, /model shows its version and metrics."""
    shutil.copytree(DEFAULT_REGISTRY_DIR / "heuristic", tmp_path / "heuristic")
    predictor = get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))
    promoted = read_manifest(DEFAULT_REGISTRY_DIR, ModelType.HEURISTIC)
    assert predictor.manifest == promoted
    assert predictor.version == promoted.version
    assert not predictor.version.startswith("rules-")


def test_heuristic_with_a_broken_manifest_refuses_to_start(tmp_path: Path) -> None:
    """A promoted but corrupted heuristic manifest is an error, not silently replaced by the default."""
    (tmp_path / "heuristic").mkdir()
    (tmp_path / "heuristic" / MANIFEST_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ManifestError, match="is invalid"):
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))


@pytest.mark.parametrize("model_type", FITTED)
def test_fitted_model_missing_from_the_registry_says_how_to_train_it(model_type: ModelType, tmp_path: Path) -> None:
    """An empty registry names the make target that would create the model."""
    target = "make train-" + model_type.value.replace("_", "-")
    with pytest.raises(ManifestError, match=target):
        get_predictor(ServiceConfig(model_type=model_type, registry_dir=tmp_path))


def test_fitted_model_from_a_tiny_registry_without_fast_path(tiny_registry: Path) -> None:
    """MPS_REGISTRY_DIR and MPS_FAST_PATH=false are honoured: the Pipeline from that registry serves."""
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry, fast_path=False)
    predictor = get_predictor(config)
    assert isinstance(predictor, MLModelPredictor)
    assert not predictor.uses_fast_path
    assert predictor.version == read_manifest(tiny_registry, ModelType.DECISION_TREE).version


def test_allow_version_mismatch_reaches_the_registry(tiny_registry: Path) -> None:
    """MPS_ALLOW_VERSION_MISMATCH=true lets a mismatched artifact start; without it start-up fails."""
    path = tiny_registry / "decision_tree" / MANIFEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["library_versions"]["scikit-learn"] = "0.0.1"
    path.write_text(json.dumps(data), encoding="utf-8")
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry)
    with pytest.raises(VersionMismatchError):
        get_predictor(config)
    allowed = get_predictor(config.model_copy(update={"allow_version_mismatch": True}))
    assert allowed.predict_one(SETOSA).label == "setosa"
