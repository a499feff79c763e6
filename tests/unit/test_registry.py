"""The registry on disk: artifacts are verified against their manifest before they are ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.fast_path import FAST_PATH_FILE, FastPathError, ParityError
from ml_production_service.features import FloatArray
from ml_production_service.manifest import MANIFEST_FILE, ModelManifest, installed_library_versions
from ml_production_service.predictors.base import IntegrityError, ManifestError, ModelLoadError, VersionMismatchError
from ml_production_service.predictors.heuristic import HeuristicPredictor, default_heuristic_manifest
from ml_production_service.reference import GoldenMismatchError, golden_predictions
from ml_production_service.registry import (
    ARTIFACT_FILE,
    ArtifactError,
    ManifestNotFoundError,
    load_artifact,
    load_fast_path,
    read_manifest,
    save_model,
    sha256_file,
    version_mismatches,
)
from research.experiments.common import make_pipeline

FITTED = [pytest.param(m, id=m.value) for m in (ModelType.DECISION_TREE, ModelType.RANDOM_FOREST, ModelType.XGBOOST)]
DT = ModelType.DECISION_TREE


class _TouchOnLoad:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _manifest_path(registry: Path, model_type: ModelType = DT) -> Path:
    return registry / model_type.value / MANIFEST_FILE


def _edit_manifest(registry: Path, edit: Any, model_type: ModelType = DT) -> None:
    """Change the manifest JSON in place, recomputing nothing."""
    path = _manifest_path(registry, model_type)
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("model_type", FITTED)
def test_saved_model_loads_back_identical(
    model_type: ModelType,
    tmp_path: Path,
    tiny_pipelines: dict[ModelType, Pipeline],
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
) -> None:
    """What training promotes is exactly what the service loads: same manifest, same probabilities."""
    saved = save_model(tmp_path, tiny_manifests[model_type], tiny_pipelines[model_type])
    folder = tmp_path / model_type.value
    assert saved.artifact == ARTIFACT_FILE
    assert saved.sha256 == sha256_file(folder / ARTIFACT_FILE)
    assert saved.fast_path is not None
    assert saved.fast_path.sha256 == sha256_file(folder / saved.fast_path.artifact)
    artifact, manifest = load_artifact(tmp_path, model_type)
    assert manifest == saved
    assert isinstance(artifact, Pipeline)
    np.testing.assert_array_equal(
        artifact.predict_proba(iris_rows), tiny_pipelines[model_type].predict_proba(iris_rows)
    )


def test_saved_files_are_readable_by_the_service_user(tiny_registry: Path) -> None:
    """Promoted files are mode 0644, so a container's non-root user can read them; no temporaries remain."""
    folder = tiny_registry / DT.value
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "model.joblib", "model.onnx"]
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_failed_save_leaves_no_partial_file(tmp_path: Path, tiny_manifests: dict[ModelType, ModelManifest]) -> None:
    """An artifact that cannot be exported or written leaves neither a half file nor a manifest behind."""
    with pytest.raises((pickle.PicklingError, TypeError)):
        save_model(tmp_path, tiny_manifests[DT], lambda: None)
    assert list((tmp_path / DT.value).iterdir()) == []


def test_model_without_artifact_saves_only_its_manifest(tmp_path: Path) -> None:
    """The heuristic is promoted as a manifest alone, and reads back unchanged."""
    manifest = default_heuristic_manifest()
    saved = save_model(tmp_path, manifest, None)
    assert saved == manifest
    assert [p.name for p in (tmp_path / "heuristic").iterdir()] == [MANIFEST_FILE]
    assert read_manifest(tmp_path, ModelType.HEURISTIC) == manifest


def test_manifest_without_artifact_cannot_be_loaded_as_a_model(tmp_path: Path) -> None:
    """Loading an artifact for a manifest that names none fails with a ManifestError."""
    save_model(tmp_path, default_heuristic_manifest(), None)
    with pytest.raises(ManifestError, match="names no artifact"):
        load_artifact(tmp_path, ModelType.HEURISTIC)


def test_artifact_with_one_flipped_byte_fails_the_integrity_check(tiny_registry: Path) -> None:
    """A single changed byte in model.joblib stops start-up with an integrity error."""
    artifact = tiny_registry / DT.value / ARTIFACT_FILE
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="integrity check") as caught:
        load_artifact(tiny_registry, DT)
    assert str(artifact) in str(caught.value)
    assert "will not be loaded" in str(caught.value)


