"""The reference profile and golden predictions: how rows are binned, what is recorded, and the start-up check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import GOLDEN_ROWS, ModelManifest, Recipe, installed_library_versions
from ml_production_service.reference import (
    FAST_PATH_GOLDEN_TOLERANCE,
    GOLDEN_TOLERANCE,
    REFERENCE_QUANTILES,
    GoldenMismatchError,
    bin_index,
    bin_indices,
    check_golden,
    golden_predictions,
    golden_rows,
    histogram,
    reference_profile,
)

EDGES = [1.0, 2.0, 3.0]
LABELS = ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(-1e9, 0, id="far-below"),
        pytest.param(0.999, 0, id="just-below-the-first-edge"),
        pytest.param(1.0, 1, id="on-the-first-edge-goes-above-it"),
        pytest.param(1.5, 1, id="between"),
        pytest.param(2.0, 2, id="on-an-inner-edge-goes-above-it"),
        pytest.param(3.0, 3, id="on-the-last-edge-is-the-last-bin"),
        pytest.param(1e9, 3, id="far-above"),
    ],
)
def test_bin_index_is_bisect_right_over_open_ended_bins(value: float, expected: int) -> None:
    """A value equal to an edge belongs to the bin above it; both ends are open: len(edges) + 1 bins."""
    assert bin_index(EDGES, value) == expected


def test_no_edges_is_one_bin() -> None:
    """A profile whose edges were all equal to nothing (no edges) puts every value in bin 0."""
    assert bin_index([], 42.0) == 0
    assert bin_indices([], [1.0, 2.0]).tolist() == [0, 0]


def test_bin_indices_bins_exactly_as_bin_index(iris_rows: FloatArray) -> None:
    """The vectorised form the service may use on a batch agrees with bin_index on every value, edges included."""
    edges, _ = histogram(iris_rows[:, 2])
    values = np.concatenate([iris_rows[:, 2], edges, np.nextafter(edges, -np.inf), [0.0, 100.0]])
    assert bin_indices(edges, values).tolist() == [bin_index(edges, float(v)) for v in values]


def test_histogram_of_distinct_values_has_nine_decile_edges_and_ten_equal_bins() -> None:
    """1..100: the 10%..90% quantiles are nine interior edges, and each of the ten bins holds a tenth."""
    edges, fractions = histogram(np.arange(1.0, 101.0))
    assert len(edges) == len(REFERENCE_QUANTILES) == 9
    assert edges == sorted(edges)
    assert fractions == pytest.approx([0.1] * 10)


def test_histogram_drops_repeated_edges() -> None:
    """Tied quantiles make one edge, not empty bins between equal edges; the fractions still sum to 1."""
    edges, fractions = histogram([5.0] * 9 + [7.0])
    assert edges == pytest.approx([5.0, 5.2])  # eight quantiles are 5.0; the 90% one lies between 5.0 and 7.0
    assert fractions == pytest.approx([0.0, 0.9, 0.1])
    constant_edges, constant_fractions = histogram([0.5] * 4)
    assert constant_edges == [0.5]
    assert constant_fractions == [0.0, 1.0]  # every value equals the edge: the bin above it


@pytest.mark.parametrize("values", [pytest.param([], id="empty"), pytest.param([1.0, np.nan], id="nan")])
def test_histogram_refuses_what_it_cannot_describe(values: list[float]) -> None:
    """No values, or a non-finite one, is an error rather than a profile with NaN edges."""
    with pytest.raises(ValueError, match="at least one value, all finite"):
        histogram(values)


@pytest.fixture(scope="module")
def iris_reference() -> tuple[Any, ...]:
    """Iris with made-up confidences spread over [0.4, 1], and its reference profile."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows, targets = np.asarray(iris.data, dtype=np.float64), np.asarray(iris.target)
    top = np.linspace(0.4, 1.0, len(targets))
    return rows, targets, top, reference_profile(rows, targets, LABELS, top, source="iris, by hand")


def test_reference_profile_counts_the_training_rows_into_its_own_bins(iris_reference: tuple[Any, ...]) -> None:
    """Each feature's fractions are the training rows counted with bin_index: live rows binned the same way compare."""
    rows, targets, top, reference = iris_reference
    assert list(reference.features) == list(FEATURE_NAMES)
    for column, name in enumerate(FEATURE_NAMES):
        profile = reference.features[name]
        counts = np.bincount([bin_index(profile.edges, v) for v in rows[:, column]], minlength=len(profile.edges) + 1)
        assert profile.fractions == (counts / len(rows)).tolist()
        assert 1 <= len(profile.edges) <= 9
        assert (profile.min, profile.max) == (rows[:, column].min(), rows[:, column].max())
    counts = np.bincount(
        [bin_index(reference.confidence.edges, v) for v in top], minlength=len(reference.confidence.edges) + 1
    )
    assert reference.confidence.fractions == (counts / len(top)).tolist()
    assert reference.class_prior == dict.fromkeys(LABELS, 1 / 3)
    assert reference.rows == 150
    assert reference.source == "iris, by hand"
    assert len(targets) == 150


