"""Offline drift and skew report from the service's payload log: ``make drift-report LOG=<file> [OUT=<dir>]``.

The service writes one JSON line per sampled served row (``MPS_PAYLOAD_LOG_SAMPLE``, ``MPS_PAYLOAD_LOG_PATH``);
other log lines may be mixed in and are skipped. For each model type and version in the log, this compares the
logged inputs with the rows the registry's model was trained on (PSI over the manifest's reference bins, a
two-sample Kolmogorov-Smirnov test, the share outside the training range), replays them through the original
model (the joblib Pipeline, not the fast path) to look for training/serving skew, and writes ``drift_report.md``
with one histogram PNG per feature. Drift is a finding, not a failure: exit 0 once the report is written; exit 2
with one line on unusable input (a missing or oversized log, no payload lines, a model the registry does not have).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import stat
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt
import orjson
from scipy import stats

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ENV_PREFIX, ModelType
from ml_production_service.factory import load_fitted, load_heuristic
from ml_production_service.fast_path import PARITY_TOLERANCE
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import MANIFEST_FILE, FeatureProfile, ModelManifest
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.predictors.heuristic import default_heuristic_manifest
from ml_production_service.reference import ProbabilityFunction, bin_indices
from ml_production_service.registry import ManifestNotFoundError, model_dir, read_manifest
from research.experiments.common import Dataset, load_dataset, relative
from research.experiments.figures import _save as save_figure
from research.experiments.text import p_value, pct, table

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

REPORT_FILE = "drift_report.md"
REPORT_MODE = 0o600
REGISTRY_VARIABLE = f"{ENV_PREFIX}REGISTRY_DIR"
PAYLOAD_EVENT = "payload"
MAX_LINES = 1_000_000
"""Longest log read: about 350 MB of payload lines; a longer one is refused (split it, or sample less)."""
MAX_LINE_BYTES = 64 * 1024
"""A payload line is about 350 bytes; a longer line is skipped unparsed, so one line cannot exhaust memory."""
MAX_GROUPS = 100
"""Most model type/version pairs in one log: a handful per rollout; thousands mean it is not a payload log."""
PSI_EPSILON = 1e-4
"""Both shares are clamped at this before the logarithm, as in the ``mps:input_psi:1h`` Prometheus rule."""
PSI_STABLE = 0.1
"""Under this, a feature is stable (the usual PSI convention)."""
PSI_DRIFT = 0.2
"""Over this, a feature has shifted significantly: the ``MPSInputDrift`` alert's line."""
MIN_ROWS = 200
"""Under this many rows a PSI is mostly sampling noise (about (bins - 1) / rows): verdicts are only indicative."""
SKEW_TOLERANCE = PARITY_TOLERANCE
"""Largest probability difference that is not skew: the fast path's parity tolerance (it computes in float32)."""
SHOWN_ROWS = 10
"""Differing rows, malformed lines and skipped groups listed in the report; the rest are counted."""
REPLAY_CHUNK_ROWS = 100_000
ECHO_CHARS = 80
"""Text from the log (request ids, versions, model types) is cut to this in the report."""
EXIT_UNUSABLE = 2


class UnusableInputError(RuntimeError):
    """The log or the registry cannot give a report (one line: what and why)."""


@dataclass
class Group:
    """The rows of one model type and version, in log order (inputs and probabilities flat, row after row)."""

    model_type: str
    version: str
    classes: tuple[str, ...]
    """The classes of the first row's probabilities, in their logged order; every row of the group has these."""
    lines: array[int] = field(default_factory=lambda: array("q"))
    request_ids: list[str] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    inputs: array[float] = field(default_factory=lambda: array("d"))
    probabilities: array[float] = field(default_factory=lambda: array("d"))
    first: tuple[datetime, str] | None = None
    last: tuple[datetime, str] | None = None

    @property
    def rows(self) -> int:
        """How many payload rows the group holds."""
        return len(self.lines)

    def input_matrix(self) -> FloatArray:
        """The logged inputs, ``[rows, 4]`` in ``FEATURE_NAMES`` order."""
        return np.frombuffer(self.inputs, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))

    def probability_matrix(self, class_labels: Sequence[str]) -> FloatArray:
        """The logged probabilities, ``[rows, classes]`` in ``class_labels`` order (the same set as ``classes``)."""
        logged = np.frombuffer(self.probabilities, dtype=np.float64).reshape(-1, len(self.classes))
        return logged[:, [self.classes.index(label) for label in class_labels]]