def test_tampered_artifact_is_never_unpickled(tiny_registry: Path, tmp_path: Path) -> None:
    """A replaced model.joblib is rejected on its sha256 before joblib runs any of its code."""
    marker = tmp_path / "unpickled"
    artifact = tiny_registry / DT.value / ARTIFACT_FILE
    joblib.dump(_TouchOnLoad(marker), artifact)
    with pytest.raises(IntegrityError, match="integrity check"):
        load_artifact(tiny_registry, DT)
    assert not marker.exists()
    # The marker does work: loading the file directly would have run its code.
    joblib.load(artifact)
    assert marker.exists()


def test_garbage_artifact_fails_the_integrity_check_not_unpickling(tiny_registry: Path) -> None:
    """Bytes that are not a pickle at all are reported as tampering, not as an unpickling crash."""
    (tiny_registry / DT.value / ARTIFACT_FILE).write_bytes(b"not a pickle at all")
    with pytest.raises(IntegrityError, match="integrity check"):
        load_artifact(tiny_registry, DT)


def test_missing_manifest_says_how_to_train_the_model(tmp_path: Path) -> None:
    """An empty registry tells the user which make target creates the model, and which variable to set."""
    with pytest.raises(ManifestError) as caught:
        load_artifact(tmp_path, ModelType.RANDOM_FOREST)
    assert "make train-random-forest" in str(caught.value)
    assert "MPS_REGISTRY_DIR" in str(caught.value)


def test_manifest_that_is_not_json_is_refused(tiny_registry: Path) -> None:
    """A truncated or corrupted manifest is a ManifestError naming the file."""
    path = _manifest_path(tiny_registry)
    path.write_text(path.read_text(encoding="utf-8")[:100], encoding="utf-8")
    with pytest.raises(ManifestError, match="is invalid") as caught:
        load_artifact(tiny_registry, DT)
    assert str(path) in str(caught.value)


def test_manifest_missing_a_required_field_is_refused(tiny_registry: Path) -> None:
    """A manifest without its class labels cannot be served."""
    _edit_manifest(tiny_registry, lambda data: data.pop("class_labels"))
    with pytest.raises(ManifestError, match="is invalid"):
        read_manifest(tiny_registry, DT)


def test_manifest_of_another_model_type_is_refused(tiny_registry: Path) -> None:
    """A decision tree's manifest copied into the random forest's folder is caught."""
    _manifest_path(tiny_registry, ModelType.RANDOM_FOREST).write_bytes(_manifest_path(tiny_registry).read_bytes())
    with pytest.raises(ManifestError, match="is for decision_tree, expected random_forest"):
        load_artifact(tiny_registry, ModelType.RANDOM_FOREST)


@pytest.mark.parametrize("name", ["../x", "../decision_tree/model.joblib", "/etc/passwd", "sub/model.joblib"])
def test_artifact_outside_the_model_folder_is_refused(tiny_registry: Path, name: str) -> None:
    """A manifest cannot make the service read a file outside the model's own folder."""
    _edit_manifest(tiny_registry, lambda data: data.update(artifact=name))
    with pytest.raises(ManifestError, match="outside its folder"):
        load_artifact(tiny_registry, DT)


def test_missing_artifact_file_is_refused(tiny_registry: Path) -> None:
    """A manifest whose model.joblib was not committed names the missing file."""
    artifact = tiny_registry / DT.value / ARTIFACT_FILE
    artifact.unlink()
    with pytest.raises(ManifestError, match="does not exist") as caught:
        load_artifact(tiny_registry, DT)
    assert str(artifact) in str(caught.value)


@pytest.mark.parametrize(
    ("library", "version"),
    [pytest.param("scikit-learn", "0.0.1", id="scikit-learn"), pytest.param("xgboost", "0.0.1", id="xgboost")],
)
def test_artifact_trained_with_other_versions_is_refused_with_the_way_out(
    tiny_registry: Path, library: str, version: str
) -> None:
    """Another scikit-learn or xgboost version stops start-up, saying to retrain or to allow the mismatch."""
    _edit_manifest(tiny_registry, lambda data: data["library_versions"].update({library: version}))
    with pytest.raises(VersionMismatchError) as caught:
        load_artifact(tiny_registry, DT)
    message = str(caught.value)
    assert f"{library} trained {version}, installed {installed_library_versions()[library]}" in message
    assert "make train-decision-tree" in message
    assert "MPS_ALLOW_VERSION_MISMATCH" in message


