"""Feature ablation, honest headlines, fold-seed spread, model and data cards: written from real small runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.features import ENGINEERED_FEATURE_NAMES, FEATURE_NAMES
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.registry import model_dir, read_manifest
from research.experiments import ablation, gate
from research.experiments.common import FamilyConfig, load_dataset
from research.experiments.experiment import Run
from research.experiments.model_card import CARD_FILE, render_card, render_data_card, write_cards
from research.experiments.report import model_table, write_all
from research.experiments.results import headline, seed_spread_text

TREE = ModelType.DECISION_TREE


def test_derived_columns_are_measured_from_the_transform() -> None:
    """Perturbing a raw column moves exactly the engineered columns built from it (areas and aspects)."""
    derived = ablation.derived_from(load_dataset().features)
    assert derived == {
        "sepal_length": ["sepal_area", "sepal_aspect"],
        "sepal_width": ["sepal_area", "sepal_aspect"],
        "petal_length": ["petal_area", "petal_aspect"],
        "petal_width": ["petal_area", "petal_aspect"],
    }


def test_a_variant_pipeline_really_drops_its_columns() -> None:
    """The estimator of a variant sees only the kept columns, and predicts without error on raw rows."""
    data = load_dataset(every=5)
    model = FamilyConfig.load(TREE).build()
    variant = ablation.without(model, ["petal_length", "petal_area", "petal_aspect"]).fit(data.features, data.targets)
    assert variant[-1].n_features_in_ == len(ENGINEERED_FEATURE_NAMES) - 3
    assert variant.predict_proba(load_dataset().features).shape == (150, 3)
    assert model[-1].get_params() == variant[-1].get_params()  # same recipe, fewer columns


def test_every_feature_is_ablated_on_the_runs_own_folds(tree_run: Run) -> None:
    """13 variants (8 columns, 4 raw-with-derived, all engineered), each paired with the run's own fold scores."""
    found = tree_run.metrics["ablation"]
    names = [v["name"] for v in found["variants"]]
    assert names[:8] == list(ENGINEERED_FEATURE_NAMES)
    assert names[8:12] == [f"{raw} + derived" for raw in FEATURE_NAMES] and names[12] == "every engineered feature"
    assert found["baseline_accuracy_mean"] == pytest.approx(tree_run.metrics["repeated_cv"]["accuracy_mean"])
    for variant in found["variants"]:
        assert variant["difference"] == pytest.approx(variant["accuracy_mean"] - found["baseline_accuracy_mean"])
        lo, hi = variant["difference_ci95"]
        assert lo <= variant["difference"] <= hi
        assert variant["verdict"] == ablation.verdict(variant["kind"], (lo, hi))
    engineered = found["variants"][12]["drops"]
    assert set(engineered) == set(ENGINEERED_FEATURE_NAMES) - set(FEATURE_NAMES)
    report = (tree_run.directory / "report.md").read_text(encoding="utf-8")
    assert "## Feature ablation (same folds)" in report and "every engineered feature" in report


@pytest.mark.parametrize(
    ("interval", "kind", "starts"),
    [
        pytest.param((-0.05, -0.01), "feature", "keep", id="needed"),
        pytest.param((0.01, 0.05), "feature", "drop", id="harmful"),
        pytest.param((-0.02, 0.02), "feature", "justify: no measurable", id="noise"),
        pytest.param((-0.02, 0.02), "engineered", "justify: engineering", id="engineering-noise"),
    ],
)
def test_the_verdict_follows_the_interval(interval: tuple[float, float], kind: str, starts: str) -> None:
    """Below zero beyond noise keeps, above drops, straddling zero must be justified."""
    assert ablation.verdict(kind, interval).startswith(starts)


def test_every_feature_has_a_measured_cost(tree_run: Run) -> None:
    """Each column is timed (an engineered one as the product or ratio it is measured to be), and the transform."""
    cost = tree_run.metrics["ablation"]["cost"]
    assert set(cost["ns_per_row"]) == set(ENGINEERED_FEATURE_NAMES)
    assert all(ns is not None and ns > 0 for ns in cost["ns_per_row"].values())
    assert cost["transform_ns_per_row"] > 0


def test_a_column_that_is_neither_a_product_nor_a_ratio_has_no_guessed_cost() -> None:
    """An engineered column the timing cannot reproduce gets None rather than a wrong figure."""
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    assert ablation._operation(a + b, [a, b]) is None
    assert ablation._operation(a * b, [a]) is None
    operation = ablation._operation(b / a, [a, b])
    assert operation is not None and np.array_equal(np.asarray(operation()), b / a)


def test_the_heuristic_is_not_ablated_and_its_headline_is_in_sample(heuristic_run: Run) -> None:
    """The rules learn nothing: no ablation, no nested CV, and the headline says in-sample."""
    m = heuristic_run.record
    assert m.ablation is None and heuristic_run.metrics["ablation"] is None
    top = headline(m)
    assert "in-sample" in top.source and top.accuracy == m.repeated_cv.accuracy_mean
    assert m.seed_spread is not None and m.seed_spread.estimate == "repeated CV"
    assert len(m.seed_spread.accuracy_mean) == 2


