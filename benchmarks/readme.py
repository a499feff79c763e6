"""``python -m benchmarks.readme`` (make bench-report): the README's performance section from the latest results.

It reads the latest full ``bench`` and ``peers`` runs under benchmarks/results/ and rewrites what lies between
the perf markers of README.md, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import REPOSITORY, RESULTS_DIR, startup
from benchmarks.ratios import ratio
from benchmarks.tables import (
    REFERENCE_CONCURRENCY,
    TAIL_CONCURRENCY,
    find_http,
    get,
    machine_line,
    ms,
    num,
    served_path,
    server_label,
    table,
    times,
    versions_line,
)
from benchmarks.targets import targets_table

README = REPOSITORY / "README.md"
TableLine = list[str] | None
"""A line of a README table, None for a server the run did not measure."""
START_MARKER = "<!-- perf-table:start -->"
END_MARKER = "<!-- perf-table:end -->"


def latest(kind: str, results_dir: Path = RESULTS_DIR, mode: str = "full") -> Path | None:
    """The newest results folder of ``kind`` (bench or peers) measured in ``mode``."""
    found = []
    for path in results_dir.glob("*/results.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == kind and data.get("mode") == mode:
            found.append((data.get("started_at", ""), path.parent))
    return max(found)[1] if found else None


def readme_section(bench: dict[str, Any] | None, peers: dict[str, Any] | None, folders: dict[str, Path]) -> str:
    """The Markdown between the README's perf markers."""
    lines: list[str] = []
    if bench is None and peers is None:
        return "No benchmark results yet: run `make bench` (and `make bench-peers`), then `make bench-report`.\n"
    source = bench or peers
    assert source is not None
    lines += [
        f"Measured by `make bench` / `make bench-peers` on {machine_line(source)}.",
        f"Versions: {versions_line(source['versions'])}.",
        "One uvicorn worker per server; wrk on the same machine; traffic on 127.0.0.1. The machine is shared: "
        "compare within one run. Regenerate this table with `make bench-report`.",
        "",
    ]
    if bench is not None:
        lines += [_source("In-process and `/predict`", bench, folders["bench"]), "", *_readme_bench_rows(bench), ""]
        lines += _readme_guard_lines(bench)
        lines += _readme_monitoring_lines(bench)
        lines += startup.readme_lines(bench)
    if peers is not None:
        mlserver = f"MLServer venv: {versions_line(peers['versions_mlserver'])}"
        lines += [_source("Against MLServer", peers, folders["peers"], mlserver), "", *_readme_peer_rows(peers)]
        lines += ["", "What the peer could not do, or needed:", ""]
        lines += [f"- {probe}" for probe in _probe_summary(peers)]
        lines += [f"- {note}" for note in peers.get("peer_notes", [])]
        lines.append("")
    lines += ["**Targets** (issues 4 and 14):", "", *targets_table(bench, peers), ""]
    return "\n".join(lines)


def _source(title: str, results: dict[str, Any], folder: Path, extra: str = "") -> str:
    """A table's bold title, with the command, time and folder of the run it comes from."""
    tail = f"; {extra}" if extra else ""
    return f"**{title}** (`{results['command']}`, {results['started_at']}, `{_relative(folder)}`{tail}):"


def _relative(path: Path) -> str:
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)


