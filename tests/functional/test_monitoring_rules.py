"""The Prometheus rules (deploy/prometheus/rules.yml): promtool checks them and runs their unit tests.

deploy/prometheus/rules.test.yml, in promtool's unit-test format, has for every alert series that fire it and
series that leave it silent, and checks the drift recording rule against hand computations. This module runs
promtool on both files, proves the unit tests can fail (a rule changed the wrong way fails them), recomputes every
PSI the unit tests expect from their own input series without Prometheus, and checks what promtool cannot: that
the rules read only series the service exports, with their labels, and that every alert has a severity, a
summary, a description and a runbook in the README.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ml_production_service.server import metrics
from tests.functional.deploy_helpers import system_tool
from tests.functional.server_process import REPOSITORY

PROMETHEUS = REPOSITORY / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules.test.yml"


def _histogram(name: str, labels: set[str]) -> dict[str, frozenset[str]]:
    return {
        f"{name}_bucket": frozenset(labels | {"le"}),
        f"{name}_sum": frozenset(labels),
        f"{name}_count": frozenset(labels),
    }


SERVICE_SERIES: dict[str, frozenset[str]] = {
    "mps_http_requests_total": frozenset({"route", "method", "status"}),
    **_histogram("mps_http_request_duration_seconds", {"route"}),
    "mps_predictions_total": frozenset({"model_type", "model_version", "predicted_class"}),
    "mps_model_info": frozenset({"model_type", "model_version", "sha256"}),
    "mps_input_bin_total": frozenset({"model_type", "feature", "bin"}),
    "mps_input_reference_fraction": frozenset({"model_type", "feature", "bin"}),
    "mps_reference_class_fraction": frozenset({"model_type", "predicted_class"}),
    "mps_reference_confidence_mean": frozenset({"model_type"}),
    "mps_input_out_of_range_total": frozenset({"model_type", "feature", "side"}),
    "mps_validation_errors_total": frozenset({"field", "rule"}),
    **_histogram("mps_prediction_confidence", {"model_type"}),
    "mps_model_created_timestamp_seconds": frozenset({"model_type", "model_version"}),
}
"""The service's series the rules and the dashboard may read (exposition names), with their own labels."""
SCRAPE_LABELS = frozenset({"instance", "job", "track"})
"""Labels Prometheus adds to every scraped series (track: the Kubernetes ServiceMonitor's pod label)."""
PROMETHEUS_SERIES = {"up": frozenset[str]()}
PSI_EPSILON_TEXT = "1e-4"
PSI_EPSILON = float(PSI_EPSILON_TEXT)
"""The clamp rules.yml puts on empty bins, live or reference."""

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"(?<![\w$.:])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(?!\s*\(|[\w:])")


def promql_selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """(metric name, label names matched) of every series selector in a PromQL expression.

    A light reading, enough for this repository's expressions: strings are blanked first, grouping label lists
    dropped, and a name followed by ``(`` is a function; ``$variables`` (Grafana's) and numbers are skipped.
    """
    text = _GROUPING.sub(" ", _STRING.sub('""', expr))
    found = []
    for name, braces in _SELECTOR.findall(text):
        if name in _KEYWORDS or re.fullmatch(r"(inf|nan)", name, re.IGNORECASE):
            continue
        labels = frozenset(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", braces))
        found.append((name, labels))
    return found


def promql_grouping_labels(expr: str) -> set[str]:
    """Every label named in a ``by``, ``without``, ``on``, ``ignoring`` or ``group_*`` list."""
    return {label.strip() for _, names in _GROUPING.findall(expr) for label in names.split(",") if label.strip()}


def known_series() -> dict[str, frozenset[str]]:
    """What an expression may select: the service's series, ``up``, and the series rules.yml records."""
    recorded = {rule["record"]: frozenset[str]() for rule in rules() if "record" in rule}
    return {**SERVICE_SERIES, **PROMETHEUS_SERIES, **recorded}


def unknown_selectors(expr: str) -> list[str]:
    """The selectors of ``expr`` that name an unknown series or a label the series does not have."""
    known = known_series()
    all_labels = set().union(*known.values(), SCRAPE_LABELS, {"le"})
    problems = [
        f"{name}{{{','.join(sorted(labels))}}}"
        for name, labels in promql_selectors(expr)
        if name not in known or not labels <= known[name] | SCRAPE_LABELS | {"__name__"}
    ]
    problems += [f"by/on ({label})" for label in promql_grouping_labels(expr) - all_labels]
    return problems


def rules() -> list[dict[str, Any]]:
    """Every rule of rules.yml, in order."""
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    """The distinct alert names of rules.yml, in order."""
    return list(dict.fromkeys(rule["alert"] for rule in rules() if "alert" in rule))


def unit_tests() -> list[dict[str, Any]]:
    """The test groups of rules.test.yml."""
    return list(yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"])


# --- what promtool cannot check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param(
            'sum by (job) (rate(mps_http_requests_total{status=~"5..", route!~"/x(y)"}[5m])) / on (job) up',
            [("mps_http_requests_total", frozenset({"status", "route"})), ("up", frozenset())],
            id="grouping-and-matchers",
        ),
        pytest.param(
            'clamp_min(mps:input_bin_share:1h, 1e-4) > bool 0.2 and absent(x_total{a="b}"}[$__rate_interval])',
            [("mps:input_bin_share:1h", frozenset()), ("x_total", frozenset({"a"}))],
            id="functions-numbers-variables",
        ),
        pytest.param("time() - max by (a) (m_seconds) > 90 * 86400", [("m_seconds", frozenset())], id="time"),
    ],
)
def test_promql_reading_finds_every_selector_and_nothing_else(
    expr: str, expected: list[tuple[str, frozenset[str]]]
) -> None:
    """The selector reading the checks below rely on finds metric names and their matched labels, skipping
    functions, keywords, grouping labels, numbers, Grafana variables and the insides of strings."""
    found = promql_selectors(expr)
    assert found == expected
    assert promql_grouping_labels(expr) <= {"job", "a"}


