"""Explanations: a decision tree's path leads to its leaf; ensemble contributions add up to the output."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost
from sklearn.pipeline import Pipeline

from ml_production_service.configs import ModelType
from ml_production_service.features import ENGINEERED_FEATURE_NAMES, FEATURE_NAMES, FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.ml_model import MLModelPredictor

RAW_COLUMNS_OF: dict[str, tuple[int, int | None]] = {
    **{name: (index, None) for index, name in enumerate(FEATURE_NAMES)},
    "petal_area": (2, 3),
    "petal_aspect": (2, 3),
    "sepal_area": (0, 1),
    "sepal_aspect": (0, 1),
}


def _sample_rows(iris_rows: FloatArray) -> FloatArray:
    """Every fifth iris row (all three classes) and a few unusual rows the API would accept."""
    rng = np.random.default_rng(0)
    return np.vstack([iris_rows[::5], rng.uniform(0.1, 10.0, size=(10, len(FEATURE_NAMES)))])


def _predictor(
    model_type: ModelType, pipelines: dict[ModelType, Pipeline], manifests: dict[ModelType, ModelManifest]
) -> MLModelPredictor:
    return MLModelPredictor(pipelines[model_type], manifests[model_type])


def test_decision_path_walks_from_the_root_to_the_predicting_leaf(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Each step is a real split the row passes, in order, ending at the leaf that gives the prediction."""
    predictor = _predictor(ModelType.DECISION_TREE, tiny_pipelines, tiny_manifests)
    tree = predictor.pipeline[-1]
    structure = tree.tree_
    for row in _sample_rows(iris_rows):
        explanation = predictor.explain(row)
        features = predictor.pipeline[:-1].transform(row.reshape(1, -1))
        assert explanation["method"] == "decision_path"
        steps = explanation["path"]
        assert steps[0]["node"] == 0
        leaf = explanation["leaf"]
        assert leaf == int(tree.apply(features)[0])
        assert structure.children_left[leaf] == -1
        assert structure.value[leaf, 0].argmax() == predictor.predict_one(row).class_index
        for step, following in zip(steps, [*(s["node"] for s in steps[1:]), leaf], strict=True):
            node = step["node"]
            child = structure.children_left[node] if step["direction"] == "<=" else structure.children_right[node]
            assert child == following
            assert step["feature"] == ENGINEERED_FEATURE_NAMES[structure.feature[node]]
            assert step["value"] == float(np.float32(features[0, structure.feature[node]]))
            assert step["threshold"] == structure.threshold[node]


def test_decision_path_directions_agree_with_values_and_thresholds(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Every step reads true: '<=' only when the value is at most the threshold, '>' only when above."""
    predictor = _predictor(ModelType.DECISION_TREE, tiny_pipelines, tiny_manifests)
    for row in _sample_rows(iris_rows):
        for step in predictor.explain(row)["path"]:
            assert step["direction"] == ("<=" if step["value"] <= step["threshold"] else ">"), step


def test_decision_path_direction_reads_true_right_next_to_a_threshold(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
) -> None:
    """Right next to a threshold the step shows the float32 value the tree compared, so its direction reads true."""
    predictor = _predictor(ModelType.DECISION_TREE, tiny_pipelines, tiny_manifests)
    structure = predictor.pipeline[-1].tree_
    feature, threshold = int(structure.feature[0]), float(structure.threshold[0])
    # Raw column set to the value, and raw column set to 1 so that an area or aspect equals the value exactly.
    value_column, unit_column = RAW_COLUMNS_OF[ENGINEERED_FEATURE_NAMES[feature]]
    # The float64 values between the threshold and the next float32 up: the tree compares in float32.
    upper = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    for value in np.linspace(threshold, upper, 12)[1:-1]:
        row = np.array([5.8, 3.0, 4.0, 1.3])
        row[value_column] = value
        if unit_column is not None:
            row[unit_column] = 1.0
        step = predictor.explain(row)["path"][0]
        assert step["value"] == float(np.float32(value))
        assert step["direction"] == ("<=" if step["value"] <= step["threshold"] else ">"), step


def test_forest_contributions_add_up_to_the_predicted_probabilities(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """For each class, bias plus every feature's contribution equals the forest's probability (1e-9)."""
    predictor = _predictor(ModelType.RANDOM_FOREST, tiny_pipelines, tiny_manifests)
    for row in _sample_rows(iris_rows):
        explanation = predictor.explain(row)
        assert (explanation["method"], explanation["output_space"]) == ("tree_path", "probability")
        probabilities = predictor.pipeline.predict_proba(row.reshape(1, -1))[0]
        for k, label in enumerate(predictor.class_labels):
            assert list(explanation["contributions"][label]) == list(ENGINEERED_FEATURE_NAMES)
            total = explanation["bias"][label] + sum(explanation["contributions"][label].values())
            assert abs(total - probabilities[k]) <= 1e-9


def test_forest_bias_is_the_training_class_balance(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """The starting point of every forest explanation is the same for all rows: the class balance each tree was
    grown on (its root node), averaged over the trees."""
    predictor = _predictor(ModelType.RANDOM_FOREST, tiny_pipelines, tiny_manifests)
    first, second = (predictor.explain(iris_rows[i])["bias"] for i in (0, 149))
    assert first == second
    assert sum(first.values()) == pytest.approx(1.0)
    roots = [tree.tree_.value[0, 0] / tree.tree_.value[0, 0].sum() for tree in predictor.pipeline[-1].estimators_]
    np.testing.assert_allclose([first[label] for label in predictor.class_labels], np.mean(roots, axis=0), atol=1e-12)


def _softmax(margin: np.ndarray) -> np.ndarray:
    exp = np.exp(margin - margin.max())
    return exp / exp.sum()


def test_xgboost_contributions_add_up_to_the_margin_and_its_softmax_to_the_probabilities(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Per class, bias plus contributions equals XGBoost's margin, whose softmax is the probability (1e-5)."""
    predictor = _predictor(ModelType.XGBOOST, tiny_pipelines, tiny_manifests)
    booster = predictor.pipeline[-1].get_booster()
    for row in _sample_rows(iris_rows):
        explanation = predictor.explain(row)
        assert (explanation["method"], explanation["output_space"]) == ("tree_shap", "margin")
        features = predictor.pipeline[:-1].transform(row.reshape(1, -1))
        margin = np.asarray(booster.predict(xgboost.DMatrix(features), output_margin=True), dtype=np.float64)[0]
        totals = np.array(
            [
                explanation["bias"][label] + sum(explanation["contributions"][label].values())
                for label in predictor.class_labels
            ]
        )
        np.testing.assert_allclose(totals, margin, rtol=0, atol=1e-5)
        probabilities = predictor.pipeline.predict_proba(row.reshape(1, -1))[0]
        np.testing.assert_allclose(_softmax(margin), probabilities, rtol=0, atol=1e-5)
        assert list(explanation["contributions"]) == list(predictor.class_labels)


@pytest.mark.parametrize(
    "model_type", [pytest.param(m, id=m.value) for m in (ModelType.RANDOM_FOREST, ModelType.XGBOOST)]
)
def test_ensemble_explanations_name_classes_from_the_manifest(
    model_type: ModelType,
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Explanations use the same class names as the predictions they explain."""
    manifest = tiny_manifests[model_type].model_copy(update={"class_labels": ["a", "b", "c"]})
    explanation = MLModelPredictor(tiny_pipelines[model_type], manifest).explain(iris_rows[0])
    assert list(explanation["bias"]) == ["a", "b", "c"]
    assert list(explanation["contributions"]) == ["a", "b", "c"]
