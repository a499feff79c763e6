"""The fast inference path: the fitted estimator compiled to ONNX and run by ONNX Runtime.

The joblib Pipeline stays the registry's source of truth. At promotion its final estimator is exported
to ONNX (``export_onnx``, which needs the research tools), checked for parity and saved beside it with its
own sha256; at start-up the service verifies the file and proves parity again before serving it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state

from ml_production_service.features import (
    FEATURE_NAMES,
    MAX_MEASUREMENT_CM,
    MIN_MEASUREMENT_CM,
    FloatArray,
    engineer_features,
)
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.reference import PARITY_TOLERANCE as PARITY_TOLERANCE

FAST_PATH_FILE = "model.onnx"
PARITY_RANDOM_ROWS = 10_000
PARITY_SEED = 20_261_128
PROBABILITIES_OUTPUT = 1
"""Index of the probabilities among the ONNX model's outputs (the label comes first)."""

ONNX_RUNTIME_ERRORS: tuple[type[Exception], ...] = tuple(
    value
    for value in vars(onnxruntime_pybind11_state).values()
    if isinstance(value, type) and issubclass(value, Exception)
)
"""ONNX Runtime's own exceptions (InvalidProtobuf, InvalidArgument, InvalidGraph, Fail, ...).

They derive from Exception directly, with no common base to catch, so they are collected from the module that
defines them rather than listed by hand (the list differs between releases).
"""


class ParityError(ModelLoadError):
    """The fast path disagrees with the original model: it must not serve."""


class FastPathError(ModelLoadError):
    """The fast-path file cannot be run: ONNX Runtime refuses it, or it is not features in, probabilities out."""


@dataclass(frozen=True, slots=True)
class ParityReport:
    """How closely the fast path matched the original model, and on how many rows."""

    rows: int
    label_mismatches: int
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        """Same labels everywhere and every probability within ``PARITY_TOLERANCE``."""
        return self.label_mismatches == 0 and self.max_abs_diff <= PARITY_TOLERANCE


class OnnxModel:
    """An ONNX Runtime session over the engineered features, answering class probabilities."""

    def __init__(self, onnx_bytes: bytes) -> None:
        """Load ``onnx_bytes``; FastPathError if ONNX Runtime refuses them or the graph has the wrong interface."""
        options = onnxruntime.SessionOptions()
        # One row is microseconds of work: thread pools would cost more than they save.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except ONNX_RUNTIME_ERRORS as error:
            raise FastPathError(f"ONNX Runtime cannot load it ({error})") from error
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        kinds = [str(output.type) for output in outputs]
        probabilities = kinds[PROBABILITIES_OUTPUT] if len(kinds) > PROBABILITIES_OUTPUT else "none"
        if len(inputs) != 1 or not probabilities.startswith("tensor"):
            raise FastPathError(
                f"its graph takes {len(inputs)} input(s) and returns {kinds}; the fast path needs one input "
                "(the features) and two outputs, the label and a tensor of probabilities (exported without zipmap)"
            )
        self.input_name: str = inputs[0].name
        self.output_names: list[str] = [outputs[PROBABILITIES_OUTPUT].name]

    def predict_proba(self, rows: FloatArray) -> FloatArray:
        """Probabilities ``[n, classes]`` for raw rows ``[n, 4]``."""
        features = engineer_features(rows).astype(np.float32)
        probabilities = self.session.run(self.output_names, {self.input_name: features})[0]
        return np.asarray(probabilities, dtype=np.float64)


def parity_rows() -> FloatArray:
    """The rows parity is proven on: the 150 iris rows and 10,000 random rows across the accepted range."""
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(PARITY_SEED)
    # Uniform in (MIN, MAX]: 1 - U[0, 1) never reaches 0, so every row is one the API would accept.
    span = MAX_MEASUREMENT_CM - MIN_MEASUREMENT_CM
    random_rows = MIN_MEASUREMENT_CM + (1.0 - rng.random((PARITY_RANDOM_ROWS, len(FEATURE_NAMES)))) * span
    return np.vstack([np.asarray(load_iris().data, dtype=np.float64), random_rows])


def check_parity(original: Any, fast: OnnxModel, rows: FloatArray | None = None) -> ParityReport:
    """Compare ``original.predict_proba`` with the fast path's on ``rows`` (default: ``parity_rows()``)."""
    rows = parity_rows() if rows is None else rows
    expected = np.asarray(original.predict_proba(rows), dtype=np.float64)
    actual = fast.predict_proba(rows)
    if expected.shape != actual.shape:
        return ParityReport(len(rows), len(rows), float("inf"))
    mismatches = int(np.count_nonzero(expected.argmax(axis=1) != actual.argmax(axis=1)))
    return ParityReport(len(rows), mismatches, float(np.max(np.abs(expected - actual))))


def export_onnx(pipeline: Any) -> bytes:
    """ONNX bytes for the pipeline's final estimator over the eight engineered features (float32).

    Needs skl2onnx and onnxmltools (the ``research`` dependency group), which the service does not.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    estimator = pipeline[-1]
    features = engineer_features(np.ones((1, len(FEATURE_NAMES)))).shape[1]
    if isinstance(estimator, DecisionTreeClassifier | RandomForestClassifier):
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        model = convert_sklearn(
            estimator,
            initial_types=[("features", FloatTensorType([None, features]))],
            options={id(estimator): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
            name="model",  # a fixed graph name: otherwise a random one makes every export differ
        )
    else:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType as XgbFloatTensorType

        model = convert_xgboost(
            estimator, initial_types=[("features", XgbFloatTensorType([None, features]))], target_opset=15, name="model"
        )
    return bytes(model.SerializeToString())
