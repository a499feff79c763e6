"""The model registry on disk: ``<registry>/<model_type>/manifest.json`` beside its artifact.

Loading checks the artifact's sha256 against the manifest *before* unpickling it, and refuses
artifacts trained with other library versions unless explicitly allowed. Every way a registry can be broken
(a folder where a file should be, a link loop, a truncated or foreign artifact) is a ModelLoadError with
one line naming the file, never a raw exception from the file system, joblib or ONNX Runtime. ``save_model``
records the artifact's golden predictions in its manifest; ``load_fast_path`` holds the fast path to them
(``factory`` holds the original model to them). Reading a manifest and checking sha256s imports no model library.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ml_production_service.configs import ModelType
from ml_production_service.manifest import MANIFEST_FILE, FastPathInfo, ModelManifest, installed_library_versions
from ml_production_service.predictors.base import IntegrityError, ManifestError, ModelLoadError, VersionMismatchError
from ml_production_service.reference import FAST_PATH_GOLDEN_TOLERANCE, check_golden, golden_predictions

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from ml_production_service.fast_path import OnnxModel, ParityReport

# joblib, scikit-learn and the fast path (ONNX Runtime) are imported by the functions that need them.
ARTIFACT_FILE = "model.joblib"
EXACT_VERSION_LIBRARIES = ("scikit-learn", "xgboost")
"""Pickles of these only load faithfully with the exact version that wrote them."""
MAJOR_VERSION_LIBRARIES = ("numpy",)


class ManifestNotFoundError(ManifestError):
    """The registry has no manifest for a model type (the heuristic then serves its built-in one)."""


class ArtifactError(ModelLoadError):
    """An artifact that passed its integrity check cannot be unpickled, or is not a scikit-learn Pipeline."""


def model_dir(registry_dir: Path, model_type: ModelType) -> Path:
    """Folder of one model type in a registry."""
    return registry_dir / model_type.value


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space (start-up logs one line)."""
    return " ".join(text.split())


def _describe(error: Exception) -> str:
    """``EOFError``, ``UnpicklingError: pickle exhausted before end of frame``: the class, and the message if any."""
    return ": ".join(filter(None, [type(error).__name__, _one_line(str(error))]))


def _os_problem(path: Path, error: OSError) -> str:
    """What an OSError raised for ``path`` means, naming the culprit when it is a folder on the way."""
    if isinstance(error, NotADirectoryError):
        # The error names the file asked for, not the parent that is a file: find that parent.
        culprit = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        return f"{culprit} is not a directory"
    return error.strerror or str(error)


