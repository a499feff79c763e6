"""The promotion gate: the paired non-inferiority test, the floors, the heuristic check and the gate policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_production_service.configs import ModelType
from research.experiments import evaluation
from research.experiments.common import FamilyConfig, HeuristicRules, load_dataset
from research.experiments.evaluation import Protocol
from research.experiments.experiment import Run
from research.experiments.gate import (
    Baseline,
    Evidence,
    GateError,
    GatePolicy,
    decide,
    evaluate,
    fold_scores,
    gate_summary,
)
from research.experiments.promotion import promote
from research.experiments.stats import corrected_paired_test, non_inferiority_p, one_sided_bounds

FOREST = ModelType.RANDOM_FOREST


def forest_evidence(seed: int, protocol: Protocol) -> Evidence:
    """The committed forest recipe with another ``random_state``, validated on ``protocol``'s folds of all rows."""
    dataset = load_dataset(protocol.every)
    splits = evaluation.repeated_splits(dataset, protocol)
    model = replace(FamilyConfig.load(FOREST), seed=seed).build()
    probabilities = evaluation.repeated_cv_probabilities(model, dataset, protocol, splits)
    repeated = evaluation.repeated_cv(model, dataset, protocol, splits, probabilities)
    first = slice(0, protocol.folds)
    rows = evaluation.partition_probabilities(dataset, splits[first], probabilities[first])
    recall = evaluation.classification_summary(dataset, rows)["per_class"]
    return Evidence(
        run_id=f"random_state={seed}",
        model_type=FOREST,
        fold_accuracy=np.asarray(repeated["fold_accuracy"]),
        test_train_ratio=repeated["test_train_ratio"],
        protocol=f"{protocol.repeats}x{protocol.folds}-fold, seed {protocol.seed}",
        accuracy=repeated["accuracy_mean"],
        accuracy_source="k-fold mean",
        class_recall={label: row["recall"] for label, row in recall.items()},
        recall_source="out-of-fold predictions of the first partition",
    )


def heuristic_scores(protocol: Protocol) -> np.ndarray:
    """The heuristic's accuracy on each of ``protocol``'s folds."""
    dataset = load_dataset(protocol.every)
    splits = evaluation.repeated_splits(dataset, protocol)
    return np.asarray(evaluation.repeated_cv(HeuristicRules(), dataset, protocol, splits)["fold_accuracy"])


def seed_decisions(protocol: Protocol, seeds: list[int]) -> list[tuple[Evidence, Any]]:
    """Each seed's forest judged by the gate against the committed seed (42) as production, on the same folds."""
    policy = GatePolicy.load(FOREST)
    production = Baseline("random_state=42", forest_evidence(42, protocol).fold_accuracy)
    heuristic = Baseline("the rules", heuristic_scores(protocol))
    decisions = []
    for seed in seeds:
        candidate = forest_evidence(seed, protocol)
        decisions.append((candidate, decide(candidate, policy, production, heuristic)))
    return decisions


def test_a_seed_only_change_passes_the_gate() -> None:
    """Forests differing only in ``random_state`` (0..5) pass on 10-fold x 2 of all rows, noise included."""
    decisions = seed_decisions(Protocol(folds=10, repeats=2), list(range(6)))
    for candidate, record in decisions:
        assert record.allowed, (candidate.run_id, record.reasons)
        assert record.production is not None and record.heuristic is not None
        assert record.production.lower_bound > -record.policy.margin
    differing = [record for _, record in decisions if record.production and record.production.difference != 0.0]
    assert differing, "every seed scored exactly like production on every fold: the test would prove nothing"


@pytest.mark.slow
def test_a_seed_the_old_rule_refused_passes_on_the_committed_protocol() -> None:
    """Seed 4 scores below production's 10x10 mean (the old "not below" rule refused it, as it did seed 5); the gate
    passes it: the lower bound of the difference is inside the margin. Seed 4 has the lowest bound of seeds 0..5."""
    for candidate, record in seed_decisions(Protocol(), [4]):
        assert record.production is not None
        assert record.production.difference < 0.0, candidate.run_id
        assert record.allowed, (candidate.run_id, record.reasons)


