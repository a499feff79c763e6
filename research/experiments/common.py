"""Shared experiment foundations: the data, the served pipeline, the family configs, recipes, code version."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from ml_production_service import __version__
from ml_production_service.configs import REPOSITORY_ROOT, ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray, make_feature_transformer
from ml_production_service.manifest import ModelManifest, Recipe, installed_library_versions
from ml_production_service.predictors.heuristic import HeuristicPredictor, default_heuristic_manifest
from research.experiments.contract import IRIS_CONTRACT, TARGET

SEED = 42
RESEARCH_DIR = REPOSITORY_ROOT / "research"
CONFIG_DIR = RESEARCH_DIR / "configs"
RESULTS_DIR = RESEARCH_DIR / "results"
MODELS_DIR = RESEARCH_DIR / "models"
CODE_PATHS = ("research/experiments", "research/configs", "ml_production_service")
"""The code an experiment's numbers depend on (its results folders are not code)."""


def load_data() -> tuple[FloatArray, np.ndarray, list[str]]:
    """Iris as shipped with scikit-learn, checked against its contract: rows in ``FEATURE_NAMES`` order, integer
    targets, class labels (``contract.ContractError`` naming the column and rule if the data breaks it)."""
    iris = load_iris()
    class_labels = [str(n) for n in iris.target_names]
    table = {_column_name(name): iris.data[:, i] for i, name in enumerate(iris.feature_names)}
    table[TARGET] = np.asarray(class_labels)[iris.target]
    IRIS_CONTRACT.check(table)
    features = np.column_stack([table[name] for name in FEATURE_NAMES])
    return features, np.asarray(iris.target), class_labels


def _column_name(iris_name: str) -> str:
    """'sepal length (cm)' -> 'sepal_length', the name the service and the contract use."""
    return iris_name.removesuffix(" (cm)").replace(" ", "_")


@dataclass(frozen=True)
class Dataset:
    """The rows an experiment uses; ``row_ids`` are 0-based row numbers of ``load_iris()``."""

    features: FloatArray
    targets: np.ndarray
    class_labels: list[str]
    row_ids: np.ndarray

    @property
    def fingerprint(self) -> str:
        """sha256 of the exact rows and labels."""
        return data_fingerprint(self.features, self.targets)


def load_dataset(every: int = 1) -> Dataset:
    """Iris, or every ``every``-th row of it (iris is sorted by class, so each class keeps 1/every of its rows)."""
    features, targets, class_labels = load_data()
    row_ids = np.arange(len(targets))[::every]
    return Dataset(features[row_ids], targets[row_ids], class_labels, row_ids)


def data_fingerprint(features: FloatArray, targets: np.ndarray) -> str:
    """sha256 of the exact rows and labels an experiment used."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features).tobytes())
    digest.update(np.ascontiguousarray(targets.astype(np.int64)).tobytes())
    return digest.hexdigest()


def make_pipeline(estimator: ClassifierMixin) -> Pipeline:
    """The served form of a model: the shared feature transform, then the estimator."""
    return Pipeline([("features", make_feature_transformer()), ("model", estimator)])


class HeuristicRules(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no types
    """The served heuristic as a scikit-learn estimator, to run it through the same protocol; ``fit`` learns nothing."""

    def fit(self, features: FloatArray, targets: np.ndarray) -> HeuristicRules:
        """Nothing to learn: the thresholds are constants of ``predictors.heuristic``."""
        self.classes_ = np.arange(len(default_heuristic_manifest().class_labels))
        self.n_features_in_ = np.asarray(features).shape[1]
        del targets
        return self

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """One-hot probabilities from the served predictor."""
        return HeuristicPredictor().predict_proba(np.asarray(features, dtype=np.float64))

    def predict(self, features: FloatArray) -> np.ndarray:
        """The class index the rules give."""
        return np.asarray(self.predict_proba(features).argmax(axis=1))


ESTIMATORS: dict[str, type[Any]] = {
    "HeuristicPredictor": HeuristicRules,
    "DecisionTreeClassifier": DecisionTreeClassifier,
    "RandomForestClassifier": RandomForestClassifier,
    "XGBClassifier": XGBClassifier,
}
"""Recipe estimator name (as written in a manifest) -> the class that builds it."""


class UnknownEstimatorError(ValueError):
    """A recipe names an estimator this code cannot build."""


def estimator_class(name: str) -> type[Any]:
    """The class a recipe's estimator name builds; UnknownEstimatorError naming the known ones otherwise."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise UnknownEstimatorError(
            f"unknown estimator {name!r} in the recipe; known: {', '.join(sorted(ESTIMATORS))} "
            "(a new kind needs its class in research.experiments.common.ESTIMATORS: CLAUDE.md, recipe: a predictor)"
        ) from None


