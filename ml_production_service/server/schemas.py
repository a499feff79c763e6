"""Request and response models; requests forbid unknown fields and accept only finite, in-range measurements."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.config import JsonDict

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM, FloatArray

Centimetres = Annotated[
    float,
    Field(
        strict=True,
        ge=MIN_MEASUREMENT_CM,
        le=MAX_MEASUREMENT_CM,
        allow_inf_nan=False,
        description=(
            f"A measurement in centimetres: a finite number, >= {MIN_MEASUREMENT_CM:g} and <= {MAX_MEASUREMENT_CM:g}."
        ),
    ),
]

SETOSA_EXAMPLE: JsonDict = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA_EXAMPLE: JsonDict = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


class IrisFeatures(BaseModel):
    """One flower's four measurements, in centimetres."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SETOSA_EXAMPLE, VIRGINICA_EXAMPLE]})

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres

    def to_row(self) -> FloatArray:
        """The measurements as one row ``[4]`` in the models' feature order."""
        return np.array([getattr(self, name) for name in FEATURE_NAMES], dtype=np.float64)


class BatchRequest(BaseModel):
    """Several flowers in one request; one invalid row rejects the whole batch."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"instances": [SETOSA_EXAMPLE, VIRGINICA_EXAMPLE]}]}
    )

    instances: list[IrisFeatures] = Field(min_length=1)

    def to_rows(self) -> FloatArray:
        """Every row, in the models' feature order."""
        return np.array([[getattr(r, name) for name in FEATURE_NAMES] for r in self.instances], dtype=np.float64)


@lru_cache(maxsize=8)
def batch_request_model(max_rows: int) -> type[BatchRequest]:
    """``BatchRequest`` with at most ``max_rows`` instances: the count is checked before any row is validated."""
    return create_model(
        "BatchRequest",
        __base__=BatchRequest,
        __doc__=BatchRequest.__doc__,
        instances=(list[IrisFeatures], Field(min_length=1, max_length=max_rows)),
    )


FIELDS_PER_ROW = len(FEATURE_NAMES)
FIELD_SLACK = 64
"""Unknown fields an invalid body may carry and still get per-field errors; past it, one ``max_fields`` error."""


def max_fields(rows: int) -> int:
    """The most ``:`` a body of ``rows`` rows may hold before it is refused unread (see ``body.read_json``)."""
    return rows * FIELDS_PER_ROW + FIELD_SLACK


class PredictResponse(BaseModel):
    """One prediction: the label, every class probability, and which model answered."""

    prediction: str = Field(examples=["setosa"])
    probabilities: dict[str, float] = Field(examples=[{"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0}])
    model_type: str = Field(examples=["heuristic"])
    model_version: str = Field(examples=["20261128.081058"])
    explanation: dict[str, Any] | None = Field(default=None, description="Present only with ?explain=true.")
    out_of_range: list[str] | None = Field(
        default=None,
        description="Present only when the model was asked to extrapolate: the inputs outside the training range.",
        examples=[["petal_length"]],
    )

    model_config = ConfigDict(protected_namespaces=())


class BatchPrediction(BaseModel):
    """One row's answer inside a batch."""

    prediction: str
    probabilities: dict[str, float]
    out_of_range: list[str] | None = Field(default=None, description="As in PredictResponse: present only then.")


class BatchResponse(BaseModel):
    """Predictions in request order, and which model answered."""

    predictions: list[BatchPrediction]
    model_type: str
    model_version: str

    model_config = ConfigDict(protected_namespaces=())


class ErrorDetail(BaseModel):
    """One reason a request was refused."""

    field: str = Field(examples=["petal_length"])
    rule: str = Field(examples=["greater_than"])
    message: str = Field(examples=["Input should be greater than 0"])


class ErrorResponse(BaseModel):
    """The one shape of every 4xx and 5xx answer."""

    error: str = Field(examples=["request validation failed: petal_length: Input should be greater than 0"])
    code: str = Field(examples=["validation_error"])
    details: list[ErrorDetail] = Field(default_factory=list, max_length=10)
    request_id: str | None = None
    details_omitted: int | None = Field(
        default=None, ge=1, description="Present when more details than the ten listed were found: how many more."
    )


class HealthResponse(BaseModel):
    """Whether the service can answer predictions, and with which model."""

    status: str = Field(examples=["healthy"])
    ready: bool
    model_type: str
    model_version: str | None
    service_version: str

    model_config = ConfigDict(protected_namespaces=())
