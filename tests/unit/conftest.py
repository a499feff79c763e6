"""Shared fixtures for unit tests: iris, and tiny models fitted and promoted into a temporary registry."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import ModelManifest, Recipe, installed_library_versions
from ml_production_service.registry import save_model
from research.experiments.common import make_pipeline


def tiny_estimator(model_type: ModelType) -> ClassifierMixin:
    """A small, fast, deterministic estimator of each fitted kind."""
    estimators: dict[ModelType, ClassifierMixin] = {
        ModelType.DECISION_TREE: DecisionTreeClassifier(max_depth=3, random_state=0),
        ModelType.RANDOM_FOREST: RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0, n_jobs=1),
        ModelType.XGBOOST: XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1, random_state=0),
    }
    return estimators[model_type]


FITTED_TYPES = [ModelType.DECISION_TREE, ModelType.RANDOM_FOREST, ModelType.XGBOOST]


@pytest.fixture(scope="session")
def iris_rows() -> FloatArray:
    """scikit-learn's 150 iris rows, whose columns are in FEATURE_NAMES order."""
    return np.asarray(load_iris().data, dtype=np.float64)


@pytest.fixture(scope="session")
def iris_targets() -> np.ndarray:
    """The integer class of each iris row."""
    return np.asarray(load_iris().target)


@pytest.fixture(scope="session")
def iris_class_labels() -> list[str]:
    """Iris class names, in target order."""
    return [str(name) for name in load_iris().target_names]


@pytest.fixture(scope="session")
def iris_labels(iris_targets: np.ndarray, iris_class_labels: list[str]) -> list[str]:
    """The class name of each iris row."""
    return [iris_class_labels[t] for t in iris_targets]


@pytest.fixture(scope="session")
def tiny_pipelines(iris_rows: FloatArray, iris_targets: np.ndarray) -> dict[ModelType, Pipeline]:
    """One tiny fitted Pipeline per fitted model type (shared, never mutate)."""
    return {m: make_pipeline(tiny_estimator(m)).fit(iris_rows, iris_targets) for m in FITTED_TYPES}


@pytest.fixture(scope="session")
def tiny_manifests(iris_targets: np.ndarray, iris_class_labels: list[str]) -> dict[ModelType, ModelManifest]:
    """An unsaved manifest per fitted model type; save_model fills in the artifact and its sha256."""
    return {
        m: ModelManifest(
            model_type=m,
            version=f"tiny-{m.value}",
            library_versions=installed_library_versions(),
            feature_names=list(FEATURE_NAMES),
            class_labels=iris_class_labels,
            recipe=Recipe(estimator=type(tiny_estimator(m)).__name__, seed=0, training_rows=len(iris_targets)),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for m in FITTED_TYPES
    }


@pytest.fixture(scope="session")
def tiny_registry_template(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
) -> Path:
    """A registry holding the three tiny models, promoted with save_model (shared, never mutate)."""
    registry = tmp_path_factory.mktemp("template") / "registry"
    for model_type in FITTED_TYPES:
        save_model(registry, tiny_manifests[model_type], tiny_pipelines[model_type])
    return registry


@pytest.fixture
def tiny_registry(tiny_registry_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny registry that a test may tamper with."""
    registry = tmp_path / "registry"
    shutil.copytree(tiny_registry_template, registry)
    return registry
