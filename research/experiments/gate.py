"""The promotion gate: may a run's candidate replace production? Judged on the same folds, with the paired test.

The candidate is promoted only if all three checks pass (``FORCE=1`` overrides, and the record says so):

(a) **non-inferior to production**: the one-sided 95% lower bound of the mean fold-by-fold difference
    (candidate - production) over the candidate's repeated k-fold, Nadeau-Bengio corrected
    (``stats.one_sided_bounds``), is above ``-margin``. One-sided because the question is one-sided (is the
    candidate worse by more than the margin?); it is the lower end of the two-sided 90% interval, at the usual 5%
    error rate of a one-sided test. Production's fold scores come from its run's metrics.json when that run is in
    the results with the same data and folds, otherwise from re-validating its manifest's recipe on the candidate's
    folds. The first promotion (no production yet) skips (a).
(b) **floors**: the candidate's repeated k-fold mean accuracy is at least ``min_accuracy`` and every class's
    leave-one-out recall (metrics.json ``loocv.per_class``: one out-of-sample prediction per row) at least
    ``min_class_recall``.
(c) **not shown worse than the heuristic**: the same paired test against the heuristic's fold scores (its latest
    run on the same folds, or computed: the rules are code and instant) must not show the candidate worse by more
    than the margin: the one-sided 95% *upper* bound is not below ``-margin``. Not a non-inferiority test: the
    heuristic's thresholds were read off these rows, so its fold scores are in-sample, and asking a fitted model to
    prove itself no worse than an in-sample score would refuse models that tie it. Skipped when the candidate is the
    heuristic.

The margin and floors are the recipe's ``"gate"`` section (``research/configs/<type>.json``), overridden by
``--margin`` / ``MARGIN=``; the defaults are ``GatePolicy``'s. The whole decision (every statistic, the margin, the
floors, forced or not) is a ``GateRecord``: promotion stores it in the manifest's ``metrics["gate"]`` and writes it
next to the run's metrics.json (``gate.json``, ``gate.md``; ``gate_summary(run)`` renders it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_production_service.configs import ModelType
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import ManifestError
from ml_production_service.registry import model_dir, read_manifest
from research.experiments import evaluation
from research.experiments.common import CONFIG_DIR, HeuristicRules, load_dataset, model_from_recipe
from research.experiments.evaluation import Protocol
from research.experiments.experiment import Run, latest_runs, list_runs
from research.experiments.stats import non_inferiority_p, one_sided_bounds
from research.experiments.text import p_value, pct, table

GATE_FILE = "gate.json"
GATE_REPORT = "gate.md"
MANIFEST_KEY = "gate"
"""Where the record lives in the promoted manifest: ``metrics["gate"]``."""


class GateError(RuntimeError):
    """The gate cannot be evaluated (a broken gate section, fold scores that cannot be rebuilt, ...)."""


class GatePolicy(BaseModel):
    """The gate's margin and floors (a recipe's ``"gate"`` section; fractions, not points)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(0.01, ge=0.0, lt=1.0)
    """How much worse than production (or than the heuristic) the candidate may be: 0.01 is one point."""
    min_accuracy: float = Field(0.90, ge=0.0, le=1.0)
    """Floor on the candidate's repeated k-fold mean accuracy."""
    min_class_recall: float = Field(0.80, ge=0.0, le=1.0)
    """Floor on every class's leave-one-out recall."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Of each one-sided bound."""

    @classmethod
    def load(cls, model_type: ModelType, config_dir: Path = CONFIG_DIR, margin: float | None = None) -> GatePolicy:
        """The ``"gate"`` section of ``<config_dir>/<type>.json`` (defaults where absent); ``margin`` overrides."""
        path = config_dir / f"{model_type.value}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8")).get("gate") or {} if path.is_file() else {}
            return cls.model_validate({**raw, **({} if margin is None else {"margin": margin})})
        except (ValidationError, json.JSONDecodeError, AttributeError) as error:
            raise GateError(f"the gate section of {path} (or --margin) is invalid: {_first_error(error)}") from None

    def bound_text(self) -> str:
        """What the bounds are, in words."""
        return (
            f"one-sided {self.confidence:.0%} bounds (the two-sided {2 * self.confidence - 1:.0%} interval) of the "
            "Nadeau-Bengio corrected paired t over the same folds"
        )


def _first_error(error: Exception) -> str:
    return str(error.errors()[0]["msg"]) if isinstance(error, ValidationError) else str(error)


