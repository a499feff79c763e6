"""The predictor interface: an ABC whose shared methods turn probabilities into labelled predictions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.features import FloatArray
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.predictors import base
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


class _Clock:
    """``perf_counter`` for warm_up: each predict_one call takes the next of ``durations`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.readings = iter([reading for d in durations for reading in (1000.0, 1000.0 + d)])

    def perf_counter(self) -> float:
        return next(self.readings)


class _Counting(_Constant):
    """Records every row predict_one is called with."""

    def __init__(self) -> None:
        super().__init__(default_heuristic_manifest())
        self.rows: list[list[float]] = []

    def predict_one(self, row: FloatArray) -> Prediction:
        self.rows.append(row.tolist())
        return super().predict_one(row)


@pytest.mark.parametrize(
    ("durations", "median_us"),
    [
        pytest.param([5e-6, 1e-6, 300e-6, 2e-6, 4e-6], 4.0, id="odd-an-outlier-ignored"),
        pytest.param([10e-6, 2e-6, 4e-6, 1e-3], 7.0, id="even-middle-two-averaged"),
    ],
)
def test_warm_up_predicts_the_row_repeatedly_and_returns_the_median_in_microseconds(
    monkeypatch: pytest.MonkeyPatch, durations: list[float], median_us: float
) -> None:
    """Start-up runs predict_one ``repeats`` times on the row and keeps the median latency, in microseconds."""
    monkeypatch.setattr(base, "time", _Clock(durations))
    predictor = _Counting()
    row = np.array([5.0, 3.0, 4.0, 1.0])
    assert predictor.warm_up(row, repeats=len(durations)) == pytest.approx(median_us)
    assert predictor.rows == [row.tolist()] * len(durations)


def _tamper_artifact(folder: Path) -> None:
    (folder / "model.joblib").write_bytes(b"not the promoted artifact")


def _mismatch_versions(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["library_versions"]["scikit-learn"] = "0.0.1"
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def _remove_manifest(folder: Path) -> None:
    (folder / MANIFEST_FILE).unlink()


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        pytest.param(_tamper_artifact, IntegrityError, id="tampered"),
        pytest.param(_mismatch_versions, VersionMismatchError, id="version-mismatch"),
        pytest.param(_remove_manifest, ManifestError, id="missing-manifest"),
    ],
)
def test_every_load_failure_reaches_start_up_as_a_model_load_error(
    tiny_registry: Path, breakage: Callable[[Path], None], error: type[ModelLoadError]
) -> None:
    """What start-up calls (get_predictor) fails on a tampered, mismatched or missing model with the one exception
    type ``python -m ml_production_service`` catches, ModelLoadError, as its specific kind, in one line."""
    breakage(tiny_registry / ModelType.DECISION_TREE.value)
    with pytest.raises(ModelLoadError) as caught:
        get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry))
    assert isinstance(caught.value, error)
    assert "\n" not in str(caught.value)