def _exposition_names(metric: MetricWrapperBase) -> dict[str, frozenset[str]]:
    # prometheus_client keeps a metric's definition in private attributes; a counter's name is without _total.
    labels = frozenset(metric._labelnames)
    if metric._type == "counter":
        return {f"{metric._name}_total": labels}
    if metric._type == "histogram":
        return _histogram(metric._name, set(labels))
    return {metric._name: labels}


def test_the_series_the_rules_may_read_are_the_ones_the_service_defines() -> None:
    """SERVICE_SERIES, what the rules and the dashboard are checked against, is what server/metrics.py defines:
    the same names and exactly the same labels; and 0.1 s, the latency alert's threshold, is a histogram bound."""
    defined: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            defined.update(_exposition_names(value))
    assert SERVICE_SERIES.items() <= defined.items()
    assert 0.1 in metrics.LATENCY_BUCKETS


def test_rules_read_only_series_the_service_exports() -> None:
    """Every rule selects only series the service exports (or `up`, or a recorded one), with labels they have: a
    misspelt name or label would select nothing, and the alert would never fire."""
    for rule in rules():
        assert not unknown_selectors(str(rule["expr"])), rule.get("alert") or rule.get("record")
    used = {name for rule in rules() for name, _ in promql_selectors(str(rule["expr"]))}
    assert set(SERVICE_SERIES) - used == {
        "mps_http_request_duration_seconds_sum",
        "mps_prediction_confidence_bucket",
        "mps_model_info",
        "mps_validation_errors_total",
    }, "the rules watch every series but those only the dashboard shows"


def test_recording_rules_record_drift_class_shares_confidence_and_rows() -> None:
    """The series the alerts and the dashboard read are recorded, each once."""
    recorded = [rule["record"] for rule in rules() if "record" in rule]
    assert len(recorded) == len(set(recorded))
    assert {"mps:input_psi:1h", "mps:class_share:1h", "mps:confidence_mean:1h", "mps:input_rows:1h"} <= set(recorded)
    psi = next(rule["expr"] for rule in rules() if rule.get("record") == "mps:input_psi:1h")
    assert psi.count(f", {PSI_EPSILON_TEXT})") == 4, "live shares and reference fractions, both clamped"


def test_every_alert_has_a_severity_summary_description_and_readme_runbook() -> None:
    """Each alert is labelled critical, warning or info, and annotated with a summary, a description and its
    README runbook anchor (#runbook-<name in lower case>)."""
    alerts = [rule for rule in rules() if "alert" in rule]
    assert set(alert_names()) == {
        "MPSInputDrift",
        "MPSInputOutOfRange",
        "MPSPredictionShift",
        "MPSHighErrorRate",
        "MPSHighLatency",
        "MPSModelStale",
        "MPSTargetDown",
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert annotations["runbook_url"] == f"README.md#runbook-{rule['alert'].lower()}"
        assert annotations["summary"].strip() and annotations["description"].strip()
        assert re.fullmatch(r"\d+[mh]", rule["for"]), f"{rule['alert']} waits before it fires"


def test_every_alert_fires_in_one_unit_test_and_stays_silent_in_another() -> None:
    """rules.test.yml has, for every alert, a case where it fires and a case, with series, where it does not."""
    firing: set[str] = set()
    silent: set[str] = set()
    for group in unit_tests():
        assert group["input_series"], group["name"]
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == silent == set(alert_names())


# --- PSI, independently of Prometheus ------------------------------------------------------------------------


_TERM = re.compile(r"(?P<start>-?[0-9.]+(?:e-?[0-9]+)?)(?:(?P<sign>[+-])(?P<step>[0-9.]+))?(?:x(?P<times>[0-9]+))?")


def expand_series(values: str) -> list[float]:
    """promtool's expanding notation (``a+bxn`` is a, a+b, ..., a+n*b; ``a`` alone is one sample) as samples."""
    samples: list[float] = []
    for term in values.split():
        match = _TERM.fullmatch(term)
        assert match, f"not a term this reading knows: {term!r}"
        start, step = float(match["start"]), float(match["step"] or 0) * (-1 if match["sign"] == "-" else 1)
        samples += [start + step * i for i in range(int(match["times"] or 0) + 1)]
    return samples


def _series(group: dict[str, Any]) -> list[tuple[str, dict[str, str], list[float]]]:
    found = []
    for series in group["input_series"]:
        name, _, labels = series["series"].partition("{")
        found.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), expand_series(series["values"])))
    return found