def _readme_bench_rows(bench: dict[str, Any]) -> list[str]:
    keyed = {(r["model"], r["path"], r["kind"]): r for r in bench.get("inprocess") or []}
    servers = {(s["server"], s["model"]): s for s in bench.get("servers", [])}
    c, tail = REFERENCE_CONCURRENCY, TAIL_CONCURRENCY

    def p50(model: str | None, path: str | None) -> str:
        return num(get(keyed.get((model, path, "single")), "p50_us"), 1)

    def row(
        label: str, server: str, model: str | None, endpoint: str, paths: tuple[str | None, str | None]
    ) -> TableLine:
        """One server's line; ``paths`` are its in-process served and original paths (None: a dash)."""
        measured = find_http(bench, server, model, endpoint, c)
        if measured is None:
            return None
        v2 = find_http(bench, server, model, "v2 infer", c)
        return [
            label,
            p50(model, paths[0]),
            p50(model, paths[1]),
            num(measured["rows_per_s"]),
            times(get(measured, "vs_ceiling", "throughput")),
            times(get(measured, "vs_bare", "throughput")),
            times(get(measured, "vs_baseline", "throughput")),
            ms(get(find_http(bench, server, model, endpoint, tail), "latency_ms", "p99")),
            num(get(find_http(bench, server, model, "/predict/batch", c), "rows_per_s")),
            num(get(v2, "rows_per_s")),
            times(get(v2, "vs_bare", "throughput")),
            num(get(servers.get((server, model)), "rss_tree_mb")),
        ]

    rows = [row("ceiling (raw ASGI)", "ceiling", None, "constant", (None, None))]
    rows.append(row("bare FastAPI route", "bare", None, "/predict", (None, None)))
    for model in bench["settings"]["models"]:
        rows.append(row(f"baseline {model}", "baseline", model, "/predict", ("baseline", None)))
        rows.append(row(f"**ours {model}**", "ours", model, "/predict", (served_path(model), "original")))
        rows.append(row(f"ours {model}, 2 workers", "ours-2w", model, "/predict", (None, None)))
        rows.append(row(f"ours {model}, keys + limits + payload log", "ours-enabled", model, "/predict", (None, None)))
    header = [
        "server, model",
        "1 row p50 µs",
        "original µs",
        f"/predict req/s c={c}",
        "×ceiling",
        "×bare",
        "×baseline",
        f"p99 ms c={tail}",
        f"batch rows/s c={c}",
        f"V2 req/s c={c}",
        "V2 ×bare",
        "RSS MB (every process)",
    ]
    return table(header, (r for r in rows if r is not None))


