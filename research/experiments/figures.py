"""PNG figures of a run (matplotlib, Agg backend): confusion matrix, tree, importances, CV score distributions."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, plot_tree  # noqa: E402

from ml_production_service.features import ENGINEERED_FEATURE_NAMES  # noqa: E402

DPI = 90
# No software/date chunks: the same figure is the same bytes.
_METADATA = {"Software": None}


def _save(figure: Figure, path: Path) -> Path:
    """Write a small PNG: a 256-colour palette is plenty for a plot and a third of the bytes (results are committed)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata=_METADATA)
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(path, format="PNG", optimize=True)
    return path


def confusion_matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    """Rows are the true class, columns the predicted one; counts in every cell."""
    values = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(4.2, 3.6))
    axes.imshow(values, cmap="Blues")
    for (i, j), count in np.ndenumerate(values):
        colour = "white" if count > values.max() / 2 else "black"
        axes.text(j, i, str(count), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def tree(estimator: DecisionTreeClassifier, labels: list[str], title: str, path: Path) -> Path:
    """The fitted decision tree, node by node."""
    figure, axes = plt.subplots(figsize=(10, 6))
    plot_tree(
        estimator,
        feature_names=list(ENGINEERED_FEATURE_NAMES),
        class_names=labels,
        filled=True,
        impurity=False,
        rounded=True,
        fontsize=7,
        ax=axes,
    )
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def importances(estimator: Any, title: str, path: Path) -> Path | None:
    """Built-in feature importances over the engineered features (None for a model that has none)."""
    values = getattr(estimator, "feature_importances_", None)
    if values is None:
        return None
    errors = None
    if hasattr(estimator, "estimators_"):
        errors = np.std([tree.feature_importances_ for tree in estimator.estimators_], axis=0)
    kind = "gain" if type(estimator).__name__.startswith("XGB") else "mean decrease in impurity"
    order = np.argsort(values)
    figure, axes = plt.subplots(figsize=(5, 3.4))
    axes.barh(
        np.asarray(ENGINEERED_FEATURE_NAMES)[order],
        np.asarray(values)[order],
        xerr=None if errors is None else errors[order],
        color="tab:blue",
    )
    axes.set_xlabel(f"importance ({kind}, sums to 1)")
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def cv_distributions(scores: dict[str, list[float]], title: str, path: Path) -> Path:
    """Every model's fold accuracies side by side, one dot per fold stacked at its (discrete) value; mean as a diamond.

    Fold accuracies take few values (k of 15 rows right), so a box plot would hide where the folds are; stacking the
    dots shows how many folds land on each value.
    """
    names = list(scores)
    figure, axes = plt.subplots(figsize=(1.7 * len(names) + 2.2, 3.8))
    data = [np.asarray(scores[name], dtype=np.float64) for name in names]
    for position, values in enumerate(data, start=1):
        levels, counts = np.unique(values, return_counts=True)
        step = 0.7 / max(int(counts.max()), 1)
        for level, count in zip(levels, counts, strict=True):
            offsets = (np.arange(count) - (count - 1) / 2) * step
            axes.scatter(position + offsets, np.full(count, level), s=12, color="tab:blue", alpha=0.7, linewidths=0)
            axes.text(position + 0.37, level, str(count), fontsize=6, va="center", color="dimgray")
        axes.scatter([position], [values.mean()], marker="D", s=40, color="tab:red", zorder=3)
    axes.set_xticks(
        range(1, len(names) + 1),
        [f"{name}\nmean {values.mean():.3f}\nsd {_std(values):.3f}" for name, values in zip(names, data, strict=True)],
        fontsize=8,
    )
    axes.set_xlim(0.5, len(names) + 0.5)
    axes.set_ylabel("fold accuracy (dots: folds, with counts)")
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
