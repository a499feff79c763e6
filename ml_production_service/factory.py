"""Build the configured predictor: an explicit mapping from model type to constructor."""

from __future__ import annotations

from collections.abc import Callable

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.predictors.base import BasePredictor
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.registry import load_artifact, load_fast_path, model_dir, read_manifest


def _heuristic(config: ServiceConfig) -> BasePredictor:
    # The heuristic needs no artifact; its manifest (evaluation metrics) is used when promoted.
    has_manifest = (model_dir(config.registry_dir, ModelType.HEURISTIC) / MANIFEST_FILE).is_file()
    manifest = read_manifest(config.registry_dir, ModelType.HEURISTIC) if has_manifest else None
    return HeuristicPredictor(manifest)


def _fitted(model_type: ModelType) -> Callable[[ServiceConfig], BasePredictor]:
    def build(config: ServiceConfig) -> BasePredictor:
        pipeline, manifest = load_artifact(
            config.registry_dir, model_type, allow_version_mismatch=config.allow_version_mismatch
        )
        fast = load_fast_path(config.registry_dir, manifest, pipeline) if config.fast_path else None
        return MLModelPredictor(pipeline, manifest, fast)

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