class PairedComparison(BaseModel):
    """The candidate against one other model on the same folds: the difference, its bounds, the rule and verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    against: str
    """``production`` or ``heuristic``."""
    source: str
    """Where the other model's fold scores came from."""
    rule: str
    verdict: str
    """The bound against the margin, or why the check failed."""
    candidate_mean: float
    other_mean: float
    difference: float
    """Mean of candidate - other over the folds."""
    lower_bound: float
    upper_bound: float
    p_value: float
    """Two-sided, of "no difference"."""
    non_inferiority_p: float
    """One-sided, of "the candidate is worse by the margin or more"."""
    folds: int
    passed: bool


class Floors(BaseModel):
    """Check (b): the candidate's accuracy and each class's recall against their floors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy: float
    accuracy_source: str
    min_accuracy: float
    class_recall: dict[str, float]
    recall_source: str
    min_class_recall: float
    failures: list[str]
    passed: bool


class GateRecord(BaseModel):
    """The gate's decision and every statistic it used; stored in the promoted manifest as ``metrics["gate"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    model_type: ModelType
    allowed: bool
    """What the gate decided (before FORCE)."""
    forced: bool = False
    """Promoted although the gate refused (FORCE=1)."""
    summary: str
    reasons: list[str]
    """Each failed check, in words (empty when allowed)."""
    policy: GatePolicy
    bounds: str
    protocol: str
    test_train_ratio: float
    production: PairedComparison | None
    production_note: str
    floors: Floors
    heuristic: PairedComparison | None
    heuristic_note: str

    def as_forced(self) -> GateRecord:
        """The same record, marked as promoted past the gate."""
        return self.model_copy(update={"forced": not self.allowed})


@dataclass(frozen=True)
class Evidence:
    """What the gate reads of a candidate: its accuracy on each fold, and what the floors check."""

    run_id: str
    model_type: ModelType
    fold_accuracy: np.ndarray
    test_train_ratio: float
    protocol: str
    accuracy: float
    accuracy_source: str
    class_recall: dict[str, float]
    recall_source: str

    @classmethod
    def of_run(cls, run: Run) -> Evidence:
        """A run's repeated k-fold scores, their mean, and its leave-one-out recall of each class."""
        record = run.record
        key, repeated = record.protocol_key, record.repeated_cv
        return cls(
            run_id=run.run_id,
            model_type=run.model_type,
            fold_accuracy=np.asarray(repeated.fold_accuracy, dtype=np.float64),
            test_train_ratio=repeated.test_train_ratio,
            protocol=f"repeated stratified {key['folds']}-fold x {key['repeats']}, seed {key['seed']}, every "
            f"{key['every']} of the iris rows",
            accuracy=repeated.accuracy_mean,
            accuracy_source=f"{key['repeats']}x{key['folds']}-fold mean",
            class_recall={label: scores.recall for label, scores in record.loocv.per_class.items()},
            recall_source=f"leave-one-out predictions of the {record.data.rows} rows",
        )


@dataclass(frozen=True)
class Baseline:
    """Another model's accuracy on the candidate's folds, and where it came from.

    Without scores the check is skipped (``note`` says why), or fails when ``refuse`` is set.
    """

    note: str
    scores: np.ndarray | None = None
    refuse: bool = False


def evaluate(run: Run, registry_dir: Path, results_dir: Path, policy: GatePolicy, jobs: int = 1) -> GateRecord:
    """Judge ``run``'s candidate against ``registry_dir``'s production model and the heuristic, under ``policy``."""
    return decide(
        Evidence.of_run(run),
        policy,
        production_baseline(run, registry_dir, results_dir, jobs),
        heuristic_baseline(run, results_dir, jobs),
    )


def decide(candidate: Evidence, policy: GatePolicy, production: Baseline, heuristic: Baseline) -> GateRecord:
    """The three checks on ``candidate``, and the record of every number they used."""
    compared: dict[str, PairedComparison | None] = {}
    failed: dict[str, list[str]] = {}
    for name, baseline in (("production", production), ("heuristic", heuristic)):
        comparison = None if baseline.scores is None else _compare(name, baseline, candidate, policy)
        compared[name] = comparison
        refused = comparison is not None and not comparison.passed
        failed[name] = [comparison.verdict] if comparison and refused else [baseline.note] if baseline.refuse else []
    floors = _floors(candidate, policy)
    reasons = failed["production"] + floors.failures + failed["heuristic"]
    parts = [
        f"vs {name} {_points(comparison.difference)}, {comparison.verdict}" if comparison else baseline.note
        for (name, comparison), baseline in zip(compared.items(), (production, heuristic), strict=True)
    ]
    parts.insert(
        1, f"accuracy {pct(floors.accuracy, 2)}, lowest class recall {pct(min(floors.class_recall.values()), 2)}"
    )
    return GateRecord(
        run_id=candidate.run_id,
        model_type=candidate.model_type,
        allowed=not reasons,
        summary=f"gate {'refused' if reasons else 'passed'}: " + "; ".join(parts),
        reasons=reasons,
        policy=policy,
        bounds=policy.bound_text(),
        protocol=candidate.protocol,
        test_train_ratio=candidate.test_train_ratio,
        production=compared["production"],
        production_note=production.note,
        floors=floors,
        heuristic=compared["heuristic"],
        heuristic_note=heuristic.note,
    )


