"""Build the configured predictor: an explicit mapping from model type to constructor."""

from __future__ import annotations

from collections.abc import Callable

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import ManifestNotFoundError, load_artifact, load_fast_path, read_manifest


def _heuristic(config: ServiceConfig) -> BasePredictor:
    # The heuristic needs no artifact; its manifest (evaluation metrics) is used when promoted. Only an absent
    # manifest falls back to the built-in one: a broken one (or a registry that is a file) stops start-up.
    try:
        manifest = read_manifest(config.registry_dir, ModelType.HEURISTIC)
    except ManifestNotFoundError:
        return HeuristicPredictor()
    return HeuristicPredictor(manifest)


def _fitted(model_type: ModelType) -> Callable[[ServiceConfig], BasePredictor]:
    def build(config: ServiceConfig) -> BasePredictor:
        pipeline, manifest = load_artifact(
            config.registry_dir, model_type, allow_version_mismatch=config.allow_version_mismatch
        )
        # Check the Pipeline against its manifest (fitted, same classes) before the fast path's parity check runs it.
        predictor = MLModelPredictor(pipeline, manifest)
        if not config.fast_path:
            return predictor
        return MLModelPredictor(pipeline, manifest, load_fast_path(config.registry_dir, manifest, pipeline))

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
