"""Gated promotion, the tracked history and rollback, into a temporary registry; the generated journey and README."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.predictors.base import IntegrityError
from ml_production_service.registry import load_artifact, read_manifest, save_model
from research.experiments.common import build_manifest, load_dataset, make_pipeline, recipe_hyperparameters
from research.experiments.experiment import Run
from research.experiments.gate import GATE_FILE, GATE_REPORT, GatePolicy, GateRecord, evaluate, gate_summary
from research.experiments.promotion import (
    HISTORY_LOG,
    PromotionError,
    PromotionRefused,
    history_entries,
    main,
    promote,
    reproduce,
    retrain,
    rollback,
    served_by_registry,
)
from research.experiments.report import write_all

TREE = ModelType.DECISION_TREE


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def promote_into(registry: Path, workspace: Any, run: Run, **options: Any) -> str:
    """Promote ``run`` into ``registry`` (replaced models go to ``registry/../history``)."""
    return promote(
        run.model_type,
        run.run_id,
        results_dir=workspace.results,
        models_dir=workspace.models,
        registry_dir=registry,
        **options,
    )


def served_record(registry: Path, model_type: ModelType = TREE) -> GateRecord:
    """The gate record of the model ``registry`` serves."""
    return GateRecord.model_validate(read_manifest(registry, model_type).metrics["gate"])


def log_actions(history: Path) -> list[str]:
    """The actions recorded in the tree's history log, in order."""
    lines = (history / TREE.value / HISTORY_LOG).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["action"] for line in lines]