def _points(value: float) -> str:
    """A difference of accuracies in percentage points: -0.0105 -> '-1.05 pt'."""
    return f"{100 * value:+.2f} pt" if value else "0.00 pt"


def _compare(against: str, baseline: Baseline, candidate: Evidence, policy: GatePolicy) -> PairedComparison:
    """Check (a) against production (non-inferiority) or (c) against the heuristic (not shown worse)."""
    scores, other = candidate.fold_accuracy, np.asarray(baseline.scores)
    if len(other) != len(scores):
        raise GateError(f"{against} has {len(other)} fold scores, the candidate {len(scores)}: not the same folds")
    test = one_sided_bounds(scores, other, candidate.test_train_ratio, policy.confidence)
    lower, upper = test.interval
    margin = _points(-policy.margin)
    if against == "heuristic":
        rule = "refused only if shown worse by more than the margin: upper bound >= -margin"
        passed = upper >= -policy.margin
        verdict = (
            f"upper bound {_points(upper)} >= {margin}"
            if passed
            else f"shown worse than the heuristic by more than the margin: upper bound {_points(upper)} < {margin}"
        )
    else:
        rule = "non-inferior: lower bound > -margin"
        passed = lower > -policy.margin
        verdict = (
            f"lower bound {_points(lower)} > {margin}"
            if passed
            else f"not shown non-inferior to {against}: lower bound {_points(lower)} <= {margin}"
        )
    return PairedComparison(
        against=against,
        source=baseline.note,
        rule=rule,
        verdict=verdict,
        candidate_mean=float(np.mean(scores)),
        other_mean=float(np.mean(other)),
        difference=test.difference,
        lower_bound=lower,
        upper_bound=upper,
        p_value=test.p_value,
        non_inferiority_p=non_inferiority_p(scores, other, candidate.test_train_ratio, policy.margin),
        folds=test.folds,
        passed=passed,
    )


def production_baseline(run: Run, registry_dir: Path, results_dir: Path, jobs: int = 1) -> Baseline:
    """Production's fold scores for check (a); none on the first promotion; a refusal if its manifest is broken."""
    if not model_dir(registry_dir, run.model_type).exists():
        return Baseline("no production model yet: first promotion, so (a) is skipped")
    try:
        manifest = read_manifest(registry_dir, run.model_type)
    except ManifestError as error:
        return Baseline(f"production's manifest cannot be read, so nothing can be compared ({error})", refuse=True)
    scores, source = production_fold_scores(manifest, run, results_dir, jobs)
    return Baseline(source, scores)


def production_fold_scores(
    production: ModelManifest, run: Run, results_dir: Path, jobs: int = 1
) -> tuple[np.ndarray, str]:
    """Production's accuracy on each of the candidate's folds, and where it came from."""
    production_run = production.metrics.get("run_id")
    for recorded in list_runs(results_dir):
        if recorded.run_id == production_run and recorded.comparable_key == run.comparable_key:
            scores = np.asarray(recorded.record.repeated_cv.fold_accuracy, dtype=np.float64)
            return scores, f"run {production_run}'s metrics.json (same data and folds)"
    try:
        model = model_from_recipe(production.recipe)
    except (KeyError, TypeError, ValueError) as error:
        raise GateError(f"production's recipe {production.recipe.estimator} cannot be rebuilt: {error}") from None
    what = f"re-validating its recipe ({production.recipe.estimator}) on the candidate's folds"
    return fold_scores(model, run, jobs), what


def heuristic_baseline(run: Run, results_dir: Path, jobs: int = 1) -> Baseline:
    """The heuristic's fold scores for check (c): its latest run on the same data and folds, else computed."""
    if not run.model_type.is_fitted:
        return Baseline("the candidate is the heuristic, so (c) is skipped")
    recorded = latest_runs(results_dir, like=run).get(ModelType.HEURISTIC)
    if recorded is not None:
        scores = np.asarray(recorded.record.repeated_cv.fold_accuracy, dtype=np.float64)
        return Baseline(f"run {recorded.run_id}'s metrics.json (same data and folds)", scores)
    return Baseline("computed on the candidate's folds (the rules are code)", fold_scores(HeuristicRules(), run, jobs))


