"""The manifest: which library versions it records, and what it accepts."""

from __future__ import annotations

import json
import platform
from importlib.metadata import version
from typing import Any

import pytest
import sklearn
import xgboost
from pydantic import ValidationError

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.manifest import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    TRACKED_LIBRARIES,
    ModelManifest,
    installed_library_versions,
)
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


# The reference profile and golden predictions: optional, but a manifest that has them must be usable as is.


def _promoted() -> dict[str, Any]:
    """The committed random forest's manifest as JSON data: it has a reference profile and golden predictions."""
    return json.loads((DEFAULT_REGISTRY_DIR / "random_forest" / MANIFEST_FILE).read_text(encoding="utf-8"))


def test_every_promoted_manifest_has_a_reference_and_golden_predictions() -> None:
    """registry/prd's manifests (schema version 2) validate with both, and read back identical."""
    for model_type in ModelType:
        text = (DEFAULT_REGISTRY_DIR / model_type.value / MANIFEST_FILE).read_text(encoding="utf-8")
        manifest = ModelManifest.model_validate_json(text)
        assert manifest.schema_version == MANIFEST_SCHEMA_VERSION == 2
        assert manifest.reference is not None and manifest.golden is not None
        assert manifest.reference.rows == 150
        assert ModelManifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_a_version_1_manifest_without_them_still_validates() -> None:
    """Both fields are optional: a manifest written before them reads (loading decides whether it may serve)."""
    data = _promoted()
    for key in ("reference", "golden"):
        del data[key]
    data["schema_version"] = 1
    manifest = ModelManifest.model_validate(data)
    assert manifest.reference is None and manifest.golden is None


def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return edit


BROKEN = [
    pytest.param(_set("reference.features.sepal_length.edges", [5.0, 4.9]), "strictly increasing", id="edges-down"),
    pytest.param(_set("reference.features.sepal_length.edges", [5.0, 5.0]), "strictly increasing", id="edges-tied"),
    pytest.param(_set("reference.features.sepal_length.fractions", [1.0]), "make 10 bins, got 1", id="bin-count"),
    pytest.param(_set("reference.features.sepal_length.fractions", [0.1] * 9 + [0.2]), "sum to 1", id="sum"),
    pytest.param(_set("reference.features.sepal_length.fractions", [1.5] + [0.0] * 8 + [-0.5]), "within", id="range"),
    pytest.param(_set("reference.features.sepal_length.min", 9.0), "is above max", id="min-above-max"),
    pytest.param(_set("reference.features.sepal_length.min", 5.0), "within \\[min, max\\]", id="edge-below-min"),
    pytest.param(_set("reference.features.sepal_length.max", 6.0), "within \\[min, max\\]", id="edge-above-max"),
    pytest.param(_set("reference.features.sepal_length.max", float("nan")), "finite number", id="nan"),
    pytest.param(
        _set("reference.confidence", {"edges": [0.5, 1.5], "fractions": [0.2, 0.3, 0.5]}),
        "confidence edges",
        id="confidence-above-1",
    ),
    pytest.param(_set("reference.confidence", {"edges": [], "fractions": [1.0, 0.0]}), "make 1 bins", id="conf-bins"),
    pytest.param(_set("reference.class_prior.setosa", 0.5), "class_prior fractions must sum", id="prior-sum"),
    pytest.param(_set("reference.class_prior", {"a": 0.5, "b": 0.5}), "reference class_prior lists", id="prior-keys"),
    pytest.param(_set("reference.features", {}), "reference profiles features", id="features-missing"),
    pytest.param(_set("reference.rows", 0), "greater than 0", id="no-rows"),
    pytest.param(_set("reference.source", "two\nlines"), "match pattern", id="source-two-lines"),
    pytest.param(_set("reference.source", ""), "at least 1 character", id="source-empty"),
    pytest.param(_set("reference.drift", 1), "Extra inputs", id="unknown-key"),
    pytest.param(_set("golden.rows", "iris-149"), "iris-150", id="golden-rows-name"),
    pytest.param(_set("golden.probabilities", [[1.0, 0.0, 0.0]] * 149), "needs 150 rows", id="golden-149"),
    pytest.param(_set("golden.probabilities", [[1.0, 0.0, 0.0]] * 149 + [[1.0]]), "same, non-zero", id="ragged"),
    pytest.param(_set("golden.probabilities", [[]] * 150), "same, non-zero", id="no-classes"),
    pytest.param(_set("golden.probabilities", [[2.0, 0.0, 0.0]] * 150), "within \\[0, 1\\]", id="golden-range"),
    pytest.param(_set("golden.probabilities", [[0.5, 0.5]] * 150), "have 2 classes, the manifest lists 3", id="width"),
]


@pytest.mark.parametrize(("edit", "problem"), BROKEN)
def test_an_unusable_reference_or_golden_is_refused(edit: Any, problem: str) -> None:
    """Whatever the service would count live rows against, or check start-up against, must be consistent."""
    data = _promoted()
    edit(data)
    with pytest.raises(ValidationError, match=problem):
        ModelManifest.model_validate_json(json.dumps(data))
