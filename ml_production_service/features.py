"""The one feature transform, shared by training and serving (it travels inside each artifact).

scikit-learn is imported only by ``make_feature_transformer``: the heuristic and the fast path serve without it.
A pickled pipeline names ``engineer_features`` and ``_feature_names_out`` of this module, not the import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sklearn.preprocessing import FunctionTransformer

FEATURE_NAMES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
"""The raw measurements a request carries, in the order every model expects them."""

ENGINEERED_FEATURE_NAMES: tuple[str, ...] = (
    *FEATURE_NAMES,
    "petal_area",
    "sepal_area",
    "petal_aspect",
    "sepal_aspect",
)
"""The columns the fitted models see, after ``engineer_features``."""

MIN_MEASUREMENT_CM = 0.01
"""Smallest accepted measurement (0.1 mm, a tenth of the data's resolution). A floor, not just ``> 0``: it keeps
every engineered feature finite in float32 (ratios and areas stay within [1e-4, 1e4]), where ``5e-324`` would make
a ratio overflow to infinity."""

MAX_MEASUREMENT_CM = 100.0
"""Largest accepted measurement; iris flowers measure under 8 cm, so anything past this is an error."""

FloatArray = npt.NDArray[np.float64]


def engineer_features(raw: npt.ArrayLike) -> FloatArray:
    """Map raw rows ``[n, 4]`` to model inputs ``[n, 8]``: the raw values, areas and aspect ratios.

    Inputs must be finite and within [``MIN_MEASUREMENT_CM``, ``MAX_MEASUREMENT_CM``] (the API guarantees it), so
    the ratios are always defined and every output is finite, in float64 and in float32.
    """
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected rows of {len(FEATURE_NAMES)} features, got shape {x.shape}")
    sepal_length, sepal_width, petal_length, petal_width = x.T
    return np.column_stack(
        (
            x,
            petal_length * petal_width,
            sepal_length * sepal_width,
            petal_length / petal_width,
            sepal_length / sepal_width,
        )
    )


def _feature_names_out(_transformer: object, _input_features: object) -> list[str]:
    return list(ENGINEERED_FEATURE_NAMES)


def make_feature_transformer() -> FunctionTransformer:
    """The pipeline step that applies ``engineer_features``; pickled by reference, never by copy."""
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(engineer_features, validate=False, feature_names_out=_feature_names_out)
