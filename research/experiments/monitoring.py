"""What a promoted model carries for watching it in production: its reference profile and golden predictions.

The computation is the package's (``ml_production_service.reference``); this module chooses what it is computed
from: for a run's candidate, the training rows and the run's own out-of-fold predictions (``run_reference``); for
a model already in the registry, the same rows and a stratified 10-fold ``cross_val_predict`` of its recipe,
without retraining or rewriting the artifact (``refresh_reference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ml_production_service.configs import ModelType
from ml_production_service.factory import load_fitted, load_heuristic
from ml_production_service.manifest import MANIFEST_FILE, MANIFEST_SCHEMA_VERSION, ModelManifest, Reference
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.reference import (
    GOLDEN_TOLERANCE,
    REFERENCE_QUANTILES,
    ProbabilityFunction,
    check_golden,
    golden_predictions,
    reference_profile,
)
from ml_production_service.registry import load_artifact, model_dir, read_manifest, save_model, sha256_file
from research.experiments import evaluation
from research.experiments.common import SEED, Dataset, load_dataset, model_from_recipe
from research.experiments.evaluation import Protocol, Split

OOF_FOLDS = 10
"""Folds of the out-of-fold predictions a refreshed reference's confidence comes from."""

IN_SAMPLE_RULES = "in-sample rule confidences (the rules learn nothing from the rows, so not out of fold)"


class RefreshError(RuntimeError):
    """The registry's model cannot be given a reference profile and golden predictions without retraining it."""


def out_of_fold_description(folds: int, seed: int) -> str:
    """How the out-of-fold confidences were made (the same words whether a run or a refresh made them)."""
    return f"top-class probability of out-of-fold predictions, stratified {folds}-fold (shuffled, seed {seed})"


def reference_for(dataset: Dataset, top_probabilities: np.ndarray, confidence: str) -> Reference:
    """The reference profile of ``dataset`` with these top-class probabilities; ``confidence`` says what they are."""
    low, high = REFERENCE_QUANTILES[0], REFERENCE_QUANTILES[-1]
    source = (
        f"sklearn.datasets.load_iris sha256 {dataset.fingerprint} ({len(dataset.targets)} rows); feature bins: "
        f"edges at the {low:.0%}..{high:.0%} training quantiles, de-duplicated; confidence: {confidence}"
    )
    return reference_profile(dataset.features, dataset.targets, dataset.class_labels, top_probabilities, source=source)


def run_reference(
    model_type: ModelType,
    dataset: Dataset,
    final: Any,
    protocol: Protocol,
    splits: list[Split],
    fold_probabilities: list[np.ndarray],
) -> Reference:
    """A run candidate's reference: the confidences of the run's first CV repeat (one prediction per row)."""
    if not model_type.is_fitted:
        return reference_for(dataset, np.asarray(final.predict_proba(dataset.features)).max(axis=1), IN_SAMPLE_RULES)
    first = slice(0, protocol.folds)  # the first `folds` splits of a repeated k-fold are one plain k-fold
    out_of_fold = evaluation.partition_probabilities(dataset, splits[first], fold_probabilities[first])
    return reference_for(dataset, out_of_fold.max(axis=1), out_of_fold_description(protocol.folds, protocol.seed))


