"""The training data's contract: columns, dtypes, ranges, no missing values, the class set and its balance.

Every experiment loads its rows through ``common.load_data``, which checks this contract first: a broken dataset
stops with one ``ContractError`` naming the column and the rule it breaks, before any model is fitted. The
contract is a pydantic model (pydantic is already a runtime dependency); pandera was measured and not taken
(it brings pandas: about 49 MB installed and 1.9-2.6 s of import per experiment; see the issue-13 report).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ml_production_service.features import FEATURE_NAMES, MAX_MEASUREMENT_CM, MIN_MEASUREMENT_CM

TARGET = "species"
"""The name of the label column in a table checked against the contract."""


class ContractError(ValueError):
    """A dataset that breaks its contract: the column, the rule, and what was found."""

    def __init__(self, column: str, rule: str, found: str) -> None:
        super().__init__(f"data contract: column {column!r} breaks rule {rule!r}: {found}")
        self.column = column
        self.rule = rule


class ColumnContract(BaseModel):
    """One numeric measurement column: its dtype and the closed range its values must lie in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype: str = "float64"
    minimum: float
    maximum: float


class DataContract(BaseModel):
    """What a training table must satisfy before an experiment uses it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[ColumnContract, ...]
    target: str = TARGET
    classes: tuple[str, ...]
    min_rows: int = Field(ge=1)
    min_class_share: float = Field(ge=0.0, le=1.0)
    """Every class holds at least this share of the rows."""
    max_class_share: float = Field(ge=0.0, le=1.0)
    """No class holds more than this share of the rows."""

    def check(self, table: Mapping[str, np.ndarray]) -> None:
        """Raise ``ContractError`` for the first broken rule (columns in contract order, then the labels)."""
        expected = [column.name for column in self.columns] + [self.target]
        for name in expected:
            if name not in table:
                raise ContractError(name, "present", f"missing; the table has {sorted(table)}")
        extra = sorted(set(table) - set(expected))
        if extra:
            raise ContractError(extra[0], "expected columns only", f"not in the contract {expected}")
        rows = {len(np.asarray(values)) for values in table.values()}
        if len(rows) != 1:
            raise ContractError(self.target, "equal lengths", f"columns have {sorted(rows)} rows")
        for column in self.columns:
            _check_column(column, np.asarray(table[column.name]))
        self._check_labels(np.asarray(table[self.target]))

    def _check_labels(self, labels: np.ndarray) -> None:
        if labels.dtype.kind not in "UO":
            raise ContractError(self.target, "dtype str", f"found dtype {labels.dtype}")
        if len(labels) < self.min_rows:
            raise ContractError(self.target, f"at least {self.min_rows} rows", f"found {len(labels)}")
        values, counts = np.unique(labels.astype(str), return_counts=True)
        unknown = sorted(set(values.tolist()) - set(self.classes))
        if unknown:
            raise ContractError(self.target, f"class in {list(self.classes)}", f"unknown classes {unknown}")
        share = {str(value): int(count) / len(labels) for value, count in zip(values, counts, strict=True)}
        for label in self.classes:
            found = share.get(label, 0.0)
            if not self.min_class_share <= found <= self.max_class_share:
                bounds = f"[{self.min_class_share:.3f}, {self.max_class_share:.3f}]"
                raise ContractError(
                    self.target, f"class share in {bounds}", f"{label!r} is {found:.3f} of {len(labels)} rows"
                )


def _check_column(column: ColumnContract, values: np.ndarray) -> None:
    if values.dtype != np.dtype(column.dtype):
        raise ContractError(column.name, f"dtype {column.dtype}", f"found dtype {values.dtype}")
    missing = np.flatnonzero(~np.isfinite(values))
    if missing.size:
        raise ContractError(column.name, "no missing values", f"{missing.size} NaN/inf, first at row {missing[0]}")
    outside = np.flatnonzero((values < column.minimum) | (values > column.maximum))
    if outside.size:
        row = int(outside[0])
        raise ContractError(
            column.name,
            f"range [{column.minimum:g}, {column.maximum:g}]",
            f"{outside.size} value(s) outside, first {values[row]:g} at row {row}",
        )


IRIS_CLASSES = ("setosa", "versicolor", "virginica")

IRIS_CONTRACT = DataContract(
    # The range is the one the service accepts (features.MIN/MAX_MEASUREMENT_CM): a model is never trained on a
    # value a request could not carry, and every engineered feature stays finite.
    columns=tuple(
        ColumnContract(name=name, minimum=MIN_MEASUREMENT_CM, maximum=MAX_MEASUREMENT_CM) for name in FEATURE_NAMES
    ),
    classes=IRIS_CLASSES,
    min_rows=len(IRIS_CLASSES) * 2,
    # Half to twice an even share: iris is balanced (a third each), and every ``every``-th subsample stays so.
    min_class_share=1 / (2 * len(IRIS_CLASSES)),
    max_class_share=2 / len(IRIS_CLASSES),
)
"""The contract the iris rows are checked against at the start of every experiment."""


def as_table(features: np.ndarray, labels: list[str] | np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``[n, 4]`` in ``FEATURE_NAMES`` order and their class names as a column table."""
    table = {name: np.asarray(features)[:, i] for i, name in enumerate(FEATURE_NAMES)}
    table[TARGET] = np.asarray(labels)
    return table