def psi_by_hand(group: dict[str, Any], minute: int) -> dict[tuple[str, str], float]:
    """PSI of every (model_type, feature) of a unit-test group at ``minute``: over each reference bin, live share l
    (the bin's rows in the last hour over the feature's) and reference fraction r (the largest any replica
    exports), both at least PSI_EPSILON, sum (l - r) * ln(l / r)."""
    rows: dict[tuple[str, str, str], float] = defaultdict(float)
    reference: dict[tuple[str, str, str], float] = {}
    for name, labels, samples in _series(group):
        key = (labels.get("model_type", ""), labels.get("feature", ""), labels.get("bin", ""))
        if name == "mps_input_bin_total":
            rows[key] += samples[minute] - samples[minute - 60]
        elif name == "mps_input_reference_fraction":
            reference[key] = max(reference.get(key, 0.0), samples[minute])
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for (model, feature, _), count in rows.items():
        totals[model, feature] += count
    psi: dict[tuple[str, str], float] = defaultdict(float)
    for (model, feature, bin_), fraction in reference.items():
        if totals[model, feature] > 0:
            live = max(rows[model, feature, bin_] / totals[model, feature], PSI_EPSILON)
            fraction = max(fraction, PSI_EPSILON)
            psi[model, feature] += (live - fraction) * math.log(live / fraction)
    return dict(psi)


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)m", duration)
    assert match, f"eval_time {duration!r}: this reading takes minutes"
    return int(match[1])


def test_every_psi_the_unit_tests_expect_is_the_hand_computation() -> None:
    """Each PSI rules.test.yml expects (exactly, or within a tolerance with `abs(... - x) < bool t`) is the one
    computed here from the same input series: the expected numbers are not copied from promtool's output."""
    checked = 0
    for group in unit_tests():
        assert group.get("interval", "1m") == "1m"
        for case in group.get("promql_expr_test", []):
            expr = case["expr"]
            tolerance = re.fullmatch(r"abs\(mps:input_psi:1h(\{[^}]*\})? - ([0-9.e-]+)\) < bool ([0-9.e-]+)", expr)
            if not (tolerance or expr.startswith("mps:input_psi:1h")):
                continue
            computed = psi_by_hand(group, _minutes(case["eval_time"]))
            for sample in case["exp_samples"]:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
                value = computed[labels["model_type"], labels["feature"]]
                if tolerance:
                    expected, within = float(tolerance[2]), float(tolerance[3])
                    assert (abs(value - expected) < within) == bool(sample["value"]), (group["name"], labels, value)
                else:
                    assert value == pytest.approx(sample["value"], abs=1e-12), (group["name"], labels)
                checked += 1
    assert checked >= 12, "the unit tests check PSI: matching traffic, a shifted feature, the hand examples"


# --- promtool ------------------------------------------------------------------------------------------------


def _promtool(*arguments: str, cwd: Path = REPOSITORY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool("promtool"), *arguments], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_promtool_accepts_every_rule() -> None:
    """`promtool check rules` parses every expression and template and finds no duplicate rule."""
    result = _promtool("check", "rules", str(RULES.relative_to(REPOSITORY)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@pytest.mark.slow  # runs a Debian tool (make system-tools)
def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes every case of rules.test.yml: each alert fires, with its labels and rendered
    annotations, exactly where expected, and the recording rules have the expected values."""
    result = _promtool("test", "rules", str(RULES_TEST.relative_to(REPOSITORY)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


REFERENCE_MAX = "max by (model_type, feature, bin) (mps_input_reference_fraction)"
PROBES = ', route!~".*/(health|ready|live)(/.*)?"'


@pytest.mark.slow  # runs a Debian tool (make system-tools)
@pytest.mark.parametrize(
    ("old", "new", "failing_group"),
    [
        pytest.param("mps:input_psi:1h > 0.2", "mps:input_psi:1h > 5", "iris traffic", id="drift-threshold"),
        pytest.param(REFERENCE_MAX, REFERENCE_MAX.replace("max", "sum"), "PSI by hand", id="reference-summed"),
        pytest.param(", 1e-4)", ", 0)", "PSI by hand", id="no-epsilon"),
        pytest.param(PROBES, "", "5xx ratio", id="probes-counted"),
    ],
)
def test_unit_tests_fail_when_a_rule_is_wrong(tmp_path: Path, old: str, new: str, failing_group: str) -> None:
    """The unit tests are not vacuous: a laxer threshold, reference fractions summed over replicas, no epsilon
    clamp, or readiness probes counted as errors each fail the test group that pins it down."""
    text = RULES.read_text(encoding="utf-8")
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, new), encoding="utf-8")
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert failing_group in result.stderr, result.stdout + result.stderr