def test_a_depth_one_tree_is_refused_and_force_is_recorded_as_forced(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """The stump is refused and production untouched; FORCE promotes it, and the manifest and run say forced."""
    registry = tmp_path / "prd"
    assert "first promotion" in promote_into(registry, workspace, tree_run)
    first = served_record(registry)
    assert first.allowed and not first.forced and first.production is None and first.heuristic is not None
    before = snapshot(registry / TREE.value)
    with pytest.raises(PromotionRefused, match="not shown non-inferior to production"):
        promote_into(registry, workspace, stump_run)
    assert snapshot(registry / TREE.value) == before
    assert not (stump_run.directory / GATE_FILE).exists()
    assert "FORCED" in promote_into(registry, workspace, stump_run, force=True)
    _, manifest = load_artifact(registry, TREE)
    assert manifest.metrics["run_id"] == stump_run.run_id
    record = served_record(registry)
    assert record.forced and not record.allowed and record.reasons
    assert record.production is not None and record.production.difference < 0 < record.policy.margin
    written = GateRecord.model_validate_json((stump_run.directory / GATE_FILE).read_bytes())
    assert written == record
    summary = gate_summary(stump_run)
    assert summary is not None and "FORCED" in summary
    assert (stump_run.directory / GATE_REPORT).read_text(encoding="utf-8") == summary


def test_the_margin_flag_is_applied_and_recorded(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """--margin overrides the recipe's margin, and the manifest records the one the gate used."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run, margin=0.02)
    assert served_record(registry).policy.margin == 0.02
    assert served_record(registry).policy.min_accuracy == GatePolicy.load(TREE).min_accuracy


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
    assert main([*argv, *dirs, "--margin", "2"]) == 1
    assert "invalid" in capsys.readouterr().err


def test_promoting_what_production_serves_does_nothing(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """The same candidate again is not a promotion (its gate record aside, the files are the same)."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    (registry / TREE.value / "MODEL_CARD.md").write_text("# documentation beside the model\n", encoding="utf-8")
    assert "nothing to do" in promote_into(registry, workspace, tree_run)
    assert history_entries(tmp_path / "history", TREE) == []


def test_force_replaces_a_production_model_whose_manifest_is_broken(
    tmp_path: Path, workspace: Any, tree_run: Run
) -> None:
    """A broken production manifest refuses the gate; FORCE replaces it, and the broken folder is kept."""
    broken = tmp_path / "prd" / TREE.value
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PromotionRefused, match="cannot be read"):
        promote_into(tmp_path / "prd", workspace, tree_run)
    promote_into(tmp_path / "prd", workspace, tree_run, force=True)
    assert served_record(tmp_path / "prd").forced
    [kept] = history_entries(tmp_path / "history", TREE)
    assert kept.name == "0001-unreadable" and (kept / "manifest.json").read_text(encoding="utf-8") == "{not json"


def test_rollback_restores_the_replaced_files_byte_for_byte_and_a_second_one_undoes_it(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """The replaced model is kept in the tracked history; rollback serves it again, a second rollback undoes that."""
    registry, history = tmp_path / "prd", tmp_path / "history"
    promote_into(registry, workspace, tree_run)
    served_before = snapshot(registry / TREE.value)
    promote_into(registry, workspace, stump_run, force=True)
    promoted = snapshot(registry / TREE.value)
    assert promoted != served_before
    [kept] = history_entries(history, TREE)
    assert kept.name == f"0001-{tree_run.run_id}" and snapshot(kept) == served_before
    assert tree_run.run_id in rollback(TREE, registry_dir=registry)
    assert snapshot(registry / TREE.value) == served_before
    [parked] = history_entries(history, TREE)
    assert parked.name == f"0002-{stump_run.run_id}" and snapshot(parked) == promoted
    rollback(TREE, registry_dir=registry)
    assert snapshot(registry / TREE.value) == promoted
    predictor = get_predictor(ServiceConfig(model_type=TREE, registry_dir=registry))
    assert predictor.manifest.metrics["run_id"] == stump_run.run_id
    assert log_actions(history) == ["promote", "promote", "rollback", "rollback"]


def test_the_history_keeps_the_newest_entries_and_rollback_can_name_one(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """Four promotions with keep=2 leave the two newest replaced models; --to restores a named one."""
    registry, history = tmp_path / "prd", tmp_path / "history"
    for run in (tree_run, stump_run, tree_run, stump_run):
        promote_into(registry, workspace, run, force=True, keep=2)
    names = [entry.name for entry in history_entries(history, TREE)]
    assert names == [f"0002-{stump_run.run_id}", f"0003-{tree_run.run_id}"]
    assert stump_run.run_id in rollback(TREE, registry_dir=registry, to=f"0002-{stump_run.run_id}", keep=2)
    assert [entry.name for entry in history_entries(history, TREE)] == [
        f"0003-{tree_run.run_id}",
        f"0004-{stump_run.run_id}",
    ]
    with pytest.raises(PromotionError, match="nothing to roll back to named 'nope'"):
        rollback(TREE, registry_dir=registry, to="nope")
    with pytest.raises(PromotionError, match="at least one"):
        rollback(TREE, registry_dir=registry, keep=0)


def test_rollback_without_history_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing to roll back to is an error naming the history folder, and `make rollback` exits 1."""
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(TREE, registry_dir=tmp_path / "prd")
    assert main(["rollback", "--model", "decision_tree", "--registry-dir", str(tmp_path / "prd")]) == 1
    assert str(tmp_path / "history" / TREE.value) in capsys.readouterr().err


def test_a_model_kept_in_the_old_untracked_folder_is_migrated(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """A clone that promoted before the history existed keeps its rollback: registry/previous moves into it."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    legacy = tmp_path / "previous" / TREE.value
    shutil.copytree(registry / TREE.value, legacy)
    rollback(TREE, registry_dir=registry)
    assert not (tmp_path / "previous").exists()
    assert log_actions(tmp_path / "history") == ["promote", "migrate", "rollback"]


def test_a_history_entry_that_fails_to_load_leaves_production_serving(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run
) -> None:
    """Rollback verifies the restored model as the service would; a corrupted entry is refused and nothing moves."""
    registry, history = tmp_path / "prd", tmp_path / "history"
    promote_into(registry, workspace, tree_run)
    promote_into(registry, workspace, stump_run, force=True)
    serving = snapshot(registry / TREE.value)
    [entry] = history_entries(history, TREE)
    (entry / "model.joblib").write_bytes(b"corrupted")
    with pytest.raises(IntegrityError):
        rollback(TREE, registry_dir=registry)
    assert snapshot(registry / TREE.value) == serving
    assert history_entries(history, TREE) == [entry]


def test_the_gate_revalidates_a_production_model_validated_another_way(
    tmp_path: Path, workspace: Any, stump_run: Run
) -> None:
    """Production whose run is not in the results is re-validated from its recipe on the candidate's folds."""
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
    record = evaluate(stump_run, tmp_path / "prd", workspace.results, GatePolicy())
    assert not record.allowed
    assert record.production is not None and "re-validating its recipe" in record.production.source
    assert record.production.other_mean > record.production.candidate_mean


def test_served_by_registry_compares_bytes_not_run_ids(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run, heuristic_run: Run
) -> None:
    """The served model is the run's when its files hash to what the run recorded; a changed byte says no."""
    registry = tmp_path / "prd"
    assert not served_by_registry(tree_run, registry)
    promote_into(registry, workspace, tree_run)
    promote_into(registry, workspace, heuristic_run)
    assert served_by_registry(tree_run, registry) and served_by_registry(heuristic_run, registry)
    assert not served_by_registry(stump_run, registry)
    onnx = registry / TREE.value / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert not served_by_registry(tree_run, registry)


def test_a_promoted_model_retrains_to_the_same_bytes(tmp_path: Path, workspace: Any, tree_run: Run) -> None:
    """Retraining the served recipe through the registry's save path writes the same model.joblib and model.onnx;
    a changed file is reported as different."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    files = reproduce(registry, TREE)
    assert set(files) == {"model.joblib", "model.onnx"}
    assert all(committed == retrained for committed, retrained in files.values()), files
    again = retrain(registry, TREE, tmp_path / "again")
    assert again.sha256 == tree_run.metrics["candidate"]["sha256"]
    (registry / TREE.value / "model.onnx").write_bytes(b"other")
    changed = reproduce(registry, TREE)
    assert changed["model.onnx"][0] != changed["model.onnx"][1]
    assert changed["model.joblib"][0] == changed["model.joblib"][1]
    (registry / TREE.value / "model.onnx").unlink()
    assert reproduce(registry, TREE)["model.onnx"][0] == "missing"
    with pytest.raises(PromotionError, match="nothing to retrain"):
        retrain(registry, ModelType.HEURISTIC, tmp_path / "heuristic")


def test_the_reproduce_command_exits_non_zero_when_bytes_differ(
    tmp_path: Path, workspace: Any, tree_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make reproduce-registry` prints each file's verdict and fails when one differs."""
    registry = tmp_path / "prd"
    promote_into(registry, workspace, tree_run)
    command = ["reproduce", "--model", "decision_tree", "--registry-dir", str(registry)]
    assert main(command) == 0
    assert "decision_tree/model.onnx" in capsys.readouterr().out
    (registry / TREE.value / "model.joblib").write_bytes(b"other")
    assert main(command) == 1
    assert "DIFFERS" in capsys.readouterr().out


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
