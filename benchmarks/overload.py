"""Overload: one worker under wrk at concurrency 512, shedding on (the default ``MPS_MAX_IN_FLIGHT``) and off (``0``).

Each server is loaded at concurrency 8 (the reference), then 512. wrk counts every non-2xx answer as an error and
mixes 200s and 503s in one histogram: the runs here use the Lua script's per-status mode (each request's own
``X-Request-ID``, echoed by the service, finds its start time), so admitted (200) and shed (503) answers get their
own counts and latencies. Meanwhile a thread GETs ``/health/live`` on a fresh connection every 50 ms, as a
kubelet would, and keeps the latency of each probe.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import load
from benchmarks.client import http_request
from benchmarks.endpoints import Endpoint, ours_predict_endpoint
from benchmarks.processes import RunningServer, running
from benchmarks.servers import ServerSpec, ours_spec

SHEDDING = (128, 0)
"""``MPS_MAX_IN_FLIGHT`` values compared: the default, and off."""
REFERENCE_CONCURRENCY = 8
PROBE_PATH = "/health/live"
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 2.0
"""The liveness probe's timeout in ``k8s/deployment.yaml``: a slower answer is a failed probe there."""
STEADY_AFTER_S = 1.0
"""The first second of a run is 512 connections opening at once; the steady figures leave out the requests that
started in it."""
SHED_TOTAL = re.compile(r"^mps_shed_total ([0-9.e+]+)$", re.MULTILINE)
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass(frozen=True)
class OverloadCase:
    """One server under overload: the model and its ``MPS_MAX_IN_FLIGHT``."""

    model: str
    max_in_flight: int

    def spec(self) -> ServerSpec:
        """Our server for this case (one worker, like every server of the run)."""
        return ours_spec(self.model, "ours", MPS_MAX_IN_FLIGHT=str(self.max_in_flight))


def cases(models: list[str], shedding: tuple[int, ...] = SHEDDING) -> list[OverloadCase]:
    """Every model with each of ``shedding`` (on, then off)."""
    return [OverloadCase(model, limit) for model in models for limit in shedding]


