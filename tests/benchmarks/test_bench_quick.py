"""The benchmark harness in quick mode: it runs end to end and writes well-formed results (no speed is asserted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import endpoints, load, plan, probes, processes, readme, run, servers

pytestmark = pytest.mark.slow

MODEL = "decision_tree"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    """One quick run (one model) into a temporary folder: its exit code, folder and results.json."""
    out = tmp_path_factory.mktemp("bench")
    # Start-up and memory per process has its own test (test_startup.py): here it would only start three more servers.
    code = run.main(["--quick", "--models", MODEL, "--out", str(out), "--command", "pytest", "--skip-startup"])
    return code, out, json.loads((out / "results.json").read_text())


def test_quick_run_succeeds_and_records_the_machine(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """A quick run exits 0 and records its mode, command, machine, versions and settings."""
    code, _, results = quick_run
    assert code == 0
    assert results["failures"] == []
    assert (results["kind"], results["mode"], results["command"]) == ("bench", "quick", "pytest")
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["cpu_model"]
    assert results["versions"]["fastapi"]
    assert results["settings"]["models"] == [MODEL]


def test_inprocess_has_fast_original_and_baseline_side_by_side(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """In-process rows cover single-row and 1,000-row predict for the fast, original and baseline paths."""
    rows = quick_run[2]["inprocess"]
    assert {(r["path"], r["kind"]) for r in rows} == {
        (path, kind) for path in ("fast", "original", "baseline") for kind in ("single", "batch")
    }
    for row in rows:
        assert row["model"] == MODEL
        assert row["calls"] >= 2
        assert 0 < row["p50_us"] <= row["p99_us"]
        assert row["x_original_p50"] > 0 and row["x_baseline_p50"] > 0


def test_http_rows_cover_every_server_endpoint_and_concurrency(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """Ceiling, bare route, baseline, our three routes, two workers' /predict and the enabled /predict (wrk sending
    the key: a missing key would be 401s, counted as errors) were each loaded at every concurrency, without an
    error."""
    results = quick_run[2]
    concurrency = results["settings"]["concurrency"]
    expected = {("ceiling", None, "constant"), ("bare", None, "/predict"), ("baseline", MODEL, "/predict")}
    expected |= {("ours-2w", MODEL, "/predict"), ("ours-enabled", MODEL, "/predict")}
    expected |= {("ours", MODEL, name) for name in ("/predict", "/predict/batch", "v2 infer")}
    seen = {(r["server"], r["model"], r["endpoint"], r["concurrency"]) for r in results["http"]}
    assert seen == {(*key, c) for key in expected for c in concurrency}
    for row in results["http"]:
        assert row["requests"] > 0 and row["error_count"] == 0
        assert row["rows_per_s"] == pytest.approx(row["requests_per_s"] * row["rows_per_request"])
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"] <= row["latency_ms"]["p99.9"]
        assert row["vs_ceiling"]["throughput"] > 0 and row["vs_bare"]["throughput"] > 0


def test_every_figure_has_ratios_to_ceiling_and_baseline(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """Our rows carry ratios to the three references (two workers to one as well), and the results.md table shows
    them; the servers carry memory and start-to-ready ratios."""
    results = quick_run[2]
    for row in (r for r in results["http"] if r["server"] == "ours"):
        assert set(row["vs_baseline"]) == set(row["vs_bare"]) == {"throughput", "p50", "p99", "p99.9"}
        ratios = (*row["vs_ceiling"].values(), *row["vs_baseline"].values(), *row["vs_bare"].values())
        assert all(value > 0 for value in ratios)
    (two,) = [r for r in results["http"] if r["server"] == "ours-2w"]
    assert two["vs_one_worker"]["throughput"] > 0 and two["settings"] == {"MPS_WORKERS": "2"}
    markdown = (quick_run[1] / "results.md").read_text()
    assert "| ×bare |" in markdown and "| ×1 worker |" in markdown
    assert "/predict c=8 ×bare FastAPI route" in markdown and "two workers ×one" in markdown
    servers = {s["server"]: s for s in results["servers"]}
    assert set(servers) == {"ceiling", "bare", "baseline", "ours", "ours-2w", "ours-enabled"}
    for server in servers.values():
        assert server["start_to_ready_s"] > 0 and server["rss_mb"] > 0
    assert servers["ours"]["vs_baseline"]["rss_mb"] > 0


def test_guard_is_timed_in_process_and_over_http(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """The guard's rows: every in-process variant timed through the app for the whole budget, each added cost
    relative to off; the HTTP A/B ran each server every round, its keys file recorded without its path."""
    results = quick_run[2]
    guard = results["guard"]
    budget = plan.QUICK.guard
    assert guard["model"] == MODEL
    assert [row["variant"] for row in guard["asgi"]] == ["off", "keys", "limits", "keys + limits"]
    for row in guard["asgi"]:
        assert row["calls"] == budget.rounds * budget.calls
        assert 0 < row["p50_us"] <= row["p99_us"]
        assert row["added_p50_us"] == pytest.approx(row["p50_us"] - guard["asgi"][0]["p50_us"])
    assert guard["asgi"][0]["added_p50_us"] == 0 and guard["asgi"][0]["x_off_p50"] == 1
    http = guard["http"]
    assert [v["variant"] for v in http["variants"]] == ["off (default)", "shedding off", "keys + limits"]
    for variant in http["variants"]:
        assert len(variant["rounds"]) == http["rounds"] == plan.QUICK.guard_rounds
        assert variant["us_per_request"] == pytest.approx(1e6 / variant["requests_per_s"])
    guarded = http["variants"][2]["settings"]
    assert guarded["MPS_RATE_LIMIT"] == guard["rate_limit"] and "/" not in guarded["MPS_API_KEYS_FILE"]
    assert http["variants"][1]["settings"] == {"MPS_MAX_IN_FLIGHT": "0"}


def test_overload_separates_admitted_and_shed_answers(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """The quick overload case, shedding on (the full run adds shedding off): every answer wrk counted is in exactly
    one status (by its echoed request id); it answers 503 and the server's own counter agrees; the liveness probe
    ran through both runs, and wrk had the open files its concurrency needs."""
    results = quick_run[2]
    overload = results["overload"]
    assert overload["concurrency"] == plan.QUICK.overload_concurrency
    assert [(case["model"], case["max_in_flight"]) for case in overload["cases"]] == [(MODEL, 128)]
    assert plan.FULL.overload_shedding == (128, 0)
    for case in overload["cases"]:
        for run_name, c in (("reference", 8), ("overload", overload["concurrency"])):
            measured = case[run_name]
            counted = sum(s["count"] for s in measured["statuses"].values()) + sum(measured["uncorrelated"].values())
            assert measured["concurrency"] == c
            assert counted == measured["requests"] > 0
            assert measured["health"]["probes"] >= 1
            assert measured["open_files_limit"] >= c
        assert set(case["reference"]["statuses"]) == {"200"}
        assert case["admitted_p99_x_reference"] > 0
    (shedding,) = overload["cases"]
    shed = shedding["overload"]["statuses"]["503"]["count"]
    assert shed > 0 and shedding["shed_total_metric"] >= shed


def test_monitoring_is_timed_in_process_and_scraped_from_two_workers(
    quick_run: tuple[int, Path, dict[str, Any]],
) -> None:
    """Monitoring's rows: observe_one and observe_many per row for the whole budget; /predict through the app with
    the monitor served, inactive and off, each for the whole budget; the server command with two workers scraped
    after its traffic, every served row counted in the scrape (whichever worker served it and whichever answered)."""
    measured = quick_run[2]["monitoring"]
    budget, scrape_budget = plan.QUICK.monitoring, plan.QUICK.scrape
    (observed,) = measured["observe"]
    assert observed["model"] == MODEL and observed["active"]
    assert (observed["one"]["calls"], observed["one"]["rows_per_call"]) == (budget.blocks, budget.block_rows)
    assert observed["many"]["calls"] == budget.batches
    assert [(row["model"], row["variant"]) for row in measured["app"]] == [
        (MODEL, variant) for variant in ("served", "inactive", "off")
    ]
    for row in measured["app"]:
        assert row["calls"] == budget.app.rounds * budget.app.calls
        assert 0 < row["p50_us"] <= row["p99_us"]
    scrape = measured["scrape"]
    assert (scrape["model"], scrape["workers"], scrape["settings"]) == (MODEL, 2, {"MPS_WORKERS": "2"})
    assert scrape["scrapes"] == len(scrape["timings_ms"]) == scrape_budget.scrapes
    assert len(scrape["warmup_ms"]) == scrape_budget.warmup
    rows = scrape_budget.singles + scrape_budget.batches * scrape_budget.batch_rows + 1
    assert scrape["traffic"]["rows"] == rows == scrape["predictions_counted"]
    assert scrape["series"] > 0 and scrape["bytes"]["min"] > 0 and scrape["metrics_files"] > 0
    assert 0 < scrape["latency_ms"]["p50"] <= scrape["latency_ms"]["max"]


def test_markdown_and_figures_are_written(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """results.md has every section, and the three figures are PNG files."""
    out = quick_run[1]
    text = (out / "results.md").read_text()
    headings = ("## In-process latency", "## HTTP throughput and latency", "## Servers", "## The guard", "## Overload")
    for heading in (*headings, "## Monitoring", "## Targets"):
        assert heading in text
    for statistic in ("median", "p99"):
        assert f"| {MODEL}: GET /metrics with 2 workers ({statistic} of {plan.QUICK.scrape.scrapes}) |" in text
    for name in ("throughput.png", "latency.png", "inprocess.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)


def test_bench_report_rewrites_only_the_perf_section(
    quick_run: tuple[int, Path, dict[str, Any]], tmp_path: Path
) -> None:
    """bench-report replaces what lies between the perf markers of the README and leaves the rest byte for byte."""
    out = quick_run[1]
    copy = tmp_path / "README.md"
    shutil.copy(readme.README, copy)
    before = copy.read_text()
    assert readme.main(["--bench", str(out), "--readme", str(copy), "--results-dir", str(tmp_path)]) == 0
    after = copy.read_text()
    head, _, rest = before.partition(readme.START_MARKER)
    _, _, tail = rest.partition(readme.END_MARKER)
    assert after.startswith(head + readme.START_MARKER) and after.endswith(readme.END_MARKER + tail)
    section = after[len(head) + len(readme.START_MARKER) : -len(readme.END_MARKER + tail)]
    assert f"ours {MODEL}" in section and "Targets" in section
    assert "**The guard**" in section and "**Overload**" in section and "**Monitoring**" in section
    assert readme.main(["--bench", str(out), "--readme", str(copy), "--results-dir", str(tmp_path)]) == 0
    assert copy.read_text() == after


def test_latest_picks_the_newest_results_of_a_kind(quick_run: tuple[int, Path, dict[str, Any]], tmp_path: Path) -> None:
    """bench-report reads the newest results folder of the asked kind and mode, and ignores the rest."""
    results = quick_run[2]
    for name, kind, started in (("a", "bench", "2026-01-01"), ("b", "bench", "2026-02-01"), ("c", "peers", "2026-03")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**results, "kind": kind, "started_at": started}))
    assert readme.latest("bench", tmp_path, "quick") == tmp_path / "b"
    assert readme.latest("peers", tmp_path, "quick") == tmp_path / "c"
    assert readme.latest("bench", tmp_path, "full") is None


def test_wrk_sends_the_body_and_headers_and_the_probes_are_well_formed(tmp_path: Path) -> None:
    """Through the Lua script wrk POSTs the body with its headers (a binary V2 request fails without its header);
    our server accepts every capability probe but the out-of-range row, so a peer's refusal is the peer's."""
    body, headers = probes.binary_v2_request(endpoints.ROW)
    path = f"/v2/models/{MODEL}/infer"
    with processes.running(servers.ours_spec(MODEL), tmp_path) as server:
        with_headers = load.run_load(server.spec.url, load.Request(path, body, headers), concurrency=2, duration_s=1)
        without = load.run_load(server.spec.url, load.Request(path, body), concurrency=2, duration_s=1)
        answers = {r["probe"]: r["status"] for r in probes.probe_capabilities(server.spec.url, MODEL, endpoints.ROW)}
    assert with_headers["requests"] > 0 and sum(with_headers["errors"].values()) == 0
    assert set(with_headers["latency_us"]) == {"min", "mean", "stdev", "max", "p50", "p90", "p99", "p99.9"}
    assert without["requests"] > 0 and without["errors"]["status"] == without["requests"]
    out_of_range = "V2 infer, input out of range (-1 cm)"
    assert 400 <= answers.pop(out_of_range) < 500
    assert set(answers.values()) == {200} and len(answers) == 3
