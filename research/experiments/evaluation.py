"""The one evaluation protocol every model family goes through.

Leave-one-out CV (one out-of-sample prediction per row: confusion matrix, per-class precision and recall,
misclassified rows), repeated stratified k-fold (the fold-score distribution, paired across models because
every model sees the same folds), OOB where the estimator has it, nested CV where a grid is searched, and,
measured on this machine, predict latency, memory and artifact size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.model_selection import GridSearchCV, LeaveOneOut, RepeatedStratifiedKFold, StratifiedKFold
from tqdm import tqdm

from ml_production_service.configs import REPOSITORY_ROOT
from research.experiments.common import Dataset, FamilyConfig
from research.experiments.stats import corrected_interval, wilson_interval

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Protocol:
    """How a recipe is validated and measured; two runs are comparable only under an equal protocol."""

    folds: int = 10
    repeats: int = 10
    seed: int = 42
    every: int = 1
    """Use every ``every``-th iris row (1 = all 150); tests use fewer rows."""
    nested: bool = True
    inner_folds: int | None = None
    """Inner folds of nested CV; None takes the family config's."""
    timing_budget_s: float = 0.5
    measure_memory: bool = True
    jobs: int = 1
    spread_seeds: int = 5
    """How many other fold seeds (``seed + 1`` ...) the headline is re-measured on, to show its spread."""
    ablation: bool = True
    """Run the drop-one feature ablation (``ablation.py``) on the same folds."""

    def comparable_key(self) -> dict[str, int]:
        """What must be equal for fold scores of two runs to be paired."""
        return {"folds": self.folds, "repeats": self.repeats, "seed": self.seed, "every": self.every}

    def to_json(self) -> dict[str, Any]:
        """The protocol as written in metrics.json."""
        return asdict(self)


def repeated_splits(dataset: Dataset, protocol: Protocol) -> list[Split]:
    """The repeated stratified k-fold splits; the first ``folds`` of them are one plain k-fold partition."""
    splitter = RepeatedStratifiedKFold(n_splits=protocol.folds, n_repeats=protocol.repeats, random_state=protocol.seed)
    return list(splitter.split(np.zeros(len(dataset.targets)), dataset.targets))


def _fit_predict(model: Any, dataset: Dataset, split: Split) -> np.ndarray:
    train, test = split
    fitted = clone(model).fit(dataset.features[train], dataset.targets[train])
    return np.asarray(fitted.predict_proba(dataset.features[test]), dtype=np.float64)


def _progress(results: Iterable[Any], total: int, desc: str) -> list[Any]:
    return list(tqdm(results, total=total, desc=desc, unit="fit", disable=None, leave=False))


def out_of_fold_probabilities(
    model: Any, dataset: Dataset, splits: list[Split], desc: str, jobs: int
) -> list[np.ndarray]:
    """Fit a fresh copy of ``model`` on each split's training rows; its probabilities on the test rows."""
    tasks = (delayed(_fit_predict)(model, dataset, split) for split in splits)
    return _progress(Parallel(n_jobs=jobs, return_as="generator")(tasks), len(splits), desc)


def classification_summary(dataset: Dataset, probabilities: np.ndarray) -> dict[str, Any]:
    """Accuracy (Wilson interval), macro F1, per-class precision/recall, confusion matrix, misclassified rows."""
    targets, labels = dataset.targets, dataset.class_labels
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=classes, zero_division=0
    )
    correct = int(np.sum(predicted == targets))
    wrong = np.flatnonzero(predicted != targets)
    return {
        "accuracy": correct / len(targets),
        "accuracy_ci95": list(wilson_interval(correct, len(targets))),
        "correct": correct,
        "rows": len(targets),
        "macro_f1": float(f1_score(targets, predicted, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(targets, predicted, labels=classes).tolist(),
        "misclassified": [
            {
                "row_id": int(dataset.row_ids[i]),
                "true": labels[targets[i]],
                "predicted": labels[predicted[i]],
                "probabilities": [round(float(p), 4) for p in probabilities[i]],
            }
            for i in wrong
        ],
        "predicted": predicted.tolist(),
    }


def loocv(model: Any, dataset: Dataset, protocol: Protocol) -> dict[str, Any]:
    """Leave-one-out CV: every row predicted once by a model that never saw it."""
    splits = list(LeaveOneOut().split(dataset.features))
    probabilities = np.zeros((len(dataset.targets), len(dataset.class_labels)))
    for (_, test), proba in zip(
        splits, out_of_fold_probabilities(model, dataset, splits, "LOOCV", protocol.jobs), strict=True
    ):
        probabilities[test] = proba
    return classification_summary(dataset, probabilities)


def _fold_scores(
    dataset: Dataset, splits: list[Split], probabilities: list[np.ndarray]
) -> tuple[list[float], list[float]]:
    accuracy, macro_f1 = [], []
    classes = list(range(len(dataset.class_labels)))
    for (_, test), proba in zip(splits, probabilities, strict=True):
        predicted, truth = proba.argmax(axis=1), dataset.targets[test]
        accuracy.append(float(accuracy_score(truth, predicted)))
        macro_f1.append(float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)))
    return accuracy, macro_f1


