"""get_predictor: every model type builds from the registry, verified, ready to predict."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from ml_production_service import fast_path, features
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType, ServiceConfig
from ml_production_service.factory import PREDICTORS, get_predictor, load_fitted, proof, verify_model
from ml_production_service.features import ENGINEERED_FEATURE_NAMES, FloatArray
from ml_production_service.manifest import MANIFEST_FILE
from ml_production_service.predictors import heuristic
from ml_production_service.predictors.base import IntegrityError, ManifestError, VersionMismatchError
from ml_production_service.predictors.heuristic import HeuristicPredictor
from ml_production_service.predictors.ml_model import MLModelPredictor
from ml_production_service.preflight import PROVEN_ENV
from ml_production_service.reference import GoldenMismatchError
from ml_production_service.registry import load_artifact, read_manifest, sha256_file
from research.experiments.common import make_pipeline
from tests.unit.conftest import FITTED_TYPES

SETOSA = np.array([5.1, 3.5, 1.4, 0.2])
VIRGINICA = np.array([6.3, 3.3, 6.0, 2.5])
ALL_TYPES = [pytest.param(m, id=m.value) for m in ModelType]
FITTED = [pytest.param(m, id=m.value) for m in ModelType if m is not ModelType.HEURISTIC]


def test_every_model_type_has_a_constructor() -> None:
    """No MPS_MODEL_TYPE value is accepted by the config but unknown to the factory."""
    assert set(PREDICTORS) == set(ModelType)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_every_model_type_serves_from_the_promoted_registry(model_type: ModelType) -> None:
    """Each model type starts from registry/prd, reports the promoted version and classifies obvious rows."""
    predictor = get_predictor(ServiceConfig(model_type=model_type))
    assert predictor.model_type == model_type.value
    assert predictor.version == read_manifest(DEFAULT_REGISTRY_DIR, model_type).version
    assert predictor.class_labels == ("setosa", "versicolor", "virginica")
    assert predictor.predict_one(SETOSA).label == "setosa"
    assert predictor.predict_one(VIRGINICA).label == "virginica"
    expected = HeuristicPredictor if model_type is ModelType.HEURISTIC else MLModelPredictor
    assert isinstance(predictor, expected)


def test_heuristic_needs_no_registry(tmp_path: Path) -> None:
    """The heuristic starts from an empty registry folder, with its built-in manifest."""
    predictor = get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))
    assert isinstance(predictor, HeuristicPredictor)
    assert predictor.version.startswith("rules-")
    assert predictor.predict_one(SETOSA).label == "setosa"


def test_heuristic_uses_its_promoted_manifest(tmp_path: Path) -> None:
    """When a heuristic manifest is promoted, /model shows its version and metrics."""
    shutil.copytree(DEFAULT_REGISTRY_DIR / "heuristic", tmp_path / "heuristic")
    predictor = get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))
    promoted = read_manifest(DEFAULT_REGISTRY_DIR, ModelType.HEURISTIC)
    assert predictor.manifest == promoted
    assert predictor.version == promoted.version
    assert not predictor.version.startswith("rules-")


def test_heuristic_with_a_broken_manifest_refuses_to_start(tmp_path: Path) -> None:
    """A promoted but corrupted heuristic manifest is an error, not silently replaced by the default."""
    (tmp_path / "heuristic").mkdir()
    (tmp_path / "heuristic" / MANIFEST_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ManifestError, match="is invalid"):
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))


@pytest.mark.parametrize("model_type", FITTED)
def test_fitted_model_missing_from_the_registry_says_how_to_train_it(model_type: ModelType, tmp_path: Path) -> None:
    """An empty registry names the make target that would create the model."""
    target = "make train-" + model_type.value.replace("_", "-")
    with pytest.raises(ManifestError, match=target):
        get_predictor(ServiceConfig(model_type=model_type, registry_dir=tmp_path))


def test_fitted_model_from_a_tiny_registry_without_fast_path(tiny_registry: Path) -> None:
    """MPS_REGISTRY_DIR and MPS_FAST_PATH=false are honoured: the Pipeline from that registry serves."""
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry, fast_path=False)
    predictor = get_predictor(config)
    assert isinstance(predictor, MLModelPredictor)
    assert not predictor.uses_fast_path
    assert predictor.version == read_manifest(tiny_registry, ModelType.DECISION_TREE).version


def test_allow_version_mismatch_reaches_the_registry(tiny_registry: Path) -> None:
    """MPS_ALLOW_VERSION_MISMATCH=true lets a mismatched artifact start; without it start-up fails."""
    path = tiny_registry / "decision_tree" / MANIFEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["library_versions"]["scikit-learn"] = "0.0.1"
    path.write_text(json.dumps(data), encoding="utf-8")
    config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry)
    with pytest.raises(VersionMismatchError):
        get_predictor(config)
    allowed = get_predictor(config.model_copy(update={"allow_version_mismatch": True}))
    assert allowed.predict_one(SETOSA).label == "setosa"


# The golden check: every start-up proves the model still answers what it answered when it was promoted.


def _invert(feature: str) -> Callable[[Any], FloatArray]:
    """``engineer_features`` with one engineered column replaced by its reciprocal: a plausible refactoring slip."""
    column = ENGINEERED_FEATURE_NAMES.index(feature)
    original = features.engineer_features

    def inverted(raw: Any) -> FloatArray:
        engineered = original(raw)
        engineered[:, column] = 1.0 / engineered[:, column]
        return engineered

    return inverted


def _change_the_transform(monkeypatch: pytest.MonkeyPatch, feature: str) -> Callable[[Any], FloatArray]:
    """Change the transform the way editing features.py would: where the pickles look it up, and where the fast
    path imported it."""
    inverted = _invert(feature)
    # An artifact's FunctionTransformer is pickled as a reference, ml_production_service.features.engineer_features,
    # resolved by getattr on the module when the artifact is unpickled: the patched module attribute is what loads.
    monkeypatch.setattr(features, "engineer_features", inverted)
    monkeypatch.setattr(fast_path, "engineer_features", inverted)
    return inverted


GOLDEN_REFUSAL = re.compile(
    r"golden check failed: (?P<model>\w+) \(the original model\) differs from its golden predictions on "
    r"(?P<rows>\d+) of 150 rows of iris-150; first row (?P<row>\d+): expected \[(?P<expected>[^\]]+)\], "
    r"got \[(?P<got>[^\]]+)\] \(tolerance 1e-09\); what is served changed since promotion .*make train-"
)


@pytest.mark.parametrize("fast", [pytest.param(True, id="fast-path"), pytest.param(False, id="original")])
@pytest.mark.parametrize("model_type", FITTED)
def test_a_changed_feature_transform_refuses_to_start_naming_the_row(
    model_type: ModelType, fast: bool, monkeypatch: pytest.MonkeyPatch, iris_rows: FloatArray
) -> None:
    """With petal_area inverted (every fitted model splits on it), no committed model starts; the one-line message
    names the first row that changed, with the recorded and the new probabilities. The unmodified code starts."""
    config = ServiceConfig(model_type=model_type, fast_path=fast)
    inverted = _change_the_transform(monkeypatch, "petal_area")
    pipeline, _ = load_artifact(DEFAULT_REGISTRY_DIR, model_type)
    assert pipeline[0].func is inverted  # the committed pickle names the function; loading resolved the patched one
    with pytest.raises(GoldenMismatchError) as caught:
        get_predictor(config)
    message = str(caught.value)
    assert "\n" not in message
    match = GOLDEN_REFUSAL.match(message)
    assert match is not None, message
    assert match["model"] == model_type.value
    manifest = read_manifest(DEFAULT_REGISTRY_DIR, model_type)
    assert manifest.golden is not None
    row = int(match["row"])
    assert [float(p) for p in match["expected"].split(", ")] == manifest.golden.probabilities[row]
    answers = pipeline.predict_proba(iris_rows)  # what the changed code now serves
    assert [float(p) for p in match["got"].split(", ")] == answers[row].tolist()
    differs = (np.abs(answers - np.asarray(manifest.golden.probabilities)) > 1e-9).any(axis=1)
    assert int(np.flatnonzero(differs)[0]) == row and int(match["rows"]) == differs.sum()
    monkeypatch.undo()
    predictor = get_predictor(config)
    np.testing.assert_allclose(predictor.predict_proba(iris_rows), manifest.golden.probabilities, atol=1e-6, rtol=0)


def test_a_transform_change_a_model_does_not_use_changes_nothing_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is on answers, not code: the decision tree never splits on petal_aspect, so inverting it leaves its
    150 golden answers identical and it starts; the random forest and XGBoost use it and refuse."""
    _change_the_transform(monkeypatch, "petal_aspect")
    tree = get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE))
    assert isinstance(tree, MLModelPredictor)
    assert "petal_aspect" not in {ENGINEERED_FEATURE_NAMES[i] for i in tree.pipeline[-1].tree_.feature if i >= 0}
    for model_type in (ModelType.RANDOM_FOREST, ModelType.XGBOOST):
        with pytest.raises(GoldenMismatchError, match=GOLDEN_REFUSAL):
            get_predictor(ServiceConfig(model_type=model_type))


