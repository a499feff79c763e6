"""The targets (issue 4's, issue 14's, the guard's, monitoring's): what a run measured against each goal, and
whether it was met (or by how much it was missed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.ratios import ratio
from benchmarks.tables import REFERENCE_CONCURRENCY, TAIL_CONCURRENCY, find_http, get, served_path, table


def _best_mlserver(results: dict[str, Any], model: str, c: int) -> dict[str, Any] | None:
    """MLServer's fastest variant on the same model and body (the conservative comparison)."""
    candidates = [
        r
        for r in results.get("http", [])
        if r["server"].startswith("mlserver")
        and r["model"] == model
        and r["concurrency"] == c
        and r["error_count"] == 0
    ]
    return max(candidates, key=lambda r: r["rows_per_s"], default=None)


def _ms_of(row: dict[str, Any] | None) -> float | None:
    value = get(row, "p50_us")
    return value / 1000 if value is not None else None


def targets(bench: dict[str, Any] | None, peers: dict[str, Any] | None) -> list[list[str]]:
    """Each target: its name, what was measured, the goal, and met or missed by how much."""
    rows: list[list[str]] = []

    def add(name: str, measured: float | None, goal: float, unit: str, higher_is_better: bool) -> None:
        goal_text = f"{'≥' if higher_is_better else '≤'} {goal:g}{'×' if unit == '×' else ' ' + unit}"
        if measured is None:
            rows.append([name, "not measured", goal_text, "–"])
            return
        met = measured >= goal if higher_is_better else measured <= goal
        if met:
            verdict = "met"
        else:  # a missed goal is never 0 (measured would be below it)
            factor = measured / goal if higher_is_better else goal / measured
            verdict = f"missed ({factor:.2f} of the target)"
        value = f"{measured:,.2f}×" if unit == "×" else f"{measured:,.2f} {unit}"
        rows.append([name, value, goal_text, verdict])

    if bench is not None:
        keyed = {(r["model"], r["path"], r["kind"]): r for r in bench.get("inprocess") or []}
        models = bench["settings"]["models"]
        for model in models:
            path = served_path(model)
            add(f"{model}: in-process 1 row p50", get(keyed.get((model, path, "single")), "p50_us"), 25, "µs", False)
            add(f"{model}: in-process 1,000 rows p50", _ms_of(keyed.get((model, path, "batch"))), 3, "ms", False)
        for model in models:
            row = find_http(bench, "ours", model, "/predict", REFERENCE_CONCURRENCY)
            add(f"{model}: /predict c=8 ×ceiling", get(row, "vs_ceiling", "throughput"), 0.25, "×", True)
            if model == "heuristic":
                add("heuristic: /predict c=8 ×baseline", get(row, "vs_baseline", "throughput"), 1, "×", True)
            if model == "random_forest":
                add("random_forest: /predict c=8 ×baseline", get(row, "vs_baseline", "throughput"), 10, "×", True)
            tail = find_http(bench, "ours", model, "/predict", TAIL_CONCURRENCY)
            add(f"{model}: /predict p99 at c=64", get(tail, "latency_ms", "p99"), 10, "ms", False)
        _request_path_targets(bench, add)
        _guard_targets(bench.get("guard"), add)
        _monitoring_targets(bench.get("monitoring"), add)
    if peers is not None:
        for model in peers["settings"]["models"]:
            if model == "heuristic":
                continue
            ours = find_http(peers, "ours", model, "v2 infer", REFERENCE_CONCURRENCY)
            theirs = _best_mlserver(peers, model, REFERENCE_CONCURRENCY)
            factor = ratio(get(ours, "rows_per_s"), get(theirs, "rows_per_s"))
            add(f"{model}: V2 infer c=8 ×MLServer (its best variant)", factor, 5, "×", True)
    return rows


BARE_SHARE = {"heuristic": 0.7}
"""Issue 14: /predict's throughput as a share of the bare FastAPI route's; 0.6 for every fitted model (and V2)."""
FITTED_BARE_SHARE = 0.6
TAIL_BARE_MULTIPLE = 1.5
"""Issue 14: /predict's p99 at c=64 at most this multiple of the bare route's."""
TWO_WORKER_GAIN = 1.6
"""Issue 14: two workers' throughput as a multiple of one worker's."""