def fold_scores(model: object, run: Run, jobs: int = 1) -> np.ndarray:
    """``model``'s accuracy on each fold of ``run``'s repeated k-fold (the same rows, the same splits)."""
    key, rows = run.record.protocol_key, run.record.data.sha256
    protocol = Protocol(folds=key["folds"], repeats=key["repeats"], seed=key["seed"], every=key["every"], jobs=jobs)
    dataset = load_dataset(protocol.every)
    if dataset.fingerprint != rows:
        raise GateError(
            f"the rows of run {run.run_id} (sha256 {rows}) are not the data loaded now "
            f"({dataset.fingerprint}): its folds cannot be rebuilt"
        )
    splits = evaluation.repeated_splits(dataset, protocol)
    return np.asarray(evaluation.repeated_cv(model, dataset, protocol, splits)["fold_accuracy"], dtype=np.float64)


def _floors(candidate: Evidence, policy: GatePolicy) -> Floors:
    """Check (b): the accuracy and every class's recall against their floors."""
    failures = []
    if candidate.accuracy < policy.min_accuracy:
        failures.append(f"accuracy {pct(candidate.accuracy, 2)} is below the floor {pct(policy.min_accuracy, 2)}")
    failures += [
        f"{label} recall {pct(value, 2)} is below the floor {pct(policy.min_class_recall, 2)}"
        for label, value in candidate.class_recall.items()
        if value < policy.min_class_recall
    ]
    return Floors(
        accuracy=candidate.accuracy,
        accuracy_source=candidate.accuracy_source,
        min_accuracy=policy.min_accuracy,
        class_recall=candidate.class_recall,
        recall_source=candidate.recall_source,
        min_class_recall=policy.min_class_recall,
        failures=failures,
        passed=not failures,
    )


def render(record: GateRecord) -> str:
    """The record as Markdown: the verdict, the three checks and the numbers they used."""
    verdict = "FORCED past the gate (FORCE=1)" if record.forced else ("passed" if record.allowed else "refused")
    rows = []
    for name, comparison, note in (
        ("(a) production", record.production, record.production_note),
        ("(c) heuristic", record.heuristic, record.heuristic_note),
    ):
        if comparison is None:
            rows.append([name, "—", "—", "—", "—", note])
            continue
        rows.append(
            [
                name,
                f"{pct(comparison.candidate_mean, 2)} vs {pct(comparison.other_mean, 2)}",
                _points(comparison.difference),
                f"[{_points(comparison.lower_bound)}, {_points(comparison.upper_bound)}]",
                f"{p_value(comparison.p_value)} / {p_value(comparison.non_inferiority_p)}",
                f"{'pass' if comparison.passed else 'FAIL'}: {comparison.rule}; fold scores from {comparison.source}",
            ]
        )
    floors = record.floors
    recalls = ", ".join(f"{label} {pct(value)}" for label, value in floors.class_recall.items())
    lines = [
        f"**Gate: {verdict}** for run `{record.run_id}` ({record.model_type.value}), margin "
        f"{100 * record.policy.margin:.2f} pt; {record.bounds}; {record.protocol}, test/train ratio "
        f"{record.test_train_ratio:.3f}.",
        "",
        table(
            [
                "check",
                "mean accuracy (candidate vs other)",
                "difference",
                "bounds",
                "p (no difference / worse by margin)",
                "verdict",
            ],
            rows,
        ),
        "",
        f"(b) floors: {'pass' if floors.passed else 'FAIL'}: accuracy {pct(floors.accuracy, 2)} "
        f"({floors.accuracy_source}; floor {pct(floors.min_accuracy)}), class recall {recalls} "
        f"({floors.recall_source}; floor {pct(floors.min_class_recall)}).",
    ]
    if record.reasons:
        lines += ["", "Refused because: " + "; ".join(record.reasons) + "."]
    return "\n".join(lines) + "\n"


def write(run: Run, record: GateRecord) -> None:
    """``gate.json`` and ``gate.md`` next to the run's metrics.json."""
    (run.directory / GATE_FILE).write_text(record.model_dump_json(indent=1) + "\n", encoding="utf-8")
    (run.directory / GATE_REPORT).write_text(render(record), encoding="utf-8")


def read(run: Run) -> GateRecord | None:
    """The gate record written when the run was promoted, or None (never promoted, or made before the gate)."""
    path = run.directory / GATE_FILE
    return GateRecord.model_validate_json(path.read_bytes()) if path.is_file() else None


def gate_summary(run: Run) -> str | None:
    """The Markdown of the run's gate decision (for its report), or None if the run was never promoted."""
    record = read(run)
    return None if record is None else render(record)
