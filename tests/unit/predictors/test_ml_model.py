"""MLModelPredictor: serves any fitted Pipeline, labelled by its manifest, optionally through a fast path."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import ModelType
from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import ManifestError
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from research.experiments.common import make_pipeline

FITTED = [pytest.param(m, id=m.value) for m in (ModelType.DECISION_TREE, ModelType.RANDOM_FOREST, ModelType.XGBOOST)]


class _FakeFastPath:
    """A stand-in compiled model that answers float32 constants, so its use is visible."""

    def predict_proba(self, rows: FloatArray) -> np.ndarray:
        return np.tile(np.array([0.0, 0.0, 1.0], dtype=np.float32), (len(rows), 1))


@pytest.mark.parametrize("model_type", FITTED)
def test_predict_many_labels_every_row_like_the_pipeline(
    model_type: ModelType,
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
    iris_labels: list[str],
) -> None:
    """Each row gets the pipeline's class, named by the manifest, with probabilities summing to 1."""
    pipeline = tiny_pipelines[model_type]
    predictor = MLModelPredictor(pipeline, tiny_manifests[model_type])
    predictions = predictor.predict_many(iris_rows)
    expected = [predictor.class_labels[i] for i in pipeline.predict(iris_rows)]
    assert [p.label for p in predictions] == expected
    assert [p.class_index for p in predictions] == pipeline.predict(iris_rows).tolist()
    assert np.mean(np.array([p.label for p in predictions]) == np.array(iris_labels)) >= 0.9
    for prediction in predictions:
        assert list(prediction.probabilities) == ["setosa", "versicolor", "virginica"]
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.probabilities[prediction.label] == max(prediction.probabilities.values())