@dataclass(frozen=True)
class FamilyConfig:
    """A model family's recipe: estimator, fixed hyperparameters and seed, and the grid nested CV searches."""

    model_type: ModelType
    estimator: str
    description: str = ""
    seed: int | None = SEED
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    search_grid: dict[str, list[Any]] = field(default_factory=dict)
    inner_folds: int = 3

    @classmethod
    def load(cls, model_type: ModelType, path: Path | None = None) -> FamilyConfig:
        """Read ``research/configs/<model_type>.json`` (or ``path``)."""
        raw = json.loads((path or CONFIG_DIR / f"{model_type.value}.json").read_text(encoding="utf-8"))
        search = raw.get("search") or {}
        return cls(
            model_type=model_type,
            estimator=raw["estimator"],
            description=raw.get("description", ""),
            seed=raw.get("seed"),
            hyperparameters=dict(raw.get("hyperparameters", {})),
            search_grid={k: list(v) for k, v in search.get("grid", {}).items()},
            inner_folds=int(search.get("inner_folds", 3)),
        )

    def build(self) -> Any:
        """The recipe as an unfitted model: the served Pipeline, or the heuristic rules."""
        cls = estimator_class(self.estimator)
        if not self.model_type.is_fitted:
            return cls()
        params = dict(self.hyperparameters)
        if self.seed is not None:
            params.setdefault("random_state", self.seed)
        return make_pipeline(cls(**params))


def recipe_hyperparameters(model: Any) -> dict[str, Any]:
    """Every hyperparameter of a model's estimator that a manifest can hold (JSON scalars)."""
    if not isinstance(model, Pipeline):
        return dict(default_heuristic_manifest().recipe.hyperparameters)
    params = model[-1].get_params()
    return {k: v for k, v in params.items() if v is None or isinstance(v, bool | int | float | str)}


def model_from_recipe(recipe: Recipe) -> Any:
    """Rebuild the unfitted model a manifest's recipe describes (UnknownEstimatorError for an unknown estimator)."""
    cls = estimator_class(recipe.estimator)
    if cls is HeuristicRules:
        return HeuristicRules()
    defaults = cls().get_params()
    params = {}
    for name, value in recipe.hyperparameters.items():
        default = defaults.get(name)
        # JSON has no NaN: a NaN default (xgboost's ``missing``) is written as null and means "the default".
        if value is None and isinstance(default, float) and math.isnan(default):
            continue
        params[name] = value
    return make_pipeline(cls(**params))


def fit_final(model: Any, features: FloatArray, targets: np.ndarray) -> Any:
    """Fit ``model`` (in place) for saving: the same model always pickles to the same bytes.

    scikit-learn keeps a tree's nodes in a structured array whose padding bytes ``fit`` leaves uninitialised, and
    pickle writes them as they are, so one model's bytes depended on what the process had allocated before. Every
    tree's nodes are copied field by field into zeroed memory. And pickle writes an object once and refers back to
    it after: a string read from JSON is another object than the equal default an estimator shares with its
    sub-estimators, so the bytes would differ (a forest's "gini" in every tree); string parameters are interned,
    and so are the attribute names of every step and tree (an instance made after one was unpickled in the same
    process can carry the unpickled, uninterned names, which changed the bytes of the trees' state).
    """
    estimator = model[-1] if isinstance(model, Pipeline) else model
    strings = {name: value for name, value in estimator.get_params(deep=False).items() if isinstance(value, str)}
    estimator.set_params(**{name: sys.intern(value) for name, value in strings.items()})
    model.fit(features, targets)
    trees = [estimator] if hasattr(estimator, "tree_") else list(getattr(estimator, "estimators_", []))
    _intern_attribute_names(model)
    for tree in trees:
        if not hasattr(tree, "tree_"):
            continue
        state = tree.tree_.__getstate__()
        nodes = state["nodes"]
        clean = np.zeros(nodes.shape, dtype=nodes.dtype)
        for name in nodes.dtype.names:
            clean[name] = nodes[name]
        tree.tree_.__setstate__({**state, "nodes": clean})
    return model


def _intern_attribute_names(part: Any) -> None:
    """Intern the attribute names of ``part`` and of every estimator it holds (steps, templates, fitted trees)."""
    if isinstance(part, list | tuple):
        for item in part:
            _intern_attribute_names(item)
    elif isinstance(part, BaseEstimator):
        part.__dict__ = {sys.intern(name): value for name, value in vars(part).items()}
        for value in vars(part).values():
            _intern_attribute_names(value)


def build_manifest(
    model_type: ModelType,
    estimator_name: str,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
    features: FloatArray,
    targets: np.ndarray,
    class_labels: list[str],
    seed: int | None = SEED,
) -> ModelManifest:
    """A manifest for a model trained on ``features``; the registry fills in artifact and sha256."""
    created = datetime.now(UTC).replace(microsecond=0)
    return ModelManifest(
        model_type=model_type,
        version=created.strftime("%Y%m%d.%H%M%S"),
        library_versions=installed_library_versions(),
        feature_names=list(FEATURE_NAMES),
        class_labels=class_labels,
        recipe=Recipe(
            estimator=estimator_name,
            hyperparameters=hyperparameters,
            seed=seed,
            dataset_sha256=data_fingerprint(features, targets),
            training_rows=len(targets),
        ),
        metrics=metrics,
        created_at=created,
    )


def code_version() -> dict[str, Any]:
    """The git commit, whether the tree differs from it, the package version, and a hash of the code on disk."""
    digest = hashlib.sha256()
    for path in sorted(
        [
            *RESEARCH_DIR.glob("experiments/*.py"),
            *CONFIG_DIR.glob("*.json"),
            *REPOSITORY_ROOT.glob("ml_production_service/**/*.py"),
        ]
    ):
        digest.update(path.relative_to(REPOSITORY_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", *CODE_PATHS)),
        "package_version": __version__,
        "source_sha256": digest.hexdigest(),
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results stay portable), else absolute."""
    try:
        return path.resolve().relative_to(REPOSITORY_ROOT).as_posix()
    except ValueError:
        return str(path)
