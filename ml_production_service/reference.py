"""What a promoted model is watched and checked against: its reference profile and its golden predictions.

The reference profile (``reference_profile``) records, at promotion, how the training rows were distributed over
a few bins of each raw input, the class prior, and how confident the model was out of fold; the service counts
live rows into the same bins with ``bin_index`` / ``bin_indices``. The golden predictions (``golden_predictions``)
are the promoted model's probabilities on the 150 iris rows; ``check_golden`` runs at every start-up and refuses a
model that no longer answers them (a changed feature transform, library or artifact).
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import (
    GOLDEN_ROW_COUNT,
    GOLDEN_ROWS,
    FeatureProfile,
    Golden,
    Histogram,
    ModelManifest,
    Reference,
)
from ml_production_service.predictors.base import ModelLoadError

REFERENCE_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Interior bin edges are these training quantiles (numpy's default, linear), de-duplicated: about ten bins."""

PARITY_TOLERANCE = 1e-6
"""Largest difference allowed between a fast-path probability and the original model's (``fast_path``'s parity)."""

GOLDEN_TOLERANCE = 1e-9
"""Largest difference allowed between the original model's probability and its golden one (float noise only)."""

FAST_PATH_GOLDEN_TOLERANCE = PARITY_TOLERANCE
"""The fast path computes in float32: it is held to the parity tolerance instead."""

ProbabilityFunction = Callable[[FloatArray], npt.ArrayLike]


class GoldenMismatchError(ModelLoadError):
    """The model does not answer its golden predictions: what is served changed since promotion."""


def bin_index(edges: Sequence[float], value: float) -> int:
    """The bin of ``value`` among open-ended bins with interior ``edges`` (sorted): 0 to ``len(edges)``.

    ``bisect.bisect_right`` semantics: bin ``i`` holds ``edges[i-1] <= value < edges[i]``, so a value equal to an
    edge belongs to the bin above it; bin 0 is everything below ``edges[0]`` and bin ``len(edges)`` everything from
    ``edges[-1]`` up. Training rows were counted this way, so live rows must be too.
    """
    return bisect.bisect_right(edges, value)


def bin_indices(edges: Sequence[float], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """``bin_index`` of every value at once (``numpy.searchsorted(..., side="right")``: the same bins)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def histogram(values: npt.ArrayLike) -> tuple[list[float], list[float]]:
    """Interior edges at the ``REFERENCE_QUANTILES`` of ``values`` (de-duplicated) and the fraction in each bin."""
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError("a histogram needs at least one value, all finite")
    edges = [float(edge) for edge in np.unique(np.quantile(data, REFERENCE_QUANTILES))]
    counts = np.bincount(bin_indices(edges, data), minlength=len(edges) + 1)
    return edges, [float(count) / data.size for count in counts]


def reference_profile(
    rows: npt.ArrayLike,
    labels: npt.ArrayLike,
    class_labels: Sequence[str],
    top_probabilities: npt.ArrayLike,
    *,
    source: str,
) -> Reference:
    """The reference profile of training ``rows`` (``[n, 4]`` in ``FEATURE_NAMES`` order).

    ``labels`` are the rows' class indices into ``class_labels``; ``top_probabilities`` are the model's top-class
    probability for each row (out of fold when the model learns); ``source`` says, in one line, where they came from.
    """
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels)
    top = np.asarray(top_probabilities, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES) or len(x) == 0:
        raise ValueError(f"expected a non-empty [n, {len(FEATURE_NAMES)}] array of rows, got shape {x.shape}")
    if y.shape != (len(x),) or top.shape != (len(x),):
        raise ValueError(
            f"expected one label and one top probability per row ({len(x)}), got {y.shape} and {top.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(class_labels):
        raise ValueError(f"labels must be class indices in [0, {len(class_labels)})")
    features = {}
    for column, name in enumerate(FEATURE_NAMES):
        edges, fractions = histogram(x[:, column])
        features[name] = FeatureProfile(
            edges=edges, fractions=fractions, min=float(x[:, column].min()), max=float(x[:, column].max())
        )
    confidence_edges, confidence_fractions = histogram(top)
    counts = np.bincount(y, minlength=len(class_labels))
    return Reference(
        features=features,
        class_prior={label: float(count) / len(y) for label, count in zip(class_labels, counts, strict=True)},
        confidence=Histogram(edges=confidence_edges, fractions=confidence_fractions),
        rows=len(x),
        source=source,
    )


def golden_rows() -> FloatArray:
    """The golden rows: ``sklearn.datasets.load_iris().data`` (its columns are ``FEATURE_NAMES``, in order)."""
    return _iris_data().copy()


@functools.cache
def _iris_data() -> FloatArray:
    """``load_iris().data`` read from the file it reads, without importing scikit-learn (about 95 MB resident):
    the heuristic and the fast path check their golden predictions without it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - scikit-learn is a dependency
        raise ModelLoadError("scikit-learn is not installed: its iris data holds the golden rows")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "iris.csv"
    # The file's first line is its shape and class names; then four measurements and the class index per row.
    rows = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(len(FEATURE_NAMES)), dtype=np.float64)
    rows.flags.writeable = False
    return rows


def golden_predictions(predict_proba: ProbabilityFunction) -> Golden:
    """The probabilities ``predict_proba`` answers on the golden rows, as the manifest records them."""
    probabilities = np.asarray(predict_proba(golden_rows()), dtype=np.float64)
    return Golden(rows=GOLDEN_ROWS, probabilities=probabilities.tolist())


def check_golden(
    manifest: ModelManifest, predict_proba: ProbabilityFunction, *, tolerance: float, served_by: str, remedy: str
) -> None:
    """Refuse (GoldenMismatchError, one line naming the first differing row) a model off its golden predictions.

    A manifest that names an artifact must have golden predictions; one without an artifact (the heuristic's) is
    checked when it has them.
    """
    name = manifest.model_type.value
    golden = manifest.golden
    if golden is None:
        if manifest.artifact is None:
            return
        raise GoldenMismatchError(
            f"manifest of {name} has no golden predictions, so start-up cannot prove the artifact serves what was "
            f"promoted: {remedy}"
        )
    expected = np.asarray(golden.probabilities, dtype=np.float64)
    try:
        actual = np.asarray(predict_proba(golden_rows()), dtype=np.float64)
    except Exception as error:
        # The model is whatever the artifact unpickled to: any exception of any library can come out of it.
        raise GoldenMismatchError(
            f"golden check failed: {name} ({served_by}) cannot predict the {golden.rows} rows "
            f"({type(error).__name__}: {' '.join(str(error).split())}): {remedy}"
        ) from error
    if actual.shape != expected.shape:
        raise GoldenMismatchError(
            f"golden check failed: {name} ({served_by}) answers shape {actual.shape} on {golden.rows}, "
            f"its golden predictions have shape {expected.shape}: {remedy}"
        )
    difference = np.abs(actual - expected)
    # NaN is never within tolerance: compare with "not <=" so that it counts as a difference.
    differs = ~(difference <= tolerance)
    if not differs.any():
        return
    row = int(np.flatnonzero(differs.any(axis=1))[0])
    rows_differing = int(differs.any(axis=1).sum())
    raise GoldenMismatchError(
        f"golden check failed: {name} ({served_by}) differs from its golden predictions on {rows_differing} of "
        f"{GOLDEN_ROW_COUNT} rows of {golden.rows}; first row {row}: expected {expected[row].tolist()}, "
        f"got {actual[row].tolist()} (tolerance {tolerance:g}); what is served changed since promotion "
        f"(feature transform, library or artifact): {remedy}"
    )
