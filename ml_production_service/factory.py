"""Build the configured predictor: an explicit mapping from model type to constructor.

Every constructor proves, before the model may serve, that it still answers the golden predictions its manifest
recorded at promotion (``reference.check_golden``): the original model within ``GOLDEN_TOLERANCE``, its fast path
within ``FAST_PATH_GOLDEN_TOLERANCE`` (in ``registry.load_fast_path``, after the parity check).

The fast path's parity with the original needs the original Pipeline, and so scikit-learn (and XGBoost) in memory.
``python -m ml_production_service`` proves it once, in a short-lived process (``verify_model``, run by
``preflight.check_model``), and hands its serving processes the ``proof`` in ``preflight.PROVEN_ENV``: a worker
whose manifest names exactly the proven files verifies their sha256, the library versions and the fast path's
golden predictions, and leaves the Pipeline on disk until an explanation asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.preflight import PROVEN_ENV
from ml_production_service.reference import GOLDEN_TOLERANCE, check_golden
from ml_production_service.registry import (
    ManifestNotFoundError,
    check_versions,
    load_artifact,
    load_fast_path,
    read_manifest,
    verify_artifact,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def _retrain(model_type: ModelType) -> str:
    target = model_type.value.replace("_", "-")
    verb = "eval" if not model_type.is_fitted else "train"
    return f"retrain and re-promote it (make {verb}-{target})"


def load_heuristic(registry_dir: Path) -> HeuristicPredictor:
    """The heuristic with its promoted manifest (golden-checked), or with the built-in one when none is promoted."""
    # Only an absent manifest falls back to the built-in one: a broken one (or a registry that is a file) stops
    # start-up.
    try:
        manifest = read_manifest(registry_dir, ModelType.HEURISTIC)
    except ManifestNotFoundError:
        return HeuristicPredictor()
    predictor = HeuristicPredictor(manifest)
    # Its single-row path is separate code (plain Python, for speed), and /predict serves from it: check both.
    for served_by, predict in (
        ("its rules", predictor.predict_proba),
        ("its rules, row by row", _row_by_row(predictor)),
    ):
        check_golden(
            manifest, predict, tolerance=GOLDEN_TOLERANCE, served_by=served_by, remedy=_retrain(ModelType.HEURISTIC)
        )
    return predictor


def _row_by_row(predictor: BasePredictor) -> Callable[[FloatArray], FloatArray]:
    """``predictor.predict_one`` on each row, as a probability matrix in ``class_labels`` order."""

    def predict(rows: FloatArray) -> FloatArray:
        answers = [predictor.predict_one(row).probabilities for row in rows]
        return np.array([[answer[label] for label in predictor.class_labels] for answer in answers], dtype=np.float64)

    return predict


def proof(manifest: ModelManifest) -> str | None:
    """What identifies a fitted model's proven files: its type and the sha256 of its artifact and fast path (None
    without a fast path)."""
    if manifest.fast_path is None or manifest.sha256 is None:
        return None
    return f"{manifest.model_type.value}:{manifest.sha256}:{manifest.fast_path.sha256}"


def load_fitted(
    registry_dir: Path,
    model_type: ModelType,
    *,
    allow_version_mismatch: bool = False,
    fast_path: bool = True,
    proven: str | None = None,
) -> MLModelPredictor:
    """The verified artifact of ``model_type``, golden-checked, served by its parity-checked fast path if asked.

    With ``proven`` naming this manifest's files (``proof``), parity is not proven again and the Pipeline is not
    loaded: both files' sha256, the library versions and the fast path's golden predictions are still checked.
    """
    if fast_path and proven is not None:
        manifest = read_manifest(registry_dir, model_type)
        if proof(manifest) == proven:
            return _load_proven(registry_dir, manifest, allow_version_mismatch=allow_version_mismatch)
    pipeline, manifest = load_artifact(registry_dir, model_type, allow_version_mismatch=allow_version_mismatch)
    # Check the Pipeline against its manifest (fitted, same classes) before the golden and parity checks run it.
    predictor = MLModelPredictor(pipeline, manifest)
    check_golden(
        manifest,
        pipeline.predict_proba,
        tolerance=GOLDEN_TOLERANCE,
        served_by="the original model",
        remedy=_retrain(model_type),
    )
    if not fast_path:
        return predictor
    return MLModelPredictor(pipeline, manifest, load_fast_path(registry_dir, manifest, pipeline))


def _load_proven(registry_dir: Path, manifest: ModelManifest, *, allow_version_mismatch: bool) -> MLModelPredictor:
    verify_artifact(registry_dir, manifest)
    check_versions(manifest, allow_version_mismatch=allow_version_mismatch)
    fast = load_fast_path(registry_dir, manifest, None)
    assert fast is not None  # a proof names a fast path
    load = partial(_original, registry_dir, manifest.model_type, allow_version_mismatch)
    return MLModelPredictor(None, manifest, fast, load=load)


def _original(registry_dir: Path, model_type: ModelType, allow_version_mismatch: bool) -> Pipeline:
    """The Pipeline of a proven model, loaded for an explanation (its sha256 verified again)."""
    return load_artifact(registry_dir, model_type, allow_version_mismatch=allow_version_mismatch)[0]


def verify_model(config: ServiceConfig) -> str | None:
    """Load ``config``'s model with every check, parity included (raises ModelLoadError); its ``proof`` when it is a
    fitted model served by its fast path, else None. Run by the server command in a process that then exits."""
    if not config.model_type.is_fitted:
        PREDICTORS[config.model_type](config)
        return None
    predictor = load_fitted(  # never from a proof: this is where the proof comes from
        config.registry_dir,
        config.model_type,
        allow_version_mismatch=config.allow_version_mismatch,
        fast_path=config.fast_path,
    )
    return proof(predictor.manifest) if predictor.uses_fast_path else None


def _heuristic(config: ServiceConfig) -> BasePredictor:
    return load_heuristic(config.registry_dir)


def _fitted(model_type: ModelType) -> Callable[[ServiceConfig], BasePredictor]:
    def build(config: ServiceConfig) -> BasePredictor:
        return load_fitted(
            config.registry_dir,
            model_type,
            allow_version_mismatch=config.allow_version_mismatch,
            fast_path=config.fast_path,
            proven=os.environ.get(PROVEN_ENV),
        )

    return build


PREDICTORS: dict[ModelType, Callable[[ServiceConfig], BasePredictor]] = {
    ModelType.HEURISTIC: _heuristic,
    ModelType.DECISION_TREE: _fitted(ModelType.DECISION_TREE),
    ModelType.RANDOM_FOREST: _fitted(ModelType.RANDOM_FOREST),
    ModelType.XGBOOST: _fitted(ModelType.XGBOOST),
}


def get_predictor(config: ServiceConfig) -> BasePredictor:
    """The predictor ``config.model_type`` names, loaded and verified; raises ModelLoadError."""
    return PREDICTORS[config.model_type](config)