def test_version_mismatch_can_be_allowed(tiny_registry: Path, iris_rows: FloatArray) -> None:
    """MPS_ALLOW_VERSION_MISMATCH=true serves the artifact anyway."""
    _edit_manifest(tiny_registry, lambda data: data["library_versions"].update({"scikit-learn": "0.0.1"}))
    artifact, manifest = load_artifact(tiny_registry, DT, allow_version_mismatch=True)
    assert manifest.library_versions["scikit-learn"] == "0.0.1"
    assert artifact.predict(iris_rows[:1]).tolist() == [0]


def test_numpy_is_compared_on_its_major_version_only(tiny_registry: Path) -> None:
    """Another numpy minor or patch release loads; another major release does not."""
    major = int(installed_library_versions()["numpy"].split(".")[0])
    _edit_manifest(tiny_registry, lambda data: data["library_versions"].update(numpy=f"{major}.999.999"))
    load_artifact(tiny_registry, DT)
    _edit_manifest(tiny_registry, lambda data: data["library_versions"].update(numpy=f"{major + 1}.0.0"))
    with pytest.raises(VersionMismatchError, match="numpy trained"):
        load_artifact(tiny_registry, DT)


def test_untracked_versions_do_not_block_loading(tiny_manifests: dict[ModelType, ModelManifest]) -> None:
    """Only scikit-learn, xgboost and numpy decide; joblib, python and absent entries never do."""
    versions = {"python": "2.7.0", "joblib": "0.1", "onnxruntime": "0.1"}
    manifest = tiny_manifests[DT].model_copy(update={"library_versions": versions})
    assert version_mismatches(manifest) == []


def test_every_mismatch_is_listed(tiny_manifests: dict[ModelType, ModelManifest]) -> None:
    """All mismatching libraries are named at once, so one retraining fixes them all."""
    versions = {"scikit-learn": "0.0.1", "xgboost": "0.0.2", "numpy": "0.1.0"}
    manifest = tiny_manifests[DT].model_copy(update={"library_versions": versions})
    assert [problem.split()[0] for problem in version_mismatches(manifest)] == ["scikit-learn", "xgboost", "numpy"]


def test_integrity_is_checked_before_versions(tiny_registry: Path) -> None:
    """A tampered artifact is reported as tampered even when its versions also differ."""
    _edit_manifest(tiny_registry, lambda data: data["library_versions"].update({"scikit-learn": "0.0.1"}))
    (tiny_registry / DT.value / ARTIFACT_FILE).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        load_artifact(tiny_registry, DT, allow_version_mismatch=True)


def test_manifest_without_fast_path_has_none(tiny_registry: Path) -> None:
    """A model promoted before the fast path existed is served by its Pipeline."""
    _edit_manifest(tiny_registry, lambda data: data.update(fast_path=None))
    artifact, manifest = load_artifact(tiny_registry, DT)
    assert load_fast_path(tiny_registry, manifest, artifact) is None


def test_promoted_fast_path_loads_and_agrees(tiny_registry: Path, iris_rows: FloatArray) -> None:
    """The saved fast path verifies and answers what the Pipeline answers."""
    artifact, manifest = load_artifact(tiny_registry, DT)
    fast = load_fast_path(tiny_registry, manifest, artifact)
    assert fast is not None
    np.testing.assert_allclose(fast.predict_proba(iris_rows), artifact.predict_proba(iris_rows), atol=1e-6)


def _uniform_proba(rows: FloatArray) -> FloatArray:
    """A predict_proba that disagrees with the tree's own structure (what ONNX exports)."""
    return np.full((len(rows), 3), 1 / 3)


def _disagreeing_pipeline(iris_rows: FloatArray, iris_targets: np.ndarray) -> Pipeline:
    pipeline = make_pipeline(DecisionTreeClassifier(max_depth=2, random_state=0)).fit(iris_rows, iris_targets)
    pipeline[-1].predict_proba = _uniform_proba
    return pipeline


def test_model_whose_fast_path_disagrees_is_not_promoted(
    tmp_path: Path,
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
    iris_targets: np.ndarray,
) -> None:
    """Promotion refuses a model whose ONNX export answers differently, and writes no manifest for it."""
    with pytest.raises(ParityError, match="not promoted"):
        save_model(tmp_path, tiny_manifests[DT], _disagreeing_pipeline(iris_rows, iris_targets))
    assert not (tmp_path / DT.value / MANIFEST_FILE).exists()
    assert not (tmp_path / DT.value / "model.onnx").exists()


