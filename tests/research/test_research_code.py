"""The research code's clear failures and shared helpers: unknown estimators, new model kinds, machine facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ml_production_service.configs import ModelType
from ml_production_service.manifest import Recipe
from research.experiments import environment, journey
from research.experiments.common import RESULTS_DIR, FamilyConfig, UnknownEstimatorError, model_from_recipe
from research.experiments.experiment import METRICS_FILE
from research.experiments.results import read_metrics, write_metrics
from research.experiments.text import replace_between_markers, update_readme


def test_an_unknown_estimator_is_a_clear_error_not_the_xgboost_path() -> None:
    """A recipe naming an estimator the code cannot build fails at once, naming it and the known ones."""
    config = FamilyConfig(ModelType.DECISION_TREE, "LGBMClassifier")
    with pytest.raises(UnknownEstimatorError, match=r"unknown estimator 'LGBMClassifier'.*DecisionTreeClassifier"):
        config.build()
    with pytest.raises(UnknownEstimatorError, match="ESTIMATORS"):
        model_from_recipe(Recipe(estimator="LGBMClassifier"))


def test_a_model_kind_without_a_journey_step_says_where_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model type has a step; one without it raises LookupError naming STEPS, not a bare KeyError."""
    assert all(journey.step(t)[0] for t in ModelType)
    monkeypatch.delitem(journey.STEPS, ModelType.XGBOOST)
    with pytest.raises(LookupError, match=r"no step for model type 'xgboost'.*journey\.STEPS"):
        journey.step(ModelType.XGBOOST)


def test_the_cpu_model_comes_from_cpuinfo_or_the_platform(tmp_path: Path) -> None:
    """The model name line of cpuinfo when there is one; a non-empty fallback when the file is absent or has none."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n", encoding="utf-8")
    assert environment.cpu_model(cpuinfo) == "Test CPU 9000"
    cpuinfo.write_text("processor\t: 0\n", encoding="utf-8")
    assert environment.cpu_model(cpuinfo) and environment.cpu_model(tmp_path / "absent")
    assert environment.distribution_versions(["surely-not-a-distribution-xyz"]) == {
        "surely-not-a-distribution-xyz": environment.NOT_INSTALLED
    }
    assert {"python", "scikit-learn", "scipy"} <= set(environment.library_versions())


def test_a_readme_section_is_rewritten_between_its_markers_only(tmp_path: Path) -> None:
    """Only the named section changes; missing markers are an error naming them; an unchanged file is not written."""
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n", encoding="utf-8")
    update_readme(readme, {"t": "new"})
    assert readme.read_text(encoding="utf-8") == "a\n<!-- t:start -->\nnew\n<!-- t:end -->\nb\n"
    with pytest.raises(ValueError, match="<!-- other:start -->"):
        replace_between_markers("no markers", "other", "x")


def test_metrics_json_is_read_and_written_through_its_schema(tmp_path: Path) -> None:
    """Every committed run validates; a metrics.json with a renamed field fails naming it, not with a KeyError later."""
    committed = sorted(RESULTS_DIR.glob(f"*/{METRICS_FILE}"))
    assert committed and all(read_metrics(path).run_id == path.parent.name for path in committed)
    raw = json.loads(committed[0].read_text(encoding="utf-8"))
    raw["repeated_cv"]["accuracy_avg"] = raw["repeated_cv"].pop("accuracy_mean")
    broken = tmp_path / METRICS_FILE
    broken.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ValidationError, match=r"repeated_cv\.accuracy_mean"):
        read_metrics(broken)
    with pytest.raises(ValidationError, match=r"repeated_cv\.accuracy_avg"):
        write_metrics(broken, raw)
