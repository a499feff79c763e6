"""Small, fast research runs (30 rows, 3-fold x 2) shared by the research tests, in a temporary workspace."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ml_production_service.configs import ModelType
from research.experiments.common import FamilyConfig
from research.experiments.evaluation import Protocol
from research.experiments.experiment import Run, run_experiment

SMALL = Protocol(folds=3, repeats=2, every=5, inner_folds=2, timing_budget_s=0.01, measure_memory=False, spread_seeds=2)
"""Every 5th iris row (10 per class), 3-fold x 2, nested 3 x 2, two more fold seeds: seconds, not minutes."""


@dataclass(frozen=True)
class Workspace:
    """Where the shared runs wrote their results and candidates."""

    results: Path
    models: Path


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """An empty results folder and candidates folder for the session."""
    root = tmp_path_factory.mktemp("research")
    return Workspace(root / "results", root / "models")


@pytest.fixture(scope="session")
def tree_run(workspace: Workspace) -> Run:
    """The committed decision-tree recipe, run under the small protocol (memory probe included)."""
    config = FamilyConfig.load(ModelType.DECISION_TREE)
    return run_experiment(config, replace(SMALL, measure_memory=True), workspace.results, workspace.models)


@pytest.fixture(scope="session")
def stump_run(workspace: Workspace, tree_run: Run) -> Run:
    """A worse decision tree (depth 1 cannot separate three classes), run after ``tree_run``."""
    config = FamilyConfig(ModelType.DECISION_TREE, "DecisionTreeClassifier", hyperparameters={"max_depth": 1})
    return run_experiment(config, SMALL, workspace.results, workspace.models)


@pytest.fixture(scope="session")
def heuristic_run(workspace: Workspace) -> Run:
    """The heuristic through the same small protocol."""
    return run_experiment(FamilyConfig.load(ModelType.HEURISTIC), SMALL, workspace.results, workspace.models)
