"""One predictor for the three fitted models: a scikit-learn Pipeline loaded from the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import BasePredictor, ManifestError
from ml_production_service.predictors.explain import explain_estimator


class MLModelPredictor(BasePredictor):
    """Serves a fitted Pipeline whose first step is ``features.make_feature_transformer()``."""

    def __init__(self, pipeline: Pipeline, manifest: ModelManifest) -> None:
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

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Probabilities from the fitted pipeline, feature transform included."""
        return np.asarray(self.pipeline.predict_proba(rows), dtype=np.float64)

    def explain(self, row: FloatArray) -> dict[str, Any]:
        """Decision path for a single tree; per-feature contributions for ensembles."""
        return explain_estimator(self.pipeline, row.reshape(1, -1), self.class_labels)
