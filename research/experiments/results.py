"""A run's metrics.json as typed records, read and written here only; and what its numbers mean, decided once.

``RunMetrics`` is the schema of metrics.json (``read_metrics`` / ``write_metrics``; a file that does not match it
fails to load, naming the field), and ``ManifestMetrics`` the validation numbers a promoted manifest carries.
``headline`` says which accuracy is the estimate: the report, the journey, the README table, the console and the
model cards all quote a run through it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ml_production_service.configs import ModelType
from research.experiments.text import interval, pct


@dataclass(frozen=True)
class Headline:
    """The accuracy to quote for a run, its 95% interval, what it is, and why it is the one quoted."""

    accuracy: float
    ci95: list[float]
    source: str
    why: str

    def text(self) -> str:
        """'96.0% [93.1, 98.9] (nested CV)'."""
        return f"{pct(self.accuracy)} {interval(self.ci95)} ({self.source})"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataRecord(_Record):
    """Which rows: their source, sha256, count, ids (``all`` or a list), classes and feature names."""

    source: str
    sha256: str
    rows: int
    row_ids: str | list[int]
    class_labels: list[str]
    class_counts: list[int]
    feature_names: list[str]


class CodeRecord(_Record):
    """Which code: the git commit, whether the tree differed from it, the package version, a hash of the source."""

    git_commit: str | None
    git_dirty: bool
    package_version: str
    source_sha256: str


class MachineRecord(_Record):
    """Where: CPU model, cores, platform."""

    cpu: str
    cores: int | None
    platform: str


class ConfigRecord(_Record):
    """The recipe's estimator and description."""

    estimator: str
    description: str


class ProtocolRecord(_Record):
    """``evaluation.Protocol`` as run (fields added later default to what older runs did)."""

    folds: int
    repeats: int
    seed: int
    every: int
    nested: bool
    inner_folds: int | None
    timing_budget_s: float
    measure_memory: bool
    jobs: int
    spread_seeds: int = 0
    ablation: bool = False


class ClassScores(_Record):
    """One class's leave-one-out precision, recall, F1 and support."""

    precision: float
    recall: float
    f1: float
    support: int


class Misclassified(_Record):
    """A row leave-one-out got wrong."""

    row_id: int
    true: str
    predicted: str
    probabilities: list[float]


class LoocvRecord(_Record):
    """Leave-one-out: accuracy with its Wilson interval, per-class scores, confusion matrix, wrong rows."""

    accuracy: float
    accuracy_ci95: list[float]
    correct: int
    rows: int
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    misclassified: list[Misclassified]
    predicted: list[int]


class RepeatedCvRecord(_Record):
    """Repeated stratified k-fold: fold scores, mean, sd and the corrected interval."""

    accuracy_mean: float
    accuracy_std: float
    accuracy_ci95: list[float]
    macro_f1_mean: float
    macro_f1_std: float
    test_train_ratio: float
    fold_accuracy: list[float]
    fold_macro_f1: list[float]


class OobRecord(_Record):
    """Out-of-bag accuracy."""

    accuracy: float
    rows: int


class NestedCvRecord(_Record):
    """Nested CV of grid search then fit, and what an unnested search would claim."""

    grid: dict[str, list[Any]]
    outer_folds: int
    inner_folds: int
    fold_accuracy: list[float]
    accuracy_mean: float
    accuracy_std: float
    accuracy_ci95: list[float]
    test_train_ratio: float
    chosen_params: list[dict[str, Any]]
    non_nested_best_score: float
    non_nested_best_params: dict[str, Any]


class SeedSpreadRecord(_Record):
    """The headline estimate (``nested CV`` or ``repeated CV``) re-measured on other fold seeds."""

    seeds: list[int]
    estimate: str
    accuracy_mean: list[float]


class AblationVariant(_Record):
    """One ablation: what it drops, its accuracy, the paired difference to the full recipe and the verdict."""

    name: str
    kind: str
    drops: list[str]
    accuracy_mean: float
    difference: float
    difference_ci95: list[float]
    p_value: float
    verdict: str


class FeatureCost(_Record):
    """Time per row of each column and of the whole transform."""

    rows_per_batch: int
    ns_per_row: dict[str, float | None]
    transform_ns_per_row: float


class AblationRecord(_Record):
    """Every ablation of a run, the derived-column map and the feature costs."""

    baseline_accuracy_mean: float
    derived_from: dict[str, list[str]]
    variants: list[AblationVariant]
    cost: FeatureCost


class TrainingRecord(_Record):
    """The final fit on every row: its in-sample accuracy and fit time."""

    accuracy_on_training_rows: float
    fit_seconds: float


class CandidateRecord(_Record):
    """The candidate the run saved."""

    directory: str
    manifest_version: str
    sha256: str | None
    fast_path_sha256: str | None
    recipe_reproduces_artifact: bool