def test_a_tuned_recipe_is_headlined_by_nested_cv_with_its_spread_over_fold_seeds(tree_run: Run) -> None:
    """The tree searches a grid, so its headline is the nested-CV mean; other fold seeds are re-measured."""
    m = tree_run.record
    top = headline(m)
    assert m.nested_cv is not None and m.seed_spread is not None
    assert top.source == "nested CV" and top.accuracy == m.nested_cv.accuracy_mean
    assert top.ci95 == m.nested_cv.accuracy_ci95 and "selection bias" in top.why
    assert m.seed_spread.seeds == [43, 44] and m.seed_spread.estimate == "nested CV"
    assert len(m.seed_spread.accuracy_mean) == 2
    assert seed_spread_text(m).endswith("over fold seeds 43–44")
    assert seed_spread_text(m.model_copy(update={"seed_spread": None})) == "—"


def _registry_with(tmp_path: Path, workspace: Any, run: Run, update: dict[str, Any] | None = None) -> Path:
    registry = tmp_path / "registry"
    shutil.copytree(model_dir(workspace.models / run.run_id, run.model_type), model_dir(registry, run.model_type))
    if update:
        manifest = read_manifest(registry, run.model_type)
        changed = manifest.model_copy(update={"metrics": {**manifest.metrics, **update}})
        (model_dir(registry, run.model_type) / MANIFEST_FILE).write_text(changed.model_dump_json(), encoding="utf-8")
    return registry


def test_a_model_card_is_written_beside_the_model_and_the_service_still_loads_it(
    tmp_path: Path, workspace: Any, tree_run: Run
) -> None:
    """The card holds the headline, per-class results, training ranges and the gate; the folder still serves."""
    registry = _registry_with(tmp_path, workspace, tree_run)
    [path] = write_cards(registry, workspace.results)
    assert path == model_dir(registry, TREE) / CARD_FILE
    card = path.read_text(encoding="utf-8")
    assert headline(tree_run.record).text() in card
    assert "| versicolor |" in card and "promoted before the gate recorded its decision" in card.lower()
    petal_width = load_dataset(every=5).features[:, 3]
    assert f"petal_width {petal_width.min():g}–{petal_width.max():g} cm" in card and "[0.01, 100] cm" in card
    assert "make train-decision-tree" in card
    predictor = get_predictor(ServiceConfig(model_type=TREE, registry_dir=registry))
    assert predictor.manifest.metrics["run_id"] == tree_run.run_id


def test_a_card_renders_the_recorded_gate_and_survives_a_missing_run(
    tmp_path: Path, workspace: Any, tree_run: Run
) -> None:
    """A gate decision in the manifest is shown; without the run, the card falls back on the manifest's numbers."""
    registry = _registry_with(tmp_path, workspace, tree_run, {"gate": {"allowed": True, "margin": 0.01}})
    manifest = read_manifest(registry, TREE)
    card = render_card(manifest, None)
    assert "- allowed: True" in card and "- margin: 0.01" in card
    assert "is not in the results folder" in card and "| versicolor |" not in card
    plain = render_card(manifest.model_copy(update={"metrics": {**manifest.metrics, "gate": "refused"}}), None)
    assert "- decision: refused" in plain
    record = gate.evaluate(tree_run, tmp_path / "no-production", workspace.results, gate.GatePolicy())
    recorded = manifest.model_copy(update={"metrics": {**manifest.metrics, "gate": record.model_dump(mode="json")}})
    assert gate.render(record) in render_card(recorded, tree_run)


def test_the_data_card_and_the_journey_are_written_from_the_data_and_the_runs(
    tmp_path: Path, workspace: Any, tree_run: Run, heuristic_run: Run
) -> None:
    """The data card carries the fingerprint, counts and contract; the journey says which features earn their place."""
    card = render_data_card()
    assert load_dataset().fingerprint in card and "setosa 50, versicolor 50, virginica 50" in card
    assert "BSD 3-Clause" in card and "| `petal_length` | float64 | [0.01, 100] | 1 | 6.9 |" in card
    journey, data_card = tmp_path / "JOURNEY.md", tmp_path / "DATA_CARD.md"
    written = write_all(workspace.results, tmp_path / "empty-registry", None, journey, data_card)
    assert journey in written and data_card.read_text(encoding="utf-8") == card
    story = journey.read_text(encoding="utf-8")
    assert "## Which features earn their place" in story and "`every engineered feature`" in story
    assert "13 intervals at 95%" in story and "- Engineering as a whole: " in story  # one fitted model ablated
    assert "(nested CV)" in story and heuristic_run.run_id in story


def test_the_readme_says_a_run_serves_when_its_artifact_bytes_are_in_the_registry(
    tmp_path: Path, workspace: Any, tree_run: Run, stump_run: Run, heuristic_run: Run
) -> None:
    """The "in registry/prd" column compares the artifacts' sha256, not run ids: another run's bytes say no."""
    registry = _registry_with(tmp_path, workspace, tree_run)
    served = model_table({TREE: tree_run, ModelType.HEURISTIC: heuristic_run}, registry)
    assert served.splitlines()[2].endswith("| yes |") and "| no |" in served  # no heuristic manifest there
    assert model_table({TREE: stump_run}, registry).splitlines()[2].endswith("| no |")
    assert "(nested CV)" in served and "(2×3 CV, in-sample)" in served
    _registry_with(tmp_path, workspace, heuristic_run)
    assert "| yes (rules in code) |" in model_table({ModelType.HEURISTIC: heuristic_run}, registry)