def test_the_bounds_are_one_sided_and_agree_with_the_non_inferiority_p_value() -> None:
    """The one-sided 95% lower bound is the two-sided 90% interval's end, and it clears -margin exactly when the
    one-sided p-value of "worse by the margin" is below 5%."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = rng.uniform(0.85, 1.0, 30)
        a = b + rng.normal(rng.uniform(-0.03, 0.02), 0.03, 30)
        bounds = one_sided_bounds(a, b, 0.25)
        assert bounds.interval == corrected_paired_test(a, b, 0.25, 0.90).interval
        for margin in (0.0, 0.01, 0.02):
            assert (bounds.interval[0] > -margin) == (non_inferiority_p(a, b, 0.25, margin) < 0.05)
    same = np.full(6, 0.9)
    assert non_inferiority_p(same, same, 0.5, 0.01) == 0.0
    assert non_inferiority_p(same - 0.02, same, 0.5, 0.01) == 1.0


def test_the_margin_decides_how_much_worse_is_tolerated(tree_run: Run) -> None:
    """Production 1.5 points better on every fold (no noise): refused at a 1-point margin, passed at 2 points."""
    candidate = Evidence.of_run(tree_run)
    better = Baseline("1.5 points better on every fold", candidate.fold_accuracy + 0.015)
    heuristic = Baseline("the same scores", candidate.fold_accuracy)
    refused = decide(candidate, GatePolicy(margin=0.01), better, heuristic)
    passed = decide(candidate, GatePolicy(margin=0.02), better, heuristic)
    assert refused.production is not None and refused.production.lower_bound == pytest.approx(-0.015)
    assert not refused.allowed and passed.allowed
    assert "non-inferior" in refused.reasons[0]


def test_a_depth_one_tree_fails_every_check(tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run) -> None:
    """The stump is below production beyond the margin, under both floors, and shown worse than the heuristic."""
    registry = tmp_path / "prd"
    promote(
        tree_run.model_type,
        tree_run.run_id,
        results_dir=workspace.results,
        models_dir=workspace.models,
        registry_dir=registry,
    )
    record = evaluate(stump_run, registry, workspace.results, GatePolicy())
    assert not record.allowed
    assert record.production is not None and not record.production.passed
    assert record.heuristic is not None and not record.heuristic.passed
    assert not record.floors.passed
    assert any("recall" in reason for reason in record.reasons)
    assert any("accuracy" in reason for reason in record.reasons)
    assert record.summary.startswith("gate refused")


def test_the_first_promotion_is_judged_by_the_floors_and_the_heuristic(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """With no production, (a) is skipped; the stump is still refused by (b) and (c), the tree passes."""
    empty = tmp_path / "prd"
    stump = evaluate(stump_run, empty, workspace.results, GatePolicy())
    assert stump.production is None and "first promotion" in stump.production_note
    assert not stump.allowed and not stump.floors.passed and stump.heuristic is not None
    tree = evaluate(tree_run, empty, workspace.results, GatePolicy())
    assert tree.allowed, tree.reasons


def test_the_heuristic_is_computed_on_the_candidates_folds_when_it_has_no_run(
    tmp_path: Path, workspace: Any, tree_run: Run, heuristic_run: Run
) -> None:
    """Without a comparable heuristic run, its fold scores are computed, and equal what its run recorded."""
    with_run = evaluate(tree_run, tmp_path / "prd", workspace.results, GatePolicy())
    without = evaluate(tree_run, tmp_path / "prd", tmp_path / "no-results", GatePolicy())
    assert with_run.heuristic is not None and without.heuristic is not None
    assert heuristic_run.run_id in with_run.heuristic.source
    assert "computed" in without.heuristic.source
    assert without.heuristic.other_mean == heuristic_run.metrics["repeated_cv"]["accuracy_mean"]
    assert np.array_equal(
        fold_scores(HeuristicRules(), tree_run), heuristic_run.metrics["repeated_cv"]["fold_accuracy"]
    )


def test_the_heuristic_is_not_compared_with_itself(tmp_path: Path, workspace: Any, heuristic_run: Run) -> None:
    """A heuristic candidate skips (c) and clears the floors (its recall is above 80% on every class)."""
    record = evaluate(heuristic_run, tmp_path / "prd", workspace.results, GatePolicy())
    assert record.heuristic is None and "is the heuristic" in record.heuristic_note
    assert record.allowed, record.reasons


def test_an_unreadable_production_manifest_refuses(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """A production folder whose manifest cannot be read is a refusal (FORCE can still replace it), not a crash."""
    (tmp_path / "prd" / tree_run.model_type.value).mkdir(parents=True)
    (tmp_path / "prd" / tree_run.model_type.value / "manifest.json").write_text("{not json", encoding="utf-8")
    record = evaluate(tree_run, tmp_path / "prd", workspace.results, GatePolicy())
    assert not record.allowed
    assert "cannot be read" in record.reasons[0]


def test_folds_of_other_data_cannot_be_rebuilt(tree_run: Run) -> None:
    """A run whose rows are not the data loaded now cannot be paired with anything: a clear GateError."""
    other = Run(tree_run.run_id, tree_run.directory, {**tree_run.metrics, "data": {**tree_run.metrics["data"]}})
    other.metrics["data"]["sha256"] = "0" * 64
    with pytest.raises(GateError, match="folds cannot be rebuilt"):
        fold_scores(HeuristicRules(), other)


def test_the_policy_comes_from_the_recipe_and_the_margin_flag(tmp_path: Path) -> None:
    """The recipe's gate section sets margin and floors, --margin overrides the margin, and a bad value names the
    file."""
    recipe = {"estimator": "DecisionTreeClassifier", "gate": {"margin": 0.02, "min_class_recall": 0.7}}
    (tmp_path / "decision_tree.json").write_text(json.dumps(recipe), encoding="utf-8")
    policy = GatePolicy.load(ModelType.DECISION_TREE, tmp_path)
    assert (policy.margin, policy.min_class_recall, policy.min_accuracy) == (0.02, 0.7, GatePolicy().min_accuracy)
    assert GatePolicy.load(ModelType.DECISION_TREE, tmp_path, margin=0.005).margin == 0.005
    assert GatePolicy.load(ModelType.XGBOOST, tmp_path) == GatePolicy()  # no recipe file: the defaults
    with pytest.raises(GateError, match=r"decision_tree\.json"):
        GatePolicy.load(ModelType.DECISION_TREE, tmp_path, margin=-1.0)
    recipe["gate"] = {"margin": 0.01, "typo": 1}
    (tmp_path / "decision_tree.json").write_text(json.dumps(recipe), encoding="utf-8")
    with pytest.raises(GateError, match="Extra inputs"):
        GatePolicy.load(ModelType.DECISION_TREE, tmp_path)


def test_every_committed_recipe_declares_the_default_gate() -> None:
    """The gate sections of research/configs are valid (and say what the defaults are)."""
    for model_type in ModelType:
        assert GatePolicy.load(model_type) == GatePolicy(), model_type


def test_a_run_never_promoted_has_no_gate_summary(stump_run: Run, tmp_path: Path) -> None:
    """gate_summary is None until the run is promoted (then it renders gate.json)."""
    fresh = Run("never", tmp_path, stump_run.metrics)
    assert gate_summary(fresh) is None