def test_changed_rules_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The promoted heuristic is checked too: a threshold moved to 1.65 cm turns six setosas (petal length 1.7 or
    1.9 cm, the first is row 5) into versicolors."""
    monkeypatch.setattr(heuristic, "SETOSA_MAX_PETAL_LENGTH_CM", 1.65)
    with pytest.raises(GoldenMismatchError) as caught:
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC))
    assert str(caught.value).startswith(
        "golden check failed: heuristic (its rules) differs from its golden predictions"
    )
    assert "on 6 of 150 rows of iris-150; first row 5: expected [1.0, 0.0, 0.0], got [0.0, 1.0, 0.0]" in str(
        caught.value
    )
    assert str(caught.value).endswith("retrain and re-promote it (make eval-heuristic)")


def test_the_heuristics_single_row_path_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """/predict answers from predict_one, separate plain-Python code: a change there alone still refuses to start."""
    monkeypatch.setattr(HeuristicPredictor, "rule_index", staticmethod(lambda petal_length, petal_width: 2))
    predictor_rows = HeuristicPredictor().predict_proba(load_iris().data)
    assert predictor_rows[0].tolist() == [1.0, 0.0, 0.0]  # the batch path is untouched
    with pytest.raises(GoldenMismatchError) as caught:
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC))
    assert str(caught.value).startswith("golden check failed: heuristic (its rules, row by row) differs")
    not_virginica = int((predictor_rows.argmax(axis=1) != 2).sum())  # every row the rules do not call virginica
    assert (
        f"on {not_virginica} of 150 rows of iris-150; first row 0: expected [1.0, 0.0, 0.0], got [0.0, 0.0, 1.0]"
        in (str(caught.value))
    )


def test_a_fitted_model_without_golden_predictions_refuses_to_start(tiny_registry: Path) -> None:
    """A manifest that lost its golden predictions (or predates them) cannot prove anything: it does not serve."""
    path = tiny_registry / "decision_tree" / MANIFEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["golden"] = None
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(GoldenMismatchError, match="has no golden predictions.*make train-decision-tree"):
        get_predictor(ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry))


def test_a_swapped_artifact_with_its_sha256_re_recorded_refuses_to_start(tiny_registry: Path) -> None:
    """Someone copies another model's artifact in and fixes the sha256: the integrity check passes, the golden does
    not (the fast path would not either, but the original is checked first, with or without it)."""
    folder = tiny_registry / "decision_tree"
    path = folder / MANIFEST_FILE
    stump = make_pipeline(DecisionTreeClassifier(max_depth=1, random_state=0)).fit(load_iris().data, load_iris().target)
    joblib.dump(stump, folder / "model.joblib")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["sha256"] = sha256_file(folder / "model.joblib")
    path.write_text(json.dumps(data), encoding="utf-8")
    for fast in (True, False):
        config = ServiceConfig(model_type=ModelType.DECISION_TREE, registry_dir=tiny_registry, fast_path=fast)
        with pytest.raises(GoldenMismatchError, match=r"\(the original model\) differs .* first row \d+"):
            get_predictor(config)


@pytest.mark.parametrize("model_type", [pytest.param(m, id=m.value) for m in FITTED_TYPES])
def test_a_proven_model_serves_its_fast_path_and_loads_the_pipeline_for_its_first_explanation(
    model_type: ModelType, tiny_registry: Path, iris_rows: FloatArray
) -> None:
    """With the proof of its files, the Pipeline stays on disk until an explanation needs it; answers are the same."""
    full = load_fitted(tiny_registry, model_type)
    proven = load_fitted(tiny_registry, model_type, proven=proof(full.manifest))
    assert proven.uses_fast_path and not proven.explainer_loaded
    np.testing.assert_array_equal(proven.predict_proba(iris_rows), full.predict_proba(iris_rows))
    assert not proven.explainer_loaded  # predictions never load it
    proven.load_explainer()
    assert proven.explainer_loaded
    assert proven.explain(iris_rows[100]) == full.explain(iris_rows[100])


def test_a_proof_of_other_files_is_ignored_and_everything_is_checked_again(tiny_registry: Path) -> None:
    """A proof naming another artifact (a registry changed since the check) loads the Pipeline and proves parity."""
    manifest = read_manifest(tiny_registry, ModelType.DECISION_TREE)
    stale = proof(manifest.model_copy(update={"sha256": "0" * 64}))
    predictor = load_fitted(tiny_registry, ModelType.DECISION_TREE, proven=stale)
    assert predictor.uses_fast_path and predictor.explainer_loaded


def test_a_proven_model_still_verifies_both_files_and_its_golden_predictions(tiny_registry: Path) -> None:
    """The proof skips only the parity proof: a tampered artifact, fast path or golden answer still refuses."""
    model_type = ModelType.DECISION_TREE
    manifest = read_manifest(tiny_registry, model_type)
    proven = proof(manifest)
    folder = tiny_registry / model_type.value
    artifact = folder / "model.joblib"
    original = artifact.read_bytes()
    artifact.write_bytes(original + b"x")
    with pytest.raises(IntegrityError, match="model.joblib"):
        load_fitted(tiny_registry, model_type, proven=proven)
    artifact.write_bytes(original)
    assert manifest.golden is not None
    wrong = [[row[1], row[0], *row[2:]] for row in manifest.golden.probabilities]
    changed = manifest.model_copy(update={"golden": manifest.golden.model_copy(update={"probabilities": wrong})})
    (folder / MANIFEST_FILE).write_text(changed.model_dump_json(), encoding="utf-8")
    with pytest.raises(GoldenMismatchError, match="its ONNX fast path"):
        load_fitted(tiny_registry, model_type, proven=proven)


def test_the_first_explanation_of_a_proven_model_verifies_the_artifact_again(tiny_registry: Path) -> None:
    """An artifact changed after start-up is refused when the explanation loads it, never unpickled."""
    model_type = ModelType.RANDOM_FOREST
    predictor = load_fitted(tiny_registry, model_type, proven=proof(read_manifest(tiny_registry, model_type)))
    artifact = tiny_registry / model_type.value / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        predictor.load_explainer()
    assert not predictor.explainer_loaded


@pytest.mark.parametrize(
    ("model_type", "fast_path", "proven"),
    [
        pytest.param(ModelType.HEURISTIC, True, False, id="heuristic"),
        pytest.param(ModelType.DECISION_TREE, False, False, id="tree-without-fast-path"),
        pytest.param(ModelType.DECISION_TREE, True, True, id="tree-fast-path"),
    ],
)
def test_verify_model_proves_only_a_fast_path(
    model_type: ModelType, fast_path: bool, proven: bool, tiny_registry: Path
) -> None:
    """The proof names the fitted model's files when a fast path serves; there is nothing to hand on otherwise."""
    config = ServiceConfig(model_type=model_type, registry_dir=tiny_registry, fast_path=fast_path)
    expected = proof(read_manifest(tiny_registry, model_type)) if proven else None
    assert verify_model(config) == expected
    assert (expected is not None) == proven


def test_a_manifest_without_a_fast_path_has_no_proof(tiny_registry: Path) -> None:
    """Only a fast path's parity is proven elsewhere: a manifest without one has nothing to hand on."""
    manifest = read_manifest(tiny_registry, ModelType.DECISION_TREE)
    assert proof(manifest) is not None
    assert proof(manifest.model_copy(update={"fast_path": None})) is None


def test_the_proof_from_the_environment_reaches_the_fitted_constructor(
    tiny_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_predictor (the lifespan's call) reads the server command's proof: the Pipeline is left on disk."""
    model_type = ModelType.XGBOOST
    config = ServiceConfig(model_type=model_type, registry_dir=tiny_registry)
    assert get_predictor(config).explainer_loaded
    monkeypatch.setenv(PROVEN_ENV, proof(read_manifest(tiny_registry, model_type)) or "")
    assert not get_predictor(config).explainer_loaded
