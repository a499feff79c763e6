"""One predictor for the three fitted models: a scikit-learn Pipeline, optionally served by its fast path."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from sklearn.pipeline import Pipeline

from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import BasePredictor, ManifestError
from ml_production_service.predictors.explain import explain_estimator


class ProbabilityModel(Protocol):
    """Anything that maps raw rows ``[n, 4]`` to class probabilities (the fast path does)."""

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Probabilities ``[n, classes]``."""


class MLModelPredictor(BasePredictor):
    """Serves a fitted Pipeline whose first step is ``features.make_feature_transformer()``.

    With ``fast`` (a parity-checked compiled form of the same model) predictions come from it; explanations
    always come from the original estimator.
    """

    def __init__(self, pipeline: Pipeline, manifest: ModelManifest, fast: ProbabilityModel | None = None) -> None:
        super().__init__(manifest)
        if not isinstance(pipeline, Pipeline):
            raise ManifestError(f"artifact of {manifest.model_type} is a {type(pipeline).__name__}, not a Pipeline")
        classes = np.asarray(getattr(pipeline, "classes_", []))
        if classes.tolist() != list(range(len(self.class_labels))):
            raise ManifestError(
                f"artifact of {manifest.model_type} predicts classes {classes.tolist()}, "
                f"its manifest lists {len(self.class_labels)} labels {list(self.class_labels)}"
            )
        self.pipeline = pipeline
        self.fast = fast
        self._predict_proba = fast.predict_proba if fast is not None else pipeline.predict_proba

    @property
    def uses_fast_path(self) -> bool:
        """Whether predictions come from the compiled fast path."""
        return self.fast is not None

    @property
    def original(self) -> MLModelPredictor:
        """The same model served by the unmodified joblib Pipeline (for comparison and benchmarks)."""
        return MLModelPredictor(self.pipeline, self.manifest)

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Probabilities from the fast path when there is one, otherwise from the pipeline."""
        return np.asarray(self._predict_proba(rows), dtype=np.float64)

    def explain(self, row: FloatArray) -> dict[str, Any]:
        """Decision path for a single tree; per-feature contributions for ensembles."""
        return explain_estimator(self.pipeline, row.reshape(1, -1), self.class_labels)
