"""Model cards (Mitchell et al., 2019, "Model Cards for Model Reporting") for the models a registry serves.

``make research-report`` writes ``<registry>/<type>/MODEL_CARD.md`` beside each manifest (the service reads files
by name, so an extra file changes nothing it loads). A card is rendered from the manifest and, when its run is in
the results folder, the run's metrics.json: every number comes from one of the two, never typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import ManifestError
from ml_production_service.registry import model_dir, read_manifest
from research.experiments import gate
from research.experiments.common import data_fingerprint, load_data
from research.experiments.contract import IRIS_CONTRACT
from research.experiments.experiment import Run, list_runs
from research.experiments.results import ManifestMetrics, headline, seed_spread_text
from research.experiments.run_report import per_class_table
from research.experiments.text import interval, pct, table

CARD_FILE = "MODEL_CARD.md"
DATA_CARD = "research/DATA_CARD.md"
TRAIN_TARGETS = {
    ModelType.HEURISTIC: "eval-heuristic",
    ModelType.DECISION_TREE: "train-decision-tree",
    ModelType.RANDOM_FOREST: "train-random-forest",
    ModelType.XGBOOST: "train-xgboost",
}
"""The make target that validates and promotes each model (mk/research.mk)."""


def _gate(metrics: dict[str, Any]) -> list[str]:
    recorded = metrics.get(gate.MANIFEST_KEY)
    if not recorded:
        return ["Promoted before the gate recorded its decision: no gate statistics are stored for this model."]
    try:
        return [gate.render(gate.GateRecord.model_validate(recorded))]
    except ValidationError:
        # A record in an older shape: show what it holds rather than nothing.
        items = recorded.items() if isinstance(recorded, dict) else [("decision", recorded)]
        return [f"- {key}: {value}" for key, value in items]


def _metrics(manifest: ModelManifest, run: Run | None) -> list[str]:
    if run is None:
        try:
            m = ManifestMetrics.model_validate(manifest.metrics)
        except ValidationError:
            return ["- the manifest records no validation metrics, and its run is not in the results folder"]
        nested = (
            ""
            if m.nested_cv_accuracy_mean is None
            else f", nested CV {pct(m.nested_cv_accuracy_mean)} {interval(m.nested_cv_accuracy_ci95)}"
        )
        return [
            f"- {m.cv_repeats}×{m.cv_folds} CV accuracy {pct(m.cv_accuracy_mean)} {interval(m.cv_accuracy_ci95)}, "
            f"leave-one-out {pct(m.loocv_accuracy)} {interval(m.loocv_accuracy_ci95)}{nested} (from the manifest; "
            f"run {m.run_id} is not in the results folder, so per-class results are not shown)"
        ]
    r = run.record
    top = headline(r)
    return [
        f"- headline accuracy: **{top.text()}**: {top.why}.",
        f"- spread of that estimate over other fold seeds: {seed_spread_text(r)}.",
        f"- repeated stratified {r.protocol.folds}-fold × {r.protocol.repeats} (seed {r.protocol.seed}), fixed "
        f"recipe: {pct(r.repeated_cv.accuracy_mean)} {interval(r.repeated_cv.accuracy_ci95)} (Nadeau-Bengio "
        "corrected 95% interval).",
        f"- leave-one-out: {pct(r.loocv.accuracy)} {interval(r.loocv.accuracy_ci95)} (Wilson 95%), macro F1 "
        f"{r.loocv.macro_f1:.3f}.",
        f"- accuracy on the {r.data.rows} training rows: {pct(r.training.accuracy_on_training_rows)} "
        "(in-sample, not an estimate of accuracy).",
        "",
        "Per class (leave-one-out, one out-of-sample prediction per row):",
        "",
        per_class_table(r.loocv),
    ]


def _ranges(manifest: ModelManifest) -> str:
    if manifest.reference is None:
        return "the manifest has no reference profile, so the training ranges are not recorded"
    profile = manifest.reference.features
    return ", ".join(
        f"{name} {profile[name].min:g}–{profile[name].max:g} cm" for name in FEATURE_NAMES if name in profile
    )


def render_card(manifest: ModelManifest, run: Run | None) -> str:
    """The Markdown model card of one served model."""
    model_type, recipe = manifest.model_type, manifest.recipe
    params = ", ".join(f"`{k}={v}`" for k, v in sorted(recipe.hyperparameters.items()) if v is not None) or "none"
    fast = f"; fast path `{manifest.fast_path.artifact}` (ONNX)" if manifest.fast_path else ""
    kind = (
        "hand-set thresholds on petal length and width (nothing is learned; read off the same 150 rows)"
        if not model_type.is_fitted
        else f"`{recipe.estimator}` over the eight columns of `features.engineer_features`"
    )
    lines = [
        f"# Model card: `{model_type.value}`",
        "",
        f"<!-- Generated by `make research-report` from registry/prd/{model_type.value}/manifest.json and its run's "
        "metrics.json. Do not edit by hand. -->",
        "",
        "## Model details",
        "",
        f"- {kind}; hyperparameters {params}; seed {'none' if recipe.seed is None else recipe.seed}.",
        f"- version {manifest.version}, created {manifest.created_at.isoformat()}, package {manifest.package_version}; "
        f"artifact `{manifest.artifact or 'none (rules in code)'}` (sha256 `{(manifest.sha256 or '—')[:16]}`){fast}.",
        f"- run `{manifest.metrics.get('run_id', 'unknown')}`; classes {', '.join(manifest.class_labels)}.",
        "",
        "## Intended use",
        "",
        "- Classifying an iris flower (setosa, versicolor, virginica) from four measurements in centimetres, as a "
        "demonstration of a production model service: the model answers `/predict` with class probabilities.",
        "- Not for: any other species or measurement unit, decisions about people, or as evidence about botany "
        "beyond Fisher's sample. The service accepts values it was never trained on (see limits).",
        "",
        "## Training data",
        "",
        f"- `{recipe.dataset}` ({recipe.training_rows} rows, sha256 `{(recipe.dataset_sha256 or '—')[:16]}…`): "
        "scikit-learn's bundled copy of Fisher's (1936) iris measurements, 50 rows per class. Licence and provenance: "
        f"[{DATA_CARD}](../../../{DATA_CARD}).",
        "- Checked against the data contract (`research/experiments/contract.py`) before every experiment.",
        "",
        "## Metrics",
        "",
        *_metrics(manifest, run),
        "",
        "## Known limits",
        "",
        f"- Extrapolation: the service accepts every measurement in [{MIN_MEASUREMENT_CM:g}, "
        f"{MAX_MEASUREMENT_CM:g}] cm (`features.MIN/MAX_MEASUREMENT_CM`), but the training rows span only "
        f"{_ranges(manifest)}. Outside those ranges an answer is an extrapolation no validation measured, and its "
        "probabilities do not say so (the drift monitor does).",
        f"- {recipe.training_rows} rows: one row is {100 / (recipe.training_rows or 1):.2f} points, and the 95% "
        "intervals above are several points wide; differences smaller than that between models are noise (see "
        "research/EXPERIMENTS_JOURNEY.md).",
        "- Versicolor and virginica overlap; the rows every model gets wrong are listed in the journey.",
        "- Drift in live traffic is watched against the manifest's reference profile (README, Monitoring).",
        "",
        "## Promotion gate",
        "",
        *_gate(manifest.metrics),
        "",
        "## How to reproduce",
        "",
        f"- `make {TRAIN_TARGETS[model_type]}` validates the recipe `research/configs/{model_type.value}.json`, fits "
        "it on every row and promotes it through the gate; `make run-all-experiments` reruns every experiment "
        "without promotion, and `make research-report` rewrites this card.",
        "- Library versions it was trained with: "
        + ", ".join(f"{k} {v}" for k, v in manifest.library_versions.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_cards(registry_dir: Path, results_dir: Path) -> list[Path]:
    """Write the card of every model with a manifest in ``registry_dir``; the paths written."""
    runs = {run.run_id: run for run in list_runs(results_dir)}
    written = []
    for model_type in ModelType:
        try:
            manifest = read_manifest(registry_dir, model_type)
        except ManifestError:
            continue
        path = model_dir(registry_dir, model_type) / CARD_FILE
        path.write_text(render_card(manifest, runs.get(str(manifest.metrics.get("run_id")))), encoding="utf-8")
        written.append(path)
    return written


def render_data_card() -> str:
    """research/DATA_CARD.md: provenance, licence, the contract and the observed ranges of the training data."""
    features, targets, labels = load_data()
    contract = IRIS_CONTRACT
    rows = [
        [
            f"`{c.name}`",
            c.dtype,
            f"[{c.minimum:g}, {c.maximum:g}]",
            f"{features[:, i].min():g}",
            f"{features[:, i].max():g}",
        ]
        for i, c in enumerate(contract.columns)
    ]
    counts = ", ".join(f"{label} {int((targets == i).sum())}" for i, label in enumerate(labels))
    return "\n".join(
        [
            "# Data card: iris",
            "",
            "<!-- Generated by `make research-report` (research/experiments/model_card.py). Do not edit by hand. -->",
            "",
            "## Provenance",
            "",
            "- Source: `sklearn.datasets.load_iris()`, the copy bundled with scikit-learn "
            '(`sklearn/datasets/data/iris.csv`, described in `sklearn/datasets/descr/iris.rst`): R.A. Fisher, "The '
            'use of multiple measurements in taxonomic problems", Annual Eugenics 7, Part II, 179-188 (1936); donor '
            "Michael Marshall, July 1988. scikit-learn's description says its copy follows Fisher's paper and "
            "differs from the UCI Machine Learning Repository's file in two data points.",
            f"- {len(targets)} rows, sha256 `{data_fingerprint(features, targets)}` (rows and labels as every run "
            f"records it); classes: {counts}.",
            "",
            "## Licence",
            "",
            "- The copy used here ships inside scikit-learn, distributed under the BSD 3-Clause licence (the "
            "`COPYING` file of the installed `scikit_learn-*.dist-info`); the dataset's description carries no "
            "separate licence. The UCI repository lists its iris dataset under CC BY 4.0; that statement is on "
            "UCI's site and was not verifiable offline. Cite Fisher (1936) when publishing results.",
            "",
            "## Contract",
            "",
            "Checked by `research/experiments/contract.py` before every experiment; a broken dataset stops with the "
            "column and the rule it breaks. Allowed range = the range the service accepts.",
            "",
            table(["column", "dtype", "allowed range (cm)", "observed min", "observed max"], rows),
            "",
            f"- labels `{contract.target}`: one of {', '.join(contract.classes)}; at least {contract.min_rows} rows; "
            f"each class holds {contract.min_class_share:.3f} to {contract.max_class_share:.3f} of the rows; no "
            "missing values anywhere.",
            "",
            "## Known limits",
            "",
            "- One small sample of three species, measured to 0.1 cm, so every accuracy has a wide interval; "
            "nothing here says how other populations or other measurers would look.",
            "- Setosa is linearly separable from the other two; versicolor and virginica overlap.",
            "",
        ]
    )
