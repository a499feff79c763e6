"""The harness without servers or wrk: committed results re-render byte for byte, wrk is required, MLServer's inputs."""

from __future__ import annotations

import copy
import json
import re
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost
from prometheus_client import REGISTRY

from benchmarks import (
    REPOSITORY,
    RESULTS_DIR,
    endpoints,
    guard,
    load,
    monitoring,
    overload,
    peers,
    plan,
    readme,
    report,
    run,
    targets,
)
from benchmarks.asgi import TurnBudget
from benchmarks.ratios import add_ratios
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.guard import key_digest
from ml_production_service.registry import load_artifact, read_manifest, sha256_file
from ml_production_service.server.monitoring import Monitor

COMMITTED = sorted(path for path in RESULTS_DIR.glob("*/results.json") if not path.parent.name.endswith("-quick"))
COMMITTED_BENCH = [path for path in COMMITTED if not path.parent.name.endswith("-peers")]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("results_json", COMMITTED, ids=lambda path: path.parent.name)
def test_committed_results_render_as_committed(results_json: Path) -> None:
    """Each committed run's results.md is what the report writes from its results.json, and its ratios are what
    add_ratios computes from its raw rows: the report code still reads and writes the committed format."""
    results = _load(results_json)
    assert report.markdown(results) == (results_json.parent / "results.md").read_text()
    raw = copy.deepcopy(results)
    for row in raw.get("http", []) + raw.get("servers", []):
        del row["vs_ceiling"], row["vs_baseline"]
    add_ratios(raw)
    assert raw == results


def test_readme_perf_section_is_what_bench_report_writes() -> None:
    """The README's performance section is bench-report's output for the result folders it names (no hand edits)."""
    text = readme.README.read_text()
    section = text[text.index(readme.START_MARKER) + len(readme.START_MARKER) : text.index(readme.END_MARKER)]
    named = re.findall(r"`(benchmarks/results/[^`]+)`", section)
    folders = {"peers" if path.endswith("-peers") else "bench": REPOSITORY / path for path in named}
    assert len(folders) == len(named) >= 1
    loaded = {kind: _load(folder / "results.json") for kind, folder in folders.items()}
    expected = readme.readme_section(loaded.get("bench"), loaded.get("peers"), folders)
    assert section == "\n" + expected.rstrip("\n") + "\n"


