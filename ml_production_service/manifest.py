"""The manifest that travels with every promoted model: what it is, how it was made, how to check it."""

from __future__ import annotations

import math
import platform
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml_production_service import __version__
from ml_production_service.configs import ModelType

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 2
"""2 added ``reference`` and ``golden``; a version 1 manifest (without them) still validates."""

GOLDEN_ROWS: Literal["iris-150"] = "iris-150"
"""The rows golden predictions are made on: ``sklearn.datasets.load_iris().data``, in ``FEATURE_NAMES`` order."""
GOLDEN_ROW_COUNT = 150
FRACTION_SUM_TOLERANCE = 1e-9
"""How far from 1 a list of fractions may sum (float rounding of counts / rows)."""

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


def _check_fractions(fractions: list[float], what: str) -> None:
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"{what} must each be within [0, 1]")
    if abs(math.fsum(fractions) - 1.0) > FRACTION_SUM_TOLERANCE:
        raise ValueError(f"{what} must sum to 1, they sum to {math.fsum(fractions)}")


class Histogram(BaseModel):
    """A distribution over open-ended bins: ``edges`` are the interior edges, so there are ``len(edges) + 1`` bins.

    Bin ``i`` holds the values ``v`` with ``edges[i-1] <= v < edges[i]`` (``bisect.bisect_right``: see
    ``reference.bin_index``); the first bin is everything below ``edges[0]``, the last everything from ``edges[-1]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    edges: list[float]
    fractions: list[float]

    @model_validator(mode="after")
    def _bins_are_consistent(self) -> Self:
        if any(a >= b for a, b in zip(self.edges, self.edges[1:])):  # noqa: B905 - consecutive pairs
            raise ValueError("edges must be strictly increasing")
        if len(self.fractions) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges make {len(self.edges) + 1} bins, got {len(self.fractions)} fractions"
            )
        _check_fractions(self.fractions, "fractions")
        return self


class FeatureProfile(Histogram):
    """One raw input on the training rows: its binned distribution and its range."""

    min: float
    max: float

    @model_validator(mode="after")
    def _range_holds_the_edges(self) -> Self:
        if not self.min <= self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.edges and not (self.min <= self.edges[0] and self.edges[-1] <= self.max):
            raise ValueError("edges must lie within [min, max]")
        return self


class Reference(BaseModel):
    """What the training data and the model's confidence looked like at promotion: the baseline to watch live rows
    against (computed by ``reference.reference_profile``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    features: dict[str, FeatureProfile]
    """Each raw input, in ``feature_names`` order."""
    class_prior: dict[str, float]
    """The fraction of training rows of each class, in ``class_labels`` order."""
    confidence: Histogram
    """The distribution of the top-class probability (out of fold for fitted models; ``source`` says how)."""
    rows: int = Field(gt=0)
    source: str = Field(min_length=1, pattern=r"^[^\n\r]*$")
    """One line: the data's fingerprint and how the profile was computed."""

    @model_validator(mode="after")
    def _prior_is_a_distribution(self) -> Self:
        _check_fractions(list(self.class_prior.values()), "class_prior fractions")
        edges = self.confidence.edges
        if edges and not (edges[0] >= 0.0 and edges[-1] <= 1.0):
            raise ValueError("confidence edges must lie within [0, 1]")
        return self


class Golden(BaseModel):
    """The promoted model's probabilities on the golden rows, checked again at every start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    rows: Literal["iris-150"] = GOLDEN_ROWS
    probabilities: list[list[float]]
    """``[150, n_classes]`` in ``class_labels`` order."""

    @model_validator(mode="after")
    def _one_distribution_per_row(self) -> Self:
        if len(self.probabilities) != GOLDEN_ROW_COUNT:
            raise ValueError(
                f"{self.rows} needs {GOLDEN_ROW_COUNT} rows of probabilities, got {len(self.probabilities)}"
            )
        widths = {len(row) for row in self.probabilities}
        if len(widths) != 1 or 0 in widths:
            raise ValueError("every row of golden probabilities must have the same, non-zero number of classes")
        if any(not 0.0 <= p <= 1.0 for row in self.probabilities for p in row):
            raise ValueError("golden probabilities must each be within [0, 1]")
        return self


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
    reference: Reference | None = None
    """The training profile recorded at promotion, for watching live traffic (None before schema version 2)."""
    golden: Golden | None = None
    """The promoted model's probabilities on the golden rows; an artifact without them does not serve
    (``reference.check_golden``)."""
    created_at: datetime
    package_version: str = __version__

    @model_validator(mode="after")
    def _reference_and_golden_match_the_model(self) -> Self:
        if self.reference is not None:
            if list(self.reference.features) != self.feature_names:
                raise ValueError(
                    f"reference profiles features {list(self.reference.features)}, "
                    f"the manifest lists {self.feature_names}"
                )
            if list(self.reference.class_prior) != self.class_labels:
                raise ValueError(
                    f"reference class_prior lists {list(self.reference.class_prior)}, "
                    f"the manifest lists {self.class_labels}"
                )
        if self.golden is not None and len(self.golden.probabilities[0]) != len(self.class_labels):
            raise ValueError(
                f"golden probabilities have {len(self.golden.probabilities[0])} classes, "
                f"the manifest lists {len(self.class_labels)}"
            )
        return self


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
