"""The predictor interface: an ABC whose shared methods turn probabilities into labelled predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml_production_service.features import FloatArray
from ml_production_service.predictors.base import (
    BasePredictor,
    IntegrityError,
    ManifestError,
    ModelLoadError,
    Prediction,
    VersionMismatchError,
)
from ml_production_service.predictors.heuristic import default_heuristic_manifest


class _Constant(BasePredictor):
    """Always answers the same probabilities."""

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        return np.tile([0.1, 0.7, 0.2], (len(rows), 1))

    def explain(self, row: FloatArray) -> dict[str, Any]:
        return {"method": "constant"}


class _NoExplain(BasePredictor):
    """Forgets to implement explain."""

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        return np.zeros((len(rows), 3))


def test_predictor_missing_a_method_fails_when_built() -> None:
    """A new predictor that forgets explain() cannot even be constructed, so it never reaches a request."""
    with pytest.raises(TypeError, match="explain"):
        _NoExplain(default_heuristic_manifest())  # type: ignore[abstract]


def test_base_predictor_itself_cannot_be_built() -> None:
    """The interface is abstract."""
    with pytest.raises(TypeError, match="abstract"):
        BasePredictor(default_heuristic_manifest())  # type: ignore[abstract]


def test_predictions_are_labelled_from_the_manifest() -> None:
    """Each prediction carries the most probable label, its index and every class probability."""
    manifest = default_heuristic_manifest().model_copy(update={"class_labels": ["a", "b", "c"]})
    predictor = _Constant(manifest)
    assert predictor.predict_one(np.array([5.0, 3.0, 4.0, 1.0])) == Prediction(
        label="b", class_index=1, probabilities={"a": 0.1, "b": 0.7, "c": 0.2}
    )
    many = predictor.predict_many(np.ones((3, 4)))
    assert [p.label for p in many] == ["b", "b", "b"]


def test_model_type_and_version_come_from_the_manifest() -> None:
    """/model reports what the manifest says was promoted."""
    manifest = default_heuristic_manifest()
    predictor = _Constant(manifest)
    assert predictor.model_type == "heuristic"
    assert predictor.version == manifest.version


def test_manifest_with_other_features_is_refused() -> None:
    """A model trained on other columns than the service sends cannot be served."""
    manifest = default_heuristic_manifest().model_copy(update={"feature_names": ["a", "b", "c", "d"]})
    with pytest.raises(ManifestError, match="lists features"):
        _Constant(manifest)


def test_warm_up_returns_a_positive_latency() -> None:
    """Start-up measures a median prediction latency in microseconds."""
    assert _Constant(default_heuristic_manifest()).warm_up(np.ones(4), repeats=3) > 0


@pytest.mark.parametrize("error", [IntegrityError, VersionMismatchError, ManifestError])
def test_every_load_error_stops_start_up_the_same_way(error: type[Exception]) -> None:
    """Start-up catches one ModelLoadError for a tampered, mismatched or missing model."""
    assert issubclass(error, ModelLoadError)
