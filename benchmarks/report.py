"""results.md of one run: its settings, then a table per measurement (in-process, HTTP, servers, guard, overload,
monitoring, peers, targets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import startup
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
BARE_COLUMNS: list[Column] = [("×bare", _times("vs_bare", "throughput")), ("p99 ×bare", _times("vs_bare", "p99"))]
BARE_COLUMNS += [("×1 worker", _times("vs_one_worker", "throughput"))]
"""Runs with the bare FastAPI route: every row against it, and two workers against one."""


def http_columns(results: dict[str, Any]) -> list[Column]:
    """The HTTP table's columns: with the bare route's ratios when the run measured it (older runs did not)."""
    if not _measured_bare(results):
        return HTTP_COLUMNS
    return HTTP_COLUMNS[:7] + BARE_COLUMNS[:1] + HTTP_COLUMNS[7:] + BARE_COLUMNS[1:]


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
"""How to read the tables (the end of every results.md of a run before the bare route)."""
BARE_NOTES = [
    NOTES[0],
    "ceiling: a raw ASGI app returning a constant JSON; bare: a FastAPI route that reads the body and returns a "
    "constant `Response` (benchmarks/apps/bare.py, the framework's own ceiling; ×bare divides by it, in runs that "
    "measured it); baseline: a tutorial FastAPI + joblib app (benchmarks/apps/baseline.py: pydantic body, "
    "`async def` route calling `pipeline.predict`, returns the label only). All run on uvicorn with 1 worker, uvloop "
    "and httptools like ours; ours logs one JSON line per request at INFO, the others no access line (the baseline "
    "had uvicorn's access line in runs before the bare route).",
    "ours-2w: ours with two workers (metrics in multiprocess mode), ×1 worker dividing by ours with one; "
    "ours-enabled: API keys and memory rate limits (wrk sends the key), the payload log of every row, monitoring "
    "as by default (runs before it had ours-guard: keys and limits only).",
    *NOTES[2:],
]
"""How to read the tables of a run with the bare route (``bare``, ``ours-2w`` and ``ours-enabled``)."""


def _measured_bare(results: dict[str, Any]) -> bool:
    return any(row["server"] == "bare" for row in results.get("http", []))


GUARD_ASGI_COLUMNS: list[Column] = [
    ("variant", _text("variant")),
    ("p50 µs", _num("p50_us", digits=1)),
    ("p99 µs", _num("p99_us", digits=1)),
    ("mean µs", _num("mean_us", digits=1)),
    ("added p50 µs", lambda row: f"{row['added_p50_us']:+.1f}"),
    ("×off p50", lambda row: f"{row['x_off_p50']:.3f}×"),
    ("calls", _text("calls")),
]
GUARD_HTTP_COLUMNS: list[Column] = [
    ("variant", _text("variant")),
    ("settings", lambda row: ", ".join(f"`{k}={v}`" for k, v in row["settings"].items()) or "defaults"),
    ("req/s", _num("requests_per_s")),
    ("µs per request", _num("us_per_request", digits=1)),
    ("added µs per request", lambda row: f"{row['added_us_per_request']:+.1f}"),
    ("×default req/s", lambda row: f"{row['x_default_throughput']:.3f}×"),
    ("p50 ms", _ms("p50_ms")),
    ("p99 ms", _ms("p99_ms")),
]


def guard_section(guard: dict[str, Any]) -> list[str]:
    """What API keys and memory rate limits add to ``/predict``: in-process through the app, and over HTTP."""
    model = guard["model"]
    lines = [f"## The guard: what API keys and rate limits add to `/predict` ({model})", ""]
    lines += [
        f"Rate limit `{guard['rate_limit']}` in `{guard['storage']}` (nothing is refused: the cost of counting); one "
        "key in the keys file, sent as `X-API-Key` by every request of every variant.",
        "",
    ]
    if guard.get("asgi"):
        lines += [
            "In-process: one `/predict` at a time through the app `create_app` builds (its lifespan run, every "
            "middleware, the route, the log line to /dev/null, the metrics), without socket or HTTP parser; the "
            "variants take turns, block after block, in one process.",
            "",
            *column_table(GUARD_ASGI_COLUMNS, guard["asgi"]),
            "",
        ]
    http = guard.get("http")
    if http:
        lines += [
            f"Over HTTP: the servers up side by side (one worker each), one wrk run of {http['duration_s']} s at "
            f"c={http['concurrency']} to each in turn, {http['rounds']} round(s); one busy worker serves one request "
            "at a time, so 1/throughput is its time per request; added is the median over rounds of the difference "
            "with the default server's in the same round.",
            "",
            *column_table(GUARD_HTTP_COLUMNS, http["variants"]),
            "",
        ]
    return lines


def _status(run: dict[str, Any], status: str, *keys: str) -> Any:
    return get(run["statuses"].get(status), *keys)


def _health(run: dict[str, Any]) -> str:
    health = run["health"]
    latency = health["latency_ms"]
    failed = sum(health["failures"].values()) + health.get("over_timeout", 0)
    text = f"{ms(latency['p50'])} / {ms(latency['p99'])} / {ms(latency['max'])} ({health['probes']}"
    return text + (f", {failed} failed or over {health['timeout_s']:g} s)" if failed else ")")


def _latency(status: str, name: str, steady: bool = False, run: str = "overload") -> Cell:
    key = "steady_latency_ms" if steady else "latency_ms"
    return lambda row: ms(_status(row[run], status, key, name))


SHEDDING: Column = ("MPS_MAX_IN_FLIGHT", lambda row: str(row["max_in_flight"]) if row["max_in_flight"] else "0 (off)")
OVERLOAD_COLUMNS: list[Column] = [
    MODEL,
    SHEDDING,
    ("200/s", lambda row: num(_status(row["overload"], "200", "per_s"))),
    ("200 p50 ms", _latency("200", "p50")),
    ("200 p99 ms", _latency("200", "p99")),
    ("after 1 s", _latency("200", "p99", steady=True)),
    ("at c=8", _latency("200", "p99", run="reference")),
    ("×c=8", _times("admitted_p99_x_reference")),
    ("after 1 s ×c=8", _times("admitted_steady_p99_x_reference")),
    ("503", lambda row: num(_status(row["overload"], "503", "count"))),
    ("503 p50 ms", _latency("503", "p50")),
    ("503 p99 ms", _latency("503", "p99")),
    ("after 1 s", _latency("503", "p99", steady=True)),
    ("other statuses", lambda row: _other_statuses(row["overload"])),
    ("mps_shed_total", lambda row: num(row["shed_total_metric"])),
]
OVERLOAD_CONNECTION_COLUMNS: list[Column] = [
    MODEL,
    SHEDDING,
    ("socket errors", lambda row: _socket_errors(row["overload"])),
    ("TCP (machine)", lambda row: ", ".join(f"{k} {v}" for k, v in row["overload"].get("tcp", {}).items()) or "–"),
    ("/health/live p50 / p99 / max ms (probes)", lambda row: _health(row["overload"])),
    ("same at c=8", lambda row: _health(row["reference"])),
]


def _socket_errors(run: dict[str, Any]) -> str:
    errors = {name: count for name, count in run["socket_errors"].items() if count}
    return f"{run['socket_error_count']}" + (f" ({', '.join(f'{k} {v}' for k, v in errors.items())})" if errors else "")


def _other_statuses(run: dict[str, Any]) -> str:
    others = {s: m["count"] for s, m in run["statuses"].items() if s not in ("200", "503")}
    for status, count in run.get("uncorrelated", {}).items():
        others[f"{status} (no id)"] = others.get(f"{status} (no id)", 0) + count
    return ", ".join(f"{status}: {count}" for status, count in sorted(others.items())) or "–"


def overload_section(overload: dict[str, Any]) -> list[str]:
    """One worker under overload, shedding on and off: admitted and shed answers apart, the liveness probe."""
    c = overload["concurrency"]
    probe = get(overload["cases"][0]["overload"], "health") if overload["cases"] else None
    every = f"every {probe['interval_s'] * 1000:g} ms ({probe['timeout_s']:g} s timeout" if probe else "("
    return [
        f"## Overload: one worker, wrk c={c}, shedding on and off",
        "",
        f"Each server is loaded {overload['duration_s']} s at c=8, then {overload['duration_s']} s at c={c}, with "
        "`/predict`. Latencies per status are the Lua script's, per request (its own `X-Request-ID`, echoed by the "
        "service, finds its start): raw, without the coordinated-omission correction wrk applies to the latencies "
        f"of the HTTP table; `after 1 s` leaves out the requests started in the first second, while the {c} "
        "connections open at once. 503 is `overloaded`, answered before the body is read; wrk counts it as an "
        "error, these tables do not. `mps_shed_total` is the server's own count, read after both runs.",
        "",
        *column_table(OVERLOAD_COLUMNS, overload["cases"]),
        "",
        f"Socket errors are wrk's connect, read, write and timeout errors at c={c}. TCP counts the kernel's "
        "retransmitted segments, listen-queue overflows and resets of sockets closed with unread data during the "
        "run, for the whole machine (other processes included). A thread GETs `/health/live` on a fresh "
        f"connection {every}, as the liveness probe's) throughout each run.",
        "",
        *column_table(OVERLOAD_CONNECTION_COLUMNS, overload["cases"]),
        "",
    ]


def _per_row(kind: str, title: str) -> list[Column]:
    return [
        (f"{title} p50", _num(kind, "p50_us", digits=3)),
        ("p99", _num(kind, "p99_us", digits=3)),
        ("mean", _num(kind, "mean_us", digits=3)),
        ("timed", lambda row: f"{row[kind]['calls']} × {row[kind]['rows_per_call']:,} rows"),
    ]


OBSERVE_COLUMNS: list[Column] = [MODEL, *_per_row("one", "`observe_one` µs/row"), *_per_row("many", "`observe_many`")]
MONITOR_VARIANTS = {
    "served": "the monitor the app serves with: bins, out-of-range, confidence",
    "inactive": "built from the manifest without `reference`: the confidence histogram only",
    "off": "observes nothing",
}
MONITOR_APP_COLUMNS: list[Column] = [
    MODEL,
    ("variant", _text("variant")),
    ("what it observes", lambda row: MONITOR_VARIANTS.get(row["variant"], "–")),
    ("p50 µs", _num("p50_us", digits=1)),
    ("p99 µs", _num("p99_us", digits=1)),
    ("mean µs", _num("mean_us", digits=1)),
    ("added p50 µs", lambda row: f"{row['added_p50_us']:+.2f}"),
    ("added mean µs", lambda row: f"{row['added_mean_us']:+.2f}"),
    ("×off p50", lambda row: f"{row['x_off_p50']:.3f}×"),
    ("calls", _text("calls")),
]
SCRAPE_COLUMNS: list[Column] = [
    MODEL,
    ("workers", _text("workers")),
    ("rows served (requests)", lambda row: f"{row['traffic']['rows']:,} ({row['traffic']['requests']:,})"),
    ("scrapes", lambda row: f"{row['scrapes']} (after {len(row['warmup_ms'])} untimed)"),
    ("p50 ms", _ms("latency_ms", "p50")),
    ("p99 ms", _ms("latency_ms", "p99")),
    ("max ms", _ms("latency_ms", "max")),
    ("untimed ms", lambda row: ", ".join(ms(value) for value in row["warmup_ms"]) or "–"),
    ("bytes", lambda row: num(row["bytes"]["max"])),
    ("series", _text("series")),
    ("`mps_predictions_total`", lambda row: num(row["predictions_counted"])),
    ("metrics files (KiB)", lambda row: f"{row['metrics_files']} ({row['metrics_files_bytes'] / 1024:,.0f})"),
]


def _served_against(rows: list[dict[str, Any]], model: str) -> str:
    """What the monitor as served adds to one ``/predict`` of ``model`` over the inactive one and over none."""
    p50 = {row["variant"]: row["p50_us"] for row in rows if row["model"] == model}
    if not {"served", "inactive", "off"} <= p50.keys():
        return ""
    return (
        f"{model}: served {p50['served'] - p50['inactive']:+.2f} µs over inactive "
        f"({p50['served'] / p50['inactive']:.3f}×), {p50['served'] - p50['off']:+.2f} µs over none "
        f"({p50['served'] / p50['off']:.3f}×), p50 per request (one row)."
    )


def monitoring_section(monitoring: dict[str, Any]) -> list[str]:
    """Monitoring's cost per served row (the monitor alone, ``/predict`` through the app) and the scrape."""
    lines = ["## Monitoring: its cost per served row, and `/metrics` with two workers", ""]
    if monitoring.get("observe"):
        lines += [
            "In-process, the monitor alone (`Monitor`, built from each model's registry manifest): `observe_one` "
            f"timed in blocks of rows (a block of {monitoring['flush_rows']:,} pays the one flush to the Prometheus "
            "counters those rows trigger) and `observe_many` of 1,000 rows, per row; the iris rows in turn, with "
            "the model's golden top-class probabilities. Percentiles are over blocks and calls. In such a loop the "
            "monitor's code and data stay in the CPU's caches; between requests they do not: the app's rows below "
            "are what a served row pays.",
            "",
            *column_table(OBSERVE_COLUMNS, monitoring["observe"]),
            "",
        ]
    app = monitoring.get("app") or []
    if app:
        models = list(dict.fromkeys(row["model"] for row in app))
        lines += [
            "Through the app: one `/predict` at a time, as in the guard's in-process rows; one app per model whose "
            "data plane wears each monitor in turn, block after block. Added is against `off`, per request (one "
            "row).",
            "",
            *column_table(MONITOR_APP_COLUMNS, app),
            "",
            *(f"- {line}" for line in (_served_against(app, model) for model in models) if line),
            "",
        ]
    scrape = monitoring.get("scrape")
    if scrape:
        lines += [
            f"`GET /metrics` of the server command with `MPS_WORKERS={scrape['workers']}`, after one-row "
            "`/predict`s, 1,000-row batches, a V2 infer and a refused row (each on a fresh connection), one scrape "
            "at a time on a fresh connection, timed by the client; either worker may answer, and each merges every "
            "worker's files. `mps_predictions_total` is the last scrape's sum over classes: the rows served, counted "
            "by both workers. A worker's first scrape is slower than the next ones; the untimed scrapes come first, "
            "but nothing decides which worker answers them.",
            "",
            *column_table(SCRAPE_COLUMNS, [scrape]),
            "",
        ]
    elif "scrape" in monitoring:
        lines += ["The scrape's server failed: see Failures.", ""]
    return lines


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
    lines += ["## HTTP throughput and latency", "", *column_table(http_columns(results), results.get("http", [])), ""]
    lines += [
        "## Servers: start to ready, resident memory",
        "",
        *column_table(SERVER_COLUMNS, results.get("servers", [])),
    ]
    lines.append("")
    if results.get("guard"):
        lines += guard_section(results["guard"])
    if results.get("overload"):
        lines += overload_section(results["overload"])
    if results.get("monitoring"):
        lines += monitoring_section(results["monitoring"])
    if results.get("startup"):
        lines += startup.section(results["startup"])
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
    lines += ["## Notes", ""] + [f"- {note}" for note in (BARE_NOTES if _measured_bare(results) else NOTES)]
    return "\n".join(lines) + "\n"