def _read_file(path: Path, what: str) -> bytes:
    """The bytes of the regular file ``path``; ManifestError naming it and the problem when it is something else.

    FileNotFoundError passes through: callers say what a missing file means. The type is checked before the
    file is opened, so a folder, FIFO or device in its place fails at once instead of crashing or blocking.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a special file (FIFO, socket or device)"
            raise ManifestError(f"{what} {path} is {kind}, not a regular file")
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:  # a link loop, a file where a folder should be, permissions, I/O errors
        raise ManifestError(f"cannot read {what} {path}: {_os_problem(path, error)}") from error


def read_manifest(registry_dir: Path, model_type: ModelType) -> ModelManifest:
    """Read and validate the manifest of ``model_type``; ManifestNotFoundError if absent, ManifestError if broken."""
    if registry_dir.exists() and not registry_dir.is_dir():
        raise ManifestError(
            f"registry {registry_dir} is not a directory: point MPS_REGISTRY_DIR at a registry folder "
            "(one sub-folder per model type, like registry/prd)"
        )
    path = model_dir(registry_dir, model_type) / MANIFEST_FILE
    try:
        manifest = ModelManifest.model_validate_json(_read_file(path, "manifest"))
    except FileNotFoundError:
        raise ManifestNotFoundError(
            f"no manifest at {path}: train and promote the model (make train-{model_type.value.replace('_', '-')}) "
            "or point MPS_REGISTRY_DIR at a registry that has it"
        ) from None
    except ValidationError as error:
        raise ManifestError(f"manifest {path} is invalid: {error.errors()[0]['msg']}") from None
    if manifest.model_type != model_type:
        raise ManifestError(f"manifest {path} is for {manifest.model_type.value}, expected {model_type.value}")
    return manifest


def version_mismatches(manifest: ModelManifest) -> list[str]:
    """Each tracked library whose installed version differs from the one the artifact was trained with."""
    installed = installed_library_versions()
    problems = []
    for library in (*EXACT_VERSION_LIBRARIES, *MAJOR_VERSION_LIBRARIES):
        trained = manifest.library_versions.get(library)
        if trained is None:
            continue
        current = installed[library]
        same = trained == current if library in EXACT_VERSION_LIBRARIES else _major(trained) == _major(current)
        if not same:
            problems.append(f"{library} trained {trained}, installed {current}")
    return problems


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def load_artifact(
    registry_dir: Path, model_type: ModelType, *, allow_version_mismatch: bool = False
) -> tuple[Pipeline, ModelManifest]:
    """Verify and unpickle the artifact of ``model_type``; return the Pipeline with its manifest."""
    manifest = read_manifest(registry_dir, model_type)
    path, data = verify_artifact(registry_dir, manifest)
    check_versions(manifest, allow_version_mismatch=allow_version_mismatch)
    return _unpickle_pipeline(path, data), manifest


def verify_artifact(registry_dir: Path, manifest: ModelManifest) -> tuple[Path, bytes]:
    """The path and bytes of the artifact ``manifest`` names, sha256 checked (IntegrityError, ManifestError)."""
    if manifest.artifact is None or manifest.sha256 is None:
        raise ManifestError(f"manifest of {manifest.model_type.value} names no artifact and sha256")
    return _verified_bytes(model_dir(registry_dir, manifest.model_type), manifest.artifact, manifest.sha256, "artifact")


def check_versions(manifest: ModelManifest, *, allow_version_mismatch: bool = False) -> None:
    """VersionMismatchError if the artifact was trained with other library versions, unless allowed."""
    mismatches = version_mismatches(manifest)
    if mismatches and not allow_version_mismatch:
        model_type = manifest.model_type
        raise VersionMismatchError(
            f"artifact of {model_type.value} was trained with other library versions ({'; '.join(mismatches)}): "
            f"retrain it with make train-{model_type.value.replace('_', '-')}, "
            "or set MPS_ALLOW_VERSION_MISMATCH=true to serve it anyway"
        )


def _unpickle_pipeline(path: Path, data: bytes) -> Pipeline:
    """The Pipeline pickled in ``data`` (read from ``path``); ArtifactError if it is not one."""
    import joblib
    from sklearn.pipeline import Pipeline

    try:
        artifact = joblib.load(io.BytesIO(data))
    except Exception as error:
        # The bytes passed the integrity check, so they are the promoted ones, yet unpickling runs whatever the
        # pickle says (any import, any constructor): a truncated or foreign artifact raises EOFError,
        # UnpicklingError, ValueError, IndexError, struct.error, ModuleNotFoundError, AttributeError... There is
        # no narrower class to catch. Only this one call is guarded, and the cause stays chained.
        raise ArtifactError(
            f"artifact {path} cannot be unpickled ({_describe(error)}): re-promote the model"
        ) from error
    if not isinstance(artifact, Pipeline):
        raise ArtifactError(
            f"artifact {path} holds a {type(artifact).__name__}, not a scikit-learn Pipeline: re-promote the model"
        )
    return artifact


def _verified_bytes(folder: Path, name: str, sha256: str, what: str) -> tuple[Path, bytes]:
    """The path and bytes of ``name`` in ``folder`` after checking them against ``sha256``.

    The bytes are read once: what was verified is exactly what gets loaded.
    """
    if Path(name).name != name:
        raise ManifestError(f"manifest names {what} {name!r} outside its folder")
    path = folder / name
    try:
        data = _read_file(path, what)
    except FileNotFoundError:
        raise ManifestError(f"{what} {path} named by the manifest does not exist") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise IntegrityError(
            f"integrity check failed for {path}: sha256 is {actual}, the manifest expects {sha256}; "
            "the file was modified or corrupted and will not be loaded"
        )
    return path, data


FAST_PATH_REMEDY = "re-promote the model, or set MPS_FAST_PATH=false to serve the original"


def load_fast_path(registry_dir: Path, manifest: ModelManifest, original: Any | None) -> OnnxModel | None:
    """The manifest's verified fast path, after proving parity with ``original`` and its golden predictions.

    None if the manifest has no fast path. ``original`` None skips the parity proof: only for a fast path whose
    parity a check process has just proven on the same bytes (the sha256 is verified again here).
    """
    from ml_production_service.fast_path import ONNX_RUNTIME_ERRORS, FastPathError, OnnxModel, ParityError, check_parity

    info = manifest.fast_path
    if info is None:
        return None
    errors: tuple[type[Exception], ...] = (FastPathError, *ONNX_RUNTIME_ERRORS)
    path, data = _verified_bytes(model_dir(registry_dir, manifest.model_type), info.artifact, info.sha256, "fast path")
    try:
        fast = OnnxModel(data)
        # ONNX Runtime's errors here can only come from the fast path: the original is a scikit-learn model.
        report = None if original is None else check_parity(original, fast)
    except errors as error:
        raise FastPathError(f"fast path {path} cannot serve: {_one_line(str(error))}; {FAST_PATH_REMEDY}") from error
    if report is not None and not report.passed:
        raise ParityError(
            f"fast path of {manifest.model_type.value} disagrees with the original model on {report.rows} rows "
            f"({report.label_mismatches} labels differ, max probability difference {report.max_abs_diff:.3g}): "
            f"{FAST_PATH_REMEDY}"
        )
    check_golden(
        manifest,
        fast.predict_proba,
        tolerance=FAST_PATH_GOLDEN_TOLERANCE,
        served_by="its ONNX fast path",
        remedy=FAST_PATH_REMEDY,
    )
    return fast


def _export_fast_path(pipeline: Any) -> tuple[bytes, ParityReport]:
    from ml_production_service.fast_path import OnnxModel, ParityError, check_parity, export_onnx

    onnx_bytes = export_onnx(pipeline)
    report = check_parity(pipeline, OnnxModel(onnx_bytes))
    if not report.passed:
        raise ParityError(
            f"the ONNX export disagrees with the model ({report.label_mismatches} labels differ, "
            f"max probability difference {report.max_abs_diff:.3g}); it is not promoted and nothing was written"
        )
    return onnx_bytes, report


def save_model(registry_dir: Path, manifest: ModelManifest, artifact: Any | None) -> ModelManifest:
    """Write ``artifact`` (if any), its ONNX fast path and its manifest; return the manifest.

    With an artifact, the manifest gets its names, sha256s and golden predictions (the artifact's own answers,
    whatever the manifest said); without one, only the manifest is written, as given.
    """
    from ml_production_service.fast_path import FAST_PATH_FILE

    folder = model_dir(registry_dir, manifest.model_type)
    folder.mkdir(parents=True, exist_ok=True)
    if artifact is not None:
        import joblib

        # Prove the fast path and the manifest before writing a file: a refused promotion leaves the old model serving.
        onnx_bytes, report = _export_fast_path(artifact)
        manifest = _readable(manifest.model_copy(update={"golden": golden_predictions(artifact.predict_proba)}))
        path = folder / ARTIFACT_FILE
        _atomic_write(path, lambda target: joblib.dump(artifact, target))
        fast_path = folder / FAST_PATH_FILE
        _atomic_write(fast_path, lambda target: target.write_bytes(onnx_bytes))
        manifest = manifest.model_copy(
            update={
                "artifact": ARTIFACT_FILE,
                "sha256": sha256_file(path),
                "fast_path": FastPathInfo(
                    artifact=FAST_PATH_FILE,
                    sha256=sha256_file(fast_path),
                    parity_rows=report.rows,
                    parity_max_abs_diff=report.max_abs_diff,
                ),
            }
        )
    manifest = _readable(manifest)
    text = manifest.model_dump_json(indent=2) + "\n"
    _atomic_write(folder / MANIFEST_FILE, lambda target: target.write_text(text, encoding="utf-8"))
    return manifest


def _readable(manifest: ModelManifest) -> ModelManifest:
    """``manifest`` as read back from its JSON: ``model_copy`` skips validation, and the service will not."""
    try:
        return ModelManifest.model_validate_json(manifest.model_dump_json())
    except ValidationError as error:
        raise ManifestError(f"manifest of {manifest.model_type.value} is invalid: {error.errors()[0]['msg']}") from None


def _atomic_write(path: Path, write: Any) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; registry files are meant to be read by the service user
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