def test_failed_promotion_keeps_the_previous_model_servable(
    tiny_registry: Path,
    tiny_manifests: dict[ModelType, ModelManifest],
    iris_rows: FloatArray,
    iris_targets: np.ndarray,
) -> None:
    """A re-promotion that fails its parity check leaves the model promoted before it loading as before."""
    before = read_manifest(tiny_registry, DT)
    with pytest.raises(ParityError):
        save_model(tiny_registry, tiny_manifests[DT], _disagreeing_pipeline(iris_rows, iris_targets))
    _, manifest = load_artifact(tiny_registry, DT)
    assert manifest == before


# A broken registry is a ModelLoadError with one line naming the file: start-up logs it, never a traceback.


def _replace_signed(registry: Path, name: str, data: bytes, model_type: ModelType = DT) -> Path:
    """Overwrite ``name`` in the model's folder and record its new sha256, so the integrity check passes."""
    path = registry / model_type.value / name
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    if name == FAST_PATH_FILE:
        _edit_manifest(registry, lambda manifest: manifest["fast_path"].update(sha256=digest), model_type)
    else:
        _edit_manifest(registry, lambda manifest: manifest.update(sha256=digest), model_type)
    return path


def _load_model(registry: Path, model_type: ModelType = DT) -> None:
    """What start-up does: load the artifact, then its fast path."""
    artifact, manifest = load_artifact(registry, model_type)
    load_fast_path(registry, manifest, artifact)


def _refusal(registry: Path, expected: type[ModelLoadError], model_type: ModelType = DT) -> str:
    """The one-line message loading ``registry`` fails with, checked to be an ``expected``."""
    with pytest.raises(expected) as caught:
        _load_model(registry, model_type)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_manifest_that_is_a_directory_is_refused(tiny_registry: Path) -> None:
    """A folder named manifest.json is reported as such, not as an IsADirectoryError."""
    path = _manifest_path(tiny_registry)
    path.unlink()
    path.mkdir()
    assert _refusal(tiny_registry, ManifestError) == f"manifest {path} is a directory, not a regular file"


