"""Every HTTP row's and server's ratios to the ceiling and to the same model's baseline, added to results.json; in
runs that measured them, every HTTP row's ratios to the bare FastAPI route and the two-worker rows' to one worker."""

from __future__ import annotations

from typing import Any

LATENCIES = ("p50", "p99", "p99.9")
"""The latency percentiles that get a ratio (and a figure)."""


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing (or the reference is 0)."""
    return value / reference if value is not None and reference else None


def _compare(row: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, float | None] | None:
    """Throughput as a fraction of the reference's (>1: more); latencies as multiples of its (>1: slower)."""
    if reference is None:
        return None
    ratios = {"throughput": ratio(row["rows_per_s"], reference["rows_per_s"])}
    ratios |= {name: ratio(row["latency_ms"][name], reference["latency_ms"][name]) for name in LATENCIES}
    return ratios


BARE = "bare"
"""The bare FastAPI route's server name: the framework's ceiling."""
MULTI_WORKER = "ours-2w"
"""Our server with two workers, compared with ``ours`` (one worker) on the same model, route and concurrency."""


def add_ratios(results: dict[str, Any]) -> None:
    """Give every HTTP row and every server its ratios to the ceiling and to the same model's baseline; every HTTP
    row its ratios to the bare route (``vs_bare``) and the two-worker rows to one worker (``vs_one_worker``), when
    the run measured them (runs before the bare route have no such key)."""
    http = results.get("http", [])
    ceiling = {r["concurrency"]: r for r in http if r["server"] == "ceiling"}
    baseline = {(r["model"], r["concurrency"]): r for r in http if r["server"] == "baseline"}
    bare = {r["concurrency"]: r for r in http if r["server"] == BARE}
    one_worker = {(r["model"], r["endpoint"], r["concurrency"]): r for r in http if r["server"] == "ours"}
    for row in http:
        row["vs_ceiling"] = _compare(row, ceiling.get(row["concurrency"]))
        row["vs_baseline"] = _compare(row, baseline.get((row["model"], row["concurrency"])))
        if bare:
            row["vs_bare"] = _compare(row, bare.get(row["concurrency"]))
        if row["server"] == MULTI_WORKER:
            row["vs_one_worker"] = _compare(row, one_worker.get((row["model"], row["endpoint"], row["concurrency"])))
    servers = results.get("servers", [])
    ceiling_server = next((s for s in servers if s["server"] == "ceiling"), None)
    baseline_servers = {s["model"]: s for s in servers if s["server"] == "baseline"}
    for server in servers:
        for name, reference in (("vs_ceiling", ceiling_server), ("vs_baseline", baseline_servers.get(server["model"]))):
            server[name] = (
                None
                if reference is None
                else {key: ratio(server[key], reference[key]) for key in ("rss_mb", "start_to_ready_s")}
            )