@dataclass(frozen=True)
class _Row:
    model_type: str
    version: str
    request_id: str
    ts: tuple[datetime, str]
    inputs: tuple[float, ...]
    prediction: str
    probabilities: dict[str, float]


@dataclass
class PayloadLog:
    """What was read from a log: its payload rows by model type and version, and what was skipped."""

    path: Path
    sha256: str
    lines: int
    skipped: int
    """Lines that are not a JSON object with ``"event": "payload"`` (other log lines, blank, overlong)."""
    malformed: int
    """Payload lines without the fields of a payload row (each is named in ``malformed_examples``, up to a limit)."""
    malformed_examples: list[str]
    groups: dict[tuple[str, str], Group]

    @property
    def payload_rows(self) -> int:
        """Rows kept, over every group."""
        return sum(group.rows for group in self.groups.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_row(record: dict[str, Any]) -> _Row | str:
    """A payload row, or why ``record`` (a payload event) is not one."""
    texts = {name: record.get(name) for name in ("model_type", "model_version", "request_id", "ts", "prediction")}
    for name, value in texts.items():
        if not isinstance(value, str) or not value:
            return f"{name} is not a non-empty string"
    try:
        ts = datetime.fromisoformat(str(texts["ts"]))
    except ValueError:
        return "ts is not an ISO-8601 time"
    if ts.tzinfo is None:
        return "ts has no time zone"
    inputs = record.get("inputs")
    if not isinstance(inputs, dict) or set(inputs) != set(FEATURE_NAMES):
        return f"inputs are not an object of exactly {', '.join(FEATURE_NAMES)}"
    if not all(_is_number(inputs[name]) for name in FEATURE_NAMES):
        return "an input is not a finite number"
    probabilities = record.get("probabilities")
    if not isinstance(probabilities, dict) or not probabilities:
        return "probabilities are not a non-empty object"
    if not all(_is_number(value) for value in probabilities.values()):
        return "a probability is not a finite number"
    return _Row(
        model_type=str(texts["model_type"]),
        version=str(texts["model_version"]),
        request_id=str(texts["request_id"]),
        ts=(ts, str(texts["ts"])),
        inputs=tuple(float(inputs[name]) for name in FEATURE_NAMES),
        prediction=str(texts["prediction"]),
        probabilities={str(label): float(value) for label, value in probabilities.items()},
    )


def _add(group: Group, line: int, row: _Row) -> str | None:
    """Append ``row`` to ``group``; why not, when its probabilities name other classes than the group's."""
    if set(row.probabilities) != set(group.classes):
        return (
            f"probabilities name {sorted(row.probabilities)}, earlier rows of {group.model_type} "
            f"{group.version} name {sorted(group.classes)}"
        )
    group.lines.append(line)
    group.request_ids.append(row.request_id)
    group.predictions.append(row.prediction)
    group.inputs.extend(row.inputs)
    group.probabilities.extend(row.probabilities[label] for label in group.classes)
    if group.first is None or row.ts[0] < group.first[0]:
        group.first = row.ts
    if group.last is None or row.ts[0] > group.last[0]:
        group.last = row.ts
    return None


def _record(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line`` if it is a payload event, else None."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and record.get("event") == PAYLOAD_EVENT:
        return record
    return None


def read_log(path: Path, *, max_lines: int = MAX_LINES) -> PayloadLog:
    """Read the payload rows of the log at ``path``, grouped by model type and version; the rest is counted.

    UnusableInputError when the log cannot be read, has more than ``max_lines`` lines or more than ``MAX_GROUPS``
    model versions. Lines are read at most ``MAX_LINE_BYTES`` at a time, so an endless line costs no memory.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise UnusableInputError(f"the payload log {path} is not a regular file")
        handle = path.open("rb")
    except OSError as error:
        raise UnusableInputError(f"cannot read the payload log {path}: {error.strerror or error}") from None
    digest = hashlib.sha256()
    groups: dict[tuple[str, str], Group] = {}
    number = skipped = malformed = 0
    examples: list[str] = []
    with handle:
        while chunk := handle.readline(MAX_LINE_BYTES + 1):
            digest.update(chunk)
            overlong = len(chunk) > MAX_LINE_BYTES
            while overlong and not chunk.endswith(b"\n") and (chunk := handle.readline(MAX_LINE_BYTES)):
                digest.update(chunk)
            number += 1
            if number > max_lines:
                raise UnusableInputError(
                    f"the payload log {path} has more than {max_lines:,} lines: split it (split -l {max_lines}) "
                    "and report each part, or lower MPS_PAYLOAD_LOG_SAMPLE"
                )
            record = None if overlong else _record(chunk)
            if record is None:
                skipped += 1
                continue
            row = _parse_row(record)
            problem = row if isinstance(row, str) else None
            if isinstance(row, _Row):
                key = (row.model_type, row.version)
                if key not in groups and len(groups) == MAX_GROUPS:
                    raise UnusableInputError(
                        f"the payload log {path} names more than {MAX_GROUPS} model type/version pairs "
                        f"(line {number}): is it a payload log?"
                    )
                group = groups.setdefault(key, Group(row.model_type, row.version, tuple(row.probabilities)))
                problem = _add(group, number, row)
            if problem is not None:
                malformed += 1
                if len(examples) < SHOWN_ROWS:
                    examples.append(f"line {number}: {problem}")
    return PayloadLog(path, digest.hexdigest(), number, skipped, malformed, examples, groups)


def registry_dir_from_environment() -> Path:
    """``MPS_REGISTRY_DIR`` as the service reads it (unset or empty: the repository's ``registry/prd``)."""
    value = os.environ.get(REGISTRY_VARIABLE, "").strip()
    return Path(value) if value else DEFAULT_REGISTRY_DIR


def population_stability_index(live: npt.ArrayLike, reference: npt.ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """PSI = sum over bins of (l - r) * ln(l / r), both shares clamped at ``epsilon`` (the Prometheus rule's)."""
    l_share = np.maximum(np.asarray(live, dtype=np.float64), epsilon)
    r_share = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    return float(np.sum((l_share - r_share) * np.log(l_share / r_share)))


def psi_verdict(psi: float, rows: int) -> str:
    """Stable under 0.1, a moderate shift up to 0.2, a significant shift over it; indicative under ``MIN_ROWS``."""
    verdict = "significant shift" if psi > PSI_DRIFT else "moderate shift" if psi >= PSI_STABLE else "stable"
    return verdict if rows >= MIN_ROWS else f"{verdict} (indicative: under {MIN_ROWS} rows)"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's logged values against its training values."""

    feature: str
    rows: int
    edges: list[float]
    training_share: list[float]
    logged_share: list[float]
    psi: float
    ks_statistic: float
    ks_p_value: float
    out_of_range: float
    """Share of logged rows below the training minimum or above the training maximum."""

    @property
    def verdict(self) -> str:
        """``psi_verdict`` of this feature."""
        return psi_verdict(self.psi, self.rows)

    @property
    def drifted(self) -> bool:
        """PSI over ``PSI_DRIFT``."""
        return self.psi > PSI_DRIFT


def feature_drift(feature: str, profile: FeatureProfile, training: FloatArray, logged: FloatArray) -> FeatureDrift:
    """PSI over the reference bins, KS test against the training values, and the out-of-range share."""
    counts = np.bincount(bin_indices(profile.edges, logged), minlength=len(profile.edges) + 1)
    logged_share = counts / len(logged)
    ks = stats.ks_2samp(logged, training)
    return FeatureDrift(
        feature=feature,
        rows=len(logged),
        edges=list(profile.edges),
        training_share=list(profile.fractions),
        logged_share=[float(share) for share in logged_share],
        psi=population_stability_index(logged_share, profile.fractions),
        ks_statistic=float(ks.statistic),
        ks_p_value=float(ks.pvalue),
        out_of_range=float(np.mean((logged < profile.min) | (logged > profile.max))),
    )


@dataclass(frozen=True)
class DifferingRow:
    """A logged row the replayed model answers differently."""

    line: int
    request_id: str
    inputs: tuple[float, ...]
    logged_label: str
    replayed_label: str
    logged: tuple[float, ...]
    replayed: tuple[float, ...]
    max_abs_diff: float


@dataclass(frozen=True)
class Skew:
    """The logged answers against the same inputs replayed through the registry's original model."""

    rows: int
    replayed_by: str
    class_labels: tuple[str, ...]
    """The model's classes: the order of every probability listed."""
    max_abs_diff: float | None
    """None when the logged probabilities name other classes than the model's (they cannot be compared)."""
    label_mismatches: int
    rows_differing: int
    first: list[DifferingRow]
    class_problem: str | None = None

    @property
    def found(self) -> bool:
        """Any label differs, or any probability by more than ``SKEW_TOLERANCE`` (or they cannot be compared)."""
        return self.max_abs_diff is None or self.label_mismatches > 0 or not self.max_abs_diff <= SKEW_TOLERANCE


def _replay(predict: ProbabilityFunction, rows: FloatArray) -> FloatArray:
    parts = [
        np.asarray(predict(rows[start : start + REPLAY_CHUNK_ROWS]), dtype=np.float64)
        for start in range(0, len(rows), REPLAY_CHUNK_ROWS)
    ]
    return np.concatenate(parts)


def skew(group: Group, class_labels: Sequence[str], predict: ProbabilityFunction, replayed_by: str) -> Skew:
    """Replay ``group``'s inputs through ``predict`` and compare labels and probabilities with the logged ones."""
    rows = group.input_matrix()
    replayed = _replay(predict, rows)
    labels = np.asarray(class_labels)[replayed.argmax(axis=1)]
    label_differs = labels != np.asarray(group.predictions)
    if set(group.classes) != set(class_labels):
        logged_classes = ", ".join(_echo(label) for label in sorted(group.classes)[:SHOWN_ROWS])
        problem = f"the log's probabilities name {logged_classes}; the model's classes are {', '.join(class_labels)}"
        return Skew(
            group.rows, replayed_by, tuple(class_labels), None, int(label_differs.sum()), group.rows, [], problem
        )
    logged = group.probability_matrix(class_labels)
    difference = np.abs(replayed - logged).max(axis=1)
    # NaN is never within tolerance: "not <=" counts it as a difference.
    differs = label_differs | ~(difference <= SKEW_TOLERANCE)
    first = [
        DifferingRow(
            line=int(group.lines[index]),
            request_id=group.request_ids[index],
            inputs=tuple(float(value) for value in rows[index]),
            logged_label=group.predictions[index],
            replayed_label=str(labels[index]),
            logged=tuple(float(value) for value in logged[index]),
            replayed=tuple(float(value) for value in replayed[index]),
            max_abs_diff=float(difference[index]),
        )
        for index in np.flatnonzero(differs)[:SHOWN_ROWS]
    ]
    return Skew(
        rows=group.rows,
        replayed_by=replayed_by,
        class_labels=tuple(class_labels),
        max_abs_diff=float(difference.max()),  # NaN if any row's is
        label_mismatches=int(label_differs.sum()),
        rows_differing=int(differs.sum()),
        first=first,
    )


@dataclass(frozen=True)
class ModelDrift:
    """One model version's report: its manifest, every feature's drift, the predicted class mix, the skew."""

    group: Group
    manifest: ModelManifest
    manifest_path: Path
    features: list[FeatureDrift]
    class_share: dict[str, float]
    skew: Skew


@dataclass(frozen=True)
class SkippedGroup:
    """Rows of a model version this report could not compare, and why."""

    group: Group
    reason: str


@dataclass(frozen=True)
class Analysis:
    """Everything the report says."""

    log: PayloadLog
    registry_dir: Path
    dataset: Dataset
    models: list[ModelDrift]
    skipped: list[SkippedGroup]


def _model_type(group: Group, log: PayloadLog) -> ModelType:
    try:
        return ModelType(group.model_type)
    except ValueError:
        known = ", ".join(member.value for member in ModelType)
        raise UnusableInputError(
            f"the payload log {log.path} names an unknown model type {_echo(group.model_type)!r} "
            f"(line {group.lines[0]}): expected one of {known}"
        ) from None


def _served_manifest(registry_dir: Path, model_type: ModelType) -> ModelManifest:
    """The manifest the service would serve ``model_type`` with (the heuristic has a built-in one)."""
    try:
        return read_manifest(registry_dir, model_type)
    except ManifestNotFoundError as error:
        if not model_type.is_fitted:
            return default_heuristic_manifest()
        raise UnusableInputError(f"cannot report on {model_type.value}: {error}") from None
    except ModelLoadError as error:
        raise UnusableInputError(f"cannot report on {model_type.value}: {error}") from None


def _replay_model(registry_dir: Path, model_type: ModelType) -> tuple[ProbabilityFunction, str]:
    """The original model as the service loads it (sha256, library versions, golden check), never the fast path."""
    try:
        if not model_type.is_fitted:
            return load_heuristic(registry_dir).predict_proba, "the heuristic's rules (it has no artifact)"
        predictor = load_fitted(registry_dir, model_type, fast_path=False)
    except ModelLoadError as error:
        raise UnusableInputError(f"cannot replay {model_type.value}: {error}") from None
    artifact = model_dir(registry_dir, model_type) / str(predictor.manifest.artifact)
    described = (
        f"the original model `{relative(artifact)}` (sha256 {predictor.manifest.sha256}, verified before "
        "unpickling; golden predictions checked), not the ONNX fast path"
    )
    return predictor.predict_proba, described


def _not_comparable(manifest: ModelManifest, group: Group, dataset: Dataset, manifest_path: Path) -> str | None:
    """Why ``group`` cannot be compared with this manifest's training rows, or None."""
    name = manifest.model_type.value
    if group.version != manifest.version:
        return (
            f"the log's version is {_echo(group.version)}, `{relative(manifest_path)}` has {manifest.version}: "
            "these rows were served by another model than the registry's"
        )
    if manifest.reference is None:
        return f"its manifest has no reference profile: record one with make refresh-reference MODEL={name}"
    recorded = manifest.recipe.dataset_sha256
    if recorded != dataset.fingerprint:
        return (
            f"its manifest records training data sha256 {recorded}, {manifest.recipe.dataset} here has "
            f"{dataset.fingerprint}: its training rows cannot be rebuilt"
        )
    for column, feature in enumerate(FEATURE_NAMES):
        profile = manifest.reference.features[feature]
        training = dataset.features[:, column]
        counts = np.bincount(bin_indices(profile.edges, training), minlength=len(profile.edges) + 1)
        same = np.allclose(counts / len(training), profile.fractions, rtol=0.0, atol=1e-12) and (
            (profile.min, profile.max) == (float(training.min()), float(training.max()))
        )
        if not same:
            return f"its reference profile of {feature} does not describe its training rows: make refresh-reference"
    return None


def analyse(log: PayloadLog, registry_dir: Path, dataset: Dataset | None = None) -> Analysis:
    """Compare every group of ``log`` with its model in ``registry_dir`` and the rows it was trained on.

    ``dataset`` is the training data (default: all of iris, what production models are trained on); a manifest
    whose recorded fingerprint differs is skipped with the reason. UnusableInputError when the log has no payload
    rows, or names a model type the registry cannot serve.
    """
    if not log.groups:
        raise UnusableInputError(
            f"no payload lines in {log.path} ({log.lines:,} lines, {log.skipped:,} not payload events, "
            f"{log.malformed:,} malformed): is MPS_PAYLOAD_LOG_SAMPLE above 0?"
        )
    dataset = dataset or load_dataset()
    groups = sorted(log.groups.values(), key=lambda group: (group.model_type, group.version))
    # Every model type and manifest is checked before any group is analysed: an unusable log fails at once.
    manifests = {group.model_type: _served_manifest(registry_dir, _model_type(group, log)) for group in groups}
    models: list[ModelDrift] = []
    skipped: list[SkippedGroup] = []
    for group in groups:
        manifest = manifests[group.model_type]
        manifest_path = model_dir(registry_dir, manifest.model_type) / MANIFEST_FILE
        reason = _not_comparable(manifest, group, dataset, manifest_path)
        if reason is not None or manifest.reference is None:
            skipped.append(SkippedGroup(group, reason or "no reference profile"))
            continue
        inputs = group.input_matrix()
        features = [
            feature_drift(name, manifest.reference.features[name], dataset.features[:, column], inputs[:, column])
            for column, name in enumerate(FEATURE_NAMES)
        ]
        predicted = np.asarray(group.predictions)
        class_share = {label: float(np.mean(predicted == label)) for label in manifest.class_labels}
        predict, replayed_by = _replay_model(registry_dir, manifest.model_type)
        found = skew(group, manifest.class_labels, predict, replayed_by)
        models.append(ModelDrift(group, manifest, manifest_path, features, class_share, found))
    return Analysis(log, registry_dir, dataset, models, skipped)


def _echo(text: str) -> str:
    """Text from the log, safe in a Markdown table cell: one line, no pipes or backticks, at most 80 characters."""
    cleaned = " ".join(text.split()).replace("|", "/").replace("`", "'")
    return cleaned if len(cleaned) <= ECHO_CHARS else cleaned[: ECHO_CHARS - 1] + "…"


def _count(count: int, noun: str) -> str:
    """``1 row``, ``1,500 rows``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _rows(count: int) -> str:
    return _count(count, "row")


def _span(group: Group) -> tuple[str, str]:
    return (group.first[1], group.last[1]) if group.first and group.last else ("—", "—")


def _numbers(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.6g}" for value in values)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    """``<4.8``, ``4.8-5``, ..., ``≥6.9``: the open-ended reference bins (an edge value belongs to the bin above)."""
    if not edges:
        return ["all"]
    inner = [f"{low:.3g}–{high:.3g}" for low, high in zip(edges, edges[1:])]  # noqa: B905 - consecutive pairs
    return [f"<{edges[0]:.3g}", *inner, f"≥{edges[-1]:.3g}"]


def figure_name(model: ModelDrift, drift: FeatureDrift) -> str:
    """The PNG of one feature of one model, beside the report."""
    return f"drift_{model.manifest.model_type.value}_{drift.feature}.png"


def _figure(model: ModelDrift, drift: FeatureDrift, path: Path) -> Path:
    """Training and logged shares of each reference bin, side by side."""
    labels = _bin_labels(drift.edges)
    positions = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    axes.bar(positions - 0.2, drift.training_share, width=0.4, label="training rows", color="tab:blue")
    axes.bar(positions + 0.2, drift.logged_share, width=0.4, label=f"logged rows ({drift.rows:,})", color="tab:orange")
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
    axes.set_xlabel(f"{drift.feature} (cm), reference bins")
    axes.set_ylabel("share of rows")
    axes.legend(fontsize=7)
    axes.set_title(
        f"{model.manifest.model_type.value} {model.manifest.version}: {drift.feature}, PSI {drift.psi:.3f}", fontsize=9
    )
    return save_figure(figure, path)


def _sources(analysis: Analysis) -> list[str]:
    log = analysis.log
    malformed = f"{_count(log.malformed, 'payload line')} malformed and skipped"
    if log.malformed_examples:
        more = f"; {log.malformed - len(log.malformed_examples):,} more" if log.malformed > SHOWN_ROWS else ""
        malformed += f" ({'; '.join(_echo(example) for example in log.malformed_examples)}{more})"
    dataset = analysis.dataset
    return [
        "## Sources",
        "",
        f"- Log: `{relative(log.path)}`, sha256 `{log.sha256}`: {_count(log.lines, 'line')}; "
        f"{_count(log.payload_rows, 'payload row')} kept; {_count(log.skipped, 'other line')} skipped "
        f'(not JSON, or not `"event": "payload"`); {malformed}.',
        f"- Registry: `{relative(analysis.registry_dir)}` (`{REGISTRY_VARIABLE}`, default `registry/prd`).",
        f"- Training rows: `sklearn.datasets.load_iris`, {len(dataset.targets)} rows, sha256 `{dataset.fingerprint}` "
        "(`research.experiments.common.load_dataset`); every model reported below records this sha256 in its "
        "manifest's `recipe.dataset_sha256`, and its reference bins and range were recomputed from these rows.",
        "",
    ]


def _overview(analysis: Analysis) -> list[str]:
    rows: list[list[Any]] = []
    for model in analysis.models:
        group = model.group
        drifted = ", ".join(drift.feature for drift in model.features if drift.drifted) or "none"
        skew_found = "**found**" if model.skew.found else "none"
        rows.append([f"`{group.model_type}`", group.version, f"{group.rows:,}", *_span(group), drifted, skew_found])
    for skipped in analysis.skipped[:SHOWN_ROWS]:
        group = skipped.group
        rows.append([f"`{group.model_type}`", _echo(group.version), f"{group.rows:,}", *_span(group), "skipped", "—"])
    header = ["model", "version", "rows", "first", "last", f"PSI > {PSI_DRIFT}", "skew"]
    lines = ["## Models", "", table(header, rows), ""]
    if analysis.skipped:
        lines += ["## Warnings", ""]
        for skipped in analysis.skipped[:SHOWN_ROWS]:
            lines.append(f"- **Skipped** {_skipped(skipped)}.")
        if len(analysis.skipped) > SHOWN_ROWS:
            rest = analysis.skipped[SHOWN_ROWS:]
            lines.append(f"- {len(rest)} more groups skipped ({_rows(sum(s.group.rows for s in rest))}).")
        lines.append("")
    return lines


def _skipped(skipped: SkippedGroup) -> str:
    group = skipped.group
    return f"`{group.model_type}` version {_echo(group.version)} ({_rows(group.rows)}): {skipped.reason}"


def _method() -> list[str]:
    return [
        "## How to read it",
        "",
        "- **PSI** (population stability index) of a feature: `PSI = Σ_b (l_b − r_b) · ln(l_b / r_b)` over the "
        "manifest's reference bins `b`, where `l_b` is the share of logged rows in bin `b` and `r_b` the share of "
        f"training rows (the manifest's `reference` fractions), both clamped at {PSI_EPSILON:g} so that an empty bin "
        "stays finite: the `mps:input_psi:1h` Prometheus rule's formula. The bins have interior edges at the "
        "10%..90% training quantiles and are open at both ends; a value equal to an edge counts in the bin above "
        "(`reference.bin_indices`).",
        f"- **Verdict**: PSI under {PSI_STABLE} stable; {PSI_STABLE} to {PSI_DRIFT} a moderate shift; over "
        f"{PSI_DRIFT} a significant shift (the `MPSInputDrift` alert's line). Sampling noise alone gives a PSI of "
        f"about (bins − 1) / rows, so under {MIN_ROWS} rows a verdict is only indicative.",
        "- **KS**: the two-sample Kolmogorov–Smirnov test (`scipy.stats.ks_2samp`, two-sided) of the logged values "
        "against the training values: the statistic is the largest gap between their cumulative distributions, the "
        "p-value the chance of a gap at least that large if both came from one distribution. Iris is measured to "
        "0.1 cm, and ties make the test conservative (p-values too large).",
        "- **Out of range**: the share of logged rows below the training minimum or above the training maximum "
        "of the feature (the service names them in `out_of_range`).",
        "- **Skew**: the logged inputs replayed through the registry's original model (never the fast path) and "
        "compared with the logged probabilities, in the manifest's class order. No training/serving skew means every "
        f"label matches and every probability is within {SKEW_TOLERANCE:g} (the fast path's parity tolerance: the "
        "service answers in float32 by default).",
        "",
    ]


def _model_section(model: ModelDrift) -> list[str]:
    manifest, group = model.manifest, model.group
    bins = max(len(drift.edges) + 1 for drift in model.features)
    rows = [
        [
            f"`{drift.feature}`",
            f"{drift.rows:,}",
            f"{drift.psi:.3f}",
            f"{drift.ks_statistic:.3f}",
            p_value(drift.ks_p_value),
            pct(drift.out_of_range),
            f"**{drift.verdict}**" if drift.drifted else drift.verdict,
        ]
        for drift in model.features
    ]
    prior = manifest.reference.class_prior if manifest.reference else {}
    classes = "; ".join(
        f"{label} {pct(share)} (training {pct(prior.get(label))})" for label, share in model.class_share.items()
    )
    span = f" from {group.first[1]} to {group.last[1]}" if group.first and group.last else ""
    lines = [
        f"## `{manifest.model_type.value}` {manifest.version}",
        "",
        f"{_rows(group.rows)} logged{span}. Manifest: `{relative(model.manifest_path)}`. Sampling noise alone "
        f"would give a PSI of about ({bins} − 1) / {group.rows:,} = {(bins - 1) / group.rows:.3f}.",
        "",
        table(["feature", "rows", "PSI", "KS statistic", "KS p-value", "out of training range", "verdict"], rows),
        "",
        f"Logged predictions by class (the training class prior in brackets): {classes}.",
        "",
        *[f"![{drift.feature}]({figure_name(model, drift)})" for drift in model.features],
        "",
        *_skew_section(model.skew),
    ]
    return lines


def _skew_section(found: Skew) -> list[str]:
    lines = [
        "### Training/serving skew",
        "",
        f"The {found.rows:,} logged inputs replayed through {found.replayed_by}.",
        "",
    ]
    if found.max_abs_diff is None:
        return [*lines, f"**Training/serving skew**: {found.class_problem}; the probabilities cannot be compared.", ""]
    summary = (
        f"Largest |logged − replayed| probability: {found.max_abs_diff:.3g}; label mismatches: "
        f"{found.label_mismatches:,} of {found.rows:,}."
    )
    if not found.found:
        verdict = (
            f"**No training/serving skew**: every label matches and every probability is within {SKEW_TOLERANCE:g}."
        )
        return [*lines, summary, "", verdict, ""]
    shown = f"the first {len(found.first)}" if found.rows_differing > len(found.first) else "all of them"
    rows = [
        [
            f"{row.line:,}",
            f"`{_echo(row.request_id)}`",
            _numbers(row.inputs),
            f"{_echo(row.logged_label)} ({_numbers(row.logged)})",
            f"{row.replayed_label} ({_numbers(row.replayed)})",
            f"{row.max_abs_diff:.3g}",
        ]
        for row in found.first
    ]
    header = ["line", "request_id", "inputs", "logged", "replayed", "max diff"]
    verdict = (
        f"**Training/serving skew**: {found.rows_differing:,} of {found.rows:,} rows differ (a label, or a "
        f"probability by more than {SKEW_TOLERANCE:g}); {shown}, probabilities in the order "
        f"{', '.join(found.class_labels)}:"
    )
    return [*lines, summary, "", verdict, "", table(header, rows), ""]


def render(analysis: Analysis) -> str:
    """The Markdown report."""
    lines = [
        f"# Drift report: `{_echo(analysis.log.path.name)}`",
        "",
        "Made by `make drift-report` (`python -m research.drift_report`) from the service's payload log "
        "(`MPS_PAYLOAD_LOG_SAMPLE`, `MPS_PAYLOAD_LOG_PATH`): the logged inputs against the rows each model was "
        "trained on, and the logged answers against the registry's model. Drift is a finding, not a failure.",
        "",
        *_sources(analysis),
        *_overview(analysis),
        *_method(),
    ]
    for model in analysis.models:
        lines += _model_section(model)
    return "\n".join(lines).rstrip() + "\n"


def write_report(analysis: Analysis, out_dir: Path) -> Path:
    """Write ``drift_report.md`` and its figures into ``out_dir``; the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in analysis.models:
        for drift in model.features:
            _figure(model, drift, out_dir / figure_name(model, drift))
    path = out_dir / REPORT_FILE
    path.write_text(render(analysis), encoding="utf-8")
    # The differing rows' inputs and request ids are request data: readable by its owner only, like the log (0600).
    path.chmod(REPORT_MODE)
    return path


def _summary(analysis: Analysis, path: Path) -> str:
    lines = [f"drift report: {relative(path)}"]
    for model in analysis.models:
        drifted = [f"{d.feature} {d.psi:.3f}" for d in model.features if d.drifted]
        lines.append(
            f"  {model.manifest.model_type.value} {model.manifest.version}: {_rows(model.group.rows)}; "
            f"PSI > {PSI_DRIFT}: {', '.join(drifted) or 'none'}; skew: {'FOUND' if model.skew.found else 'none'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 when the report is written (whatever it finds), 2 on unusable input."""
    parser = argparse.ArgumentParser(prog="python -m research.drift_report", description=__doc__)
    parser.add_argument("--log", type=Path, required=True, help="the payload log (JSON lines; other lines skipped)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for drift_report.md and its PNGs (default: <log>-drift-report beside the log)",
    )
    parser.add_argument(
        "--registry-dir",
        type=Path,
        default=None,
        help=f"default: {REGISTRY_VARIABLE}, else the repository's registry/prd",
    )
    args = parser.parse_args(argv)
    registry_dir = args.registry_dir or registry_dir_from_environment()
    # Beside the log by default, never in the repository: the report, like the log, holds request data.
    out_dir = args.out or args.log.with_name(f"{args.log.name}-drift-report")
    try:
        analysis = analyse(read_log(args.log), registry_dir)
    except UnusableInputError as error:
        print(f"drift-report: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        path = write_report(analysis, out_dir)
    except OSError as error:
        print(f"drift-report: cannot write the report into {out_dir}: {error.strerror or error}", file=sys.stderr)
        return EXIT_UNUSABLE
    for skipped in analysis.skipped:
        print(f"drift-report: warning: skipped {_skipped(skipped).replace('`', '')}", file=sys.stderr)
    print(_summary(analysis, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
