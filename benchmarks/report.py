"""results.md of one run: its settings, then a table per measurement (in-process, HTTP, servers, peers, targets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.ratios import ratio
from benchmarks.tables import (
    Column,
    column_table,
    find_http,
    get,
    machine_line,
    model_label,
    ms,
    num,
    server_label,
    times,
    versions_line,
)
from benchmarks.targets import targets_table

Cell = Callable[[dict[str, Any]], str]


def _text(*keys: str) -> Cell:
    return lambda row: str(get(row, *keys))


def _num(*keys: str, digits: int = 0) -> Cell:
    return lambda row: num(get(row, *keys), digits)


def _ms(*keys: str) -> Cell:
    return lambda row: ms(get(row, *keys))


def _times(*keys: str) -> Cell:
    return lambda row: times(get(row, *keys))


SERVER: Column = ("server", server_label)
MODEL: Column = ("model", model_label)
ENDPOINT: Column = ("endpoint", _text("endpoint"))
CONCURRENCY: Column = ("c", _text("concurrency"))
P50_MS: Column = ("p50 ms", _ms("latency_ms", "p50"))
P99_MS: Column = ("p99 ms", _ms("latency_ms", "p99"))
ERRORS: Column = ("errors", _text("error_count"))


def _inprocess(kind: str, title: str, digits: int) -> list[Column]:
    """p50 and p99 of one in-process kind (single or batch), and its p50 speed-ups over the original and baseline."""
    return [
        (f"{title} p50 µs", _num(kind, "p50_us", digits=digits)),
        ("p99 µs", _num(kind, "p99_us", digits=digits)),
        *((f"×{path}", _times(kind, f"x_{path}_p50")) for path in ("original", "baseline")),
    ]


def _versus(key: str, header: str = "") -> list[Column]:
    """``key``'s ratios to the ceiling and to the baseline."""
    return [(f"{header}×{reference}", _times(f"vs_{reference}", key)) for reference in ("ceiling", "baseline")]


INPROCESS_COLUMNS: list[Column] = [("model", _text("model")), ("path", _text("path"))]
INPROCESS_COLUMNS += _inprocess("single", "1 row", 1) + _inprocess("batch", "1,000 rows", 0)
HTTP_COLUMNS: list[Column] = [SERVER, MODEL, ENDPOINT, CONCURRENCY, ("rows/s", _num("rows_per_s"))]
HTTP_COLUMNS += [*_versus("throughput"), P50_MS, P99_MS, ("p99.9 ms", _ms("latency_ms", "p99.9"))]
HTTP_COLUMNS += [*_versus("p99", "p99 "), ERRORS]
SERVER_COLUMNS: list[Column] = [SERVER, MODEL, ("start→ready s", lambda s: f"{s['start_to_ready_s']:.2f}")]
SERVER_COLUMNS += [*_versus("start_to_ready_s"), ("RSS MB (after load)", _num("rss_mb")), *_versus("rss_mb")]
SERVER_COLUMNS += [("RSS MB all processes", _num("rss_tree_mb")), ("processes", _text("processes"))]
CAPABILITY_COLUMNS: list[Column] = [
    ("server", _text("server")),
    MODEL,
    ("probe", _text("probe")),
    ("status", _text("status")),
    ("answer (start)", lambda c: str(c["answer"][:90]).replace("|", "/")),
]


def inprocess_table(results: dict[str, Any]) -> list[str]:
    """Single-row and 1,000-row latency per model and path, with the speed-ups."""
    rows = results.get("inprocess") or []
    keyed = {(r["model"], r["path"], r["kind"]): r for r in rows}
    merged = [
        {
            "model": model,
            "path": path,
            "single": keyed.get((model, path, "single")),
            "batch": keyed.get((model, path, "batch")),
        }
        for model, path in dict.fromkeys((r["model"], r["path"]) for r in rows)
    ]
    return column_table(INPROCESS_COLUMNS, merged)


