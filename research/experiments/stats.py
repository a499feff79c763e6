"""Intervals and paired tests: how far a measured accuracy can be trusted, and whether two models differ."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion: an accuracy over ``total`` independent predictions (scipy's)."""
    if total == 0:
        return (0.0, 1.0)
    interval = stats.binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def _corrected_t(scores: np.ndarray, test_train_ratio: float) -> tuple[float, float, int]:
    """Mean, corrected standard error and degrees of freedom of scores from overlapping resamples.

    Folds of repeated k-fold share training rows, so their scores are correlated and the plain standard error
    is too small; Nadeau and Bengio (2003) inflate the variance by ``n_test / n_train`` (Bouckaert and Frank,
    2004, for repeated k-fold).
    """
    n = len(scores)
    mean = float(np.mean(scores))
    variance = float(np.var(scores, ddof=1)) if n > 1 else 0.0
    return mean, math.sqrt((1 / n + test_train_ratio) * variance), max(n - 1, 1)


def corrected_interval(
    scores: np.ndarray, test_train_ratio: float, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval for the mean of repeated-CV fold scores, with the Nadeau-Bengio correction."""
    mean, error, dof = _corrected_t(np.asarray(scores, dtype=np.float64), test_train_ratio)
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * error
    return (max(0.0, mean - half), min(1.0, mean + half))


@dataclass(frozen=True)
class PairedTest:
    """A difference ``a - b`` of mean fold scores over the same folds, its interval and two-sided p-value."""

    difference: float
    interval: tuple[float, float]
    p_value: float
    folds: int

    @property
    def within_noise(self) -> bool:
        """The interval contains zero: the data cannot tell the two apart."""
        return self.interval[0] <= 0.0 <= self.interval[1]


def corrected_paired_test(
    a: np.ndarray, b: np.ndarray, test_train_ratio: float, confidence: float = CONFIDENCE
) -> PairedTest:
    """Corrected resampled t-test of fold scores ``a`` against ``b`` measured on the same folds."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, error, dof = _corrected_t(differences, test_train_ratio)
    if error == 0.0:
        p_value = 1.0 if mean == 0.0 else 0.0
        return PairedTest(mean, (mean, mean), p_value, len(differences))
    t = mean / error
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * error
    p_value = float(2 * stats.t.sf(abs(t), dof))
    return PairedTest(mean, (mean - half, mean + half), p_value, len(differences))


def one_sided_bounds(
    a: np.ndarray, b: np.ndarray, test_train_ratio: float, confidence: float = CONFIDENCE
) -> PairedTest:
    """``corrected_paired_test`` whose interval ends are each a one-sided ``confidence`` bound on ``a - b``.

    That is the two-sided interval at ``2 * confidence - 1``: the lower end is what a non-inferiority test reads
    (the candidate is at worst this much below), the upper end what a "shown worse" test reads.
    """
    return corrected_paired_test(a, b, test_train_ratio, 2 * confidence - 1)


def non_inferiority_p(a: np.ndarray, b: np.ndarray, test_train_ratio: float, margin: float) -> float:
    """One-sided p-value of "``a`` is worse than ``b`` by ``margin`` or more" (corrected t over the same folds).

    Small means the data reject that ``a`` is ``margin`` worse: ``a`` is non-inferior at that margin.
    """
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, error, dof = _corrected_t(differences, test_train_ratio)
    if error == 0.0:
        return 0.0 if mean > -margin else 1.0
    return float(stats.t.sf((mean + margin) / error, dof))


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on per-row predictions: rows only ``a`` got right, only ``b`` got right, p-value."""

    only_a_right: int
    only_b_right: int
    p_value: float


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test of two classifiers judged on the same rows."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, min(p_value, 1.0))