def test_reference_profile_has_exactly_the_documented_json_shape(iris_reference: tuple[Any, ...]) -> None:
    """The service relies on these keys and types: nothing more, nothing less."""
    data = json.loads(iris_reference[3].model_dump_json())
    assert list(data) == ["features", "class_prior", "confidence", "rows", "source"]
    for profile in data["features"].values():
        assert list(profile) == ["edges", "fractions", "min", "max"]
        assert all(
            isinstance(v, float) for v in profile["edges"] + profile["fractions"] + [profile["min"], profile["max"]]
        )
    assert list(data["confidence"]) == ["edges", "fractions"]
    assert isinstance(data["rows"], int) and isinstance(data["source"], str)


def test_class_prior_follows_the_labels_given() -> None:
    """An unbalanced training set records its own prior, in class_labels order, classes without rows included."""
    rows = np.tile([5.0, 3.0, 1.5, 0.2], (4, 1))
    reference = reference_profile(rows, np.array([1, 1, 1, 0]), LABELS, np.ones(4), source="s")
    assert reference.class_prior == {"setosa": 0.25, "versicolor": 0.75, "virginica": 0.0}


@pytest.mark.parametrize(
    ("rows", "labels", "top", "problem"),
    [
        pytest.param(np.ones((3, 3)), [0, 1, 2], [1, 1, 1], "array of rows", id="three-columns"),
        pytest.param(np.ones((0, 4)), [], [], "array of rows", id="no-rows"),
        pytest.param(np.ones((3, 4)), [0, 1], [1, 1, 1], "one label and one top probability", id="labels-short"),
        pytest.param(np.ones((3, 4)), [0, 1, 2], [1, 1], "one label and one top probability", id="top-short"),
        pytest.param(np.ones((3, 4)), [0, 1, 3], [1, 1, 1], "class indices", id="label-out-of-range"),
        pytest.param(np.ones((3, 4)), [0, -1, 2], [1, 1, 1], "class indices", id="negative-label"),
        pytest.param(np.ones((3, 4)), [0.0, 1.0, 2.0], [1, 1, 1], "class indices", id="float-labels"),
    ],
)
def test_reference_profile_refuses_inconsistent_inputs(rows: object, labels: object, top: object, problem: str) -> None:
    """Rows, labels and confidences that do not line up are an error at promotion, not a wrong profile."""
    with pytest.raises(ValueError, match=problem):
        reference_profile(rows, np.asarray(labels), LABELS, top, source="s")  # type: ignore[arg-type]


def test_golden_rows_are_the_150_iris_rows_in_feature_order(iris_rows: FloatArray) -> None:
    """The golden rows are scikit-learn's iris data, whose columns are FEATURE_NAMES."""
    np.testing.assert_array_equal(golden_rows(), iris_rows)


