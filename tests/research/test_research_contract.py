"""The data contract: the real iris rows pass; each kind of broken dataset stops naming its column and rule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_iris

from research.experiments import common
from research.experiments.contract import IRIS_CONTRACT, TARGET, ContractError, as_table

Table = dict[str, np.ndarray]


def _iris() -> Table:
    iris = load_iris()
    return as_table(np.asarray(iris.data), np.asarray(iris.target_names)[iris.target])


def _nan(table: Table) -> None:
    table["petal_width"] = table["petal_width"].copy()
    table["petal_width"][7] = np.nan


def _negative(table: Table) -> None:
    table["sepal_length"] = table["sepal_length"].copy()
    table["sepal_length"][3] = -5.1


def _missing(table: Table) -> None:
    del table["sepal_width"]


def _extra(table: Table) -> None:
    table["stem_length"] = table["sepal_width"]


def _unknown_class(table: Table) -> None:
    table[TARGET] = table[TARGET].copy()
    table[TARGET][0] = "iris-x"


def _wrong_dtype(table: Table) -> None:
    table["petal_length"] = table["petal_length"].astype(str)


def _integer_labels(table: Table) -> None:
    table[TARGET] = load_iris().target


def _imbalance(table: Table) -> None:
    keep = np.r_[0:50, 50:60, 100:150]  # versicolor cut to 10 of 110 rows
    for name in list(table):
        table[name] = table[name][keep]


def _ragged(table: Table) -> None:
    table["petal_length"] = table["petal_length"][:-1]


def _too_few(table: Table) -> None:
    for name in list(table):
        table[name] = table[name][[0, 50, 100]]


BROKEN: list[tuple[Callable[[Table], None], str, str]] = [
    (_nan, "petal_width", "no missing values"),
    (_negative, "sepal_length", "range [0.01, 100]"),
    (_missing, "sepal_width", "present"),
    (_extra, "stem_length", "expected columns only"),
    (_unknown_class, TARGET, "class in ['setosa', 'versicolor', 'virginica']"),
    (_wrong_dtype, "petal_length", "dtype float64"),
    (_integer_labels, TARGET, "dtype str"),
    (_imbalance, TARGET, "class share in [0.167, 0.667]"),
    (_ragged, TARGET, "equal lengths"),
    (_too_few, TARGET, "at least 6 rows"),
]


def test_the_iris_rows_meet_the_contract() -> None:
    """The rows every experiment uses pass, and loading them runs the check (same rows as before the contract)."""
    IRIS_CONTRACT.check(_iris())
    features, targets, labels = common.load_data()
    np.testing.assert_array_equal(features, load_iris().data)
    assert labels == ["setosa", "versicolor", "virginica"] and np.bincount(targets).tolist() == [50, 50, 50]


@pytest.mark.parametrize(
    ("breaks", "column", "rule"), [pytest.param(*case, id=case[0].__name__[1:]) for case in BROKEN]
)
def test_a_broken_dataset_stops_naming_the_column_and_the_rule(
    breaks: Callable[[Table], None], column: str, rule: str
) -> None:
    """Each broken table raises ContractError whose message names the column and the rule it breaks."""
    table = _iris()
    breaks(table)
    with pytest.raises(ContractError) as raised:
        IRIS_CONTRACT.check(table)
    assert (raised.value.column, raised.value.rule) == (column, rule)
    assert f"column {column!r} breaks rule {rule!r}" in str(raised.value)


def test_an_experiment_stops_before_fitting_when_its_data_breaks_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_data checks the contract: a NaN in scikit-learn's copy stops every experiment with the named rule."""
    real = load_iris

    def broken_iris() -> object:
        iris = real()
        iris.data[5, 2] = np.nan
        return iris

    monkeypatch.setattr(common, "load_iris", broken_iris)  # the only way to break the bundled file without editing it
    with pytest.raises(ContractError, match="column 'petal_length' breaks rule 'no missing values'"):
        common.load_dataset(every=5)