def test_manifest_that_is_a_fifo_is_refused_without_blocking(tiny_registry: Path) -> None:
    """A FIFO in place of the manifest fails at once: opening it would wait for a writer forever."""
    path = _manifest_path(tiny_registry)
    path.unlink()
    os.mkfifo(path)
    raised: list[BaseException] = []

    def load() -> None:
        try:
            _load_model(tiny_registry)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread to check
            raised.append(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # a regression: it opened the FIFO; a writer's EOF releases it before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading blocked on a FIFO manifest")
    assert len(raised) == 1
    assert isinstance(raised[0], ManifestError)
    assert str(raised[0]) == f"manifest {path} is a special file (FIFO, socket or device), not a regular file"


def test_manifest_that_is_a_symlink_loop_is_refused(tiny_registry: Path) -> None:
    """A manifest.json linking to itself names the file and the loop."""
    path = _manifest_path(tiny_registry)
    path.unlink()
    path.symlink_to(path)
    assert _refusal(tiny_registry, ManifestError) == f"cannot read manifest {path}: Too many levels of symbolic links"


def test_registry_that_is_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    """MPS_REGISTRY_DIR naming a link to itself is a ManifestError naming the manifest looked for."""
    registry = tmp_path / "registry"
    registry.symlink_to(registry)
    message = _refusal(registry, ManifestError)
    assert message == f"cannot read manifest {_manifest_path(registry)}: Too many levels of symbolic links"


def test_registry_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """MPS_REGISTRY_DIR naming a file says so and names the variable, instead of a NotADirectoryError."""
    registry = tmp_path / "registry"
    registry.write_text("not a folder", encoding="utf-8")
    message = _refusal(registry, ManifestError)
    assert message.startswith(f"registry {registry} is not a directory: point MPS_REGISTRY_DIR at a registry folder")


def test_model_folder_that_is_a_file_is_refused_naming_it(tiny_registry: Path) -> None:
    """A file in place of the model's folder is named, not just the manifest path that went through it."""
    folder = tiny_registry / DT.value
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    folder.write_text("not a folder", encoding="utf-8")
    message = _refusal(tiny_registry, ManifestError)
    assert message == f"cannot read manifest {folder / MANIFEST_FILE}: {folder} is not a directory"


def test_registry_below_a_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A registry path that goes through a file names that file, whatever depth it is at."""
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    registry = blocker / "registry" / "prd"
    assert _refusal(registry, ManifestError).endswith(f": {blocker} is not a directory")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("", "is invalid: Invalid JSON: EOF while parsing", id="empty"),
        pytest.param("[]", "is invalid: Input should be an object", id="list"),
        pytest.param('"decision_tree"', "is invalid: Input should be an object", id="string"),
        pytest.param("null", "is invalid: Input should be an object", id="null"),
    ],
)
def test_manifest_that_is_empty_or_not_an_object_is_refused(tiny_registry: Path, content: str, problem: str) -> None:
    """An empty manifest, or valid JSON of the wrong type, is refused naming the file."""
    path = _manifest_path(tiny_registry)
    path.write_text(content, encoding="utf-8")
    assert _refusal(tiny_registry, ManifestError).startswith(f"manifest {path} {problem}")


@pytest.mark.parametrize(
    "keep",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[:1], id="one-byte"),
        pytest.param(lambda data: data[:100], id="first-100-bytes"),
        pytest.param(lambda data: data[: len(data) // 2], id="half"),
        pytest.param(lambda data: data[:-1], id="all-but-the-last-byte"),
    ],
)
def test_truncated_artifact_with_a_matching_sha256_is_refused(tiny_registry: Path, keep: Any) -> None:
    """A truncated model.joblib whose sha256 was re-recorded passes the integrity check, then fails to unpickle."""
    path = tiny_registry / DT.value / ARTIFACT_FILE
    _replace_signed(tiny_registry, ARTIFACT_FILE, keep(path.read_bytes()))
    with pytest.raises(ArtifactError) as caught:
        load_artifact(tiny_registry, DT)
    message = str(caught.value)
    assert message.startswith(f"artifact {path} cannot be unpickled (")
    assert message.endswith("): re-promote the model")
    assert "\n" not in message
    assert caught.value.__cause__ is not None  # the unpickling error stays chained for debugging


def test_unpickling_error_without_a_message_is_named_by_its_class(tiny_registry: Path) -> None:
    """An empty model.joblib raises a bare EOFError: the message names the class, with no dangling colon."""
    path = _replace_signed(tiny_registry, ARTIFACT_FILE, b"")
    expected = f"artifact {path} cannot be unpickled (EOFError): re-promote the model"
    assert _refusal(tiny_registry, ArtifactError) == expected


def test_artifact_needing_a_missing_module_is_refused(tiny_registry: Path) -> None:
    """A pickle of a class from a module that is not installed names the module."""
    path = _replace_signed(tiny_registry, ARTIFACT_FILE, b"cno_such_module\nThing\n.")
    message = _refusal(tiny_registry, ArtifactError)
    assert message == (
        f"artifact {path} cannot be unpickled (ModuleNotFoundError: No module named 'no_such_module'): "
        "re-promote the model"
    )


def test_artifact_that_is_not_a_pipeline_is_refused_before_its_fast_path_runs_it(tiny_registry: Path) -> None:
    """A valid pickle of a plain dict is refused by name, not an AttributeError from the parity check."""
    path = tiny_registry / DT.value / ARTIFACT_FILE
    joblib.dump({"model": "not really"}, path)
    _replace_signed(tiny_registry, ARTIFACT_FILE, path.read_bytes())
    message = _refusal(tiny_registry, ArtifactError)
    assert message == f"artifact {path} holds a dict, not a scikit-learn Pipeline: re-promote the model"


def test_unfitted_pipeline_is_refused_before_its_fast_path_runs_it(tiny_registry: Path) -> None:
    """Start-up checks the Pipeline against its manifest before the parity check could hit NotFittedError."""
    path = tiny_registry / DT.value / ARTIFACT_FILE
    joblib.dump(make_pipeline(DecisionTreeClassifier()), path)
    _replace_signed(tiny_registry, ARTIFACT_FILE, path.read_bytes())
    with pytest.raises(ManifestError, match="predicts classes"):
        get_predictor(ServiceConfig(model_type=DT, registry_dir=tiny_registry))


@pytest.mark.parametrize("name", [ARTIFACT_FILE, FAST_PATH_FILE])
def test_artifact_that_is_a_directory_is_refused(tiny_registry: Path, name: str) -> None:
    """A folder in place of model.joblib or model.onnx is named as a folder, not as a missing file."""
    path = tiny_registry / DT.value / name
    path.unlink()
    path.mkdir()
    what = "artifact" if name == ARTIFACT_FILE else "fast path"
    assert _refusal(tiny_registry, ManifestError) == f"{what} {path} is a directory, not a regular file"


def test_artifact_that_is_a_symlink_loop_is_refused(tiny_registry: Path) -> None:
    """A model.joblib linking to itself names the file and the loop."""
    path = tiny_registry / DT.value / ARTIFACT_FILE
    path.unlink()
    path.symlink_to(path)
    assert _refusal(tiny_registry, ManifestError) == f"cannot read artifact {path}: Too many levels of symbolic links"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"garbage bytes, not a protobuf", "INVALID_PROTOBUF", id="garbage"),
        pytest.param(b"", "No graph was found", id="empty"),
    ],
)
def test_fast_path_onnx_runtime_cannot_load_is_refused(tiny_registry: Path, data: bytes, problem: str) -> None:
    """model.onnx replaced by bytes ONNX Runtime cannot parse (sha256 re-recorded) is a FastPathError naming it."""
    path = _replace_signed(tiny_registry, FAST_PATH_FILE, data)
    message = _refusal(tiny_registry, FastPathError)
    assert message.startswith(f"fast path {path} cannot serve: ONNX Runtime cannot load it (")
    assert problem in message
    assert message.endswith("; re-promote the model, or set MPS_FAST_PATH=false to serve the original")


def _onnx_graph(inputs: int, outputs: list[Any]) -> bytes:
    """A tiny valid ONNX model: one float input ``[n, inputs]`` and the given output nodes."""
    from onnx import TensorProto, helper

    features = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])
    nodes, values = zip(*outputs, strict=True)
    graph = helper.make_graph(list(nodes), "g", [features], list(values))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _identity(inputs: int) -> Any:
    from onnx import TensorProto, helper

    return (
        helper.make_node("Identity", ["x"], ["probabilities"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, inputs]),
    )


def _argmax() -> Any:
    from onnx import TensorProto, helper

    return (
        helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
        helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
    )


def test_fast_path_with_one_output_is_refused(tiny_registry: Path) -> None:
    """A valid ONNX graph without a probabilities output is refused, not an IndexError."""
    path = _replace_signed(tiny_registry, FAST_PATH_FILE, _onnx_graph(8, [_identity(8)]))
    message = _refusal(tiny_registry, FastPathError)
    assert message.startswith(
        f"fast path {path} cannot serve: its graph takes 1 input(s) and returns ['tensor(float)'];"
    )


def test_fast_path_exported_with_zipmap_is_refused(
    tiny_registry: Path, tiny_pipelines: dict[ModelType, Pipeline]
) -> None:
    """A graph answering a sequence of maps (skl2onnx's default zipmap) is refused by its interface."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = convert_sklearn(
        tiny_pipelines[DT][-1], initial_types=[("features", FloatTensorType([None, 8]))], target_opset=17
    )
    _replace_signed(tiny_registry, FAST_PATH_FILE, onnx_model.SerializeToString())
    assert "returns ['tensor(int64)', 'seq(map(int64,tensor(float)))']" in _refusal(tiny_registry, FastPathError)


def test_fast_path_that_fails_on_the_features_is_refused(tiny_registry: Path) -> None:
    """A graph expecting 4 columns where the service sends 8 fails in the parity check: a FastPathError, one line."""
    path = _replace_signed(tiny_registry, FAST_PATH_FILE, _onnx_graph(4, [_argmax(), _identity(4)]))
    message = _refusal(tiny_registry, FastPathError)
    assert message.startswith(f"fast path {path} cannot serve: [ONNXRuntimeError]")
    assert "INVALID_ARGUMENT" in message


def test_missing_manifest_is_its_own_error(tmp_path: Path) -> None:
    """Only an absent manifest is ManifestNotFoundError: what lets the heuristic fall back to its built-in one."""
    with pytest.raises(ManifestNotFoundError):
        read_manifest(tmp_path / "nowhere", ModelType.HEURISTIC)
    predictor = get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path / "nowhere"))
    assert isinstance(predictor, HeuristicPredictor)
    assert predictor.version.startswith("rules-")


