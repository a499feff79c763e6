"""Monitoring's cost: per served row in-process, and ``GET /metrics`` of the real server with two workers.

The service counts every served row against its model's reference profile (``server/monitoring.Monitor``). Its
targets (``benchmarks.targets``): at most 5 µs per served row in-process, and a scrape of two workers in under
50 ms. Measured three ways in one run:

- ``observe``: ``Monitor.observe_one`` alone, timed in blocks of rows (each block pays the flush to the Prometheus
  counters that every ``FLUSH_ROWS`` rows trigger), and ``observe_many`` of ``BATCH_ROWS`` rows, per row; on the
  registry's manifests, the iris rows and their golden top-class probabilities.
- ``app``: ``/predict`` through the whole app (``benchmarks.asgi``), one app whose data plane wears in turns the
  monitor it serves with, one built from its manifest without ``reference`` (inactive: the confidence histogram
  only, as a model promoted without a profile) and one that observes nothing (off).
- ``scrape``: ``python -m ml_production_service`` with ``MPS_WORKERS=2``; after some traffic, ``GET /metrics`` on a
  fresh connection each time (either worker may answer; each aggregates every worker's files).

``python -m benchmarks.monitoring [--quick]`` runs these alone and prints the results.md section (no results
folder); ``make bench`` runs them with the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import asgi
from benchmarks.client import http_request
from benchmarks.endpoints import ROW, batch_json, single_json, v2_body
from benchmarks.inprocess import BATCH_ROWS, iris_rows, timing_summary
from benchmarks.processes import RunningServer, ServerError, running
from benchmarks.servers import ServerSpec, ours_spec
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType, ServiceConfig
from ml_production_service.features import FloatArray
from ml_production_service.manifest import ModelManifest
from ml_production_service.registry import read_manifest
from ml_production_service.server.app import create_app
from ml_production_service.server.dataplane import DataPlane
from ml_production_service.server.monitoring import FLUSH_ROWS, Monitor

MONITORED = [ModelType.HEURISTIC, ModelType.RANDOM_FOREST]
"""The models ``/predict`` is timed through the app for: the cheapest model, and the slowest one that runs inline."""
SCRAPED = ModelType.RANDOM_FOREST
SCRAPE_WORKERS = 2
SERVED, INACTIVE, OFF = "served", "inactive", "off"
"""The app's variants: the monitor as served, one without a reference profile, one that observes nothing."""
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFUSED_BODY = b'{"sepal_length": -1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
"""One refused row in the traffic, so that the scrape carries a validation-error series too."""


@dataclass(frozen=True)
class MonitoringBudget:
    """How long the in-process measures run: ``blocks`` of ``block_rows`` ``observe_one`` calls, ``batches`` timed
    ``observe_many`` calls of ``BATCH_ROWS`` rows, and the app's variants in turns."""

    blocks: int
    block_rows: int
    batches: int
    app: asgi.TurnBudget


@dataclass(frozen=True)
class ScrapeBudget:
    """The traffic sent before scraping (one-row ``/predict``s, then ``/predict/batch``es of ``batch_rows``), and how
    many scrapes are timed after ``warmup`` untimed ones (a worker's first render is cold)."""

    singles: int
    batches: int
    batch_rows: int
    warmup: int
    scrapes: int


class Unobserved(Monitor):
    """A monitor that observes nothing: the data plane as it would be without monitoring."""

    def observe_one(self, row: FloatArray, top_probability: float) -> list[str]:  # noqa: ARG002
        """Nothing counted, nothing out of range."""
        return []

    def observe_many(self, rows: FloatArray, top_probabilities: FloatArray) -> list[list[str]]:  # noqa: ARG002
        """Nothing counted, nothing out of range."""
        return [[] for _ in range(len(rows))]

    def flush(self) -> None:
        """Nothing gathered."""


def without_reference(manifest: ModelManifest) -> ModelManifest:
    """A copy of ``manifest`` without its reference profile (what makes a ``Monitor`` inactive)."""
    return manifest.model_copy(update={"reference": None})


def _top_probabilities(manifest: ModelManifest, rows: int) -> FloatArray:
    """The promoted model's top-class probability on each iris row (its golden answers); 1.0 without them."""
    if manifest.golden is None:
        return np.ones(rows)
    return np.asarray([max(row) for row in manifest.golden.probabilities], dtype=np.float64)


def _per_row(timings_ns: list[int], rows: int) -> dict[str, float]:
    """Median, p99 and mean in µs per row of calls (or blocks) of ``rows`` rows each, and how many were timed."""
    summary = timing_summary(timings_ns)
    return {
        "p50_us": summary["p50_us"] / rows,
        "p99_us": summary["p99_us"] / rows,
        "mean_us": summary["mean_us"] / rows,
        "calls": summary["calls"],
        "rows_per_call": rows,
    }


