"""The one feature transform shared by training and serving."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_iris

from ml_production_service.features import (
    ENGINEERED_FEATURE_NAMES,
    FEATURE_NAMES,
    engineer_features,
    make_feature_transformer,
)

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


def test_engineered_rows_keep_the_raw_values_then_add_areas_and_aspects() -> None:
    """Each row gains petal and sepal area and aspect ratio after its four raw measurements."""
    features = engineer_features([SETOSA, VIRGINICA])
    assert features.shape == (2, len(ENGINEERED_FEATURE_NAMES)) == (2, 8)
    assert features.dtype == np.float64
    by_name = dict(zip(ENGINEERED_FEATURE_NAMES, features.T, strict=True))
    assert len(by_name) == 8  # no two columns share a name
    np.testing.assert_array_equal(features[:, :4], [SETOSA, VIRGINICA])
    for index, name in enumerate(FEATURE_NAMES):  # each raw value under its request field's name
        np.testing.assert_array_equal(by_name[name], [SETOSA[index], VIRGINICA[index]])
    np.testing.assert_allclose(by_name["petal_area"], [1.4 * 0.2, 6.0 * 2.5])
    np.testing.assert_allclose(by_name["sepal_area"], [5.1 * 3.5, 6.3 * 3.3])
    np.testing.assert_allclose(by_name["petal_aspect"], [1.4 / 0.2, 6.0 / 2.5])
    np.testing.assert_allclose(by_name["sepal_aspect"], [5.1 / 3.5, 6.3 / 3.3])


def test_request_fields_are_the_training_columns_in_their_order() -> None:
    """Training reads load_iris() columns as they come; the service builds rows in FEATURE_NAMES order: the two
    must name the same measurements in the same order, or every model would see swapped columns."""
    columns = [name.removesuffix(" (cm)").replace(" ", "_") for name in load_iris().feature_names]
    assert list(FEATURE_NAMES) == columns


def test_engineer_features_does_not_modify_its_input() -> None:
    """Transforming a batch leaves the caller's array as it was."""
    rows = np.array([SETOSA, VIRGINICA])
    before = rows.copy()
    engineer_features(rows)
    np.testing.assert_array_equal(rows, before)


def test_empty_batch_gives_empty_features() -> None:
    """Zero rows in, zero rows of eight features out."""
    assert engineer_features(np.empty((0, 4))).shape == (0, 8)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(SETOSA, id="one-dimensional"),
        pytest.param([[5.1, 3.5, 1.4]], id="three-features"),
        pytest.param([[5.1, 3.5, 1.4, 0.2, 9.9]], id="five-features"),
        pytest.param(np.ones((1, 1, 4)), id="three-dimensional"),
    ],
)
def test_rows_of_the_wrong_shape_are_rejected(rows: object) -> None:
    """Anything but rows of four features fails loudly instead of producing wrong features."""
    with pytest.raises(ValueError, match="expected rows of 4 features"):
        engineer_features(rows)  # type: ignore[arg-type]


def test_transformer_names_its_eight_outputs() -> None:
    """The pipeline step reports the engineered feature names, so fitted models know their inputs."""
    transformer = make_feature_transformer().fit(np.array([SETOSA, VIRGINICA]))
    assert list(transformer.get_feature_names_out()) == list(ENGINEERED_FEATURE_NAMES)


def test_transformer_applies_engineer_features() -> None:
    """Training (through the pipeline step) and serving compute identical features."""
    rows = np.array([SETOSA, VIRGINICA])
    np.testing.assert_array_equal(make_feature_transformer().fit_transform(rows), engineer_features(rows))


def test_transformer_pickles_the_function_by_reference() -> None:
    """An artifact refers to features.engineer_features, so a fix to it reaches every model that is loaded."""
    data = pickle.dumps(make_feature_transformer())
    assert b"ml_production_service.features" in data
    assert b"engineer_features" in data
    assert pickle.loads(data).func is engineer_features  # noqa: S301 - our own bytes
