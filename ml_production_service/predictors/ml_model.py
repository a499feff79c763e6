"""One predictor for the three fitted models: a scikit-learn Pipeline, optionally served by its fast path.

A predictor served by its fast path may hold no Pipeline at all (built with ``load`` instead): the Pipeline, and
scikit-learn with it, is loaded by the first thing that needs it (an explanation), so a worker that only predicts
keeps ONNX Runtime and the ONNX graph resident, not the original model and its libraries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import BasePredictor, ManifestError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


class ProbabilityModel(Protocol):
    """Anything that maps raw rows ``[n, 4]`` to class probabilities (the fast path does)."""

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Probabilities ``[n, classes]``."""


class MLModelPredictor(BasePredictor):
    """Serves a fitted Pipeline whose first step is ``features.make_feature_transformer()``.

    With ``fast`` (a parity-checked compiled form of the same model) predictions come from it; explanations
    always come from the original estimator.
    """

    def __init__(
        self,
        pipeline: Pipeline | None,
        manifest: ModelManifest,
        fast: ProbabilityModel | None = None,
        *,
        load: Callable[[], Pipeline] | None = None,
    ) -> None:
        """Serve ``pipeline``, or ``fast`` when given. Without a pipeline, ``fast`` serves and ``load()`` gives the
        Pipeline (checked like a given one) when something first asks for it."""
        super().__init__(manifest)
        if pipeline is None and (fast is None or load is None):
            raise ValueError("without its Pipeline, a predictor needs its fast path and a way to load the Pipeline")
        self._pipeline: Pipeline | None = None if pipeline is None else self._checked(pipeline)
        self._load = load
        self._loading = threading.Lock()
        self.fast = fast
        served = fast if fast is not None else self._pipeline
        assert served is not None  # checked above
        self._predict_proba = served.predict_proba

    def _checked(self, pipeline: Any) -> Pipeline:
        """``pipeline`` if it is a fitted Pipeline answering the manifest's classes; ManifestError otherwise."""
        from sklearn.pipeline import Pipeline

        manifest = self.manifest
        if not isinstance(pipeline, Pipeline):
            raise ManifestError(f"artifact of {manifest.model_type} is a {type(pipeline).__name__}, not a Pipeline")
        classes = np.asarray(getattr(pipeline, "classes_", []))
        if classes.tolist() != list(range(len(self.class_labels))):
            raise ManifestError(
                f"artifact of {manifest.model_type} predicts classes {classes.tolist()}, "
                f"its manifest lists {len(self.class_labels)} labels {list(self.class_labels)}"
            )
        return pipeline

    @property
    def explainer_loaded(self) -> bool:
        """Whether the original Pipeline (and scikit-learn) is in memory: explanations come from it."""
        return self._pipeline is not None

    def load_explainer(self) -> None:
        """Load the original Pipeline now (imports scikit-learn, unpickles the verified artifact)."""
        self.pipeline  # noqa: B018 - the property loads it

    @property
    def pipeline(self) -> Pipeline:
        """The original Pipeline, loaded on first use when the predictor was built with ``load``."""
        if self._pipeline is None:
            with self._loading:  # two first explanations at once load it once
                if self._pipeline is None:
                    assert self._load is not None  # checked at construction
                    self._pipeline = self._checked(self._load())
        return self._pipeline

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
        from ml_production_service.predictors.explain import explain_estimator

        return explain_estimator(self.pipeline, row.reshape(1, -1), self.class_labels)
