"""Run the benchmark: ``python -m benchmarks.run [--quick] [--peers]``; writes benchmarks/results/<timestamp>/.

One run measures, on this machine: in-process latency of every model (served path, original, baseline call), of
``/predict`` through the app with and without the guard, and monitoring's cost per served row; then HTTP load with
wrk against the ceiling, the tutorial baseline and our server (default and guarded), the guard's HTTP A/B, one
worker under overload and the ``/metrics`` scrape of two workers (``--peers``: MLServer serving the same artifacts
instead), and writes results.json, results.md and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    REPOSITORY,
    RESULTS_DIR,
    asgi,
    figures,
    guard,
    inprocess,
    load,
    monitoring,
    overload,
    peers,
    report,
    startup,
)
from benchmarks.collector import ResultCollector, say
from benchmarks.endpoints import ROW
from benchmarks.guard import BenchKey
from benchmarks.machine import artifacts, machine, versions
from benchmarks.plan import FULL, QUICK, Mode, bench_plan, guard_model, overload_models, peers_plan
from benchmarks.processes import ServerError
from benchmarks.ratios import add_ratios
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds, tiny counts: proves the harness works")
    parser.add_argument("--peers", action="store_true", help="MLServer against our V2 (make bench-peers)")
    parser.add_argument(
        "--models", default=",".join(m.value for m in ModelType), help="comma-separated model types (default: all)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/<timestamp>)")
    parser.add_argument("--mlserver-venv", type=Path, default=peers.MLSERVER_VENV)
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR)
    parser.add_argument("--skip-inprocess", action="store_true", help="HTTP only")
    parser.add_argument("--skip-guard", action="store_true", help="without the guard's rows (in-process and HTTP)")
    parser.add_argument("--skip-overload", action="store_true", help="without the overload runs")
    parser.add_argument("--skip-monitoring", action="store_true", help="without monitoring's cost and the scrape")
    parser.add_argument("--skip-startup", action="store_true", help="without start-up and memory per process")
    parser.add_argument("--command", default=os.environ.get("BENCH_COMMAND"), help="the command recorded")
    return parser.parse_args(argv)


def missing_tool(args: argparse.Namespace) -> str | None:
    """Why this run cannot start (wrk or MLServer's venv is missing), or None."""
    if load.wrk_path() is None:
        return f"wrk is not installed: {load.WRK_INSTALL_HINT}, then run this again"
    if args.peers and not peers.mlserver_bin(args.mlserver_venv).exists():
        return f"MLServer is not installed in {args.mlserver_venv}: run `make bench-peers` (it creates the venv)"
    return None


def header(args: argparse.Namespace, argv: list[str] | None, mode: Mode, models: list[ModelType]) -> dict[str, Any]:
    """The start of results.json: what, when, by which command, on what, with which settings and artifacts."""
    results: dict[str, Any] = {
        "schema": 1,
        "kind": "peers" if args.peers else "bench",
        "mode": mode.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command or "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "duration_s": mode.duration_s,
            "warmup_s": mode.warmup_s,
            "concurrency": list(mode.concurrency),
            "batch_rows": mode.batch_rows,
            "inprocess_batch_rows": inprocess.BATCH_ROWS,
            "row": ROW,
            "models": [m.value for m in models],
        },
        "artifacts": artifacts(args.registry_dir, models),
    }
    if args.peers:
        results["versions_mlserver"] = peers.mlserver_versions(args.mlserver_venv)
        results["peer_notes"] = peers.NOTES
    return results


def measure_inprocess(models: list[ModelType], mode: Mode) -> list[dict[str, Any]]:
    """In-process latency rows of every model, printed as they come."""
    say("in-process latency")
    rows = inprocess.measure(models, mode.single, mode.batch)
    for row in rows:
        say(
            f"  {row['model']:<14} {row['path']:<9} {row['kind']:<7} "
            f"p50 {row['p50_us']:9.1f} us  p99 {row['p99_us']:9.1f} us"
        )
    return rows


def measure_guard_asgi(model: ModelType, key: BenchKey, mode: Mode) -> list[dict[str, Any]]:
    """In-process ``/predict`` through the app, off and with each part of the guard, printed as they come."""
    say(f"guard in-process: /predict through the app ({model.value})")
    rows = asgi.measure(model, key, mode.guard)
    for row in rows:
        say(
            f"  {row['variant']:<14} p50 {row['p50_us']:7.1f} us  p99 {row['p99_us']:7.1f} us  "
            f"added p50 {row['added_p50_us']:+6.1f} us ({row['x_off_p50']:.3f}x)"
        )
    return rows


def measure_monitoring(models: list[ModelType], mode: Mode, registry_dir: Path) -> dict[str, Any]:
    """Monitoring's cost in-process: ``observe_one``/``observe_many`` per row, ``/predict`` through the app."""
    say("monitoring in-process: observe_one and observe_many per row; /predict through the app (served, inactive, off)")
    measured = monitoring.measure_inprocess(models, mode.monitoring, registry_dir)
    for row in measured["observe"]:
        say("  " + monitoring.observe_line(row))
    for row in measured["app"]:
        say("  " + monitoring.app_line(row))
    return measured


def _failed(collector: ResultCollector, server: str, model: str, error: Exception) -> None:
    say(f"  {server} {model}: FAILED {error}")
    collector.failures.append({"server": server, "model": model, "error": str(error)[:2000]})


