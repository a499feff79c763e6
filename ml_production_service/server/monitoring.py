"""Live rows against the model's reference profile: bins, out-of-range inputs, confidence, refused inputs.

Every served row passes ``Monitor.observe`` in the data plane, whatever the protocol. Prometheus aggregates across
workers and replicas; the recording rules in ``deploy/prometheus/rules.yml`` turn these counters into a
population stability index per feature, and the alerts watch it. Label sets are bounded: model type, feature,
bin index, side, and for refused inputs a fixed set of field names.
"""

from __future__ import annotations

import bisect
import re
import time
from typing import Any

import numpy as np

from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.reference import bin_indices
from ml_production_service.server.metrics import (
    CONFIDENCE,
    INPUT_BINS,
    INPUT_OUT_OF_RANGE,
    MODEL_CREATED,
    REFERENCE_CLASS_FRACTION,
    REFERENCE_CONFIDENCE_MEAN,
    REFERENCE_FRACTION,
    VALIDATION_ERRORS,
)

FIELD_LABELS = frozenset({*FEATURE_NAMES, "body", "instances", "inputs", "outputs", "id", "parameters", "explain"})
"""The ``field`` label's values: the inputs, the request's parts; anything else is ``other``."""
FLUSH_ROWS = 1000
FLUSH_SECONDS = 1.0
_V2_VALUE = re.compile(r"inputs\[0\]\.data\[\d+\]\[(\d+)\]")


class Monitor:
    """Counts each served row into its reference bin per feature, and says which inputs were out of range."""

    def __init__(self, manifest: ModelManifest) -> None:
        model_type = manifest.model_type.value
        self.confidence = CONFIDENCE.labels(model_type)
        MODEL_CREATED.labels(model_type, manifest.version).set(manifest.created_at.timestamp())
        reference = manifest.reference
        self.active = reference is not None
        self.edges: list[list[float]] = []
        self.bins: list[list[Any]] = []
        self.low = np.zeros(len(FEATURE_NAMES))
        self.high = np.zeros(len(FEATURE_NAMES))
        self.low_list: list[float] = []
        self.high_list: list[float] = []
        self.counts: list[list[int]] = []
        self.below_counts = [0] * len(FEATURE_NAMES)
        self.above_counts = [0] * len(FEATURE_NAMES)
        self.pending = 0
        self.flushed_at = time.monotonic()
        self.below: list[Any] = []
        self.above: list[Any] = []
        if reference is None:
            return
        for index, name in enumerate(FEATURE_NAMES):
            profile = reference.features[name]
            self.edges.append(list(profile.edges))
            self.bins.append([INPUT_BINS.labels(model_type, name, str(b)) for b in range(len(profile.fractions))])
            self.counts.append([0] * len(profile.fractions))
            for b, fraction in enumerate(profile.fractions):
                REFERENCE_FRACTION.labels(model_type, name, str(b)).set(fraction)
            self.low[index], self.high[index] = profile.min, profile.max
            self.below.append(INPUT_OUT_OF_RANGE.labels(model_type, name, "low"))
            self.above.append(INPUT_OUT_OF_RANGE.labels(model_type, name, "high"))
        self.low_list, self.high_list = self.low.tolist(), self.high.tolist()
        for label, fraction in reference.class_prior.items():
            REFERENCE_CLASS_FRACTION.labels(model_type, label).set(fraction)
        histogram = reference.confidence
        centres = _bin_centres(histogram.edges)
        REFERENCE_CONFIDENCE_MEAN.labels(model_type).set(float(np.dot(centres, histogram.fractions)))

    def observe_one(self, row: FloatArray, top_probability: float) -> list[str]:
        """One served row: count it; the names of its inputs outside the training range (usually none).

        Bin counts gather in plain lists and reach Prometheus at ``flush`` (every ``FLUSH_ROWS`` rows, every
        ``FLUSH_SECONDS``, and before each scrape of this worker): a metric update takes a lock and costs about a
        microsecond, four of them per row would be most of the monitoring's cost, and drift is judged over an hour.
        """
        self.confidence.observe(top_probability)
        if not self.active:
            return []
        outside: list[str] = []
        counts = self.counts
        for index, value in enumerate(row.tolist()):  # plain floats: numpy's per-element access costs more
            counts[index][bisect.bisect_right(self.edges[index], value)] += 1
            if value < self.low_list[index]:
                self.below_counts[index] += 1
                outside.append(FEATURE_NAMES[index])
            elif value > self.high_list[index]:
                self.above_counts[index] += 1
                outside.append(FEATURE_NAMES[index])
        self.pending += 1
        if self.pending >= FLUSH_ROWS or time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()
        return outside

    def observe_many(self, rows: FloatArray, top_probabilities: FloatArray) -> list[list[str]]:
        """Served rows ``[n, 4]``: count them; per row, the names of its inputs outside the training range."""
        if len(rows) == 1:  # a one-row tensor (V2's usual request): numpy's per-call cost would be most of it
            return [self.observe_one(rows[0], float(top_probabilities[0]))]
        for probability in top_probabilities.tolist():
            self.confidence.observe(probability)
        if not self.active:
            return [[] for _ in range(len(rows))]
        for index, edges in enumerate(self.edges):
            binned = np.bincount(bin_indices(edges, rows[:, index]), minlength=len(self.counts[index]))
            for b in np.flatnonzero(binned).tolist():
                self.counts[index][b] += int(binned[b])
        low, high = rows < self.low, rows > self.high
        for index, (below, above) in enumerate(zip(low.sum(axis=0).tolist(), high.sum(axis=0).tolist(), strict=True)):
            self.below_counts[index] += below
            self.above_counts[index] += above
        self.pending += len(rows)
        self.flush()
        outside = low | high
        if not outside.any():
            return [[] for _ in range(len(rows))]
        return [[FEATURE_NAMES[i] for i in np.flatnonzero(mask).tolist()] for mask in outside]

    def flush(self) -> None:
        """Add the gathered counts to the Prometheus counters."""
        for index in range(len(self.counts)):
            for b, count in enumerate(self.counts[index]):
                if count:
                    self.bins[index][b].inc(count)
                    self.counts[index][b] = 0
            if self.below_counts[index]:
                self.below[index].inc(self.below_counts[index])
                self.below_counts[index] = 0
            if self.above_counts[index]:
                self.above[index].inc(self.above_counts[index])
                self.above_counts[index] = 0
        self.pending = 0
        self.flushed_at = time.monotonic()


def _bin_centres(edges: list[float]) -> np.ndarray:
    """A representative value per confidence bin (bins are open-ended: the ends take [0, first] and [last, 1])."""
    bounds = [0.0, *edges, 1.0]
    return np.array([(a + b) / 2 for a, b in zip(bounds, bounds[1:])])  # noqa: B905 - consecutive pairs


def field_label(field: str) -> str:
    """A refused input's field as a bounded label: the feature it names, else its top-level part, else ``other``."""
    if (match := _V2_VALUE.fullmatch(field)) is not None and int(match.group(1)) < len(FEATURE_NAMES):
        return FEATURE_NAMES[int(match.group(1))]
    last = field.rpartition(".")[2]
    if last in FEATURE_NAMES:
        return last
    top = re.split(r"[.\[]", field, maxsplit=1)[0]
    return top if top in FIELD_LABELS else "other"


def observe_refused(details: list[dict[str, str]]) -> None:
    """Count a refused request's listed details by field and rule (``rule`` is the validator's, a fixed set)."""
    for detail in details:
        VALIDATION_ERRORS.labels(field_label(detail["field"]), detail["rule"][:40]).inc()