def observe_costs(
    model: ModelType, budget: MonitoringBudget, registry_dir: Path = DEFAULT_REGISTRY_DIR
) -> dict[str, Any]:
    """One model's ``observe_one`` and ``observe_many`` per row, with the monitor its manifest gives."""
    manifest = read_manifest(registry_dir, model)
    monitor = Monitor(manifest)
    data = iris_rows()
    tops = _top_probabilities(manifest, len(data))
    singles = [(data[i], float(tops[i])) for i in range(len(data))]
    clock = time.perf_counter_ns
    blocks: list[int] = []
    position = 0
    for block in range(budget.blocks + 1):  # the first block warms up
        started = clock()
        for _ in range(budget.block_rows):
            row, top = singles[position % len(singles)]
            monitor.observe_one(row, top)
            position += 1
        if block:
            blocks.append(clock() - started)
    batch = np.resize(data, (BATCH_ROWS, data.shape[1]))
    batch_tops = np.resize(tops, BATCH_ROWS)
    calls: list[int] = []
    for call in range(budget.batches + 1):
        started = clock()
        monitor.observe_many(batch, batch_tops)
        if call:
            calls.append(clock() - started)
    monitor.flush()
    return {
        "model": model.value,
        "active": monitor.active,
        "one": _per_row(blocks, budget.block_rows),
        "many": _per_row(calls, BATCH_ROWS),
    }


async def _app_costs(model: ModelType, budget: asgi.TurnBudget, registry_dir: Path) -> list[dict[str, Any]]:
    app = create_app(ServiceConfig(model_type=model, registry_dir=registry_dir, log_level="INFO", log_format="json"))
    async with app.router.lifespan_context(app):
        plane: DataPlane = app.state.data_plane
        served = plane.monitor
        inactive = without_reference(plane.predictor.manifest)
        wearing = {SERVED: served, INACTIVE: Monitor(inactive), OFF: Unobserved(inactive)}
        contenders = [
            asgi.Contender(name, app, partial(setattr, plane, "monitor", monitor)) for name, monitor in wearing.items()
        ]
        try:
            timings = await asgi.in_turns(contenders, asgi.predict_request(), budget)
        finally:
            plane.monitor = served
    return asgi.compared(model, timings, OFF)


def app_costs(
    model: ModelType, budget: asgi.TurnBudget, registry_dir: Path = DEFAULT_REGISTRY_DIR
) -> list[dict[str, Any]]:
    """``/predict`` through the app per variant (served, inactive, off): p50, p99, mean, added to ``off``."""
    return asgi.run_quietly(_app_costs(model, budget, registry_dir))


def monitored_models(models: list[ModelType]) -> list[ModelType]:
    """The run's models timed through the app (``MONITORED``); the first model when it has none of them."""
    return [m for m in models if m in MONITORED] or models[:1]


def scraped_model(models: list[ModelType]) -> ModelType:
    """The model the scrape is measured on: ``SCRAPED``, else the run's first."""
    return SCRAPED if SCRAPED in models else models[0]