def test_without_wrk_the_run_stops_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """wrk is required (there is no fallback): without it the run says how to install it, exits 2, writes nothing."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert run.main(["--quick", "--out", str(out)]) == 2
    assert "apt-get install -y wrk" in capsys.readouterr().out
    assert not out.exists()


def test_mlserver_sklearn_runtime_loads_the_bytes_our_manifest_names(tmp_path: Path) -> None:
    """MLServer's sklearn runtime is pointed at the registry's artifact itself: the file whose sha256 we verify."""
    uri = peers.write_repository(tmp_path, ModelType.XGBOOST, "sklearn", DEFAULT_REGISTRY_DIR, 1)
    model_settings = json.loads((tmp_path / "xgboost" / "model-settings.json").read_text())
    assert Path(model_settings["parameters"]["uri"]) == uri
    assert sha256_file(uri) == read_manifest(DEFAULT_REGISTRY_DIR, ModelType.XGBOOST).sha256


def test_mlserver_xgboost_runtime_booster_answers_as_our_pipeline(tmp_path: Path) -> None:
    """The Booster exported for MLServer's xgboost runtime, sent the engineered row the harness sends, gives the
    probabilities our Pipeline gives for the raw row (so both servers compute the same thing)."""
    uri = peers.write_repository(tmp_path, ModelType.XGBOOST, "xgboost", DEFAULT_REGISTRY_DIR, 1)
    model_settings = json.loads((tmp_path / "xgboost" / "model-settings.json").read_text())
    assert Path(model_settings["parameters"]["uri"]) == uri
    exported = xgboost.XGBClassifier()
    exported.load_model(uri)  # as the runtime's sklearn interface loads it
    pipeline, _ = load_artifact(DEFAULT_REGISTRY_DIR, ModelType.XGBOOST)
    expected = pipeline.predict_proba(np.asarray([endpoints.ROW]))
    np.testing.assert_allclose(exported.predict_proba(np.asarray([peers.engineered_row(endpoints.ROW)])), expected)


def test_wrk_gets_the_open_files_its_concurrency_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below what wrk needs (a connection each, plus its own), the soft open-files limit is raised to fit, within
    the hard limit; a hard limit too low stops the run with the command to fix it, before wrk fails mid-run."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: calls.append(limits))
    assert load.open_files_for(512) == 512 + load.FD_HEADROOM
    assert calls == [(512 + load.FD_HEADROOM, 4096)]
    assert load.open_files_for(100) == 256 and len(calls) == 1
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 300))
    with pytest.raises(load.LoadError, match="ulimit -Hn"):
        load.open_files_for(512)


def test_two_workers_and_the_enabled_server_follow_ours_of_the_guard_model(tmp_path: Path) -> None:
    """After the ceiling and the bare route, ``ours-2w`` (two workers) and ``ours-enabled`` (keys, limits and the
    payload log, wrk sending the key) are planned right after ours of the heuristic (or of the first model when the
    run has no heuristic); without a key only ``ours-2w`` is."""
    key = guard.write_key(tmp_path)
    assert (tmp_path / "api-keys").read_text() == f"bench:{key_digest(key.key.encode()).hex()}\n"
    models = [ModelType.DECISION_TREE, ModelType.HEURISTIC]
    steps = plan.bench_plan(plan.QUICK, models, DEFAULT_REGISTRY_DIR, key)
    specs = [(step.build(), step) for step in steps]
    names = [(spec.name, spec.model) for spec, _ in specs]
    assert names[:2] == [("ceiling", None), ("bare", None)]
    ours = names.index(("ours", "heuristic"))
    assert names[ours + 1 : ours + 3] == [("ours-2w", "heuristic"), ("ours-enabled", "heuristic")]
    two, two_step = specs[ours + 1]
    assert two.env["MPS_WORKERS"] == "2" and [e.path for e in two_step.endpoints] == ["/predict"]
    spec, step = specs[ours + 2]
    assert [(e.path, e.headers) for e in step.endpoints] == [("/predict", {"X-API-Key": key.key})]
    assert spec.env["MPS_API_KEYS_FILE"] == str(key.path) and key.key not in json.dumps(spec.settings)
    assert spec.env["MPS_PAYLOAD_LOG_SAMPLE"] == "1" and Path(spec.env["MPS_PAYLOAD_LOG_PATH"]).parent == tmp_path
    assert str(tmp_path) not in json.dumps(spec.settings)
    assert plan.guard_model([ModelType.XGBOOST, ModelType.DECISION_TREE]) == ModelType.XGBOOST
    assert plan.overload_models(models) == [ModelType.HEURISTIC]
    unguarded = [step.build().name for step in plan.bench_plan(plan.QUICK, models, DEFAULT_REGISTRY_DIR, None)]
    assert "ours-enabled" not in unguarded and "ours-2w" in unguarded


def test_bare_and_one_worker_ratios_only_in_runs_that_measured_them() -> None:
    """Every HTTP row of a run with the bare route gets its ratios to it at the same concurrency, and the
    two-worker rows to one worker on the same model and route; a run without them gets neither key."""

    def row(server: str, rps: float, p99: float, model: str | None = "heuristic") -> dict[str, Any]:
        return {
            "server": server,
            "model": model,
            "endpoint": "/predict",
            "concurrency": 8,
            "rows_per_s": rps,
            "latency_ms": {"p50": p99 / 2, "p99": p99, "p99.9": p99 * 2},
        }

    results = {"http": [row("bare", 1000.0, 2.0, None), row("ours", 700.0, 3.0), row("ours-2w", 1200.0, 3.0)]}
    add_ratios(results)
    bare, ours, two = results["http"]
    assert bare["vs_bare"]["throughput"] == 1 and ours["vs_bare"]["throughput"] == pytest.approx(0.7)
    assert ours["vs_bare"]["p99"] == pytest.approx(1.5) and "vs_one_worker" not in ours
    assert two["vs_one_worker"]["throughput"] == pytest.approx(1200 / 700)
    older = {"http": [row("ours", 700.0, 3.0)]}
    add_ratios(older)
    assert "vs_bare" not in older["http"][0]
    headers = [header for header, _ in report.http_columns(results)]
    assert headers[7:9] == ["×bare", "p50 ms"] and headers[-2:] == ["p99 ×bare", "×1 worker"]
    assert report.http_columns(older) == report.HTTP_COLUMNS


def test_guard_targets_appear_only_for_runs_that_measured_the_guard() -> None:
    """The guard's two targets (in-process and HTTP, 10 µs each) are judged from its rows; a run without them
    (every committed one before the guard) keeps its table as it was; a guard that costs nothing is met."""
    bench = _load(COMMITTED_BENCH[-1])
    bench.pop("guard", None)
    before = targets.targets(bench, None)
    assert not any("rate limits" in row[0] for row in before)
    bench["guard"] = {
        "model": "heuristic",
        "asgi": [{"variant": "keys + limits", "added_p50_us": 12.5}],
        "http": {"variants": [{"variant": "keys + limits", "added_us_per_request": 0.0}]},
    }
    after = targets.targets(bench, None)
    added = [row for row in after if "rate limits" in row[0]]
    assert [row for row in after if row not in added] == before
    assert added == [
        [
            "heuristic: keys + memory rate limits, added per /predict, in-process (p50)",
            "12.50 µs",
            "≤ 10 µs",
            "missed (0.80 of the target)",
        ],
        [
            "heuristic: keys + memory rate limits, added per /predict, HTTP c=8 (time per request)",
            "0.00 µs",
            "≤ 10 µs",
            "met",
        ],
    ]


def test_tcp_counters_read_the_kernels_tables(tmp_path: Path) -> None:
    """The overload runs' TCP counters come from /proc/net's header-and-values line pairs; unreadable: none."""
    snmp = tmp_path / "snmp"
    snmp.write_text("Ip: Forwarding InReceives\nIp: 1 5\nTcp: RtoAlgorithm RetransSegs\nTcp: 1 42\n")
    netstat = tmp_path / "netstat"
    netstat.write_text("TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 3 4\n")
    assert overload.tcp_counters((snmp, netstat)) == {"RetransSegs": 42, "ListenOverflows": 3, "ListenDrops": 4}
    assert overload.tcp_counters((tmp_path / "missing",)) == {}


def test_monitoring_variants_observe_what_their_names_say() -> None:
    """The app's variants differ only in their monitor: as served it names an out-of-range input, built from the
    manifest without reference it is inactive (nothing named), and off observes nothing at all (no confidence)."""
    manifest = read_manifest(DEFAULT_REGISTRY_DIR, ModelType.RANDOM_FOREST)
    outside = np.array([99.0, 3.0, 4.0, 1.0])
    inactive = monitoring.without_reference(manifest)
    served, unreferenced, off = Monitor(manifest), Monitor(inactive), monitoring.Unobserved(inactive)
    assert served.active and not unreferenced.active and manifest.reference is not None
    assert served.observe_one(outside, 0.9) == ["sepal_length"]
    assert unreferenced.observe_one(outside, 0.9) == [] and off.observe_one(outside, 0.9) == []

    def confidence_count() -> float:  # the confidence histogram, which the inactive monitor still feeds
        value = REGISTRY.get_sample_value("mps_prediction_confidence_count", {"model_type": "random_forest"})
        return value or 0.0

    before = confidence_count()
    off.observe_many(np.stack([outside, outside]), np.array([0.9, 0.9]))
    assert confidence_count() == before
    unreferenced.observe_many(np.stack([outside, outside]), np.array([0.9, 0.9]))
    assert confidence_count() == before + 2


def test_monitoring_in_process_measures_run_on_the_registry_manifests() -> None:
    """observe_one and observe_many are timed per row on each model's manifest, and /predict through the app with
    the monitor served, inactive and off (taking turns, each for the whole budget; the app keeps its own monitor)."""
    budget = monitoring.MonitoringBudget(blocks=2, block_rows=5, batches=2, app=TurnBudget(rounds=2, calls=3, warmup=1))
    measured = monitoring.measure_inprocess([ModelType.DECISION_TREE, ModelType.HEURISTIC], budget)
    assert [row["model"] for row in measured["observe"]] == ["decision_tree", "heuristic"]
    for row in measured["observe"]:
        assert row["active"]
        assert (row["one"]["calls"], row["one"]["rows_per_call"]) == (2, 5)
        assert (row["many"]["calls"], row["many"]["rows_per_call"]) == (2, 1000)
        assert 0 < row["one"]["p50_us"] <= row["one"]["p99_us"]
    app = measured["app"]
    assert [(row["model"], row["variant"]) for row in app] == [("heuristic", v) for v in ("served", "inactive", "off")]
    assert all(row["calls"] == 6 for row in app)
    assert app[2]["added_p50_us"] == 0 and app[2]["x_off_p50"] == 1
    assert app[0]["added_p50_us"] == pytest.approx(app[0]["p50_us"] - app[2]["p50_us"])
    assert monitoring.monitored_models([ModelType.XGBOOST]) == [ModelType.XGBOOST]
    assert monitoring.scraped_model([ModelType.HEURISTIC, ModelType.RANDOM_FOREST]) == ModelType.RANDOM_FOREST


def test_scrape_text_is_counted_by_series_and_summed_by_labels() -> None:
    """A scrape's series are its sample lines (no comments, no blanks); a sum keeps the samples of the asked
    labels only."""
    text = (
        "# HELP mps_predictions_total Rows predicted.\n# TYPE mps_predictions_total counter\n"
        'mps_predictions_total{model_type="random_forest",predicted_class="setosa"} 3.0\n'
        'mps_predictions_total{model_type="random_forest",predicted_class="virginica"} 4.0\n'
        'mps_predictions_total{model_type="heuristic",predicted_class="setosa"} 100.0\n\n'
    )
    assert monitoring.series_lines(text) == 3
    assert monitoring.sample_sum(text, "mps_predictions_total", model_type="random_forest") == 7
    assert monitoring.sample_sum(text, "mps_predictions_total") == 107


def test_monitoring_targets_appear_only_for_runs_that_measured_it() -> None:
    """Monitoring's targets (5 µs per row, 50 ms per scrape) are judged from its rows: observe_one on the model it
    costs most, the served monitor against none per model, the scrape's median and p99; a run without them keeps
    its table, and a scrape whose server failed is "not measured"."""
    bench = _load(COMMITTED_BENCH[-1])
    bench.pop("monitoring", None)
    before = targets.targets(bench, None)
    assert not any("monitoring" in row[0] or "/metrics" in row[0] for row in before)
    bench["monitoring"] = {
        "observe": [{"model": "heuristic", "one": {"p50_us": 1.5}}, {"model": "xgboost", "one": {"p50_us": 2.5}}],
        "app": [
            {"model": "heuristic", "variant": "served", "added_p50_us": 6.25},
            {"model": "heuristic", "variant": "off", "added_p50_us": 0.0},
        ],
        "scrape": {"model": "random_forest", "workers": 2, "scrapes": 30, "latency_ms": {"p50": 4.0, "p99": 100.0}},
    }
    after = targets.targets(bench, None)
    added = [row for row in after if "monitoring" in row[0] or "/metrics" in row[0]]
    assert [row for row in after if row not in added] == before
    assert added == [
        [
            "monitoring per served row, `Monitor.observe_one` (median; costliest of 2 models: xgboost)",
            "2.50 µs",
            "≤ 5 µs",
            "met",
        ],
        [
            "heuristic: monitoring added per /predict, in-process through the app (p50, served vs none)",
            "6.25 µs",
            "≤ 5 µs",
            "missed (0.80 of the target)",
        ],
        ["random_forest: GET /metrics with 2 workers (median of 30)", "4.00 ms", "≤ 50 ms", "met"],
        [
            "random_forest: GET /metrics with 2 workers (p99 of 30)",
            "100.00 ms",
            "≤ 50 ms",
            "missed (0.50 of the target)",
        ],
    ]
    bench["monitoring"] = {"scrape": None}
    assert targets.targets(bench, None)[len(before) :] == [
        [f"GET /metrics with 2 workers ({statistic})", "not measured", "≤ 50 ms", "–"]
        for statistic in ("median", "p99")
    ]
