"""The benchmark harness in quick mode: it runs end to end and writes well-formed results (no speed is asserted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import load, peers, readme, run, servers
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType

pytestmark = pytest.mark.slow

MODEL = "decision_tree"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    """One quick run (one model) into a temporary folder: its exit code, folder and results.json."""
    out = tmp_path_factory.mktemp("bench")
    code = run.main(["--quick", "--models", MODEL, "--out", str(out), "--command", "pytest"])
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
    """Ceiling, baseline and our three routes were each loaded at every concurrency, without an error."""
    results = quick_run[2]
    concurrency = results["settings"]["concurrency"]
    expected = {("ceiling", None, "constant"), ("baseline", MODEL, "/predict")}
    expected |= {("ours", MODEL, name) for name in ("/predict", "/predict/batch", "v2 infer")}
    seen = {(r["server"], r["model"], r["endpoint"], r["concurrency"]) for r in results["http"]}
    assert seen == {(*key, c) for key in expected for c in concurrency}
    for row in results["http"]:
        assert row["requests"] > 0 and row["error_count"] == 0
        assert row["rows_per_s"] == pytest.approx(row["requests_per_s"] * row["rows_per_request"])
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"] <= row["latency_ms"]["p99.9"]
        assert row["vs_ceiling"]["throughput"] > 0


def test_every_figure_has_ratios_to_ceiling_and_baseline(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """Our rows carry ratios to both references; the servers carry memory and start-to-ready ratios."""
    results = quick_run[2]
    for row in (r for r in results["http"] if r["server"] == "ours"):
        assert set(row["vs_baseline"]) == {"throughput", "p50", "p99", "p99.9"}
        assert all(value > 0 for value in (*row["vs_ceiling"].values(), *row["vs_baseline"].values()))
    servers = {s["server"]: s for s in results["servers"]}
    assert set(servers) == {"ceiling", "baseline", "ours"}
    for server in servers.values():
        assert server["start_to_ready_s"] > 0 and server["rss_mb"] > 0
    assert servers["ours"]["vs_baseline"]["rss_mb"] > 0


def test_markdown_and_figures_are_written(quick_run: tuple[int, Path, dict[str, Any]]) -> None:
    """results.md has every section, and the three figures are PNG files."""
    out = quick_run[1]
    text = (out / "results.md").read_text()
    for heading in ("## In-process latency", "## HTTP throughput and latency", "## Servers", "## Targets"):
        assert heading in text
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


@pytest.mark.parametrize("runtime", ["sklearn", "xgboost"])
def test_mlserver_repository_serves_the_registry_artifact(runtime: str, tmp_path: Path) -> None:
    """The MLServer model settings point at the registry's joblib, or at a Booster exported from it."""
    spec = peers.mlserver_spec(tmp_path, ModelType.XGBOOST, runtime, DEFAULT_REGISTRY_DIR, 1)
    settings = json.loads((tmp_path / "settings.json").read_text())
    model = json.loads((tmp_path / "xgboost" / "model-settings.json").read_text())
    assert settings["parallel_workers"] == 1 and settings["metrics_endpoint"] is None
    assert Path(model["parameters"]["uri"]).is_file()
    assert model["implementation"].startswith(f"mlserver_{runtime}.")
    assert spec.env["MLSERVER_HOST"] == "127.0.0.1" and spec.ready_path == "/v2/models/xgboost/ready"


def test_python_load_generator_reports_what_wrk_reports(tmp_path: Path) -> None:
    """Without wrk, the asyncio fallback loads a server and returns the same summary fields as the wrk script."""
    with servers.running(servers.ceiling_spec(), tmp_path) as server:
        request = load.Request("/predict", run.single_json())
        fallback = load.run_python_load(server.spec.url, request, concurrency=4, duration_s=0.5)
        reference = load.run_wrk(server.spec.url, request, concurrency=4, duration_s=1) if load.wrk_path() else None
    assert fallback["requests"] > 0 and sum(fallback["errors"].values()) == 0
    assert 0 < fallback["latency_us"]["p50"] <= fallback["latency_us"]["p99.9"]
    if reference is not None:
        assert fallback.keys() == reference.keys()
        assert fallback["latency_us"].keys() == reference["latency_us"].keys()
        assert fallback["errors"].keys() == reference["errors"].keys()
