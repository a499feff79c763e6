"""The predictor interface, the prediction it returns, and the errors a model can raise."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import ModelManifest


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the service must not start with it."""


class IntegrityError(ModelLoadError):
    """An artifact's sha256 does not match its manifest: it is never unpickled."""


class VersionMismatchError(ModelLoadError):
    """An artifact was trained with other library versions than the ones installed."""


class ManifestError(ModelLoadError):
    """A manifest is missing, unreadable or disagrees with its artifact."""


@dataclass(slots=True)  # not frozen: frozen dataclasses cost ~1 us more per row, and batches build thousands
class Prediction:
    """One row's answer: the label, its index in the manifest's classes, and every class probability."""

    label: str
    class_index: int
    probabilities: dict[str, float]


class BasePredictor(ABC):
    """A classifier behind the service: raw feature rows in, class probabilities out.

    Subclasses implement ``predict_proba``; rows are ``[n, 4]`` in ``FEATURE_NAMES`` order,
    already validated as finite, positive and within range.
    """

    def __init__(self, manifest: ModelManifest) -> None:
        if tuple(manifest.feature_names) != FEATURE_NAMES:
            raise ManifestError(
                f"manifest of {manifest.model_type} lists features {manifest.feature_names}, "
                f"the service sends {list(FEATURE_NAMES)}"
            )
        self.manifest = manifest
        self.class_labels: tuple[str, ...] = tuple(manifest.class_labels)

    @property
    def model_type(self) -> str:
        """The model type this predictor serves."""
        return self.manifest.model_type.value

    @property
    def version(self) -> str:
        """The served model's version, from its manifest."""
        return self.manifest.version

    @abstractmethod
    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Class probabilities ``[n, n_classes]`` in ``class_labels`` order."""

    @abstractmethod
    def explain(self, row: FloatArray) -> dict[str, Any]:
        """Why the model answers what it does for one row (a JSON-ready dict)."""

    @property
    def explainer_loaded(self) -> bool:
        """Whether ``explain`` answers without loading anything first (else ``load_explainer`` does, once)."""
        return True

    def load_explainer(self) -> None:
        """Load what ``explain`` needs if it is not in memory yet (seconds: call it off the event loop)."""
        return  # noqa: PLR1711 - nothing to load by default; a predictor with a deferred explainer overrides it

    def predict_many(self, rows: FloatArray) -> list[Prediction]:
        """Predict every row of ``[n, 4]``."""
        return self.to_predictions(self.predict_proba(rows))

    def predict_one(self, row: FloatArray) -> Prediction:
        """Predict one row: four features, shape ``[4]``."""
        return self.to_predictions(self.predict_proba(row.reshape(1, -1)))[0]

    def to_predictions(self, probabilities: FloatArray) -> list[Prediction]:
        """Turn a probability matrix into predictions labelled from the manifest."""
        labels = self.class_labels
        indices = probabilities.argmax(axis=1).tolist()
        return [
            Prediction(
                label=labels[index],
                class_index=index,
                probabilities=dict(zip(labels, row)),  # noqa: B905 - row length is the class count
            )
            for index, row in zip(indices, probabilities.tolist())  # noqa: B905 - both come from one array
        ]

    def warm_up(self, row: FloatArray, repeats: int = 50) -> float:
        """Run a few predictions so that lazy work happens now; return the median latency in us."""
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.predict_one(row)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings) * 1e6)