class HealthProbe(threading.Thread):
    """GETs ``PROBE_PATH`` on a fresh connection every ``PROBE_INTERVAL_S`` (or as soon as the last one answered,
    when that took longer) until stopped; keeps each answer's latency and counts what failed."""

    def __init__(self, url: str) -> None:
        super().__init__(name="health-probe", daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.latencies_ms: list[float] = []
        self.failures: dict[str, int] = {}

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                status, _ = http_request(self.url, PROBE_PATH, timeout=PROBE_TIMEOUT_S)
            except OSError as error:
                reason = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
                self.failures[reason] = self.failures.get(reason, 0) + 1
            else:
                elapsed_ms = (time.monotonic() - started) * 1000
                if status != 200:
                    self.failures[str(status)] = self.failures.get(str(status), 0) + 1
                else:
                    self.latencies_ms.append(elapsed_ms)
            next_at = max(next_at + PROBE_INTERVAL_S, time.monotonic())
            self.stopping.wait(next_at - time.monotonic())

    def stop(self) -> dict[str, Any]:
        """Stop, wait for the probe in progress, and summarise: count, failures, answers slower than the timeout
        (which applies to each socket operation, not to the whole probe), p50, p99 and max in ms."""
        self.stopping.set()
        self.join(PROBE_TIMEOUT_S + 5)
        values = np.asarray(self.latencies_ms, dtype=np.float64)
        percentiles = (
            {
                "p50": float(np.percentile(values, 50)),
                "p99": float(np.percentile(values, 99)),
                "max": float(values.max()),
            }
            if len(values)
            else {"p50": None, "p99": None, "max": None}
        )
        return {
            "probes": len(values) + sum(self.failures.values()),
            "failures": dict(self.failures),
            "over_timeout": int((values > PROBE_TIMEOUT_S * 1000).sum()),
            "latency_ms": percentiles,
            "interval_s": PROBE_INTERVAL_S,
            "timeout_s": PROBE_TIMEOUT_S,
        }


def _ms(measured: dict[str, float]) -> dict[str, float]:
    return {k: v / 1000 for k, v in measured.items() if k != "count"}


def _status_summary(summary: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """A by-status wrk summary as a results row: answers and latency (ms) per status, the same for the requests
    started after the first ``STEADY_AFTER_S``, socket errors."""
    seconds = summary["duration_us"] / 1e6
    statuses = {}
    steady = summary.get("by_status_steady", {})
    for status, measured in sorted(summary.get("by_status", {}).items()):
        statuses[status] = {
            "count": measured["count"],
            "per_s": measured["count"] / seconds if seconds else 0.0,
            "latency_ms": _ms(measured),
            "steady_count": steady.get(status, {}).get("count", 0),
            "steady_latency_ms": _ms(steady[status]) if status in steady else None,
        }
    socket_errors = {name: summary["errors"][name] for name in SOCKET_ERRORS}
    return {
        "concurrency": concurrency,
        "duration_s": seconds,
        "requests": summary["requests"],
        "requests_per_s": summary["requests"] / seconds if seconds else 0.0,
        "sent": summary.get("sent"),
        "statuses": statuses,
        "steady_after_s": summary.get("steady_after_us", 0) / 1e6,
        "uncorrelated": summary.get("uncorrelated", {}),
        "socket_errors": socket_errors,
        "socket_error_count": sum(socket_errors.values()),
        "open_files_limit": summary.get("open_files_limit"),
    }


def _probed_load(server: RunningServer, endpoint: Endpoint, concurrency: int, duration_s: int) -> dict[str, Any]:
    request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
    probe = HealthProbe(server.spec.url)
    tcp_before = tcp_counters()
    probe.start()
    try:
        steady = STEADY_AFTER_S if duration_s > STEADY_AFTER_S else 0.0
        summary = load.run_load(
            server.spec.url, request, concurrency, duration_s, by_status=True, steady_after_s=steady
        )
    finally:
        health = probe.stop()
    tcp = {name: value - tcp_before.get(name, 0) for name, value in tcp_counters().items()}
    return {**_status_summary(summary, concurrency), "health": health, "tcp": tcp}


TCP_COUNTERS = {"Tcp": ("RetransSegs",), "TcpExt": ("ListenOverflows", "ListenDrops", "TCPAbortOnData")}
"""Counters of the kernel's whole TCP stack (every process of the machine) that tell a slow answer's cause."""


def tcp_counters(files: tuple[Path, ...] = (Path("/proc/net/snmp"), Path("/proc/net/netstat"))) -> dict[str, int]:
    """The ``TCP_COUNTERS`` now (an empty dict where /proc/net cannot be read)."""
    found: dict[str, int] = {}
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            group, _, header = names.partition(": ")
            wanted = TCP_COUNTERS.get(group, ())
            for name, value in zip(header.split(), values.partition(": ")[2].split(), strict=False):
                if name in wanted:
                    found[name] = int(value)
    return found


def _shed_total(url: str) -> float | None:
    try:
        status, text = http_request(url, "/metrics")
    except OSError:
        return None
    match = SHED_TOTAL.search(text.decode("utf-8", "replace"))
    return float(match.group(1)) if status == 200 and match else None


def p99_of(run: dict[str, Any] | None, status: str, steady: bool = False) -> float | None:
    """The p99 latency (ms) of the answers of ``status`` in a run (``steady``: of the requests started after the
    first ``STEADY_AFTER_S``), if there were any."""
    measured = run["statuses"].get(status) if run is not None else None
    if measured is None:
        return None
    latency = measured["steady_latency_ms"] if steady else measured["latency_ms"]
    return latency["p99"] if latency else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def measure(case: OverloadCase, concurrency: int, duration_s: int, warmup_s: int, log_dir: Path) -> dict[str, Any]:
    """One case: the reference run at concurrency 8, the overload run, and the shed count the server reports."""
    endpoint = ours_predict_endpoint()
    with running(case.spec(), log_dir) as server:
        endpoint.check(server.spec.name, server.spec.url)
        if warmup_s:
            request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
            load.run_load(server.spec.url, request, REFERENCE_CONCURRENCY, warmup_s)
        reference = _probed_load(server, endpoint, REFERENCE_CONCURRENCY, duration_s)
        overload = _probed_load(server, endpoint, concurrency, duration_s)
        shed_total = _shed_total(server.spec.url)
        settings = server.spec.settings
    baseline = p99_of(reference, "200")
    return {
        "model": case.model,
        "max_in_flight": case.max_in_flight,
        "settings": settings,
        "reference": reference,
        "overload": overload,
        "shed_total_metric": shed_total,
        "admitted_p99_x_reference": _ratio(p99_of(overload, "200"), baseline),
        "admitted_steady_p99_x_reference": _ratio(p99_of(overload, "200", steady=True), baseline),
    }


def summary_line(row: dict[str, Any]) -> str:
    """One line of a case's figures, for the progress output."""
    under, statuses = row["overload"], row["overload"]["statuses"]
    admitted, shed = statuses.get("200", {}), statuses.get("503", {})
    health = under["health"]["latency_ms"]
    return (
        f"{row['model']:<14} max_in_flight={row['max_in_flight']:<3} "
        f"200: {admitted.get('per_s', 0):>6,.0f}/s p99 {p99_of(under, '200') or 0:7.1f} ms, after "
        f"{STEADY_AFTER_S:g} s {p99_of(under, '200', steady=True) or 0:6.1f} "
        f"(c={REFERENCE_CONCURRENCY}: {p99_of(row['reference'], '200') or 0:5.1f})  "
        f"503: {shed.get('count', 0):>6} p99 {p99_of(under, '503') or 0:7.1f} ms  "
        f"socket errors {under['socket_error_count']}  {PROBE_PATH} max {health['max'] or 0:.1f} ms"
    )