def cross_validated_top_probabilities(model: Any, dataset: Dataset, seed: int, folds: int = OOF_FOLDS) -> np.ndarray:
    """The top-class probability of each row, predicted by ``model`` refitted on the other folds."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, dataset.features, dataset.targets, cv=splitter, method="predict_proba")
    return np.asarray(np.asarray(probabilities, dtype=np.float64).max(axis=1))


def refresh_reference(registry_dir: Path, model_type: ModelType, dataset: Dataset | None = None) -> str:
    """Record the reference profile and golden predictions of the model in ``registry_dir``, without retraining.

    ``dataset`` is the training data (default: all of iris, what production models are trained on).

    The artifact is verified (sha256 before unpickling, library versions) and never rewritten; only the manifest
    changes. Refused when the model may no longer answer what it was promoted with: golden predictions it already
    has and misses, training data other than its recorded fingerprint, a training accuracy other than its
    manifest's, or a recipe that no longer refits to the same probabilities.
    """
    name = model_type.value
    folder = model_dir(registry_dir, model_type)
    manifest = read_manifest(registry_dir, model_type)
    dataset = dataset or load_dataset()
    if manifest.recipe.dataset_sha256 != dataset.fingerprint:
        raise RefreshError(
            f"{name}: the training data's sha256 is {dataset.fingerprint}, the manifest records "
            f"{manifest.recipe.dataset_sha256}: retrain the model instead"
        )
    fast_path = manifest.fast_path.artifact if manifest.fast_path else None
    artifacts = [file for file in (manifest.artifact, fast_path) if file]
    before = {file: sha256_file(folder / file) for file in artifacts}
    if not model_type.is_fitted:
        predict: ProbabilityFunction = HeuristicPredictor(manifest).predict_proba
        _answers_as_promoted(manifest, predict, dataset)
        top = np.asarray(predict(dataset.features)).max(axis=1)
        confidence = IN_SAMPLE_RULES
    else:
        pipeline, manifest = load_artifact(registry_dir, model_type)
        MLModelPredictor(pipeline, manifest)  # fitted, with the manifest's classes
        predict = pipeline.predict_proba
        _answers_as_promoted(manifest, predict, dataset)
        _recipe_reproduces(manifest, pipeline, dataset)
        seed = manifest.recipe.seed if manifest.recipe.seed is not None else SEED
        top = cross_validated_top_probabilities(model_from_recipe(manifest.recipe), dataset, seed)
        confidence = out_of_fold_description(OOF_FOLDS, seed)
    refreshed = manifest.model_copy(
        update={
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "reference": reference_for(dataset, top, confidence),
            "golden": golden_predictions(predict),
        }
    )
    manifest_path = folder / MANIFEST_FILE
    previous = manifest_path.read_bytes()
    save_model(registry_dir, refreshed, None)
    try:
        _load_as_served(registry_dir, model_type)
    except ModelLoadError:
        manifest_path.write_bytes(previous)
        raise
    after = {file: sha256_file(folder / file) for file in artifacts}
    if after != before:  # pragma: no cover - nothing above writes an artifact; this proves it
        raise RefreshError(f"{name}: an artifact changed during the refresh: {before} -> {after}")
    kept = ", ".join(f"{file} sha256 {digest}" for file, digest in before.items())
    unchanged = f"; unchanged: {kept}" if kept else ""
    return f"{name}: reference profile and golden predictions recorded in {manifest_path}{unchanged}"


def _recipe_reproduces(manifest: ModelManifest, pipeline: Any, dataset: Dataset) -> None:
    """The recipe refitted on the training rows answers what the artifact answers: its CV describes this model."""
    refit = model_from_recipe(manifest.recipe).fit(dataset.features, dataset.targets)
    if not np.array_equal(refit.predict_proba(dataset.features), pipeline.predict_proba(dataset.features)):
        raise RefreshError(
            f"{manifest.model_type.value}: its recipe refitted on the training rows no longer reproduces the artifact "
            "(another feature transform or library behaviour?): retrain the model instead"
        )


def _answers_as_promoted(manifest: ModelManifest, predict: ProbabilityFunction, dataset: Dataset) -> None:
    """Refuse to record golden predictions for a model that may no longer answer what it was promoted with."""
    name = manifest.model_type.value
    if manifest.golden is not None:
        check_golden(
            manifest,
            predict,
            tolerance=GOLDEN_TOLERANCE,
            served_by="refresh",
            remedy="a refresh does not bless a changed model: retrain it instead",
        )
    recorded = manifest.metrics.get("training_accuracy")
    if recorded is not None:
        now = float(np.mean(np.asarray(predict(dataset.features)).argmax(axis=1) == dataset.targets))
        if now != recorded:
            raise RefreshError(
                f"{name}: it now gets {now:.4f} of its training rows right, its manifest recorded {recorded:.4f} at "
                "promotion: what it serves changed; retrain it instead"
            )


def _load_as_served(registry_dir: Path, model_type: ModelType) -> None:
    """Load the refreshed model exactly as the service does (golden check and fast path included)."""
    if not model_type.is_fitted:
        load_heuristic(registry_dir)
    else:
        load_fitted(registry_dir, model_type)
