"""Run the benchmark: ``python -m benchmarks.run [--quick] [--peers]``; writes benchmarks/results/<timestamp>/.

One run measures, on this machine: in-process latency of every model (served path, original, baseline call),
then HTTP load with wrk against the ceiling, the tutorial baseline and our server (``--peers``: against
MLServer serving the same artifacts instead), and writes results.json, results.md and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from benchmarks import figures, inprocess, load, peers, report
from benchmarks.servers import (
    REPOSITORY,
    ServerError,
    ServerSpec,
    baseline_spec,
    ceiling_spec,
    check_answer,
    ours_spec,
    running,
)
from ml_production_service import __version__
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.registry import read_manifest

RESULTS_DIR = REPOSITORY / "benchmarks" / "results"
ROW = [6.3, 3.3, 6.0, 2.5]
"""The single row every single-row request sends (a virginica; every model reads all four features)."""
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FITTED = [ModelType.DECISION_TREE, ModelType.RANDOM_FOREST, ModelType.XGBOOST]
VERSION_DISTRIBUTIONS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "orjson",
    "numpy",
    "scikit-learn",
    "xgboost-cpu",
    "onnxruntime",
    "structlog",
    "prometheus-client",
)


@dataclass(frozen=True)
class Mode:
    """How long and how hard one run measures."""

    name: str
    duration_s: int
    warmup_s: int
    concurrency: tuple[int, ...]
    batch_rows: int
    single: inprocess.Budget
    batch: inprocess.Budget


FULL = Mode(
    "full",
    duration_s=5,
    warmup_s=1,
    concurrency=(1, 8, 64),
    batch_rows=100,
    single=inprocess.Budget(calls=3000, seconds=3.0, floor=200, warmup=100),
    batch=inprocess.Budget(calls=300, seconds=3.0, floor=20, warmup=5),
)
QUICK = Mode(
    "quick",
    duration_s=1,
    warmup_s=0,
    concurrency=(1, 8),
    batch_rows=10,
    single=inprocess.Budget(calls=50, seconds=0.5, floor=10, warmup=5),
    batch=inprocess.Budget(calls=5, seconds=0.5, floor=2, warmup=1),
)


@dataclass(frozen=True)
class Endpoint:
    """One route under load: what each request sends, how many rows it carries, and what a good answer holds."""

    name: str
    path: str
    body: bytes | None
    rows: int
    valid: Callable[[bytes], bool]
    headers: dict[str, str] = field(default_factory=dict)


def _has(*keys: str) -> Callable[[bytes], bool]:
    def valid(answer: bytes) -> bool:
        parsed = orjson.loads(answer)
        return isinstance(parsed, dict) and all(key in parsed for key in keys)

    return valid


def _batch_of(rows: int) -> Callable[[bytes], bool]:
    return lambda answer: len(orjson.loads(answer).get("predictions", [])) == rows


def _v2_probabilities(answer: bytes) -> bool:
    outputs = {output["name"]: output for output in orjson.loads(answer).get("outputs", [])}
    return "predict_proba" in outputs and len(outputs["predict_proba"]["data"]) in (3, 1)


def single_json() -> bytes:
    """The named-feature body of ``/predict`` (ours and the baseline's)."""
    return orjson.dumps(dict(zip(FEATURES, ROW, strict=True)))


def batch_json(rows: int) -> bytes:
    """A ``/predict/batch`` body of ``rows`` iris rows."""
    data = inprocess.iris_rows()
    return orjson.dumps(
        {"instances": [dict(zip(FEATURES, data[i % len(data)].tolist(), strict=True)) for i in range(rows)]}
    )


def ceiling_endpoints() -> list[Endpoint]:
    """The ceiling answers anything; it gets the same body as /predict."""
    return [Endpoint("constant", "/predict", single_json(), 1, lambda _: True)]


def baseline_endpoints() -> list[Endpoint]:
    """The tutorial app's one route."""
    return [Endpoint("/predict", "/predict", single_json(), 1, _has("prediction"))]


def v2_endpoint(model: str, row: list[float] | None = None) -> Endpoint:
    """V2 infer of one row, asking for ``predict_proba`` only."""
    return Endpoint("v2 infer", f"/v2/models/{model}/infer", peers.v2_body(row or ROW), 1, _v2_probabilities)


def ours_endpoints(model: str, batch_rows: int) -> list[Endpoint]:
    """Our /predict, /predict/batch (``batch_rows`` rows a request) and V2 infer."""
    return [
        Endpoint("/predict", "/predict", single_json(), 1, _has("prediction", "probabilities", "model_version")),
        Endpoint("/predict/batch", "/predict/batch", batch_json(batch_rows), batch_rows, _batch_of(batch_rows)),
        v2_endpoint(model),
    ]


@dataclass
class Run:
    """Everything one run collects, then written as results.json."""

    mode: Mode
    kind: str
    servers: list[dict[str, Any]] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    capabilities: list[dict[str, Any]] = field(default_factory=list)

    def measure(
        self, build: Callable[[], ServerSpec], endpoints: list[Endpoint], log_dir: Path, probe: bool = False
    ) -> None:
        """Start the server, check each endpoint answers well, load it at every concurrency, record memory; stop."""
        spec = build()
        label = f"{spec.name} {spec.model or ''}".strip()
        say(f"  {label}: starting")
        try:
            with running(spec, log_dir) as server:
                idle = server.memory()
                for endpoint in endpoints:
                    check_answer(server, endpoint.path, endpoint.body, endpoint.valid)
                if probe:
                    for result in peers.probe_capabilities(server, ROW):
                        self.capabilities.append({"server": spec.name, "model": spec.model, **result})
                for endpoint in endpoints:
                    self._load(spec, endpoint)
                loaded = server.memory()
                self.servers.append(
                    {
                        "server": spec.name,
                        "model": spec.model,
                        "settings": spec.settings,
                        "start_to_ready_s": server.start_to_ready_s,
                        "rss_idle_mb": idle["rss_mb"],
                        "rss_mb": loaded["rss_mb"],
                        "hwm_mb": loaded["hwm_mb"],
                        "rss_tree_mb": loaded["rss_tree_mb"],
                        "processes": loaded["processes"],
                    }
                )
                say(f"  {label}: start to ready {server.start_to_ready_s:.2f} s, RSS {loaded['rss_tree_mb']:.0f} MB")
        except (ServerError, load.LoadError, OSError, ValueError) as error:
            say(f"  {label}: FAILED {error}")
            self.failures.append({"server": spec.name, "model": spec.model, "error": str(error)[:2000]})

    def _load(self, spec: ServerSpec, endpoint: Endpoint) -> None:
        request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
        if self.mode.warmup_s:
            load.run_load(spec.url, request, 8, self.mode.warmup_s)
        for concurrency in self.mode.concurrency:
            summary = load.run_load(spec.url, request, concurrency, self.mode.duration_s)
            seconds = summary["duration_us"] / 1e6
            rps = summary["requests"] / seconds if seconds else 0.0
            errors = sum(summary["errors"].values())
            self.http.append(
                {
                    "server": spec.name,
                    "model": spec.model,
                    "endpoint": endpoint.name,
                    "concurrency": concurrency,
                    "rows_per_request": endpoint.rows,
                    "requests": summary["requests"],
                    "duration_s": seconds,
                    "requests_per_s": rps,
                    "rows_per_s": rps * endpoint.rows,
                    "latency_ms": {k: v / 1000 for k, v in summary["latency_us"].items()},
                    "errors": summary["errors"],
                    "error_count": errors,
                    "generator": summary["generator"],
                    "settings": spec.settings,
                }
            )
            lat = summary["latency_us"]
            say(
                f"    {endpoint.name:<15} c={concurrency:<3} {rps * endpoint.rows:>10,.0f} rows/s  "
                f"p50 {lat['p50'] / 1000:7.2f} ms  p99 {lat['p99'] / 1000:7.2f} ms  errors {errors}"
            )


def say(message: str) -> None:
    """Progress on stdout, flushed (make shows it as it comes)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_generator": f"wrk {load.wrk_version()} (1 thread)" if load.wrk_path() else "python asyncio fallback",
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        "loadavg_start": list(os.getloadavg()),
    }


def versions() -> dict[str, str | None]:
    """Versions of the service and what it runs on."""
    found: dict[str, str | None] = {"ml-production-service": __version__}
    for name in VERSION_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


Plan = list[tuple[Callable[[], ServerSpec], list[Endpoint], bool]]
"""Each server to measure: how to build its spec (ports are picked just before it starts), its endpoints, and
whether to probe its capabilities."""


def artifacts(registry_dir: Path, models: list[ModelType]) -> dict[str, dict[str, str | None]]:
    """Version and sha256 of each model's registry artifact at the start of the run."""
    found = {}
    for model in models:
        try:
            manifest = read_manifest(registry_dir, model)
        except ModelLoadError:
            continue
        found[model.value] = {"version": manifest.version, "sha256": manifest.sha256}
    return found


def bench_plan(mode: Mode, models: list[ModelType], registry_dir: Path) -> Plan:
    """make bench: the ceiling, then the baseline and ours for every model."""
    plan: Plan = [(ceiling_spec, ceiling_endpoints(), False)]
    plan += [(partial(baseline_spec, m.value, registry_dir), baseline_endpoints(), False) for m in models]
    plan += [(partial(ours_spec, m.value), ours_endpoints(m.value, mode.batch_rows), False) for m in models]
    return plan


def peers_plan(mode: Mode, models: list[ModelType], registry_dir: Path, work: Path, venv: Path) -> Plan:
    """make bench-peers: the ceiling; per fitted model the baseline, our V2 (fast and joblib) and MLServer's."""
    plan: Plan = [(ceiling_spec, ceiling_endpoints(), False)]
    variants = [0, 1] if mode.name == "full" else [1]
    for model in (m for m in models if m in FITTED):
        name = model.value
        plan.append((partial(baseline_spec, name, registry_dir), baseline_endpoints(), False))
        plan.append((partial(ours_spec, name), [v2_endpoint(name)], False))
        plan.append((partial(ours_spec, name, "ours-joblib", MPS_FAST_PATH="false"), [v2_endpoint(name)], False))
        for workers in variants:
            root = work / f"mlserver-{name}-sklearn-pw{workers}"
            spec = partial(peers.mlserver_spec, root, model, "sklearn", registry_dir, workers, venv)
            plan.append((spec, [v2_endpoint(name)], workers == 1))
        if model == ModelType.XGBOOST:
            root = work / f"mlserver-{name}-xgboost-pw1"
            spec = partial(peers.mlserver_spec, root, model, "xgboost", registry_dir, 1, venv)
            plan.append((spec, [v2_endpoint(name, peers.engineered_row(ROW))], False))
    return plan


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
    parser.add_argument("--command", default=os.environ.get("BENCH_COMMAND"), help="the command recorded")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, write the results folder, print the tables; non-zero if a server of ours or a reference failed."""
    args = parse_args(argv)
    mode = QUICK if args.quick else FULL
    kind = "peers" if args.peers else "bench"
    models = [ModelType(name.strip()) for name in args.models.split(",") if name.strip()]
    if not args.quick and load.wrk_path() is None:
        say(f"wrk is not installed: run `{load.WRK_INSTALL_HINT}` (as root), then run this again")
        return 2
    if args.peers and not peers.mlserver_bin(args.mlserver_venv).exists():
        say(f"MLServer is not installed in {args.mlserver_venv}: run `make bench-peers` (it creates the venv)")
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "".join(s for s, on in (("-peers", args.peers), ("-quick", args.quick)) if on)
    out = args.out or RESULTS_DIR / f"{stamp}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {
        "schema": 1,
        "kind": kind,
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
    }
    results["artifacts"] = artifacts(args.registry_dir, models)
    if args.peers:
        results["versions_mlserver"] = peers.mlserver_versions(args.mlserver_venv)
        results["peer_notes"] = peers.NOTES
    if not args.skip_inprocess and not args.peers:
        say("in-process latency")
        results["inprocess"] = inprocess.measure(models, mode.single, mode.batch)
        for row in results["inprocess"]:
            say(
                f"  {row['model']:<14} {row['path']:<9} {row['kind']:<7} "
                f"p50 {row['p50_us']:9.1f} us  p99 {row['p99_us']:9.1f} us"
            )
    run = Run(mode, kind)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(scratch)
        if args.peers:
            plan = peers_plan(mode, models, args.registry_dir, work, args.mlserver_venv)
        else:
            plan = bench_plan(mode, models, args.registry_dir)
        say("HTTP load")
        for build, endpoints, probe in plan:
            run.measure(build, endpoints, work, probe)
    results.update(
        servers=run.servers,
        http=run.http,
        failures=run.failures,
        capabilities=run.capabilities,
    )
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["elapsed_s"] = time.time() - started
    report.add_ratios(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    figures.write_figures(results, out)
    say("")
    say(markdown)
    say(f"results: {out.relative_to(REPOSITORY) if out.is_relative_to(REPOSITORY) else out}")
    ours_failed = [f for f in run.failures if not f["server"].startswith("mlserver")]
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
