"""Feature evidence: drop-one ablation of every raw and engineered feature, on the run's own folds, and its cost.

Each variant is the run's recipe with some columns of ``features.engineer_features`` removed before the estimator,
scored by the same repeated k-fold splits as the full recipe, so the two are paired fold by fold (corrected
resampled t-test, ``stats.corrected_paired_test``). Three kinds of variant:

- one column (``feature``): that column only. Dropping a raw column this way keeps the engineered features derived
  from it, so its information partly stays: the test asks whether the model needs the raw value *as well*.
- a raw measurement with everything derived from it (``raw_and_derived``): the model no longer sees that
  measurement at all, which is what "the service needs no X" would mean.
- every engineered feature (``engineered``): the four raw measurements only, i.e. whether feature engineering helps.

Which engineered columns derive from which raw one is measured, not declared: a raw column is perturbed and the
columns of ``engineer_features`` that change are its descendants, so the map follows ``features.py`` by itself.
The served feature set is not changed here; the journey recommends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ml_production_service.features import ENGINEERED_FEATURE_NAMES, FEATURE_NAMES, engineer_features
from research.experiments import evaluation
from research.experiments.common import Dataset
from research.experiments.evaluation import Protocol, Split
from research.experiments.stats import corrected_paired_test

COST_ROWS = 10_000
"""Rows per timed batch of the feature-cost measurement (per-row figures are the batch time over this)."""


def derived_from(rows: np.ndarray) -> dict[str, list[str]]:
    """Raw feature -> the engineered columns (itself excluded) whose values change when it changes, on ``rows``."""
    base = engineer_features(rows)
    derived: dict[str, list[str]] = {}
    for i, raw in enumerate(FEATURE_NAMES):
        moved = np.array(rows, dtype=np.float64)
        moved[:, i] *= 1.5
        changed = np.any(engineer_features(moved) != base, axis=0)
        derived[raw] = [name for j, name in enumerate(ENGINEERED_FEATURE_NAMES) if changed[j] and name != raw]
    return derived


def variants(derived: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Every ablation: each column alone, each raw measurement with its descendants, all engineered columns."""
    engineered = [name for name in ENGINEERED_FEATURE_NAMES if name not in FEATURE_NAMES]
    found = [{"name": name, "kind": "feature", "drops": [name]} for name in ENGINEERED_FEATURE_NAMES]
    found += [
        {"name": f"{raw} + derived", "kind": "raw_and_derived", "drops": [raw, *derived[raw]]} for raw in FEATURE_NAMES
    ]
    found.append({"name": "every engineered feature", "kind": "engineered", "drops": engineered})
    return found


def keep_columns(features: np.ndarray, keep: list[int]) -> np.ndarray:
    """The engineered rows restricted to the columns ``keep`` (a module function, so the pipeline pickles)."""
    return np.asarray(features)[:, keep]


def without(model: Pipeline, drops: list[str]) -> Pipeline:
    """The recipe's pipeline with the columns ``drops`` removed between the feature transform and the estimator."""
    keep = [i for i, name in enumerate(ENGINEERED_FEATURE_NAMES) if name not in drops]
    selector = FunctionTransformer(keep_columns, kw_args={"keep": keep}, validate=False)
    (features_name, features), (model_name, estimator) = model.steps[0], model.steps[-1]
    return Pipeline([(features_name, clone(features)), ("select", selector), (model_name, clone(estimator))])


def verdict(kind: str, interval: tuple[float, float]) -> str:
    """keep / drop / justify from the corrected interval of (accuracy without) - (accuracy with)."""
    if interval[1] < 0:
        return "keep: dropping it loses accuracy beyond noise"
    if interval[0] > 0:
        return "drop: the model is better without it, beyond noise"
    if kind == "engineered":
        return "justify: engineering buys nothing measurable here"
    return "justify: no measurable effect either way"


def _time_per_row_ns(compute: Callable[[], object], repeats: int) -> float:
    compute()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        compute()
        samples.append(time.perf_counter_ns() - started)
    return float(np.median(samples)) / COST_ROWS


def feature_costs(rows: np.ndarray, repeats: int = 15) -> dict[str, Any]:
    """Time per row of computing each column, measured on this machine on a batch of ``COST_ROWS`` rows.

    A raw column costs the copy of the request's value into the model input; an engineered column is timed as the
    product or ratio of the two raw columns it is measured to derive from (None if it is neither: time it by hand).
    The whole ``engineer_features`` call is timed too, as the reference a per-column figure is a part of.
    """
    batch = np.resize(np.asarray(rows, dtype=np.float64), (COST_ROWS, len(FEATURE_NAMES)))
    engineered = engineer_features(batch)
    derived = derived_from(batch)
    columns = {name: np.ascontiguousarray(batch[:, i]) for i, name in enumerate(FEATURE_NAMES)}
    per_feature: dict[str, float | None] = {}
    for j, name in enumerate(ENGINEERED_FEATURE_NAMES):
        if name in columns:
            column = columns[name]
            per_feature[name] = _time_per_row_ns(column.copy, repeats)
            continue
        parents = [raw for raw in FEATURE_NAMES if name in derived[raw]]
        operation = _operation(engineered[:, j], [columns[p] for p in parents])
        per_feature[name] = None if operation is None else _time_per_row_ns(operation, repeats)
    return {
        "rows_per_batch": COST_ROWS,
        "ns_per_row": per_feature,
        "transform_ns_per_row": _time_per_row_ns(lambda: engineer_features(batch), repeats),
    }


def _operation(target: np.ndarray, parents: list[np.ndarray]) -> Callable[[], object] | None:
    """The elementwise product or ratio of ``parents`` that reproduces ``target`` exactly, as a thunk."""
    if len(parents) != 2:
        return None
    a, b = parents

    def product() -> object:
        return a * b

    def ratio() -> object:
        return a / b

    def inverse() -> object:
        return b / a

    for candidate in (product, ratio, inverse):
        if np.array_equal(np.asarray(candidate()), target):
            return candidate
    return None


def ablate(
    model: Pipeline, dataset: Dataset, protocol: Protocol, splits: list[Split], full_fold_accuracy: list[float]
) -> dict[str, Any]:
    """Every variant's repeated-CV accuracy on ``splits`` and its paired difference to the full recipe."""
    ratio = evaluation.split_ratio(splits)
    baseline = np.asarray(full_fold_accuracy)
    results = []
    for variant in variants(derived_from(dataset.features)):
        scores = evaluation.repeated_cv(without(model, variant["drops"]), dataset, protocol, splits)
        test = corrected_paired_test(np.asarray(scores["fold_accuracy"]), baseline, ratio)
        results.append(
            {
                **variant,
                "accuracy_mean": scores["accuracy_mean"],
                "difference": test.difference,
                "difference_ci95": list(test.interval),
                "p_value": test.p_value,
                "verdict": verdict(variant["kind"], test.interval),
            }
        )
    return {
        "baseline_accuracy_mean": float(baseline.mean()),
        "derived_from": derived_from(dataset.features),
        "variants": results,
        "cost": feature_costs(dataset.features),
    }
