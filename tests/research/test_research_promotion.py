"""Gated promotion and rollback into a temporary registry; the generated journey and README tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.registry import load_artifact, save_model
from research.experiments.common import build_manifest, load_dataset, make_pipeline, recipe_hyperparameters
from research.experiments.experiment import Run
from research.experiments.promotion import PromotionRefused, gate, main, promote, rollback
from research.experiments.report import write_all

TREE = ModelType.DECISION_TREE


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def promote_into(registry: Path, workspace: Any, run: Run, *, force: bool = False) -> str:
    """Promote ``run`` into ``registry`` (its replaced model goes to ``registry/../previous``)."""
    return promote(
        run.model_type,
        run.run_id,
        results_dir=workspace.results,
        models_dir=workspace.models,
        registry_dir=registry,
        force=force,
    )


def test_promote_refuses_a_worse_candidate_unless_forced(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """A candidate below production's validated accuracy is refused and production is untouched; FORCE promotes it."""
    registry = tmp_path / "prd"
    assert "no production model yet" in promote_into(registry, workspace, tree_run)
    before = snapshot(registry / TREE.value)
    with pytest.raises(PromotionRefused, match="below production"):
        promote_into(registry, workspace, stump_run)
    assert snapshot(registry / TREE.value) == before
    assert "FORCED" in promote_into(registry, workspace, stump_run, force=True)
    _, manifest = load_artifact(registry, TREE)
    assert manifest.metrics["run_id"] == stump_run.run_id


def test_the_promote_command_exits_non_zero_when_refused(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make promote` fails (exit 1) and says why when the gate refuses."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    argv = ["promote", "--model", "decision-tree", "--run", stump_run.run_id, "--registry-dir", str(registry)]
    dirs = ["--results-dir", str(workspace.results), "--models-dir", str(workspace.models)]
    assert main(argv + dirs) == 1
    assert "refused" in capsys.readouterr().err


def test_promote_then_rollback_restores_the_previous_files_byte_for_byte(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """Rollback puts back exactly the files that served before the promotion; a second rollback redoes it."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    served_before = snapshot(registry / TREE.value)
    promote_into(registry, workspace, stump_run, force=True)
    promoted = snapshot(registry / TREE.value)
    assert promoted != served_before
    assert tree_run.run_id in rollback(TREE, registry_dir=registry)
    assert snapshot(registry / TREE.value) == served_before
    assert snapshot(tmp_path / "previous" / TREE.value) == promoted
    rollback(TREE, registry_dir=registry)
    assert snapshot(registry / TREE.value) == promoted
    predictor = get_predictor(ServiceConfig(model_type=TREE, registry_dir=registry))
    assert predictor.manifest.metrics["run_id"] == stump_run.run_id


def test_the_gate_revalidates_a_production_model_validated_another_way(tmp_path: Path, stump_run: Run) -> None:
    """Production without the candidate's protocol in its manifest is re-validated from its recipe, then compared."""
    data = load_dataset(every=5)
    legacy = make_pipeline(DecisionTreeClassifier(max_depth=4, random_state=42)).fit(data.features, data.targets)
    manifest = build_manifest(
        TREE,
        "DecisionTreeClassifier",
        recipe_hyperparameters(legacy),
        {"loocv_accuracy": 1.0},
        data.features,
        data.targets,
        data.class_labels,
    )
    save_model(tmp_path / "prd", manifest, legacy)
    decision = gate(stump_run, tmp_path / "prd")
    assert not decision.allowed
    assert "re-validating its recipe" in decision.reason
    assert decision.production is not None and decision.production > decision.candidate


def test_the_journey_and_readme_tables_are_generated_and_nothing_else_is_touched(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run, heuristic_run: Run
) -> None:
    """The report rewrites only the README's marked sections, and the journey names the latest runs and the noise."""
    readme = tmp_path / "README.md"
    outside = "# Title\n\nkeep me\n"
    readme.write_text(
        outside + "<!-- model-table:start -->\nSTALE TABLE\n<!-- model-table:end -->\n\nmiddle\n\n"
        "<!-- research:start -->\n<!-- research:end -->\ntail\n",
        encoding="utf-8",
    )
    journey = tmp_path / "JOURNEY.md"
    write_all(workspace.results, tmp_path / "empty-registry", readme, journey)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(outside) and "\nmiddle\n" in text and text.endswith("<!-- research:end -->\ntail\n")
    assert "STALE TABLE" not in text
    assert f"[{stump_run.run_id}]" in text and f"[{heuristic_run.run_id}]" in text
    assert "`decision_tree`" in text and "`heuristic`" in text
    story = journey.read_text(encoding="utf-8")
    assert "## Are the differences real?" in story and "## Conclusions" in story
    assert tree_run.run_id in story  # every run is listed, not only the latest
    assert (workspace.results / "summary" / "cv_scores.png").is_file()
    assert np.isfinite(stump_run.metrics["repeated_cv"]["accuracy_mean"])