def _manifest(golden_of: object | None = None, *, artifact: str | None = "model.joblib") -> ModelManifest:
    manifest = ModelManifest(
        model_type=ModelType.DECISION_TREE,
        version="v",
        artifact=artifact,
        sha256="0" * 64 if artifact else None,
        library_versions=installed_library_versions(),
        feature_names=list(FEATURE_NAMES),
        class_labels=LABELS,
        recipe=Recipe(estimator="DecisionTreeClassifier"),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    if golden_of is None:
        return manifest
    return manifest.model_copy(update={"golden": golden_predictions(golden_of)})  # type: ignore[arg-type]


def _one_hot(rows: FloatArray) -> FloatArray:
    return np.eye(3)[np.minimum((rows[:, 2] > 2.5).astype(int) + (rows[:, 3] > 1.7), 2)]


def test_golden_predictions_record_every_row() -> None:
    """The manifest keeps the model's probabilities for all 150 rows, exactly as it answered them."""
    golden = golden_predictions(_one_hot)
    assert golden.rows == GOLDEN_ROWS == "iris-150"
    np.testing.assert_array_equal(golden.probabilities, _one_hot(golden_rows()))


def test_a_model_answering_its_golden_predictions_passes() -> None:
    """The same answers, and answers within the tolerance, start."""
    manifest = _manifest(_one_hot)
    check_golden(manifest, _one_hot, tolerance=GOLDEN_TOLERANCE, served_by="s", remedy="r")
    nudged = lambda rows: _one_hot(rows) + GOLDEN_TOLERANCE / 2  # noqa: E731
    check_golden(manifest, nudged, tolerance=GOLDEN_TOLERANCE, served_by="s", remedy="r")


def test_a_model_off_its_golden_predictions_names_the_first_row_expected_and_got() -> None:
    """One line: how many rows differ, the first one's index, what was recorded and what the model answers now."""
    manifest = _manifest(_one_hot)

    def drifted(rows: FloatArray) -> FloatArray:
        answers = _one_hot(rows)
        answers[[7, 90]] = [0.5, 0.25, 0.25]
        return answers

    with pytest.raises(GoldenMismatchError) as caught:
        check_golden(manifest, drifted, tolerance=GOLDEN_TOLERANCE, served_by="the original model", remedy="retrain")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("golden check failed: decision_tree (the original model) differs from its golden")
    assert "on 2 of 150 rows of iris-150; first row 7: expected [1.0, 0.0, 0.0], got [0.5, 0.25, 0.25]" in message
    assert message.endswith(": retrain")


def test_the_tolerance_is_the_line() -> None:
    """A difference just above the tolerance refuses: the fast path's 1e-6 is not the original's 1e-9."""
    manifest = _manifest(_one_hot)
    off = lambda rows: np.abs(_one_hot(rows) - 5e-7)  # noqa: E731
    check_golden(manifest, off, tolerance=FAST_PATH_GOLDEN_TOLERANCE, served_by="fast", remedy="r")
    with pytest.raises(GoldenMismatchError, match=r"first row 0: .*\(tolerance 1e-09\)"):
        check_golden(manifest, off, tolerance=GOLDEN_TOLERANCE, served_by="original", remedy="r")


def test_nan_answers_never_pass() -> None:
    """NaN compares false with everything: it must count as a difference, not slip through."""
    manifest = _manifest(_one_hot)

    def nan_row(rows: FloatArray) -> FloatArray:
        answers = _one_hot(rows)
        answers[3, 1] = np.nan
        return answers

    with pytest.raises(GoldenMismatchError, match=r"first row 3: expected \[1.0, 0.0, 0.0\], got \[1.0, nan, 0.0\]"):
        check_golden(manifest, nan_row, tolerance=GOLDEN_TOLERANCE, served_by="s", remedy="r")


def test_another_number_of_classes_is_refused_by_shape() -> None:
    """A model answering two classes where three were recorded is refused, naming both shapes."""
    with pytest.raises(GoldenMismatchError, match=r"answers shape \(150, 2\) on iris-150, .* shape \(150, 3\)"):
        check_golden(_manifest(_one_hot), lambda rows: _one_hot(rows)[:, :2], tolerance=1e-9, served_by="s", remedy="r")


def test_a_model_that_cannot_predict_the_golden_rows_is_refused_in_one_line() -> None:
    """Whatever the artifact raises becomes a ModelLoadError naming it, with the cause chained."""

    def broken(rows: FloatArray) -> FloatArray:
        raise ValueError("X has 4 features,\nbut the model\texpects 3")

    with pytest.raises(GoldenMismatchError) as caught:
        check_golden(_manifest(_one_hot), broken, tolerance=1e-9, served_by="s", remedy="retrain")
    assert str(caught.value) == (
        "golden check failed: decision_tree (s) cannot predict the iris-150 rows "
        "(ValueError: X has 4 features, but the model expects 3): retrain"
    )
    assert isinstance(caught.value.__cause__, ValueError)


def test_an_artifact_without_golden_predictions_cannot_start() -> None:
    """A manifest that names an artifact but records no golden predictions has nothing to prove: refused."""
    with pytest.raises(GoldenMismatchError, match=r"has no golden predictions, .*: run the refresh"):
        check_golden(_manifest(), _one_hot, tolerance=1e-9, served_by="s", remedy="run the refresh")


def test_a_manifest_without_artifact_or_golden_predictions_is_not_checked() -> None:
    """The heuristic's built-in manifest has neither: nothing to compare, nothing refused, the model is not run."""

    def never(rows: FloatArray) -> FloatArray:
        raise AssertionError("not called")

    check_golden(_manifest(artifact=None), never, tolerance=1e-9, served_by="s", remedy="r")
