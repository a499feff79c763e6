"""Two runs side by side: paired tests on the same folds (repeated CV) and on the same rows (leave-one-out)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ml_production_service.configs import ModelType
from research.experiments.common import load_dataset
from research.experiments.experiment import Run
from research.experiments.stats import McNemar, PairedTest, corrected_paired_test, mcnemar


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` against model ``b`` on the same folds (repeated CV) and the same rows (LOOCV)."""

    a: Run
    b: Run
    folds: PairedTest
    rows: McNemar

    @property
    def verdict(self) -> str:
        """Within noise, or which one is better at 95%."""
        if self.folds.within_noise:
            return "within noise"
        better = self.a if self.folds.difference > 0 else self.b
        return f"{better.model_type.value} better"


def compare_pair(a: Run, b: Run) -> Comparison | None:
    """Paired tests of two runs, or None when they were not scored on the same rows and folds."""
    if a.comparable_key != b.comparable_key:
        return None
    targets = load_dataset(a.record.protocol.every).targets
    ra, rb = a.record.repeated_cv, b.record.repeated_cv
    folds = corrected_paired_test(np.asarray(ra.fold_accuracy), np.asarray(rb.fold_accuracy), ra.test_train_ratio)
    rows = mcnemar(np.asarray(a.record.loocv.predicted) == targets, np.asarray(b.record.loocv.predicted) == targets)
    return Comparison(a, b, folds, rows)


def comparisons(latest: dict[ModelType, Run]) -> list[Comparison]:
    """Every comparable pair of the latest runs."""
    pairs = (compare_pair(a, b) for a, b in itertools.combinations(latest.values(), 2))
    return [pair for pair in pairs if pair is not None]
