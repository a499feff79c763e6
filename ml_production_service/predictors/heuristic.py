"""A rule-based baseline: two petal thresholds, no training, no artifact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from ml_production_service import __version__
from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import ModelManifest, Recipe, installed_library_versions
from ml_production_service.predictors.base import BasePredictor, ManifestError, Prediction

SETOSA_MAX_PETAL_LENGTH_CM = 2.0
"""A petal shorter than this is a setosa."""

VERSICOLOR_MAX_PETAL_WIDTH_CM = 1.7
"""Otherwise, a petal narrower than this is a versicolor; anything else is a virginica."""

CLASS_LABELS: tuple[str, ...] = ("setosa", "versicolor", "virginica")
PETAL_LENGTH = FEATURE_NAMES.index("petal_length")
PETAL_WIDTH = FEATURE_NAMES.index("petal_width")

RULES: tuple[str, ...] = (
    f"petal_length < {SETOSA_MAX_PETAL_LENGTH_CM} -> setosa",
    f"petal_width < {VERSICOLOR_MAX_PETAL_WIDTH_CM} -> versicolor",
    "otherwise -> virginica",
)


def default_heuristic_manifest() -> ModelManifest:
    """The manifest the heuristic serves with when the registry holds none for it."""
    return ModelManifest(
        model_type=ModelType.HEURISTIC,
        version=f"rules-{__version__}",
        library_versions=installed_library_versions(),
        feature_names=list(FEATURE_NAMES),
        class_labels=list(CLASS_LABELS),
        recipe=Recipe(
            estimator="HeuristicPredictor",
            hyperparameters={
                "setosa_max_petal_length_cm": SETOSA_MAX_PETAL_LENGTH_CM,
                "versicolor_max_petal_width_cm": VERSICOLOR_MAX_PETAL_WIDTH_CM,
            },
        ),
        created_at=datetime.now(UTC),
    )


class HeuristicPredictor(BasePredictor):
    """Classifies by the two petal thresholds; probabilities are one-hot."""

    def __init__(self, manifest: ModelManifest | None = None) -> None:
        super().__init__(manifest or default_heuristic_manifest())
        if self.class_labels != CLASS_LABELS:
            raise ManifestError(
                f"heuristic manifest lists classes {list(self.class_labels)}, the rules give {list(CLASS_LABELS)}"
            )

    @staticmethod
    def rule_index(petal_length: float, petal_width: float) -> int:
        """Index of the rule that fires, which is also the predicted class index."""
        if petal_length < SETOSA_MAX_PETAL_LENGTH_CM:
            return 0
        if petal_width < VERSICOLOR_MAX_PETAL_WIDTH_CM:
            return 1
        return 2

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """One-hot probabilities from the rules, for every row."""
        index = np.where(
            rows[:, PETAL_LENGTH] < SETOSA_MAX_PETAL_LENGTH_CM,
            0,
            np.where(rows[:, PETAL_WIDTH] < VERSICOLOR_MAX_PETAL_WIDTH_CM, 1, 2),
        )
        return np.eye(len(CLASS_LABELS), dtype=np.float64)[index]

    def predict_one(self, row: FloatArray) -> Prediction:
        """One row by the rules in plain Python (numpy's per-call overhead is larger than the rules)."""
        index = self.rule_index(float(row[PETAL_LENGTH]), float(row[PETAL_WIDTH]))
        probabilities = dict.fromkeys(CLASS_LABELS, 0.0)
        probabilities[CLASS_LABELS[index]] = 1.0
        return Prediction(label=CLASS_LABELS[index], class_index=index, probabilities=probabilities)

    def explain(self, row: FloatArray) -> dict[str, Any]:
        """The rule that fired for this row."""
        index = self.rule_index(float(row[PETAL_LENGTH]), float(row[PETAL_WIDTH]))
        return {"method": "rule", "rule": RULES[index], "rules": list(RULES)}
