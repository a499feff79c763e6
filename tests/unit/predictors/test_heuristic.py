"""The rule-based baseline: two petal thresholds, one-hot answers, the rule as explanation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ml_production_service.features import FEATURE_NAMES
from ml_production_service.predictors.base import ManifestError
from ml_production_service.predictors.heuristic import (
    CLASS_LABELS,
    RULES,
    HeuristicPredictor,
    default_heuristic_manifest,
)


def _row(petal_length: float, petal_width: float) -> np.ndarray:
    return np.array([5.8, 3.0, petal_length, petal_width])


BOUNDARY_CASES = [
    pytest.param(1.99, 0.2, "setosa", id="petal-length-just-under-2"),
    pytest.param(2.0, 0.2, "versicolor", id="petal-length-exactly-2"),
    pytest.param(1.99, 2.5, "setosa", id="short-petal-wins-over-width"),
    pytest.param(4.5, 1.69, "versicolor", id="petal-width-just-under-1.7"),
    pytest.param(4.5, 1.7, "virginica", id="petal-width-exactly-1.7"),
    pytest.param(6.0, 2.5, "virginica", id="large-petal"),
]


RULE = re.compile(r"(?P<feature>\w+) < (?P<threshold>[0-9.]+) -> (?P<label>\w+)")
NO_RULE_FIRES = np.array([5.8, 3.0, 5.0, 2.5])  # long and wide petals: the last rule, virginica


@pytest.mark.parametrize("index", [0, 1])
def test_each_rule_switches_exactly_at_the_threshold_it_states(index: int) -> None:
    """The explanation's rule text tells the truth: just under the number it names (on the feature it names) the
    rule fires, at the number it does not; both predict paths agree, and the manifest names the same number."""
    rule = RULE.fullmatch(RULES[index])
    assert rule is not None, RULES[index]
    feature, threshold, label = rule["feature"], float(rule["threshold"]), rule["label"]
    predictor = HeuristicPredictor()
    just_under, at = NO_RULE_FIRES.copy(), NO_RULE_FIRES.copy()
    just_under[FEATURE_NAMES.index(feature)] = np.nextafter(threshold, 0.0)
    at[FEATURE_NAMES.index(feature)] = threshold
    assert predictor.predict_one(just_under).label == label
    assert predictor.predict_one(at).label == "virginica"
    assert [p.label for p in predictor.predict_many(np.array([just_under, at]))] == [label, "virginica"]
    assert predictor.explain(just_under)["rule"] == RULES[index]
    assert predictor.manifest.recipe.hyperparameters[f"{label}_max_{feature}_cm"] == threshold


@pytest.mark.parametrize(("petal_length", "petal_width", "label"), BOUNDARY_CASES)
def test_rules_at_and_around_the_thresholds(petal_length: float, petal_width: float, label: str) -> None:
    """Each threshold is exclusive: a value equal to it falls to the next rule."""
    prediction = HeuristicPredictor().predict_one(_row(petal_length, petal_width))
    assert prediction.label == label
    assert prediction.class_index == CLASS_LABELS.index(label)


@pytest.mark.parametrize(("petal_length", "petal_width", "label"), BOUNDARY_CASES)
def test_explanation_names_the_rule_that_fired(petal_length: float, petal_width: float, label: str) -> None:
    """?explain=true shows the one rule that decided, and agrees with the prediction next to it."""
    explanation = HeuristicPredictor().explain(_row(petal_length, petal_width))
    assert explanation["method"] == "rule"
    assert explanation["rule"].endswith(f"-> {label}")
    assert explanation["rules"] == list(RULES)


def test_batch_and_single_predictions_agree() -> None:
    """A batch gives each row the label it would get alone."""
    predictor = HeuristicPredictor()
    rows = np.array([_row(pl, pw) for pl in (1.0, 1.99, 2.0, 5.0) for pw in (0.1, 1.69, 1.7, 2.5)])
    batch = [p.label for p in predictor.predict_many(rows)]
    assert batch == [predictor.predict_one(row).label for row in rows]
    assert batch == [CLASS_LABELS[HeuristicPredictor.rule_index(r[2], r[3])] for r in rows]


def test_probabilities_are_one_hot() -> None:
    """The rules are certain: the chosen class has probability 1, the others 0."""
    probabilities = HeuristicPredictor().predict_proba(np.array([_row(1.0, 0.2), _row(4.5, 1.3), _row(6.0, 2.5)]))
    np.testing.assert_array_equal(probabilities, np.eye(3))
    assert probabilities.dtype == np.float64


def test_rule_features_are_the_petal_columns() -> None:
    """The rules read petal_length and petal_width, never a sepal measurement."""
    predictor = HeuristicPredictor()
    base = _row(4.5, 1.3)
    for sepal in ([0.1, 0.1], [50.0, 50.0]):
        row = base.copy()
        row[[FEATURE_NAMES.index("sepal_length"), FEATURE_NAMES.index("sepal_width")]] = sepal
        assert predictor.predict_one(row).label == "versicolor"


def test_default_manifest_describes_the_rules() -> None:
    """Without a promoted manifest the heuristic still reports its classes, features and thresholds."""
    predictor = HeuristicPredictor()
    assert predictor.model_type == "heuristic"
    assert predictor.class_labels == CLASS_LABELS
    assert predictor.version.startswith("rules-")
    assert predictor.manifest.recipe.hyperparameters == {
        "setosa_max_petal_length_cm": 2.0,
        "versicolor_max_petal_width_cm": 1.7,
    }


def test_manifest_with_other_class_labels_is_refused() -> None:
    """A heuristic manifest whose classes differ from the rules' cannot mislabel answers."""
    manifest = default_heuristic_manifest().model_copy(update={"class_labels": ["a", "b", "c"]})
    with pytest.raises(ManifestError, match="lists classes"):
        HeuristicPredictor(manifest)


def test_manifest_with_reordered_class_labels_is_refused() -> None:
    """Swapping two labels in the manifest is caught rather than swapping two answers."""
    manifest = default_heuristic_manifest().model_copy(update={"class_labels": ["versicolor", "setosa", "virginica"]})
    with pytest.raises(ManifestError):
        HeuristicPredictor(manifest)


def test_manifest_with_other_feature_names_is_refused() -> None:
    """A manifest whose features differ from the request's fields cannot be served."""
    manifest = default_heuristic_manifest().model_copy(update={"feature_names": list(reversed(FEATURE_NAMES))})
    with pytest.raises(ManifestError, match="lists features"):
        HeuristicPredictor(manifest)


def test_heuristic_scores_at_least_95_percent_on_iris(iris_rows: np.ndarray, iris_labels: list[str]) -> None:
    """The baseline is good enough to serve: at least 95% of the iris rows right."""
    predicted = [p.label for p in HeuristicPredictor().predict_many(iris_rows)]
    assert np.mean(np.array(predicted) == np.array(iris_labels)) >= 0.95


def test_single_row_rules_agree_with_the_vectorised_rules() -> None:
    """predict_one (plain Python) and predict_many (numpy) give the same answer on a grid across both thresholds."""
    predictor = HeuristicPredictor()
    grid = np.array(
        [[5.0, 3.0, length, width] for length in np.linspace(0.1, 7, 40) for width in np.linspace(0.1, 3, 40)]
    )
    many = predictor.predict_many(grid)
    for row, expected in zip(grid, many, strict=True):
        one = predictor.predict_one(row)
        assert (one.label, one.class_index, one.probabilities) == (
            expected.label,
            expected.class_index,
            expected.probabilities,
        )
