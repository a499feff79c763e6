"""The drift report: logged inputs against the training rows (PSI, KS, range), logged answers against a replay of
the registry's original model, and the exit codes of ``make drift-report``."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType, ServiceConfig
from ml_production_service.factory import get_predictor
from ml_production_service.features import FEATURE_NAMES, FloatArray
from ml_production_service.manifest import MANIFEST_FILE, ModelManifest
from ml_production_service.reference import golden_rows
from ml_production_service.registry import model_dir, read_manifest
from research import drift_report
from research.drift_report import (
    MAX_LINE_BYTES,
    REPORT_FILE,
    SKEW_TOLERANCE,
    UnusableInputError,
    analyse,
    main,
    population_stability_index,
    read_log,
    render,
)

FOREST = ModelType.RANDOM_FOREST
PETAL_LENGTH = FEATURE_NAMES.index("petal_length")
PROMETHEUS_PSI_PETAL_LENGTH_PLUS_1CM = 3.0224509898510017
"""What deploy/prometheus/rules.test.yml works out by hand for the 150 iris rows with petal_length 1 cm longer."""


def _manifest(model_type: ModelType) -> ModelManifest:
    return read_manifest(DEFAULT_REGISTRY_DIR, model_type)


def _served(model_type: ModelType, rows: FloatArray) -> FloatArray:
    """What the service answers for ``rows``, as it serves by default (fitted models: the ONNX fast path)."""
    config = ServiceConfig(model_type=model_type, registry_dir=DEFAULT_REGISTRY_DIR)
    return get_predictor(config).predict_proba(rows)


def _line(served_by: ModelType, index: int, row: Any, answer: Any, **overrides: Any) -> str:
    """One payload line as the service writes it (``overrides`` replace fields)."""
    manifest = _manifest(served_by)
    labels = manifest.class_labels
    record = {
        "event": "payload",
        "ts": f"2026-11-28T10:{index // 60 % 60:02d}:{index % 60:02d}.{index:06d}Z",
        "request_id": f"req-{index}",
        "model_type": served_by.value,
        "model_version": manifest.version,
        "inputs": dict(zip(FEATURE_NAMES, map(float, row), strict=True)),
        "prediction": labels[int(np.argmax(answer))],
        "probabilities": dict(zip(labels, map(float, answer), strict=True)),
    }
    return json.dumps(record | overrides)


def _lines(model_type: ModelType, rows: FloatArray, probabilities: FloatArray | None = None) -> list[str]:
    answers = _served(model_type, rows) if probabilities is None else probabilities
    return [_line(model_type, i, row, answer) for i, (row, answer) in enumerate(zip(rows, answers, strict=True))]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(tmp_path: Path, lines: list[str]) -> tuple[int, Path]:
    out = tmp_path / "out"
    return main(["--log", str(_write(tmp_path / "payload.log", lines)), "--out", str(out)]), out


@pytest.mark.parametrize("model_type", [pytest.param(m, id=m.value) for m in ModelType])
def test_the_training_rows_as_served_show_no_drift_and_no_skew(tmp_path: Path, model_type: ModelType) -> None:
    """The 150 iris rows fall in the reference bins exactly as training did (PSI 0, KS statistic 0, p-value 1, none
    out of range), and the service's answers (the fast path's float32 for fitted models) are no skew."""
    log = read_log(_write(tmp_path / "payload.log", _lines(model_type, golden_rows())))
    [model] = analyse(log, DEFAULT_REGISTRY_DIR).models
    assert model.group.rows == 150 and [d.feature for d in model.features] == list(FEATURE_NAMES)
    for drift in model.features:
        assert drift.psi == pytest.approx(0.0, abs=1e-12)
        assert (drift.ks_statistic, drift.ks_p_value, drift.out_of_range) == (0.0, 1.0, 0.0)
        assert drift.verdict.startswith("stable") and not drift.drifted
    assert not model.skew.found
    assert model.skew.label_mismatches == 0 and model.skew.max_abs_diff is not None
    assert model.skew.max_abs_diff <= SKEW_TOLERANCE
    assert "not the ONNX fast path" in model.skew.replayed_by or model_type is ModelType.HEURISTIC


def test_a_shift_on_one_feature_is_drift_on_that_feature_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """600 rows resampled from iris with petal_length 1.5 cm longer: PSI over 0.2 and a tiny KS p-value on
    petal_length alone (the others stay within sampling noise); the model's own answers are no skew; exit 0 with
    the report and one PNG per feature written."""
    rows = golden_rows()[np.random.default_rng(7).integers(0, 150, size=600)]
    rows[:, PETAL_LENGTH] += 1.5
    code, out = _run(tmp_path, _lines(FOREST, rows))
    assert code == 0
    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    log = read_log(tmp_path / "payload.log")
    [model] = analyse(log, DEFAULT_REGISTRY_DIR).models
    drift = {d.feature: d for d in model.features}
    assert drift["petal_length"].psi > 0.2 and drift["petal_length"].ks_p_value < 1e-12
    assert drift["petal_length"].verdict == "significant shift" and drift["petal_length"].out_of_range > 0.1
    for feature in ("sepal_length", "sepal_width", "petal_width"):
        assert drift[feature].psi < 0.1 and drift[feature].ks_p_value > 0.05 and not drift[feature].drifted
    assert not model.skew.found
    assert "| `petal_length` | 600 | " in report and report.count("**significant shift**") == 1
    assert report.count(" | stable |") == 3
    assert "**No training/serving skew**" in report
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"drift_random_forest_{f}.png" for f in FEATURE_NAMES)
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in [p.name for p in out.glob("*.png")])
    assert "PSI > 0.2: petal_length" in capsys.readouterr().out


def test_the_psi_is_the_prometheus_rules_psi(tmp_path: Path) -> None:
    """The same rows give the same PSI as the mps:input_psi:1h rule (epsilon 1e-4 on both shares), as worked out in
    its unit tests; the formula itself clamps both shares."""
    rows = golden_rows()
    rows[:, PETAL_LENGTH] += 1.0
    log = read_log(_write(tmp_path / "payload.log", _lines(FOREST, rows)))
    [model] = analyse(log, DEFAULT_REGISTRY_DIR).models
    drift = {d.feature: d for d in model.features}
    assert drift["petal_length"].psi == pytest.approx(PROMETHEUS_PSI_PETAL_LENGTH_PLUS_1CM, abs=1e-9)
    assert drift["petal_length"].out_of_range == pytest.approx(11 / 150)
    assert population_stability_index([0.0, 1.0], [0.5, 0.5]) == pytest.approx(
        (1e-4 - 0.5) * np.log(1e-4 / 0.5) + 0.5 * np.log(2)
    )


def test_a_tampered_answer_is_skew_and_the_report_names_the_rows(tmp_path: Path) -> None:
    """One probability moved by 1e-3 (same label) and one label changed: two rows differ, one label mismatch, each
    named by line and request id; the report does not claim there is no skew."""
    rows = golden_rows()
    answers = _served(FOREST, rows)
    labels = _manifest(FOREST).class_labels
    lines = _lines(FOREST, rows, answers)
    moved = answers[120].copy()
    moved[np.argmax(moved)] -= 1e-3
    moved[np.argmin(moved)] += 1e-3
    lines[120] = _line(FOREST, 120, rows[120], moved, request_id="tampered-probability")
    lines[7] = _line(FOREST, 7, rows[7], answers[7], request_id="tampered-label", prediction=labels[2])
    analysis = analyse(read_log(_write(tmp_path / "payload.log", lines)), DEFAULT_REGISTRY_DIR)
    found = analysis.models[0].skew
    assert found.found and found.rows_differing == 2 and found.label_mismatches == 1
    assert found.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert [(row.line, row.request_id) for row in found.first] == [(8, "tampered-label"), (121, "tampered-probability")]
    assert (found.first[0].logged_label, found.first[0].replayed_label) == ("virginica", "setosa")
    report = render(analysis)
    assert "**Training/serving skew**: 2 of 150 rows differ" in report and "**No training/serving skew**" not in report
    assert "| 121 | `tampered-probability` | " in report and "| 8 | `tampered-label` | " in report


def test_probabilities_of_other_classes_are_skew_without_comparison(tmp_path: Path) -> None:
    """Logged probabilities that name classes the model does not have cannot be compared: that is skew, said so."""
    rows = golden_rows()[:5]
    lines = [_line(FOREST, i, row, [1.0, 0.0, 0.0]) for i, row in enumerate(rows)]
    lines = [line.replace('"versicolor"', '"Iris-versicolor"') for line in lines]
    analysis = analyse(read_log(_write(tmp_path / "payload.log", lines)), DEFAULT_REGISTRY_DIR)
    found = analysis.models[0].skew
    assert found.found and found.max_abs_diff is None and found.label_mismatches == 0
    assert found.class_problem == (
        "the log's probabilities name Iris-versicolor, setosa, virginica; "
        "the model's classes are setosa, versicolor, virginica"
    )
    assert f"**Training/serving skew**: {found.class_problem}; the probabilities cannot be compared." in render(
        analysis
    )


def test_other_log_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """Payload lines mixed with the service's other stderr lines: request lines, console text, blank lines, broken,
    non-object, non-UTF-8 or too deeply nested JSON and an endless line are skipped and counted; a payload event
    without inputs is malformed and named; the rows and the findings are those of the clean log."""
    clean = [line.encode() for line in _lines(FOREST, golden_rows())]
    noise = [
        json.dumps({"event": "request", "request_id": "r1", "status": 200, "model_type": "random_forest"}).encode(),
        b"2026-11-28 10:00:00 [info     ] startup_complete",
        b"",
        b'{"event": "payload", "inputs": ',
        b"[1, 2, 3]",
        b'{"event": "payload", "request_id": "\xff\xfe"}',
        b"[" * 5000,
        b"x" * (3 * MAX_LINE_BYTES),
    ]
    missing_inputs = json.loads(clean[0])
    del missing_inputs["inputs"]
    lines = [*noise[:3], *clean[:75], *noise[3:], json.dumps(missing_inputs).encode(), *clean[75:]]
    path = tmp_path / "payload.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    log = read_log(path)
    assert (log.lines, log.payload_rows, log.skipped, log.malformed) == (159, 150, 8, 1)
    assert log.malformed_examples == [
        "line 84: inputs are not an object of exactly sepal_length, sepal_width, petal_length, petal_width"
    ]
    analysis = analyse(log, DEFAULT_REGISTRY_DIR)
    [model] = analysis.models
    assert all(drift.psi == pytest.approx(0.0, abs=1e-12) for drift in model.features) and not model.skew.found
    assert model.group.lines[75] == 85  # rows are named by their line in the log, noise included
    assert "8 other lines skipped" in render(
        analysis
    ) and "1 payload line malformed and skipped (line 84: inputs are not" in render(analysis)


def test_a_version_other_than_the_registrys_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows of another decision_tree version are not compared with the registry's model: the report names both
    versions under Warnings and still reports the random_forest rows; exit 0 (the report is written beside the log
    by default, readable by its owner only: it holds request data like the log)."""
    tree = ModelType.DECISION_TREE
    rows = golden_rows()
    stale = [line.replace(_manifest(tree).version, "20200101.000000") for line in _lines(tree, rows[:20])]
    log = _write(tmp_path / "payload.log", [*_lines(FOREST, rows), *stale])
    assert main(["--log", str(log)]) == 0
    out = tmp_path / "payload.log-drift-report"
    assert stat.S_IMODE((out / REPORT_FILE).stat().st_mode) == 0o600
    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert "## Warnings" in report and "**Skipped** `decision_tree` version 20200101.000000 (20 rows)" in report
    assert f"has {_manifest(tree).version}" in report and f"## `random_forest` {_manifest(FOREST).version}" in report
    assert "## `decision_tree`" not in report and not list(out.glob("drift_decision_tree_*.png"))
    assert "warning: skipped decision_tree version 20200101.000000 (20 rows)" in capsys.readouterr().err


