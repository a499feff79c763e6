"""The manifest: which library versions it records, and what it accepts."""

from __future__ import annotations

import platform
from importlib.metadata import version

import pytest
import sklearn
import xgboost
from pydantic import ValidationError

from ml_production_service.manifest import TRACKED_LIBRARIES, ModelManifest, installed_library_versions
from ml_production_service.predictors.heuristic import default_heuristic_manifest


def test_installed_versions_name_python_and_every_tracked_library() -> None:
    """A manifest records python and each library whose version decides whether a pickle loads."""
    versions = installed_library_versions()
    assert set(versions) == {"python", "scikit-learn", "xgboost", "numpy", "joblib", "onnxruntime"}
    assert set(versions) == {"python", *TRACKED_LIBRARIES}


def test_installed_versions_are_the_running_ones() -> None:
    """The recorded versions are the ones this interpreter actually imports."""
    versions = installed_library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["scikit-learn"] == sklearn.__version__
    assert versions["xgboost"] == xgboost.__version__
    assert versions["numpy"] == version("numpy")
    assert "not-installed" not in versions.values()


def test_manifest_round_trips_through_json() -> None:
    """A manifest written to disk reads back identical."""
    manifest = default_heuristic_manifest()
    assert ModelManifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_manifest_with_an_unknown_field_is_rejected() -> None:
    """A misspelt manifest key is an error, not silently ignored."""
    data = default_heuristic_manifest().model_dump(mode="json")
    data["class_lables"] = data["class_labels"]
    with pytest.raises(ValidationError, match="class_lables"):
        ModelManifest.model_validate(data)