def measure_guard_http(
    collector: ResultCollector, mode: Mode, model: str, key: BenchKey, work: Path
) -> dict[str, Any] | None:
    """The guard's HTTP A/B (None if a server failed; the failure is recorded)."""
    say(f"guard over HTTP: {model}, the default, shedding off and keys + limits, wrk c=8 in turns")
    try:
        result = guard.measure(model, key, mode.guard_rounds, mode.guard_duration_s, mode.warmup_s, work)
    except (ServerError, load.LoadError, OSError, ValueError) as error:
        _failed(collector, "ours-guard", model, error)
        return None
    for variant in result["variants"]:
        say(
            f"  {variant['variant']:<14} {variant['requests_per_s']:>8,.0f} req/s  "
            f"{variant['us_per_request']:7.1f} us/request  added {variant['added_us_per_request']:+6.1f} us"
        )
    return result


def measure_overload(collector: ResultCollector, mode: Mode, models: list[ModelType], work: Path) -> dict[str, Any]:
    """Every overload case, one after the other (a failed one is recorded and skipped)."""
    c = mode.overload_concurrency
    say(f"overload: one worker, wrk c={c}, MPS_MAX_IN_FLIGHT {' and '.join(map(str, mode.overload_shedding))}")
    rows = []
    for case in overload.cases([m.value for m in models], mode.overload_shedding):
        try:
            row = overload.measure(case, c, mode.overload_duration_s, mode.warmup_s, work)
        except (ServerError, load.LoadError, OSError, ValueError) as error:
            _failed(collector, "ours", case.model, error)
            continue
        rows.append(row)
        say("  " + overload.summary_line(row))
    return {"concurrency": c, "duration_s": mode.overload_duration_s, "cases": rows}


def measure_scrape(
    collector: ResultCollector, mode: Mode, models: list[ModelType], work: Path
) -> dict[str, Any] | None:
    """``GET /metrics`` of our server with two workers after some traffic (None if it failed; recorded)."""
    model = monitoring.scraped_model(models).value
    say(f"monitoring: GET /metrics of {model}, {monitoring.SCRAPE_WORKERS} workers, after traffic")
    try:
        row = monitoring.scrape(model, mode.scrape, work)
    except (ServerError, OSError, ValueError) as error:
        _failed(collector, "ours", model, error)
        return None
    say("  " + monitoring.scrape_line(row))
    return row


def measure_http(
    args: argparse.Namespace, mode: Mode, models: list[ModelType], work: Path, key: BenchKey | None
) -> tuple[ResultCollector, dict[str, Any]]:
    """Every planned server under load, one after the other; then the guard's A/B and the overload runs."""
    collector = ResultCollector(mode)
    extra: dict[str, Any] = {}
    if args.peers:
        plan = peers_plan(mode, models, args.registry_dir, work, args.mlserver_venv)
    else:
        plan = bench_plan(mode, models, args.registry_dir, key)
    say("HTTP load")
    for step in plan:
        collector.measure(step, work)
    if args.peers:
        return collector, extra
    if key is not None:
        extra["guard_http"] = measure_guard_http(collector, mode, guard_model(models).value, key, work)
    if not args.skip_overload:
        extra["overload"] = measure_overload(collector, mode, overload_models(models), work)
    if not args.skip_monitoring:
        extra["scrape"] = measure_scrape(collector, mode, models, work)
    return collector, extra


def write(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md and the figures; the Markdown is printed too."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    figures.write_figures(results, out)
    say("")
    say(markdown)
    say(f"results: {out.relative_to(REPOSITORY) if out.is_relative_to(REPOSITORY) else out}")


def main(argv: list[str] | None = None) -> int:
    """Run, write the results folder, print the tables; non-zero if a server of ours or a reference failed."""
    args = parse_args(argv)
    if (problem := missing_tool(args)) is not None:
        say(problem)
        return 2
    mode = QUICK if args.quick else FULL
    models = [ModelType(name.strip()) for name in args.models.split(",") if name.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "".join(s for s, on in (("-peers", args.peers), ("-quick", args.quick)) if on)
    out = args.out or RESULTS_DIR / f"{stamp}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = header(args, argv, mode, models)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(scratch)
        key = None if args.peers or args.skip_guard else guard.write_key(work)
        guard_asgi = None
        monitored: dict[str, Any] = {}
        if not args.skip_inprocess and not args.peers:
            results["inprocess"] = measure_inprocess(models, mode)
            if key is not None:
                guard_asgi = measure_guard_asgi(guard_model(models), key, mode)
            if not args.skip_monitoring:
                monitored = measure_monitoring(models, mode, args.registry_dir)
        collector, extra = measure_http(args, mode, models, work, key)
        if not args.peers and not args.skip_startup:
            say("start-up and memory per process: the baseline, ours with 1 and 2 workers (RSS/PSS MB)")
            results["startup"] = startup.measure(models, args.registry_dir, work, say)
    results.update(
        servers=collector.servers,
        http=collector.http,
        failures=collector.failures,
        capabilities=collector.capabilities,
    )
    if key is not None:
        results["guard"] = {
            "model": guard_model(models).value,
            "rate_limit": guard.GUARD_RATE_LIMIT,
            "storage": guard.GUARD_STORAGE,
            "asgi": guard_asgi,
            "http": extra.get("guard_http"),
        }
    if "overload" in extra:
        results["overload"] = extra["overload"]
    if monitored or "scrape" in extra:
        results["monitoring"] = {**monitored, "scrape": extra.get("scrape")}
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["elapsed_s"] = time.time() - started
    add_ratios(results)
    write(results, out)
    ours_failed = [f for f in collector.failures if not f["server"].startswith("mlserver")]
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