def _variant(rows: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    return next((row for row in rows or [] if row["variant"] == name), None)


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def _readme_guard_lines(bench: dict[str, Any]) -> list[str]:
    """The guard's cost and the overload runs of the same run, when it measured them (older runs did not)."""
    lines: list[str] = []
    guard = bench.get("guard")
    if guard:
        asgi = _variant(guard.get("asgi"), "keys + limits")
        http_rows = get(guard, "http", "variants")
        http, unshed = _variant(http_rows, "keys + limits"), _variant(http_rows, "shedding off")
        lines += [
            f"**The guard** (same run, {guard['model']}): API keys + rate limits in memory add "
            f"{_signed(get(asgi, 'added_p50_us'))} µs to a `/predict` in-process (p50 through the app, "
            f"{times(get(asgi, 'x_off_p50'))} the default's) and {_signed(get(http, 'added_us_per_request'))} µs "
            f"over HTTP (one worker's time per request at c={get(guard, 'http', 'concurrency')}, "
            f"{times(get(http, 'x_default_throughput'))} the default's throughput); with shedding off "
            f"(`MPS_MAX_IN_FLIGHT=0`) the same measure gives {_signed(get(unshed, 'added_us_per_request'))} µs.",
            "",
        ]
    overload = bench.get("overload")
    if overload and overload["cases"]:
        c = overload["concurrency"]
        lines += [f"**Overload** (same run; one worker, wrk c={c}, `/predict`; per-status latencies, raw):", ""]
        rows = []
        for case in overload["cases"]:
            under, reference = case["overload"], case["reference"]
            admitted, shed = under["statuses"].get("200"), under["statuses"].get("503")
            health = under["health"]["latency_ms"]
            failed = sum(under["health"]["failures"].values()) + under["health"].get("over_timeout", 0)
            failures = f" ({failed} of {under['health']['probes']} failed)" if failed else ""
            rows.append(
                [
                    case["model"],
                    str(case["max_in_flight"]) if case["max_in_flight"] else "0 (off)",
                    num(get(admitted, "per_s")),
                    f"{ms(get(admitted, 'latency_ms', 'p99'))} ({ms(get(admitted, 'steady_latency_ms', 'p99'))}; "
                    f"{ms(get(reference['statuses'].get('200'), 'latency_ms', 'p99'))})",
                    num(get(shed, "count")),
                    f"{ms(get(shed, 'latency_ms', 'p99'))} ({ms(get(shed, 'steady_latency_ms', 'p99'))})",
                    str(under["socket_error_count"]),
                    f"{ms(health['p99'])} / {ms(health['max'])}{failures}",
                ]
            )
        header = [
            "model",
            "MPS_MAX_IN_FLIGHT",
            "200/s",
            "200 p99 ms (after 1 s; at c=8)",
            "503",
            "503 p99 ms (after 1 s)",
            "socket errors",
            "/health/live p99 / max ms",
        ]
        lines += [*table(header, rows), ""]
    return lines


def _readme_monitoring_lines(bench: dict[str, Any]) -> list[str]:
    """Monitoring's cost per row and the two-worker scrape of the same run, when it measured them (older runs did
    not)."""
    monitoring = bench.get("monitoring")
    if not monitoring:
        return []
    parts = []
    observed = monitoring.get("observe") or []
    if observed:
        one = [row["one"]["p50_us"] for row in observed]
        many = [row["many"]["p50_us"] for row in observed]
        parts.append(
            f"`Monitor.observe_one` costs {min(one):.2f}–{max(one):.2f} µs per served row over the "
            f"{len(observed)} models (median, its flush included), `observe_many` {min(many):.2f}–{max(many):.2f} µs "
            "per row of a 1,000-row batch"
        )
    served = [row for row in monitoring.get("app") or [] if row["variant"] == "served"]
    if served:
        added = ", ".join(
            f"{_signed(row['added_p50_us'])} µs to {row['model']} ({times(row['x_off_p50'])})" for row in served
        )
        parts.append(f"through the app, the monitor as served adds {added} per `/predict` against none (p50)")
    scrape = monitoring.get("scrape")
    if scrape:
        latency = scrape["latency_ms"]
        parts.append(
            f"`GET /metrics` with {scrape['workers']} workers ({scrape['model']}, after "
            f"{scrape['traffic']['rows']:,} rows) takes {ms(latency['p50'])} ms (p99 {ms(latency['p99'])}, max "
            f"{ms(latency['max'])} over {scrape['scrapes']} scrapes) for {num(scrape['bytes']['max'])} bytes, "
            f"{scrape['series']} series"
        )
    return [f"**Monitoring** (same run): {'; '.join(parts)}.", ""] if parts else []


def _readme_peer_rows(peers: dict[str, Any]) -> list[str]:
    c = REFERENCE_CONCURRENCY
    rows = []
    for model in peers["settings"]["models"]:
        ours = find_http(peers, "ours", model, "v2 infer", c)
        joblib_path = find_http(peers, "ours-joblib", model, "v2 infer", c)
        for r in (x for x in peers.get("http", []) if x["server"].startswith("mlserver") and x["model"] == model):
            if r["concurrency"] != c:
                continue
            rows.append(
                [
                    model,
                    server_label(r),
                    num(r["rows_per_s"]),
                    ms(r["latency_ms"]["p99"]),
                    num(get(ours, "rows_per_s")),
                    times(ratio(get(ours, "rows_per_s"), r["rows_per_s"])),
                    num(get(joblib_path, "rows_per_s")),
                    times(ratio(get(joblib_path, "rows_per_s"), r["rows_per_s"])),
                ]
            )
    header = [
        "model",
        "MLServer",
        f"req/s c={c}",
        "p99 ms",
        "ours V2 req/s",
        "ours ×MLServer",
        "ours (MPS_FAST_PATH=false) req/s",
        "×MLServer",
    ]
    return table(header, rows)


def _probe_summary(peers: dict[str, Any]) -> list[str]:
    """One line per probe: the statuses MLServer answered across the models."""
    statuses: dict[str, list[str]] = {}
    for c in peers.get("capabilities", []):
        statuses.setdefault(c["probe"], []).append(f"{c['model']} {c['status']}")
    return [f"{probe}: {', '.join(answers)}" for probe, answers in statuses.items()]


def update_readme(section: str, readme: Path = README) -> None:
    """Replace what lies between the perf markers (and nothing else)."""
    text = readme.read_text()
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {START_MARKER} ... {END_MARKER} section")
    head = text[: start + len(START_MARKER)]
    readme.write_text(head + "\n" + section.rstrip("\n") + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    """Write the README's performance section from the latest results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__)
    parser.add_argument("--bench", type=Path, help="results folder of make bench (default: the latest full one)")
    parser.add_argument("--peers", type=Path, help="results folder of make bench-peers (default: the latest)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--mode", default="full", help="which runs count as latest (full, or quick to try it out)")
    args = parser.parse_args(argv)
    folders = {
        "bench": args.bench or latest("bench", args.results_dir, args.mode),
        "peers": args.peers or latest("peers", args.results_dir, args.mode),
    }
    loaded = {k: json.loads((v / "results.json").read_text()) if v else None for k, v in folders.items()}
    section = readme_section(loaded["bench"], loaded["peers"], {k: v for k, v in folders.items() if v})
    update_readme(section, args.readme)
    for kind, folder in folders.items():
        sys.stdout.write(f"{kind}: {_relative(folder) if folder else 'no results'}\n")
    sys.stdout.write(f"wrote the performance section of {args.readme}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
