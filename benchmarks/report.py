"""Results -> ratios to the ceiling and the baseline, Markdown tables, and issue 4's targets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LATENCIES = ("p50", "p99", "p99.9")
REFERENCE_CONCURRENCY = 8
TAIL_CONCURRENCY = 64


# ---------------------------------------------------------------- ratios


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


def add_ratios(results: dict[str, Any]) -> None:
    """Give every HTTP row and every server its ratios to the ceiling and to the same model's baseline."""
    http = results.get("http", [])
    ceiling = {r["concurrency"]: r for r in http if r["server"] == "ceiling"}
    baseline = {(r["model"], r["concurrency"]): r for r in http if r["server"] == "baseline"}
    for row in http:
        row["vs_ceiling"] = _compare(row, ceiling.get(row["concurrency"]))
        row["vs_baseline"] = _compare(row, baseline.get((row["model"], row["concurrency"])))
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


# ---------------------------------------------------------------- formatting


def num(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators; a dash when missing."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    """A ratio as ``0.42×`` (``12×`` from 10 up); a dash when missing."""
    if value is None:
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def ms(value: float | None) -> str:
    """Milliseconds, two decimals below 100."""
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def server_label(row: dict[str, Any]) -> str:
    """The server's name, with MLServer's parallel_workers setting."""
    settings = row.get("settings") or {}
    if row["server"].startswith("mlserver"):
        return f"{row['server']} (parallel_workers={settings.get('parallel_workers')})"
    return str(row["server"])


def get(row: dict[str, Any] | None, *keys: str) -> Any:
    """``row[k1][k2]...``, or None where a level is missing."""
    value: Any = row
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def machine_line(results: dict[str, Any]) -> str:
    """One line: CPU, cores, kernel, Python, load generator."""
    m = results["machine"]
    return (
        f"{m['cpu_model']}, {m['cores']} cores (usable {m['usable_cores']}), Linux {m['kernel']}, "
        f"Python {m['python']}, {m['load_generator']}; load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m.get('loadavg_end', [0])[0]:.2f} at end"
    )


def versions_line(versions: dict[str, str | None]) -> str:
    """``name version`` pairs of what is installed."""
    return ", ".join(f"{name} {version}" for name, version in versions.items() if version)


def inprocess_table(results: dict[str, Any]) -> list[str]:
    """Single-row and 1,000-row latency per model and path, with the speed-ups."""
    rows = results.get("inprocess") or []
    keyed = {(r["model"], r["path"], r["kind"]): r for r in rows}
    lines = []
    for model, path in dict.fromkeys((r["model"], r["path"]) for r in rows):
        single, batch = keyed.get((model, path, "single")), keyed.get((model, path, "batch"))
        lines.append(
            [
                model,
                path,
                num(get(single, "p50_us"), 1),
                num(get(single, "p99_us"), 1),
                times(get(single, "x_original_p50")),
                times(get(single, "x_baseline_p50")),
                num(get(batch, "p50_us"), 0),
                num(get(batch, "p99_us"), 0),
                times(get(batch, "x_original_p50")),
                times(get(batch, "x_baseline_p50")),
            ]
        )
    header = ["model", "path", "1 row p50 µs", "p99 µs", "×original", "×baseline"]
    header += ["1,000 rows p50 µs", "p99 µs", "×original", "×baseline"]
    return table(header, lines)


def http_table(results: dict[str, Any]) -> list[str]:
    """Every load run: throughput and latency, each also as a ratio to the ceiling and to the baseline."""
    lines = []
    for r in results.get("http", []):
        lines.append(
            [
                server_label(r),
                r["model"] or "–",
                r["endpoint"],
                str(r["concurrency"]),
                num(r["rows_per_s"]),
                times(get(r, "vs_ceiling", "throughput")),
                times(get(r, "vs_baseline", "throughput")),
                ms(r["latency_ms"]["p50"]),
                ms(r["latency_ms"]["p99"]),
                ms(r["latency_ms"]["p99.9"]),
                times(get(r, "vs_ceiling", "p99")),
                times(get(r, "vs_baseline", "p99")),
                str(r["error_count"]),
            ]
        )
    header = ["server", "model", "endpoint", "c", "rows/s", "×ceiling", "×baseline", "p50 ms", "p99 ms", "p99.9 ms"]
    header += ["p99 ×ceiling", "p99 ×baseline", "errors"]
    return table(header, lines)


def servers_table(results: dict[str, Any]) -> list[str]:
    """Start-to-ready time and resident memory of every server, with ratios."""
    lines = []
    for s in results.get("servers", []):
        lines.append(
            [
                server_label(s),
                s["model"] or "–",
                f"{s['start_to_ready_s']:.2f}",
                times(get(s, "vs_ceiling", "start_to_ready_s")),
                times(get(s, "vs_baseline", "start_to_ready_s")),
                num(s["rss_mb"], 0),
                times(get(s, "vs_ceiling", "rss_mb")),
                times(get(s, "vs_baseline", "rss_mb")),
                num(s["rss_tree_mb"], 0),
                str(s["processes"]),
            ]
        )
    header = ["server", "model", "start→ready s", "×ceiling", "×baseline", "RSS MB (after load)", "×ceiling"]
    header += ["×baseline", "RSS MB all processes", "processes"]
    return table(header, lines)


def find_http(results: dict[str, Any], server: str, model: str | None, endpoint: str, c: int) -> dict[str, Any] | None:
    """The HTTP row of that server, model, endpoint and concurrency, if measured."""
    return next(
        (
            r
            for r in results.get("http", [])
            if r["server"] == server and r["model"] == model and r["endpoint"] == endpoint and r["concurrency"] == c
        ),
        None,
    )


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


def targets(bench: dict[str, Any] | None, peers: dict[str, Any] | None) -> list[list[str]]:
    """Issue 4's targets: what was measured, the target, and met or missed by how much."""
    rows: list[list[str]] = []

    def add(name: str, measured: float | None, goal: float, unit: str, higher_is_better: bool) -> None:
        goal_text = f"{'≥' if higher_is_better else '≤'} {goal:g}{'×' if unit == '×' else ' ' + unit}"
        if measured is None:
            rows.append([name, "not measured", goal_text, "–"])
            return
        met = measured >= goal if higher_is_better else measured <= goal
        factor = measured / goal if higher_is_better else goal / measured
        verdict = "met" if met else f"missed ({factor:.2f} of the target)"
        value = f"{measured:,.2f}×" if unit == "×" else f"{measured:,.2f} {unit}"
        rows.append([name, value, goal_text, verdict])

    if bench is not None:
        keyed = {(r["model"], r["path"], r["kind"]): r for r in bench.get("inprocess") or []}
        models = bench["settings"]["models"]
        for model in models:
            path = "served" if model == "heuristic" else "fast"
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
    if peers is not None:
        for model in peers["settings"]["models"]:
            if model == "heuristic":
                continue
            ours = find_http(peers, "ours", model, "v2 infer", REFERENCE_CONCURRENCY)
            theirs = _best_mlserver(peers, model, REFERENCE_CONCURRENCY)
            factor = ratio(get(ours, "rows_per_s"), get(theirs, "rows_per_s"))
            add(f"{model}: V2 infer c=8 ×MLServer (its best variant)", factor, 5, "×", True)
    return rows


def _ms_of(row: dict[str, Any] | None) -> float | None:
    value = get(row, "p50_us")
    return value / 1000 if value is not None else None


def targets_table(bench: dict[str, Any] | None, peers: dict[str, Any] | None) -> list[str]:
    """The targets as a Markdown table."""
    return table(["target", "measured", "goal", "verdict"], targets(bench, peers))


def peers_table(peers: dict[str, Any]) -> list[str]:
    """Ours against MLServer per model, V2 infer of one row at every concurrency."""
    lines = []
    for r in peers.get("http", []):
        if r["server"] == "ceiling":
            continue
        ours = find_http(peers, "ours", r["model"], "v2 infer", r["concurrency"])
        factor = ratio(get(ours, "rows_per_s"), r["rows_per_s"]) if r["server"] != "ours" else None
        lines.append(
            [
                r["model"],
                server_label(r),
                r["endpoint"],
                str(r["concurrency"]),
                num(r["rows_per_s"]),
                ms(r["latency_ms"]["p50"]),
                ms(r["latency_ms"]["p99"]),
                times(factor),
                str(r["error_count"]),
            ]
        )
    return table(["model", "server", "endpoint", "c", "req/s", "p50 ms", "p99 ms", "ours V2 ×this", "errors"], lines)


def capabilities_table(results: dict[str, Any]) -> list[str]:
    """What each probe of the peer answered."""
    rows = [
        [c["server"], c["model"] or "–", c["probe"], str(c["status"]), c["answer"][:90].replace("|", "/")]
        for c in results.get("capabilities", [])
    ]
    return table(["server", "model", "probe", "status", "answer (start)"], rows)


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
    lines += ["## HTTP throughput and latency", "", *http_table(results), ""]
    lines += ["## Servers: start to ready, resident memory", "", *servers_table(results), ""]
    if kind == "peers":
        lines += ["## Ours against MLServer (V2 infer, one row)", "", *peers_table(results), ""]
        lines += ["## What the peer answers", "", *capabilities_table(results), ""]
        lines += [f"- {note}" for note in results.get("peer_notes", [])] + [""]
    lines += ["## Targets (issue 4)", ""]
    lines += targets_table(results if kind == "bench" else None, results if kind == "peers" else None)
    lines.append("")
    if results.get("failures"):
        lines += ["## Failures", ""]
        lines += [f"- {f['server']} {f['model'] or ''}: {f['error'][:500]}" for f in results["failures"]]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"