def series_lines(text: str) -> int:
    """The samples of an exposition text (its lines that are neither comments nor blank)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scrape_spec(model: str, metrics_dir: Path) -> ServerSpec:
    """Our server with two workers, their metrics files in ``metrics_dir`` (emptied by the server command)."""
    spec = ours_spec(model, "ours", MPS_WORKERS=str(SCRAPE_WORKERS))
    return replace(spec, env={**spec.env, MULTIPROCESS_ENV: str(metrics_dir)})


def _wait_workers(server: RunningServer, timeout_s: float = 120.0) -> None:
    """Ready answers once one worker is: wait until every worker has logged its loaded model."""
    deadline = time.monotonic() + timeout_s
    while server.log_tail(1_000_000).count('"event":"model_loaded"') < SCRAPE_WORKERS:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise ServerError(f"{SCRAPE_WORKERS} workers not loaded after {timeout_s:.0f} s: {server.log_tail()}")
        time.sleep(0.05)


def _send(url: str, path: str, body: bytes, expected: int = 200) -> None:
    status, answer = http_request(url, path, body)
    if status != expected:
        raise ServerError(f"{path} answered {status} during the scrape's traffic: {answer[:300]!r}")


def _traffic(url: str, model: str, budget: ScrapeBudget) -> dict[str, int]:
    """One-row ``/predict``s, ``/predict/batch``es, a V2 infer and a refused row, each on a fresh connection."""
    for _ in range(budget.singles):
        _send(url, "/predict", single_json())
    batch = batch_json(budget.batch_rows)
    for _ in range(budget.batches):
        _send(url, "/predict/batch", batch)
    _send(url, f"/v2/models/{model}/infer", v2_body(ROW))
    _send(url, "/predict", REFUSED_BODY, expected=422)
    return {
        "requests": budget.singles + budget.batches + 2,
        "rows": budget.singles + budget.batches * budget.batch_rows + 1,
    }


def _scrape(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    status, body = http_request(url, "/metrics")
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status != 200:
        raise ServerError(f"/metrics answered {status}: {body[:300]!r}")
    return elapsed_ms, body.decode()


def scrape(model: str, budget: ScrapeBudget, work: Path) -> dict[str, Any]:
    """Start our server with two workers, send the traffic, time the scrapes; what they returned."""
    metrics_dir = work / f"metrics-{model}"
    metrics_dir.mkdir(exist_ok=True)
    with running(scrape_spec(model, metrics_dir), work) as server:
        _wait_workers(server)
        url = server.spec.url
        traffic = _traffic(url, model, budget)
        warmup = [_scrape(url)[0] for _ in range(budget.warmup)]
        timed = [_scrape(url) for _ in range(budget.scrapes)]
        files = list(metrics_dir.glob("*.db"))
        settings = server.spec.settings
    milliseconds = [elapsed for elapsed, _ in timed]
    last = timed[-1][1]
    sizes = [len(text.encode()) for _, text in timed]
    return {
        "model": model,
        "workers": SCRAPE_WORKERS,
        "settings": settings,
        "traffic": traffic,
        "warmup_ms": warmup,
        "scrapes": len(timed),
        "timings_ms": milliseconds,
        "latency_ms": {
            "p50": statistics.median(milliseconds),
            "p99": float(np.percentile(milliseconds, 99)),
            "max": max(milliseconds),
            "mean": statistics.fmean(milliseconds),
        },
        "bytes": {"min": min(sizes), "max": max(sizes)},
        "series": series_lines(last),
        "predictions_counted": sample_sum(last, "mps_predictions_total", model_type=model),
        "metrics_files": len(files),
        "metrics_files_bytes": sum(path.stat().st_size for path in files),
    }


def measure_inprocess(
    models: list[ModelType], budget: MonitoringBudget, registry_dir: Path = DEFAULT_REGISTRY_DIR
) -> dict[str, Any]:
    """``observe`` for every model, ``app`` for the monitored ones."""
    return {
        "flush_rows": FLUSH_ROWS,
        "observe": [observe_costs(model, budget, registry_dir) for model in models],
        "app": [row for model in monitored_models(models) for row in app_costs(model, budget.app, registry_dir)],
    }


def observe_line(row: dict[str, Any]) -> str:
    """One model's observe figures, for the progress output."""
    one, many = row["one"], row["many"]
    return (
        f"{row['model']:<14} observe_one {one['p50_us']:5.2f} µs/row (p99 {one['p99_us']:5.2f})  "
        f"observe_many {many['p50_us']:5.3f} µs/row (p99 {many['p99_us']:5.3f})"
    )


def app_line(row: dict[str, Any]) -> str:
    """One variant's ``/predict`` through the app, for the progress output."""
    return (
        f"{row['model']:<14} {row['variant']:<9} p50 {row['p50_us']:7.1f} µs  mean {row['mean_us']:7.1f} µs  "
        f"added p50 {row['added_p50_us']:+5.1f} µs ({row['x_off_p50']:.3f}x)"
    )


def scrape_line(row: dict[str, Any]) -> str:
    """The scrape's figures, for the progress output."""
    latency = row["latency_ms"]
    return (
        f"{row['model']} {row['workers']} workers, {row['traffic']['rows']:,} rows served: {row['scrapes']} scrapes "
        f"p50 {latency['p50']:.2f} ms  p99 {latency['p99']:.2f} ms  max {latency['max']:.2f} ms  "
        f"{row['bytes']['max']:,} bytes  {row['series']} series"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure monitoring alone (in-process and the scrape), print the results.md section, and optionally the JSON."""
    from benchmarks.collector import say  # the collector imports the plan, which imports this module's budgets
    from benchmarks.plan import FULL, QUICK
    from benchmarks.report import monitoring_section

    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitoring", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: proves it runs")
    parser.add_argument("--models", default=",".join(m.value for m in ModelType), help="comma-separated model types")
    parser.add_argument("--json", type=Path, help="also write the measures to this file")
    parser.add_argument("--skip-scrape", action="store_true", help="in-process only")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    models = [ModelType(name.strip()) for name in args.models.split(",") if name.strip()]
    say(f"load average at start: {os.getloadavg()[0]:.2f}")
    measured = measure_inprocess(models, mode.monitoring)
    for row in measured["observe"]:
        say(observe_line(row))
    for row in measured["app"]:
        say(app_line(row))
    if not args.skip_scrape:
        with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as scratch:
            measured["scrape"] = scrape(scraped_model(models).value, mode.scrape, Path(scratch))
        say(scrape_line(measured["scrape"]))
    say(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2) + "\n")
    say("\n".join(monitoring_section(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