def peers_table(peers: dict[str, Any]) -> list[str]:
    """Ours against MLServer per model, V2 infer of one row at every concurrency."""

    def ours_times_this(row: dict[str, Any]) -> str:
        if row["server"] == "ours":
            return times(None)
        ours = find_http(peers, "ours", row["model"], "v2 infer", row["concurrency"])
        return times(ratio(get(ours, "rows_per_s"), row["rows_per_s"]))

    columns = [MODEL, SERVER, ENDPOINT, CONCURRENCY, ("req/s", _num("rows_per_s")), P50_MS, P99_MS]
    columns += [("ours V2 ×this", ours_times_this), ERRORS]
    return column_table(columns, (r for r in peers.get("http", []) if r["server"] != "ceiling"))


NOTES = [
    "rows/s is requests/s × rows per request (1, except /predict/batch); ×ceiling and ×baseline divide it by the "
    "ceiling's requests/s and the same model's baseline at the same concurrency (>1: more); the p99 ratios divide "
    "latencies (>1: slower).",
    "ceiling: a raw ASGI app returning a constant JSON; baseline: a tutorial FastAPI + joblib app "
    "(benchmarks/apps/baseline.py: pydantic body, `async def` route calling `pipeline.predict`, returns the label "
    "only). Both run on uvicorn with 1 worker, uvloop and httptools like ours; ours logs one JSON line per request "
    "at INFO, the baseline uvicorn's access line, the ceiling nothing.",
    "in-process: `predict_one` / `predict_many` of the predictor (label and probabilities); `original` is the same "
    "predictor over the unmodified joblib Pipeline; `baseline` is the call the tutorial route makes "
    "(`pipeline.predict`, labels only).",
    "V2 bodies ask for `predict_proba` only: MLServer's sklearn runtime calls the model once per requested output.",
]
"""How to read the tables (the end of every results.md)."""


def markdown(results: dict[str, Any]) -> str:
    """results.md of one run."""
    kind, mode = results["kind"], results["mode"]
    lines = [f"# Benchmark: {kind} ({mode}), {results['started_at']}", ""]
    lines += [f"- machine: {machine_line(results)}", f"- versions: {versions_line(results['versions'])}"]
    if results.get("versions_mlserver"):
        lines.append(f"- MLServer venv: {versions_line(results['versions_mlserver'])}")
    settings = results["settings"]
    artifacts = ", ".join(f"{m} {a['version']}" for m, a in results.get("artifacts", {}).items())
    lines += [
        f"- artifacts: {artifacts or '–'}",
        f"- command: `{results['command']}`",
        f"- load: {settings['duration_s']} s per run after {settings['warmup_s']} s warm-up, concurrency "
        f"{', '.join(map(str, settings['concurrency']))}; batch {settings['batch_rows']} rows; "
        f"elapsed {results.get('elapsed_s', 0):.0f} s",
        "",
    ]
    if results.get("inprocess"):
        lines += ["## In-process latency", "", *inprocess_table(results), ""]
    lines += ["## HTTP throughput and latency", "", *column_table(HTTP_COLUMNS, results.get("http", [])), ""]
    lines += [
        "## Servers: start to ready, resident memory",
        "",
        *column_table(SERVER_COLUMNS, results.get("servers", [])),
    ]
    lines.append("")
    if kind == "peers":
        lines += ["## Ours against MLServer (V2 infer, one row)", "", *peers_table(results), ""]
        lines += ["## What the peer answers", "", *column_table(CAPABILITY_COLUMNS, results.get("capabilities", []))]
        lines += [""] + [f"- {note}" for note in results.get("peer_notes", [])] + [""]
    lines += ["## Targets (issue 4)", ""]
    lines += targets_table(results if kind == "bench" else None, results if kind == "peers" else None)
    lines.append("")
    if results.get("failures"):
        lines += ["## Failures", ""]
        lines += [f"- {f['server']} {f['model'] or ''}: {f['error'][:500]}" for f in results["failures"]]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"