@pytest.mark.parametrize("model_type", FITTED)
def test_predict_one_matches_predict_proba(
    model_type: ModelType,
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """A single row's probabilities are exactly the pipeline's for that row."""
    pipeline = tiny_pipelines[model_type]
    predictor = MLModelPredictor(pipeline, tiny_manifests[model_type])
    row = iris_rows[120]
    prediction = predictor.predict_one(row)
    expected = pipeline.predict_proba(row.reshape(1, -1))[0]
    np.testing.assert_allclose(list(prediction.probabilities.values()), expected, rtol=0, atol=1e-12)
    assert prediction.class_index == int(expected.argmax())


def test_class_labels_come_from_the_manifest(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Renaming the classes in the manifest renames the answers; nothing is hard-coded."""
    manifest = tiny_manifests[ModelType.DECISION_TREE].model_copy(update={"class_labels": ["a", "b", "c"]})
    predictor = MLModelPredictor(tiny_pipelines[ModelType.DECISION_TREE], manifest)
    assert predictor.class_labels == ("a", "b", "c")
    assert predictor.predict_one(iris_rows[0]).label == "a"
    assert [p.label for p in predictor.predict_many(iris_rows[[0, 60, 140]])] == ["a", "b", "c"]
    assert set(predictor.predict_one(iris_rows[0]).probabilities) == {"a", "b", "c"}


def test_artifact_that_is_not_a_pipeline_is_refused(
    tiny_manifests: dict[ModelType, ModelManifest], iris_rows: FloatArray, iris_targets: np.ndarray
) -> None:
    """A bare estimator (without the shared feature step) would see the wrong columns: it is refused."""
    bare = DecisionTreeClassifier(random_state=0).fit(iris_rows, iris_targets)
    with pytest.raises(ManifestError, match="not a Pipeline"):
        MLModelPredictor(bare, tiny_manifests[ModelType.DECISION_TREE])


def test_artifact_with_fewer_classes_than_the_manifest_is_refused(
    tiny_manifests: dict[ModelType, ModelManifest], iris_rows: FloatArray, iris_targets: np.ndarray
) -> None:
    """A model that can only answer two classes is not served under three labels."""
    two_classes = make_pipeline(DecisionTreeClassifier(random_state=0)).fit(iris_rows, iris_targets.clip(max=1))
    with pytest.raises(ManifestError, match="predicts classes"):
        MLModelPredictor(two_classes, tiny_manifests[ModelType.DECISION_TREE])


def test_manifest_with_more_labels_than_the_artifact_is_refused(
    tiny_pipelines: dict[ModelType, Pipeline], tiny_manifests: dict[ModelType, ModelManifest]
) -> None:
    """A fourth label in the manifest that the model never predicts is caught at start-up."""
    manifest = tiny_manifests[ModelType.DECISION_TREE].model_copy(
        update={"class_labels": ["setosa", "versicolor", "virginica", "other"]}
    )
    with pytest.raises(ManifestError, match="4 labels"):
        MLModelPredictor(tiny_pipelines[ModelType.DECISION_TREE], manifest)


def test_artifact_trained_on_string_classes_is_refused(
    tiny_manifests: dict[ModelType, ModelManifest], iris_rows: FloatArray, iris_labels: list[str]
) -> None:
    """Labels must be the manifest's, so a model whose classes are names rather than indices is refused."""
    named = make_pipeline(DecisionTreeClassifier(random_state=0)).fit(iris_rows, iris_labels)
    with pytest.raises(ManifestError, match="predicts classes"):
        MLModelPredictor(named, tiny_manifests[ModelType.DECISION_TREE])


def test_unfitted_pipeline_is_refused(tiny_manifests: dict[ModelType, ModelManifest]) -> None:
    """An artifact saved before fitting cannot be served."""
    with pytest.raises(ManifestError, match="predicts classes"):
        MLModelPredictor(make_pipeline(DecisionTreeClassifier()), tiny_manifests[ModelType.DECISION_TREE])


def test_manifest_with_other_features_is_refused(
    tiny_pipelines: dict[ModelType, Pipeline], tiny_manifests: dict[ModelType, ModelManifest]
) -> None:
    """A manifest whose features differ from what the service sends is refused."""
    manifest = tiny_manifests[ModelType.DECISION_TREE].model_copy(update={"feature_names": ["x1", "x2", "x3", "x4"]})
    with pytest.raises(ManifestError, match="lists features"):
        MLModelPredictor(tiny_pipelines[ModelType.DECISION_TREE], manifest)


def test_fast_path_answers_predictions_and_the_original_does_not(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """With a fast path predictions come from it (as float64); .original serves the Pipeline itself."""
    pipeline = tiny_pipelines[ModelType.DECISION_TREE]
    predictor = MLModelPredictor(pipeline, tiny_manifests[ModelType.DECISION_TREE], _FakeFastPath())
    assert predictor.uses_fast_path
    probabilities = predictor.predict_proba(iris_rows[:2])
    assert probabilities.dtype == np.float64
    assert predictor.predict_one(iris_rows[0]).label == "virginica"
    original = predictor.original
    assert not original.uses_fast_path
    assert original.manifest is predictor.manifest
    assert original.predict_one(iris_rows[0]).label == "setosa"


def test_explanations_come_from_the_original_model_even_with_a_fast_path(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """?explain=true describes the real model, not the compiled copy."""
    pipeline = tiny_pipelines[ModelType.DECISION_TREE]
    with_fast = MLModelPredictor(pipeline, tiny_manifests[ModelType.DECISION_TREE], _FakeFastPath())
    without = MLModelPredictor(pipeline, tiny_manifests[ModelType.DECISION_TREE])
    assert with_fast.explain(iris_rows[0]) == without.explain(iris_rows[0])


class _CountingFastPath(_FakeFastPath):
    """The stand-in fast path, counting the rows of each call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba(self, rows: FloatArray) -> np.ndarray:
        self.calls.append(len(rows))
        return super().predict_proba(rows)


def test_warm_up_runs_the_fast_path_that_will_serve(
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """Start-up's warm-up predicts through the fast path (ONNX Runtime's lazy set-up happens then, not on the first
    request): one single-row call per repeat; the Pipeline is not what is timed."""
    fast = _CountingFastPath()
    predictor = MLModelPredictor(tiny_pipelines[ModelType.DECISION_TREE], tiny_manifests[ModelType.DECISION_TREE], fast)
    predictor.warm_up(iris_rows[0], repeats=7)
    assert fast.calls == [1] * 7


def test_without_its_pipeline_a_predictor_needs_a_fast_path_and_a_loader(
    tiny_pipelines: dict[ModelType, Pipeline], tiny_manifests: dict[ModelType, ModelManifest]
) -> None:
    """Nothing could serve or explain: refused at construction, not at the first request."""
    manifest = tiny_manifests[ModelType.DECISION_TREE]
    pipeline = tiny_pipelines[ModelType.DECISION_TREE]
    with pytest.raises(ValueError, match="needs its fast path and a way to load"):
        MLModelPredictor(None, manifest, load=lambda: pipeline)
    with pytest.raises(ValueError, match="needs its fast path and a way to load"):
        MLModelPredictor(None, manifest, _FakeFastPath())


def test_a_deferred_pipeline_is_loaded_once_and_checked_like_a_given_one(
    tiny_pipelines: dict[ModelType, Pipeline], tiny_manifests: dict[ModelType, ModelManifest], iris_rows: FloatArray
) -> None:
    """Concurrent first explanations load the Pipeline once; a loader that returns something else is refused."""
    manifest = tiny_manifests[ModelType.RANDOM_FOREST]
    pipeline = tiny_pipelines[ModelType.RANDOM_FOREST]
    calls: list[int] = []

    def load() -> Pipeline:
        calls.append(1)
        time.sleep(0.05)  # long enough for the other threads to arrive while it loads
        return pipeline

    predictor = MLModelPredictor(None, manifest, _FakeFastPath(), load=load)
    assert not predictor.explainer_loaded
    with ThreadPoolExecutor(4) as pool:
        explanations = list(pool.map(lambda _: predictor.explain(iris_rows[0]), range(4)))
    assert calls == [1] and predictor.explainer_loaded
    assert explanations == [MLModelPredictor(pipeline, manifest).explain(iris_rows[0])] * 4
    wrong = MLModelPredictor(None, manifest, _FakeFastPath(), load=lambda: "not a pipeline")
    with pytest.raises(ManifestError, match="is a str, not a Pipeline"):
        wrong.load_explainer()
    assert not wrong.explainer_loaded


def test_a_predictor_with_its_explainer_in_memory_has_nothing_to_load() -> None:
    """The heuristic (and a predictor given its Pipeline) explains at once: loading is a no-op."""
    predictor = HeuristicPredictor()
    assert predictor.explainer_loaded
    predictor.load_explainer()
    assert predictor.explainer_loaded
