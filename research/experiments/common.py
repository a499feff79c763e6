"""Shared experiment helpers: the data, the validation protocol, the manifest, the promotion."""

from __future__ import annotations

import argparse
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.datasets import load_iris
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.pipeline import Pipeline

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray, make_feature_transformer
from ml_production_service.manifest import ModelManifest, Recipe, installed_library_versions
from ml_production_service.registry import save_model

SEED = 42


def load_data() -> tuple[FloatArray, np.ndarray, list[str]]:
    """Iris as shipped with scikit-learn: rows in ``FEATURE_NAMES`` order, integer targets, class labels."""
    iris = load_iris()
    return np.asarray(iris.data, dtype=np.float64), np.asarray(iris.target), [str(n) for n in iris.target_names]


def data_fingerprint(features: FloatArray, targets: np.ndarray) -> str:
    """sha256 of the exact rows and labels an experiment used."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(targets.astype(np.int64)).tobytes())
    return digest.hexdigest()


def make_pipeline(estimator: ClassifierMixin) -> Pipeline:
    """The served form of a model: the shared feature transform, then the estimator."""
    return Pipeline([("features", make_feature_transformer()), ("model", estimator)])


def loocv_accuracy(model: Any, features: FloatArray, targets: np.ndarray) -> float:
    """Leave-one-out accuracy: each row predicted by a model that never saw it."""
    predicted = cross_val_predict(clone(model), features, targets, cv=LeaveOneOut())
    return float(np.mean(predicted == targets))


def build_manifest(
    model_type: ModelType,
    estimator_name: str,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    features: FloatArray,
    targets: np.ndarray,
    class_labels: list[str],
    seed: int | None = SEED,
) -> ModelManifest:
    """A manifest for a model trained on ``features``; the registry fills in artifact and sha256."""
    created = datetime.now(UTC).replace(microsecond=0)
    return ModelManifest(
        model_type=model_type,
        version=created.strftime("%Y%m%d.%H%M%S"),
        library_versions=installed_library_versions(),
        feature_names=list(FEATURE_NAMES),
        class_labels=class_labels,
        recipe=Recipe(
            estimator=estimator_name,
            hyperparameters=hyperparameters,
            seed=seed,
            dataset_sha256=data_fingerprint(features, targets),
            training_rows=len(targets),
        ),
        metrics=metrics,
        created_at=created,
    )


def train_and_promote(model_type: ModelType, estimator: ClassifierMixin, registry_dir: Path) -> ModelManifest:
    """Validate the recipe with LOOCV, fit it on every row, and write it into ``registry_dir``."""
    features, targets, class_labels = load_data()
    pipeline = make_pipeline(estimator)
    metrics = {
        "loocv_accuracy": loocv_accuracy(pipeline, features, targets),
        "training_accuracy": None,
    }
    pipeline.fit(features, targets)
    metrics["training_accuracy"] = float(np.mean(pipeline.predict(features) == targets))
    manifest = build_manifest(
        model_type,
        type(estimator).__name__,
        {k: v for k, v in estimator.get_params().items() if _is_json_scalar(v)},
        metrics,
        features,
        targets,
        class_labels,
    )
    return save_model(registry_dir, manifest, pipeline)


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def parse_registry_dir(description: str) -> Path:
    """Parse the common ``--registry-dir`` argument of every experiment CLI."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR, help="where to promote")
    return Path(parser.parse_args().registry_dir)


def report(manifest: ModelManifest) -> None:
    """Print what was promoted, with the metrics that validated it."""
    print(f"promoted {manifest.model_type.value} version {manifest.version} sha256 {manifest.sha256}")  # noqa: T201
    for name, value in manifest.metrics.items():
        print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")  # noqa: T201
