"""The committed registry can be rebuilt: every fitted model retrains from its manifest's recipe to the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.registry import save_model
from research.experiments.common import FamilyConfig, build_manifest, fit_final, load_dataset, recipe_hyperparameters
from research.experiments.promotion import reproduce

FITTED = [pytest.param(model_type, id=model_type.value) for model_type in ModelType if model_type.is_fitted]
REGENERATE = "make train-all (from a clean commit), then commit registry/ and research/results/"


def differing(registry: Path, model_type: ModelType) -> dict[str, tuple[str, str]]:
    """The files of ``registry``'s model whose retrained bytes differ: name -> (committed, retrained) sha256."""
    files = reproduce(registry, model_type)
    assert set(files) == {"model.joblib", "model.onnx"}
    return {name: pair for name, pair in files.items() if pair[0] != pair[1]}


@pytest.mark.parametrize("model_type", FITTED)
def test_the_committed_model_retrains_to_its_committed_bytes(model_type: ModelType) -> None:
    """registry/prd's model.joblib and model.onnx are what its recipe, refitted and saved as promotion saves, writes."""
    assert not differing(DEFAULT_REGISTRY_DIR, model_type), f"regenerate the registry: {REGENERATE}"


@pytest.mark.parametrize("model_type", FITTED)
def test_a_registry_saved_from_the_recipes_retrains_to_the_same_bytes(tmp_path: Path, model_type: ModelType) -> None:
    """The committed recipe fitted on every row and saved as a run saves its candidate (which promotion copies
    byte for byte) retrains to the same model.joblib and model.onnx: the check above can pass."""
    config = FamilyConfig.load(model_type)
    dataset = load_dataset()
    model = fit_final(config.build(), dataset.features, dataset.targets)
    manifest = build_manifest(
        model_type,
        config.estimator,
        recipe_hyperparameters(model),
        {},
        dataset.features,
        dataset.targets,
        dataset.class_labels,
        seed=config.seed,
    )
    save_model(tmp_path, manifest, model)
    assert not differing(tmp_path, model_type)