def test_heuristic_with_a_manifest_directory_refuses_to_start(tmp_path: Path) -> None:
    """A folder named manifest.json is not mistaken for "no manifest, serve the built-in one"."""
    path = tmp_path / ModelType.HEURISTIC.value / MANIFEST_FILE
    path.mkdir(parents=True)
    with pytest.raises(ManifestError, match="is a directory, not a regular file") as caught:
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=tmp_path))
    assert str(path) in str(caught.value)


def test_heuristic_with_a_registry_that_is_a_file_refuses_to_start(tmp_path: Path) -> None:
    """MPS_REGISTRY_DIR naming a file is a mistake for every model type, the heuristic included."""
    registry = tmp_path / "registry"
    registry.write_text("", encoding="utf-8")
    with pytest.raises(ManifestError, match="is not a directory: point MPS_REGISTRY_DIR") as caught:
        get_predictor(ServiceConfig(model_type=ModelType.HEURISTIC, registry_dir=registry))
    assert str(caught.value).startswith(f"registry {registry} ")


# Golden predictions: recorded by save_model from the artifact itself, checked again when the fast path loads.


def test_save_model_records_the_artifacts_own_golden_predictions(
    tmp_path: Path,
    tiny_manifests: dict[ModelType, ModelManifest],
    tiny_pipelines: dict[ModelType, Pipeline],
    iris_rows: FloatArray,
) -> None:
    """Whatever golden predictions the manifest came with, the saved ones are the artifact's answers on iris."""
    other = golden_predictions(lambda rows: np.full((len(rows), 3), 1 / 3))
    saved = save_model(tmp_path, tiny_manifests[DT].model_copy(update={"golden": other}), tiny_pipelines[DT])
    assert saved.golden is not None
    np.testing.assert_array_equal(saved.golden.probabilities, tiny_pipelines[DT].predict_proba(iris_rows))
    assert read_manifest(tmp_path, DT) == saved


