"""The manifest that travels with every promoted model: what it is, how it was made, how to check it."""

from __future__ import annotations

import platform
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ml_production_service import __version__
from ml_production_service.configs import ModelType

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

TRACKED_LIBRARIES: dict[str, str] = {
    "scikit-learn": "scikit-learn",
    "xgboost": "xgboost-cpu",
    "numpy": "numpy",
    "joblib": "joblib",
    "onnxruntime": "onnxruntime",
}
"""Library name in the manifest -> distribution that provides it."""


class Recipe(BaseModel):
    """How the artifact was trained: enough to train it again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    dataset: str = "sklearn.datasets.load_iris"
    dataset_sha256: str | None = None
    training_rows: int | None = None


class FastPathInfo(BaseModel):
    """The derived fast-path artifact beside the joblib one, and the parity it was promoted with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: str
    sha256: str
    runtime: str = "onnxruntime"
    parity_rows: int
    parity_max_abs_diff: float


class ModelManifest(BaseModel):
    """The JSON file next to each artifact in ``registry/prd/<model_type>/``."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    schema_version: int = MANIFEST_SCHEMA_VERSION
    model_type: ModelType
    version: str
    artifact: str | None = None
    sha256: str | None = None
    library_versions: dict[str, str]
    feature_names: list[str]
    class_labels: list[str]
    recipe: Recipe
    metrics: dict[str, Any] = Field(default_factory=dict)
    fast_path: FastPathInfo | None = None
    created_at: datetime
    package_version: str = __version__


def _distribution_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - every tracked library is a dependency
        return "not-installed"


def installed_library_versions() -> dict[str, str]:
    """The versions of python and of every tracked library in this environment."""
    versions = {"python": platform.python_version()}
    versions.update({name: _distribution_version(dist) for name, dist in TRACKED_LIBRARIES.items()})
    return versions
