"""Measure each planned server over HTTP and collect what results.json holds: servers, load rows, failures, probes."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.endpoints import ROW, Endpoint
from benchmarks.plan import Mode, Step
from benchmarks.probes import probe_capabilities
from benchmarks.processes import RunningServer, ServerError, running
from benchmarks.servers import ServerSpec


def say(message: str) -> None:
    """Progress on stdout, flushed (make shows it as it comes)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _label(spec: ServerSpec) -> str:
    return f"{spec.name} {spec.model or ''}".strip()


@dataclass
class ResultCollector:
    """The HTTP part of one run's results: a row per server, per load run, per failure and per peer probe."""

    mode: Mode
    servers: list[dict[str, Any]] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    capabilities: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, step: Step, log_dir: Path) -> None:
        """Start the server, check each endpoint answers well, load it at every concurrency, record memory; stop.

        A server that fails is recorded as a failure and the run goes on.
        """
        spec = step.build()
        say(f"  {_label(spec)}: starting")
        try:
            with running(spec, log_dir) as server:
                self._measure_running(server, step)
        except (ServerError, load.LoadError, OSError, ValueError) as error:
            say(f"  {_label(spec)}: FAILED {error}")
            self.failures.append({"server": spec.name, "model": spec.model, "error": str(error)[:2000]})

    def _measure_running(self, server: RunningServer, step: Step) -> None:
        spec = server.spec
        idle = server.memory()
        for endpoint in step.endpoints:
            endpoint.check(spec.name, spec.url)
        if step.probe:
            for result in probe_capabilities(spec.url, spec.model, ROW):
                self.capabilities.append({"server": spec.name, "model": spec.model, **result})
        for endpoint in step.endpoints:
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
        say(f"  {_label(spec)}: start to ready {server.start_to_ready_s:.2f} s, RSS {loaded['rss_tree_mb']:.0f} MB")

    def _load(self, spec: ServerSpec, endpoint: Endpoint) -> None:
        request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
        if self.mode.warmup_s:
            load.run_load(spec.url, request, 8, self.mode.warmup_s)
        for concurrency in self.mode.concurrency:
            summary = load.run_load(spec.url, request, concurrency, self.mode.duration_s)
            seconds = summary["duration_us"] / 1e6
            rps = summary["requests"] / seconds if seconds else 0.0
            errors = sum(summary["errors"].values())
            latency_ms = {k: v / 1000 for k, v in summary["latency_us"].items()}
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
                    "latency_ms": latency_ms,
                    "errors": summary["errors"],
                    "error_count": errors,
                    "generator": summary["generator"],
                    "settings": spec.settings,
                }
            )
            say(
                f"    {endpoint.name:<15} c={concurrency:<3} {rps * endpoint.rows:>10,.0f} rows/s  "
                f"p50 {latency_ms['p50']:7.2f} ms  p99 {latency_ms['p99']:7.2f} ms  errors {errors}"
            )