def test_save_model_refuses_a_manifest_the_service_would_refuse_before_writing_anything(
    tiny_registry: Path, tiny_manifests: dict[ModelType, ModelManifest], tiny_pipelines: dict[ModelType, Pipeline]
) -> None:
    """model_copy skips validation: a golden of the wrong width is caught before a file changes, and the model
    promoted before keeps serving."""
    folder = tiny_registry / DT.value
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    two_classes = golden_predictions(lambda rows: np.full((len(rows), 2), 0.5))
    manifest = tiny_manifests[DT].model_copy(update={"class_labels": ["a", "b", "c", "d"], "golden": two_classes})
    # With the artifact, its own 3-class golden predictions replace the 2-class ones; without, they are kept.
    for artifact, classes in ((tiny_pipelines[DT], 3), (None, 2)):
        with pytest.raises(ManifestError, match=f"golden probabilities have {classes} classes, the manifest lists 4"):
            save_model(tiny_registry, manifest, artifact)
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def _nudge_golden(registry: Path, row: int, by: float) -> None:
    def edit(manifest: dict[str, Any]) -> None:
        probabilities = manifest["golden"]["probabilities"][row]
        top = int(np.argmax(probabilities))
        probabilities[top] -= by

    _edit_manifest(registry, edit)


def test_the_fast_path_is_held_to_its_golden_predictions_within_1e_6(tiny_registry: Path) -> None:
    """5e-7 off is float32 noise the fast path may have; 5e-6 off is not, and names the fast path and the way out."""
    _nudge_golden(tiny_registry, 42, 5e-7)
    artifact, manifest = load_artifact(tiny_registry, DT)
    assert load_fast_path(tiny_registry, manifest, artifact) is not None
    _nudge_golden(tiny_registry, 42, 5e-6)
    message = _refusal(tiny_registry, GoldenMismatchError)
    assert message.startswith("golden check failed: decision_tree (its ONNX fast path) differs from its golden")
    assert "on 1 of 150 rows of iris-150; first row 42: expected [" in message
    assert message.endswith("re-promote the model, or set MPS_FAST_PATH=false to serve the original")


def test_the_original_is_held_to_1e_9(tiny_registry: Path) -> None:
    """The same 5e-7 the fast path may have stops the original model: it answers in float64, exactly as promoted."""
    _nudge_golden(tiny_registry, 42, 5e-7)
    with pytest.raises(GoldenMismatchError, match=r"\(the original model\) .* first row 42: .*\(tolerance 1e-09\)"):
        get_predictor(ServiceConfig(model_type=DT, registry_dir=tiny_registry, fast_path=False))
