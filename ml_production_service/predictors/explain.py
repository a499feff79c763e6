"""Explanations for tree models: the decision path of a tree, additive contributions for ensembles."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.features import ENGINEERED_FEATURE_NAMES, FloatArray


def explain_estimator(pipeline: Pipeline, row: FloatArray, class_labels: tuple[str, ...]) -> dict[str, Any]:
    """Explain one raw row ``[1, 4]`` for the pipeline's final estimator."""
    features = pipeline[:-1].transform(row)
    model = pipeline[-1]
    if isinstance(model, DecisionTreeClassifier):
        return decision_path(model, features)
    if isinstance(model, RandomForestClassifier):
        return forest_contributions(model, features, class_labels)
    return xgboost_contributions(model, features, class_labels)


def decision_path(tree: DecisionTreeClassifier, features: FloatArray) -> dict[str, Any]:
    """Every split the row passes through, root to leaf."""
    structure = tree.tree_
    nodes = tree.decision_path(features).indices.tolist()
    steps = []
    for node, child in zip(nodes, nodes[1:], strict=False):
        feature = int(structure.feature[node])
        threshold = float(structure.threshold[node])
        went_left = child == int(structure.children_left[node])
        steps.append(
            {
                "node": node,
                "feature": ENGINEERED_FEATURE_NAMES[feature],
                # The tree compares float32 values: show the value it compared, so the direction reads true.
                "value": float(np.float32(features[0, feature])),
                "threshold": threshold,
                "direction": "<=" if went_left else ">",
            }
        )
    return {"method": "decision_path", "path": steps, "leaf": nodes[-1]}


def _tree_contributions(tree: DecisionTreeClassifier, features: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Bias (root class distribution) and per-feature change of it along the row's path."""
    structure = tree.tree_
    values = structure.value[:, 0, :]
    values = values / values.sum(axis=1, keepdims=True)
    nodes = tree.decision_path(features).indices
    contributions = np.zeros((features.shape[1], values.shape[1]))
    for parent, child in zip(nodes[:-1], nodes[1:], strict=True):
        contributions[structure.feature[parent]] += values[child] - values[parent]
    return values[nodes[0]], contributions


def forest_contributions(
    forest: RandomForestClassifier, features: FloatArray, class_labels: tuple[str, ...]
) -> dict[str, Any]:
    """Tree-path attribution averaged over the forest: bias + contributions = predicted probabilities."""
    bias = np.zeros(len(class_labels))
    contributions = np.zeros((features.shape[1], len(class_labels)))
    for estimator in forest.estimators_:
        tree_bias, tree_contributions = _tree_contributions(estimator, features)
        bias += tree_bias
        contributions += tree_contributions
    count = len(forest.estimators_)
    return _contribution_payload("tree_path", bias / count, contributions / count, class_labels, "probability")


def xgboost_contributions(model: Any, features: FloatArray, class_labels: tuple[str, ...]) -> dict[str, Any]:
    """XGBoost's exact TreeSHAP (``pred_contribs``) in margin space, per class."""
    import xgboost

    booster = model.get_booster()
    raw = booster.predict(xgboost.DMatrix(features), pred_contribs=True)
    per_class = np.asarray(raw, dtype=np.float64).reshape(len(class_labels), features.shape[1] + 1)
    return _contribution_payload("tree_shap", per_class[:, -1], per_class[:, :-1].T, class_labels, "margin")


def _contribution_payload(
    method: str, bias: FloatArray, contributions: FloatArray, class_labels: tuple[str, ...], space: str
) -> dict[str, Any]:
    return {
        "method": method,
        "output_space": space,
        "bias": dict(zip(class_labels, bias.tolist(), strict=True)),
        "contributions": {
            label: dict(zip(ENGINEERED_FEATURE_NAMES, contributions[:, k].tolist(), strict=True))
            for k, label in enumerate(class_labels)
        },
    }