class LatencyRecord(_Record):
    """``evaluation.latency``: one ``predict_proba`` call on one row and on 1000 rows, in µs and ms."""

    single_row_us_median: float
    single_row_us_p95: float
    single_row_calls: int
    batch_1000_ms_median: float
    batch_1000_ms_p95: float
    batch_1000_calls: int


class MemoryRecord(_Record):
    """``evaluation.memory``: resident growth of a fresh process, in bytes."""

    pipeline_bytes: int
    load_bytes: int
    load_and_predict_bytes: int


class ServingRecord(_Record):
    """Latency per path (``rules``, or ``pipeline`` and ``fast_path``), load while timing, file sizes and memory."""

    latency: dict[str, LatencyRecord]
    load_average_1m: float
    artifact_bytes: dict[str, int]
    memory: MemoryRecord | None

    @property
    def served(self) -> LatencyRecord:
        """The latency of the path the service uses by default: the fast path when there is one."""
        return self.latency.get("fast_path") or self.latency.get("pipeline") or self.latency["rules"]

    @property
    def model_bytes(self) -> dict[str, int]:
        """The artifact files without the manifest."""
        return {k: v for k, v in self.artifact_bytes.items() if k != "manifest.json"}


class RunMetrics(_Record):
    """The whole metrics.json of a run."""

    run_id: str
    model_type: ModelType
    created_at: str
    data: DataRecord
    code: CodeRecord
    libraries: dict[str, str]
    machine: MachineRecord
    seed: int | None
    config: ConfigRecord
    parameters: dict[str, Any]
    search_grid: dict[str, list[Any]] | None
    protocol: ProtocolRecord
    protocol_key: dict[str, int]
    loocv: LoocvRecord
    repeated_cv: RepeatedCvRecord
    oob: OobRecord | None
    nested_cv: NestedCvRecord | None
    seed_spread: SeedSpreadRecord | None = None
    ablation: AblationRecord | None = None
    training: TrainingRecord
    candidate: CandidateRecord
    serving: ServingRecord
    figures: list[str]
    phase_seconds: dict[str, float]
    elapsed_seconds: float


class ManifestMetrics(BaseModel):
    """The validation numbers a promoted manifest carries (what /model shows); other keys (the gate's) pass through."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    loocv_accuracy: float
    loocv_accuracy_ci95: list[float]
    loocv_macro_f1: float
    cv_accuracy_mean: float
    cv_accuracy_std: float
    cv_accuracy_ci95: list[float]
    cv_protocol: str
    cv_folds: int
    cv_repeats: int
    cv_seed: int
    oob_accuracy: float | None = None
    nested_cv_accuracy_mean: float | None = None
    nested_cv_accuracy_ci95: list[float] | None = None
    training_accuracy: float


def read_metrics(path: Path) -> RunMetrics:
    """A metrics.json, validated (pydantic ValidationError naming the field if it does not match the schema)."""
    return RunMetrics.model_validate_json(path.read_bytes())


def write_metrics(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Validate ``metrics`` against the schema, write it as metrics.json, and return what was written as a dict."""
    record = RunMetrics.model_validate(metrics)
    path.write_text(record.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return record.model_dump(mode="json")


def headline(m: RunMetrics) -> Headline:
    """A tuned recipe's nested-CV estimate; otherwise the repeated k-fold mean (in-sample for the heuristic)."""
    repeated, nested, protocol = m.repeated_cv, m.nested_cv, m.protocol
    if nested:
        return Headline(
            nested.accuracy_mean,
            nested.accuracy_ci95,
            "nested CV",
            f"a grid was searched on these same rows, so the fixed recipe's {protocol.repeats}×{protocol.folds} "
            f"figure can carry selection bias; nested CV ({nested.outer_folds} outer folds) repeats the search "
            "inside each fold and estimates the tuned procedure",
        )
    fitted = m.model_type.is_fitted
    return Headline(
        repeated.accuracy_mean,
        repeated.accuracy_ci95,
        f"{protocol.repeats}×{protocol.folds} CV" + ("" if fitted else ", in-sample"),
        "no grid was searched, so the fixed recipe's repeated k-fold mean is the estimate"
        if fitted
        else "the rules' thresholds were read off these rows and nothing is refitted in a fold: in-sample",
    )


def seed_spread_text(m: RunMetrics) -> str:
    """'95.6%–97.1% over fold seeds 43–47' for the headline's kind of estimate, or '—' when not measured."""
    spread = m.seed_spread
    if not spread or not spread.accuracy_mean:
        return "—"
    values = spread.accuracy_mean
    return f"{pct(min(values))}–{pct(max(values))} over fold seeds {spread.seeds[0]}–{spread.seeds[-1]}"