def _request_path_targets(bench: dict[str, Any], add: Callable[[str, float | None, float, str, bool], None]) -> None:
    """Issue 14's targets, when the run measured the bare route (older runs did not: their table stays as it was)."""
    if not any(row["server"] == "bare" for row in bench.get("http", [])):
        return
    c, tail = REFERENCE_CONCURRENCY, TAIL_CONCURRENCY
    for model in bench["settings"]["models"]:
        share = BARE_SHARE.get(model, FITTED_BARE_SHARE)
        endpoints = ("/predict",) if model == "heuristic" else ("/predict", "v2 infer")
        for endpoint in endpoints:
            row = find_http(bench, "ours", model, endpoint, c)
            add(f"{model}: {endpoint} c={c} ×bare FastAPI route", get(row, "vs_bare", "throughput"), share, "×", True)
        row = find_http(bench, "ours", model, "/predict", tail)
        add(f"{model}: /predict p99 at c={tail} ×bare's", get(row, "vs_bare", "p99"), TAIL_BARE_MULTIPLE, "×", False)
    for row in (r for r in bench.get("http", []) if r["server"] == "ours-2w" and r["concurrency"] == c):
        name = f"{row['model']}: {row['endpoint']} c={c}, two workers ×one"
        add(name, get(row, "vs_one_worker", "throughput"), TWO_WORKER_GAIN, "×", True)


GUARDED = "keys + limits"
"""The guard's variant the target is about: API keys and rate limits counted in memory."""
GUARD_BUDGET_US = 10


def _guard_targets(guard: dict[str, Any] | None, add: Callable[[str, float | None, float, str, bool], None]) -> None:
    """The guard's targets, when the run measured it (older runs did not: their table stays as it was)."""
    if not guard:
        return
    model = guard["model"]
    asgi = next((row for row in guard.get("asgi") or [] if row["variant"] == GUARDED), None)
    http = next((row for row in get(guard, "http", "variants") or [] if row["variant"] == GUARDED), None)
    name = f"{model}: keys + memory rate limits, added per /predict"
    add(f"{name}, in-process (p50)", get(asgi, "added_p50_us"), GUARD_BUDGET_US, "µs", False)
    add(f"{name}, HTTP c=8 (time per request)", get(http, "added_us_per_request"), GUARD_BUDGET_US, "µs", False)


MONITOR_ROW_BUDGET_US = 5
"""Monitoring's target: what it may cost per served row, in-process."""
SCRAPE_BUDGET_MS = 50
"""Monitoring's target: ``GET /metrics`` with two workers."""


def _monitoring_targets(
    monitoring: dict[str, Any] | None, add: Callable[[str, float | None, float, str, bool], None]
) -> None:
    """Monitoring's targets, when the run measured it: ``observe_one`` per row on the model it costs most, the
    monitor as served against none through the app (per model), and the scrape's median and p99 with two workers."""
    if not monitoring:
        return
    observed = monitoring.get("observe") or []
    if observed:
        slowest = max(observed, key=lambda row: row["one"]["p50_us"])
        name = f"monitoring per served row, `Monitor.observe_one` (median; costliest of {len(observed)} models:"
        add(f"{name} {slowest['model']})", slowest["one"]["p50_us"], MONITOR_ROW_BUDGET_US, "µs", False)
    for row in (r for r in monitoring.get("app") or [] if r["variant"] == "served"):
        name = f"{row['model']}: monitoring added per /predict, in-process through the app (p50, served vs none)"
        add(name, row["added_p50_us"], MONITOR_ROW_BUDGET_US, "µs", False)
    scrape = monitoring.get("scrape")
    for statistic, key in (("median", "p50"), ("p99", "p99")):
        if scrape:
            name = f"{scrape['model']}: GET /metrics with {scrape['workers']} workers ({statistic} of"
            add(f"{name} {scrape['scrapes']})", scrape["latency_ms"][key], SCRAPE_BUDGET_MS, "ms", False)
        elif "scrape" in monitoring:  # measured, but the server failed: the row says so
            add(f"GET /metrics with 2 workers ({statistic})", None, SCRAPE_BUDGET_MS, "ms", False)


def targets_table(bench: dict[str, Any] | None, peers: dict[str, Any] | None) -> list[str]:
    """The targets as a Markdown table."""
    return table(["target", "measured", "goal", "verdict"], targets(bench, peers))
