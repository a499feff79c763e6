"""One run of one model family: validate the recipe, fit it on every row, save the candidate, write the results.

A run writes ``<results>/<run-id>/`` (metrics.json, report.md, PNG figures) and the candidate
``<models>/<run-id>/<model_type>/`` (the artifact, its fast path and its manifest, in registry layout, so
``registry.load_artifact(<models>/<run-id>, model_type)`` verifies it exactly as the service would).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.reference import golden_predictions
from ml_production_service.registry import load_artifact, load_fast_path, model_dir, read_manifest, save_model
from research.experiments import ablation, evaluation, figures, monitoring
from research.experiments.common import (
    FamilyConfig,
    build_manifest,
    code_version,
    fit_final,
    load_dataset,
    model_from_recipe,
    recipe_hyperparameters,
    relative,
)
from research.experiments.environment import library_versions, machine
from research.experiments.evaluation import Protocol
from research.experiments.results import ManifestMetrics, RunMetrics, read_metrics, write_metrics
from research.experiments.run_report import render_report

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FAMILY_ORDER = list(ModelType)


@dataclass(frozen=True)
class Run:
    """A finished run: its id, its results folder and the contents of its metrics.json.

    ``metrics`` is the JSON as a dict (what the gate reads); ``record`` the same, validated and typed.
    """

    run_id: str
    directory: Path
    metrics: dict[str, Any]

    @cached_property
    def record(self) -> RunMetrics:
        """metrics.json as ``results.RunMetrics`` (ValidationError naming the field if it does not match)."""
        return RunMetrics.model_validate(self.metrics)

    @property
    def model_type(self) -> ModelType:
        """The family the run validated."""
        return ModelType(self.metrics["model_type"])

    @property
    def comparable_key(self) -> tuple[Any, ...]:
        """Runs with equal keys were scored on the same rows and the same folds."""
        return (self.metrics["data"]["sha256"], tuple(sorted(self.metrics["protocol_key"].items())))


def list_runs(results_dir: Path) -> list[Run]:
    """Every run under ``results_dir``, oldest first."""
    runs = []
    for path in sorted(results_dir.glob(f"*/{METRICS_FILE}")):
        record = read_metrics(path)
        runs.append(Run(record.run_id, path.parent, record.model_dump(mode="json")))
    return sorted(runs, key=lambda run: (run.metrics["created_at"], run.run_id))


def latest_runs(results_dir: Path, like: Run | None = None) -> dict[ModelType, Run]:
    """The newest run of each family, in family order; with ``like``, only runs comparable with it."""
    latest: dict[ModelType, Run] = {}
    for run in list_runs(results_dir):
        if like is None or run.comparable_key == like.comparable_key:
            latest[run.model_type] = run
    if like is not None:
        latest[like.model_type] = like
    return {t: latest[t] for t in FAMILY_ORDER if t in latest}


def find_run(results_dir: Path, model_type: ModelType, run_id: str | None) -> Run:
    """The run ``run_id`` (or the newest of ``model_type`` when None or 'latest'); LookupError if absent."""
    runs = [run for run in list_runs(results_dir) if run.model_type is model_type]
    if run_id in (None, "", "latest"):
        if not runs:
            raise LookupError(f"no run of {model_type.value} in {results_dir}")
        return runs[-1]
    for run in runs:
        if run.run_id == run_id:
            return run
    raise LookupError(f"no run {run_id!r} of {model_type.value} in {results_dir}")


def _new_run_id(model_type: ModelType, created: datetime, results_dir: Path) -> str:
    base = f"{model_type.value}-{created:%Y%m%dT%H%M%SZ}"
    run_id, suffix = base, 1
    while (results_dir / run_id).exists():
        suffix += 1
        run_id = f"{base}-{suffix}"
    return run_id


def run_experiment(config: FamilyConfig, protocol: Protocol, results_dir: Path, models_dir: Path) -> Run:
    """Validate ``config``'s recipe under ``protocol``, fit it on every row, save the candidate, write results."""
    started = time.perf_counter()
    created = datetime.now(UTC).replace(microsecond=0)
    run_id = _new_run_id(config.model_type, created, results_dir)
    directory = results_dir / run_id
    directory.mkdir(parents=True)
    dataset = load_dataset(protocol.every)
    model = config.build()
    splits = evaluation.repeated_splits(dataset, protocol)
    print(f"{run_id}: {len(dataset.targets)} rows, seed {config.seed}, {config.estimator}")

    phases = _Phases()
    with phases("loocv"):
        loocv = evaluation.loocv(model, dataset, protocol)
    with phases("repeated_cv"):
        fold_probabilities = evaluation.repeated_cv_probabilities(model, dataset, protocol, splits)
        repeated = evaluation.repeated_cv(model, dataset, protocol, splits, fold_probabilities)
    with phases("oob"):
        oob = evaluation.oob(model, dataset) if config.model_type.is_fitted else None
    with phases("nested_cv"):
        nested = evaluation.nested_cv(model, dataset, protocol, config, splits[: protocol.folds])
    with phases("seed_spread"):
        spread = evaluation.seed_spread(model, dataset, protocol, config)
    with phases("ablation"):
        ablated = (
            ablation.ablate(model, dataset, protocol, splits, repeated["fold_accuracy"])
            if protocol.ablation and config.model_type.is_fitted
            else None
        )

    # The promoted model is the validated recipe itself: same hyperparameters, every row, nothing held out.
    fit_started = time.perf_counter()
    final = fit_final(clone(model), dataset.features, dataset.targets)
    fit_seconds = time.perf_counter() - fit_started
    training_accuracy = float(np.mean(final.predict(dataset.features) == dataset.targets))
    manifest_metrics = _manifest_metrics(run_id, protocol, loocv, repeated, oob, nested, training_accuracy)
    manifest = build_manifest(
        config.model_type,
        config.estimator,
        recipe_hyperparameters(final),
        manifest_metrics,
        dataset.features,
        dataset.targets,
        dataset.class_labels,
        seed=config.seed,
    ).model_copy(
        update={
            # The baseline production is watched against, and the answers every start-up checks: computed here, so
            # that promotion copies them with the candidate, byte for byte.
            "reference": monitoring.run_reference(
                config.model_type, dataset, final, protocol, splits, fold_probabilities
            ),
            "golden": golden_predictions(final.predict_proba),
        }
    )
    candidates = models_dir / run_id
    with phases("save_candidate"):
        saved = save_model(candidates, manifest, final if config.model_type.is_fitted else None)
    with phases("serving"):
        serving = _measure_serving(candidates, config.model_type, dataset.features, protocol)
    reproduces = bool(
        np.array_equal(
            clone(model_from_recipe(saved.recipe))
            .fit(dataset.features, dataset.targets)
            .predict_proba(dataset.features),
            final.predict_proba(dataset.features),
        )
    )

    metrics: dict[str, Any] = {
        "run_id": run_id,
        "model_type": config.model_type.value,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "data": {
            "source": "sklearn.datasets.load_iris",
            "sha256": dataset.fingerprint,
            "rows": len(dataset.targets),
            "row_ids": "all" if protocol.every == 1 else dataset.row_ids.tolist(),
            "class_labels": dataset.class_labels,
            "class_counts": np.bincount(dataset.targets).tolist(),
            "feature_names": list(FEATURE_NAMES),
        },
        "code": code_version(),
        "libraries": library_versions(),
        "machine": machine(),
        "seed": config.seed,
        "config": {"estimator": config.estimator, "description": config.description},
        "parameters": recipe_hyperparameters(final),
        "search_grid": config.search_grid or None,
        "protocol": protocol.to_json(),
        "protocol_key": protocol.comparable_key(),
        "loocv": loocv,
        "repeated_cv": repeated,
        "oob": oob,
        "nested_cv": nested,
        "seed_spread": spread,
        "ablation": ablated,
        "training": {"accuracy_on_training_rows": training_accuracy, "fit_seconds": fit_seconds},
        "candidate": {
            "directory": relative(candidates / config.model_type.value),
            "manifest_version": saved.version,
            "sha256": saved.sha256,
            "fast_path_sha256": saved.fast_path.sha256 if saved.fast_path else None,
            "recipe_reproduces_artifact": reproduces,
        },
        "serving": serving,
    }
    run = Run(run_id, directory, metrics)
    with phases("figures"):
        metrics["figures"] = _write_figures(run, final, results_dir)
    metrics["phase_seconds"] = phases.seconds
    metrics["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    run = Run(run_id, directory, write_metrics(directory / METRICS_FILE, metrics))
    (directory / REPORT_FILE).write_text(render_report(run.record), encoding="utf-8")
    return run


class _Phases:
    """Wall time of each phase of a run (``with phases("name"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name = ""
        self._started = 0.0

    def __call__(self, name: str) -> _Phases:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.seconds[self._name] = round(time.perf_counter() - self._started, 2)


def _manifest_metrics(
    run_id: str,
    protocol: Protocol,
    loocv: dict[str, Any],
    repeated: dict[str, Any],
    oob: dict[str, Any] | None,
    nested: dict[str, Any] | None,
    training_accuracy: float,
) -> dict[str, Any]:
    """The validation numbers the served manifest carries (what /model shows, what the model card reads)."""
    return ManifestMetrics(
        run_id=run_id,
        loocv_accuracy=loocv["accuracy"],
        loocv_accuracy_ci95=loocv["accuracy_ci95"],
        loocv_macro_f1=loocv["macro_f1"],
        cv_accuracy_mean=repeated["accuracy_mean"],
        cv_accuracy_std=repeated["accuracy_std"],
        cv_accuracy_ci95=repeated["accuracy_ci95"],
        cv_protocol=f"repeated stratified {protocol.folds}-fold x {protocol.repeats}, seed {protocol.seed}",
        cv_folds=protocol.folds,
        cv_repeats=protocol.repeats,
        cv_seed=protocol.seed,
        oob_accuracy=None if oob is None else oob["accuracy"],
        nested_cv_accuracy_mean=None if nested is None else nested["accuracy_mean"],
        nested_cv_accuracy_ci95=None if nested is None else nested["accuracy_ci95"],
        training_accuracy=training_accuracy,
    ).model_dump(exclude_none=True)


def _measure_serving(candidates: Path, model_type: ModelType, rows: np.ndarray, protocol: Protocol) -> dict[str, Any]:
    """Latency of what the service would load from the candidate folder (verified as the service verifies it)."""
    folder = model_dir(candidates, model_type)
    served: dict[str, Any] = {}
    if not model_type.is_fitted:
        served["rules"] = evaluation.latency(
            HeuristicPredictor(read_manifest(candidates, model_type)).predict_proba, rows, protocol.timing_budget_s
        )
    else:
        pipeline, manifest = load_artifact(candidates, model_type)
        served["pipeline"] = evaluation.latency(pipeline.predict_proba, rows, protocol.timing_budget_s)
        fast = load_fast_path(candidates, manifest, pipeline)
        if fast is not None:
            served["fast_path"] = evaluation.latency(fast.predict_proba, rows, protocol.timing_budget_s)
    return {
        "latency": served,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "artifact_bytes": {path.name: path.stat().st_size for path in sorted(folder.iterdir())},
        "memory": evaluation.memory(candidates, model_type.value) if protocol.measure_memory else None,
    }


def _write_figures(run: Run, final: Any, results_dir: Path) -> list[str]:
    metrics, directory, name = run.metrics, run.directory, run.model_type.value
    labels = metrics["data"]["class_labels"]
    written = [
        figures.confusion_matrix(
            metrics["loocv"]["confusion_matrix"],
            labels,
            f"{name}: leave-one-out predictions",
            directory / "confusion_matrix.png",
        )
    ]
    estimator = final[-1] if run.model_type.is_fitted else None
    if run.model_type is ModelType.DECISION_TREE:
        written.append(
            figures.tree(
                estimator, labels, f"{name} fitted on all {metrics['data']['rows']} rows", directory / "tree.png"
            )
        )
    if estimator is not None:
        importance = figures.importances(
            estimator, f"{name}: feature importances", directory / "feature_importances.png"
        )
        written += [importance] if importance is not None else []
    written.append(cv_scores_figure(latest_runs(results_dir, like=run), directory / "cv_scores.png"))
    return [path.name for path in written]


def cv_scores_figure(comparable: dict[ModelType, Run], path: Path) -> Path:
    """The fold accuracies of runs scored on the same folds, side by side."""
    key = next(iter(comparable.values())).metrics["protocol_key"]
    scores = {t.value: r.metrics["repeated_cv"]["fold_accuracy"] for t, r in comparable.items()}
    title = f"{key['repeats']}x{key['folds']}-fold CV accuracy, same folds (latest run of each model)"
    return figures.cv_distributions(scores, title, path)