def _no_payload(tmp_path: Path) -> list[str]:
    return [json.dumps({"event": "request", "status": 200}), "plain text"]


def _unknown_model(tmp_path: Path) -> list[str]:
    return [_line(FOREST, 0, golden_rows()[0], [1.0, 0.0, 0.0], model_type="linear_regression")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param(None, "cannot read the payload log", id="missing-file"),
        pytest.param(_no_payload, "no payload lines in", id="no-payload-lines"),
        pytest.param(_unknown_model, "unknown model type 'linear_regression' (line 1): expected one of", id="unknown"),
    ],
)
def test_unusable_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: Any, message: str
) -> None:
    """A missing log, a log without payload lines, or a model type the service does not have: exit 2, one line on
    stderr saying what, nothing written."""
    log = tmp_path / "payload.log"
    if lines is not None:
        _write(log, lines(tmp_path))
    out = tmp_path / "out"
    assert main(["--log", str(log), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drift-report: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_the_registry_is_mps_registry_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MPS_REGISTRY_DIR names the registry, as for the service: one without the logged model is unusable (exit 2,
    naming the missing manifest); unset, it is the repository's registry/prd."""
    log = _write(tmp_path / "payload.log", _lines(ModelType.DECISION_TREE, golden_rows()[:10]))
    monkeypatch.setenv("MPS_REGISTRY_DIR", str(tmp_path / "empty"))
    assert main(["--log", str(log), "--out", str(tmp_path / "out")]) == 2
    assert f"no manifest at {tmp_path / 'empty' / 'decision_tree' / 'manifest.json'}" in capsys.readouterr().err
    monkeypatch.delenv("MPS_REGISTRY_DIR")
    assert drift_report.registry_dir_from_environment() == DEFAULT_REGISTRY_DIR


def test_a_log_over_the_line_limit_is_refused(tmp_path: Path) -> None:
    """The log is read up to its limit and refused past it, with a message that says what to do."""
    log = _write(tmp_path / "payload.log", _lines(FOREST, golden_rows()[:10]))
    assert read_log(log, max_lines=10).payload_rows == 10
    with pytest.raises(UnusableInputError, match=r"has more than 9 lines: split it"):
        read_log(log, max_lines=9)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"model_version": ""}, "model_version is not a non-empty string", id="empty-version"),
        pytest.param({"request_id": 7}, "request_id is not a non-empty string", id="numeric-request-id"),
        pytest.param({"ts": "yesterday"}, "ts is not an ISO-8601 time", id="bad-ts"),
        pytest.param({"ts": "2026-11-28T10:00:00"}, "ts has no time zone", id="naive-ts"),
        pytest.param({"inputs": {"sepal_length": 5.1}}, "inputs are not an object of exactly", id="missing-input"),
        pytest.param(
            {"inputs": dict.fromkeys(FEATURE_NAMES, True)}, "an input is not a finite number", id="boolean-input"
        ),
        pytest.param({"probabilities": {}}, "probabilities are not a non-empty object", id="no-probabilities"),
        pytest.param({"probabilities": {"setosa": "1"}}, "a probability is not a finite number", id="string-prob"),
        pytest.param({"probabilities": {"setosa": 1.0}}, "probabilities name ['setosa'], earlier rows", id="classes"),
    ],
)
def test_a_malformed_payload_line_is_skipped_and_named(tmp_path: Path, overrides: dict[str, Any], reason: str) -> None:
    """A payload event without the fields of a payload row is not a row: it is counted and named by line and reason,
    and the rows around it are kept."""
    rows, answers = golden_rows()[:3], np.eye(3)
    lines = _lines(FOREST, rows, answers)
    lines.insert(1, _line(FOREST, 9, rows[0], answers[0], **overrides))
    log = read_log(_write(tmp_path / "payload.log", lines))
    assert (log.payload_rows, log.skipped, log.malformed) == (3, 0, 1)
    assert log.malformed_examples[0].startswith(f"line 2: {reason}")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        pytest.param(lambda m: m.pop("reference"), "its manifest has no reference profile", id="no-reference"),
        pytest.param(
            lambda m: m["recipe"].update(dataset_sha256="0" * 64),
            f"its manifest records training data sha256 {'0' * 64}",
            id="other-training-data",
        ),
        pytest.param(
            lambda m: m["reference"]["features"]["sepal_width"].update(min=1.0),
            "its reference profile of sepal_width does not describe its training rows",
            id="reference-not-of-the-training-rows",
        ),
    ],
)
def test_a_model_whose_training_rows_cannot_be_rebuilt_is_skipped(tmp_path: Path, edit: Any, reason: str) -> None:
    """The logged rows are compared only with verified training rows: a manifest without a reference profile, with
    another training-data fingerprint, or whose reference does not describe the rows, is skipped with the reason."""
    tree = ModelType.DECISION_TREE
    registry = tmp_path / "registry"
    shutil.copytree(model_dir(DEFAULT_REGISTRY_DIR, tree), model_dir(registry, tree))
    manifest = model_dir(registry, tree) / MANIFEST_FILE
    data = json.loads(manifest.read_text(encoding="utf-8"))
    edit(data)
    manifest.write_text(json.dumps(data), encoding="utf-8")
    analysis = analyse(read_log(_write(tmp_path / "payload.log", _lines(tree, golden_rows()[:5]))), registry)
    assert analysis.models == [] and len(analysis.skipped) == 1
    assert analysis.skipped[0].reason.startswith(reason)