def split_ratio(splits: list[Split]) -> float:
    """Mean ``n_test / n_train`` of the splits (the variance correction of the corrected t-interval)."""
    return float(np.mean([len(test) / len(train) for train, test in splits]))


def repeated_cv(
    model: Any,
    dataset: Dataset,
    protocol: Protocol,
    splits: list[Split],
    probabilities: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Repeated stratified k-fold: per-fold accuracy and macro F1, mean, standard deviation, corrected interval.

    ``probabilities`` are the splits' out-of-fold predictions when already made (``repeated_cv_probabilities``).
    """
    if probabilities is None:
        probabilities = repeated_cv_probabilities(model, dataset, protocol, splits)
    accuracy, macro_f1 = _fold_scores(dataset, splits, probabilities)
    ratio = split_ratio(splits)
    return {
        "accuracy_mean": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy, ddof=1)),
        "accuracy_ci95": list(corrected_interval(np.asarray(accuracy), ratio)),
        "macro_f1_mean": float(np.mean(macro_f1)),
        "macro_f1_std": float(np.std(macro_f1, ddof=1)),
        "test_train_ratio": ratio,
        "fold_accuracy": accuracy,
        "fold_macro_f1": macro_f1,
    }


def repeated_cv_probabilities(
    model: Any, dataset: Dataset, protocol: Protocol, splits: list[Split]
) -> list[np.ndarray]:
    """The out-of-fold probabilities of every split of the repeated CV."""
    desc = f"{protocol.repeats}x{protocol.folds}-fold CV"
    return out_of_fold_probabilities(model, dataset, splits, desc, protocol.jobs)


def partition_probabilities(dataset: Dataset, splits: list[Split], probabilities: list[np.ndarray]) -> np.ndarray:
    """One out-of-fold prediction per row, from splits whose test rows partition the data (one k-fold repeat)."""
    assembled = np.full((len(dataset.targets), len(dataset.class_labels)), np.nan)
    seen = np.zeros(len(dataset.targets), dtype=int)
    for (_, test), proba in zip(splits, probabilities, strict=True):
        assembled[test] = proba
        seen[test] += 1
    if not (seen == 1).all():
        raise ValueError("the splits' test rows do not cover every row exactly once")
    return assembled


def oob(model: Any, dataset: Dataset) -> dict[str, Any] | None:
    """Out-of-bag accuracy of the same recipe refitted with ``oob_score=True`` (None without bagging).

    The served artifact keeps ``oob_score=False``: the OOB fit grows the same trees (same seed) but would
    store a per-row OOB table in the pickle.
    """
    params = model.get_params()
    if "model__oob_score" not in params or not params.get("model__bootstrap", False):
        return None
    fitted = clone(model).set_params(model__oob_score=True).fit(dataset.features, dataset.targets)
    return {"accuracy": float(fitted[-1].oob_score_), "rows": len(dataset.targets)}


def _nested_fold(model: Any, dataset: Dataset, split: Split, grid: dict[str, list[Any]], inner: Any) -> dict[str, Any]:
    train, test = split
    search = GridSearchCV(clone(model), grid, cv=inner, scoring="accuracy", n_jobs=1, error_score="raise")
    search.fit(dataset.features[train], dataset.targets[train])
    predicted = search.predict(dataset.features[test])
    return {
        "accuracy": float(accuracy_score(dataset.targets[test], predicted)),
        "chosen": {k.removeprefix("model__"): v for k, v in search.best_params_.items()},
        "inner_best": float(search.best_score_),
    }


def nested_cv(
    model: Any, dataset: Dataset, protocol: Protocol, config: FamilyConfig, outer: list[Split], unnested: bool = True
) -> dict[str, Any] | None:
    """Nested CV of "grid-search, then fit": an honest estimate of what tuning on this data is worth.

    The outer folds are the first partition of the repeated CV, so the tuned procedure is paired fold by fold
    with the fixed recipe. The non-nested best inner score (search on all rows) is what a report that forgot
    to nest would quote (searched only with ``unnested``; None otherwise).
    """
    if not protocol.nested or not config.search_grid or not config.model_type.is_fitted:
        return None
    grid = {f"model__{k}": v for k, v in config.search_grid.items()}
    inner_folds = protocol.inner_folds or config.inner_folds
    inner = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=protocol.seed)
    tasks = (delayed(_nested_fold)(model, dataset, split, grid, inner) for split in outer)
    desc = f"nested CV ({len(outer)} outer x {inner_folds} inner)"
    folds = _progress(Parallel(n_jobs=protocol.jobs, return_as="generator")(tasks), len(outer), desc)
    everything = None
    if unnested:
        everything = GridSearchCV(clone(model), grid, cv=inner, scoring="accuracy", n_jobs=1, error_score="raise")
        everything.fit(dataset.features, dataset.targets)
    accuracy = [fold["accuracy"] for fold in folds]
    return {
        "grid": config.search_grid,
        "outer_folds": len(outer),
        "inner_folds": inner_folds,
        "fold_accuracy": accuracy,
        "accuracy_mean": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy, ddof=1)),
        "accuracy_ci95": list(corrected_interval(np.asarray(accuracy), split_ratio(outer))),
        "test_train_ratio": split_ratio(outer),
        "chosen_params": [fold["chosen"] for fold in folds],
        "non_nested_best_score": None if everything is None else float(everything.best_score_),
        "non_nested_best_params": None
        if everything is None
        else {k.removeprefix("model__"): v for k, v in everything.best_params_.items()},
    }


def seed_spread(model: Any, dataset: Dataset, protocol: Protocol, config: FamilyConfig) -> dict[str, Any] | None:
    """The headline estimate re-measured on ``spread_seeds`` other fold seeds: the nested-CV mean of a tuned recipe
    (a grid and nested CV in the protocol), otherwise the repeated-CV mean.

    One seed's figure is one draw of the folds: the spread over seeds says how much of a difference is the folds.
    """
    if protocol.spread_seeds < 1:
        return None
    seeds = [protocol.seed + i for i in range(1, protocol.spread_seeds + 1)]
    tuned = bool(protocol.nested and config.search_grid and config.model_type.is_fitted)
    accuracy = []
    for seed in seeds:
        other = replace(protocol, seed=seed)
        splits = repeated_splits(dataset, other)
        if tuned:
            nested = nested_cv(model, dataset, other, config, splits[: other.folds], unnested=False)
            assert nested is not None  # a tuned recipe always has nested CV
            accuracy.append(nested["accuracy_mean"])
        else:
            accuracy.append(repeated_cv(model, dataset, other, splits)["accuracy_mean"])
    return {"seeds": seeds, "estimate": "nested CV" if tuned else "repeated CV", "accuracy_mean": accuracy}


def latency(predict_proba: Callable[[np.ndarray], Any], rows: np.ndarray, budget_s: float) -> dict[str, float]:
    """Median and p95 wall time of one ``predict_proba`` call on one row and on 1000 rows, on this machine."""
    single = rows[:1]
    batch = np.resize(rows, (1000, rows.shape[1]))

    def measure(payload: np.ndarray, minimum: int) -> list[float]:
        for _ in range(3):
            predict_proba(payload)
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < minimum or (time.perf_counter() < deadline and len(times) < 5000):
            start = time.perf_counter_ns()
            predict_proba(payload)
            times.append((time.perf_counter_ns() - start) / 1e3)
        return times

    one, thousand = measure(single, 20), measure(batch, 5)
    return {
        "single_row_us_median": float(np.median(one)),
        "single_row_us_p95": float(np.percentile(one, 95)),
        "single_row_calls": len(one),
        "batch_1000_ms_median": float(np.median(thousand)) / 1e3,
        "batch_1000_ms_p95": float(np.percentile(thousand, 95)) / 1e3,
        "batch_1000_calls": len(thousand),
    }


def memory(registry_dir: Path, model_type: str) -> dict[str, int] | None:
    """Resident memory a fresh process gains by loading the model (pipeline and fast path) and predicting 1000 rows.

    Libraries are imported before the first reading, so only the model is counted. Linux only (None elsewhere).
    """
    if not Path("/proc/self/status").exists():
        return None
    done = subprocess.run(  # noqa: S603 - our own interpreter and probe
        [sys.executable, "-m", "research.experiments.memory_probe", str(registry_dir), model_type],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    readings = json.loads(done.stdout.strip().splitlines()[-1])
    before = readings["before"]
    return {
        "pipeline_bytes": readings.get("pipeline", readings["loaded"]) - before,
        "load_bytes": readings["loaded"] - before,
        "load_and_predict_bytes": readings["after_predict"] - before,
    }
