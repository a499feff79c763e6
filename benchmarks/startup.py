"""Start-up and memory per model (issue 15): time from process start to ready and the resident size of every process.

Each model is started idle as our server with one and with two workers, and as the tutorial baseline app; once ready
(and, with two workers, once every worker has logged ``model_loaded``) every process of the server is read from
``/proc``: VmRSS (what ``ps`` and the OOM killer's ``rss`` show) and Pss (shared pages split among the processes that
map them, so the figures of a server's processes add up). Each process gets a role: the master (the supervisor of a
multi-worker server), a worker, the resource tracker of ``multiprocessing``, or the server itself (one process).
With one worker, a fitted model's first and second ``?explain=true`` answers are timed too (the first one loads the
original pipeline), and the RSS after them.

``python -m benchmarks.startup [--models heuristic,random_forest]`` prints the rows as JSON, then the report section;
``make bench`` (``benchmarks.run``) measures the same for its models into results.json's ``startup``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from benchmarks.client import http_request
from benchmarks.endpoints import ROW, named_row
from benchmarks.processes import RunningServer, ServerError, _descendants, _status_kb, running
from benchmarks.servers import ServerSpec, baseline_spec, ours_spec
from benchmarks.tables import num, table, times
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType

WORKER_COUNTS = (1, 2)
SETTLE_S = 0.3
"""Idle time after ready (and after every worker's ``model_loaded``) before memory is read."""
WORKERS_LOADED_TIMEOUT_S = 60.0
EXPLAIN_PATH = "/predict?explain=true"


HEURISTIC_X_BASELINE = 1.3
FITTED_WORKER_MB = 130.0
MASTER_MB = 60.0
FOREST_TWO_WORKERS_MB = 350.0
READY_S = {"heuristic": 1.5, "fitted": 2.5}
"""Issue 15's targets: a worker's RSS (the heuristic's against the tutorial app's), the master's, two forest
workers with their master, and start to ready with one worker."""


def pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` in kB (``/proc/<pid>/smaps_rollup``); 0 if it is gone."""
    try:
        found = re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def cpu_s(pid: int) -> float:
    """CPU seconds ``pid`` has used, with its reaped children's (the model check process): ``/proc/<pid>/stat``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command's closing parenthesis, field 3 is the state; utime, stime, cutime, cstime are 14 to 17.
    return sum(int(tick) for tick in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def role(pid: int, root: int, workers: int) -> str:
    """What ``pid`` is in a server started as ``root``: server, master, worker or resource_tracker."""
    if pid == root:
        return "server" if workers == 1 else "master"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return "resource_tracker" if "resource_tracker" in command else "worker"


def processes(root: int, workers: int) -> list[dict[str, Any]]:
    """Every process of the server started as ``root``: its role, pid, VmRSS and Pss in MB, CPU seconds so far."""
    return [
        {
            "role": role(pid, root, workers),
            "pid": pid,
            "rss_mb": round(_status_kb(pid, "VmRSS") / 1024, 1),
            "pss_mb": round(pss_kb(pid) / 1024, 1),
            "cpu_s": round(cpu_s(pid), 2),
        }
        for pid in (root, *_descendants(root))
    ]


def _wait_for_workers(server: RunningServer, workers: int) -> None:
    """Wait until ``workers`` workers have logged ``model_loaded`` (readiness says only that one of them has)."""
    deadline = time.monotonic() + WORKERS_LOADED_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.log_tail(1_000_000).count('"model_loaded"') >= workers:
            return
        time.sleep(0.05)
    raise ServerError(f"{server.spec.name}: fewer than {workers} workers loaded: {server.log_tail()}")


def _timed_explain(url: str) -> float:
    body = orjson.dumps(named_row(ROW))
    started = time.perf_counter()
    status, answer = http_request(url, EXPLAIN_PATH, body)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status != 200 or b"explanation" not in answer:
        raise ServerError(f"{EXPLAIN_PATH} answered {status}: {answer[:300]!r}")
    return round(elapsed_ms, 1)


def measure_server(spec: ServerSpec, workers: int, log_dir: Path, *, explain: bool = False) -> dict[str, Any]:
    """Start ``spec``, wait until it is ready (and every worker loaded), read every process's memory; stop it."""
    with running(spec, log_dir) as server:
        if spec.name == "ours":
            _wait_for_workers(server, workers)
        time.sleep(SETTLE_S)
        found = processes(server.process.pid, workers)
        row: dict[str, Any] = {
            "server": spec.name,
            "model": spec.model,
            "workers": workers,
            "start_to_ready_s": round(server.start_to_ready_s, 3),
            "processes": found,
            "total_rss_mb": round(sum(p["rss_mb"] for p in found), 1),
            "total_pss_mb": round(sum(p["pss_mb"] for p in found), 1),
            "start_cpu_s": round(sum(p["cpu_s"] for p in found), 2),
        }
        if explain:
            row["first_explain_ms"] = _timed_explain(spec.url)
            row["second_explain_ms"] = _timed_explain(spec.url)
            row["rss_after_explain_mb"] = round(_status_kb(server.process.pid, "VmRSS") / 1024, 1)
    return row


def plan(models: list[ModelType], registry_dir: Path) -> list[tuple[Callable[[], ServerSpec], int, bool]]:
    """Per model: the tutorial baseline, then ours with each of ``WORKER_COUNTS`` (explanations timed with one)."""
    steps: list[tuple[Callable[[], ServerSpec], int, bool]] = []
    for model in models:
        steps.append((partial(baseline_spec, model.value, registry_dir), 1, False))
        for workers in WORKER_COUNTS:
            build = partial(ours_spec, model.value, MPS_WORKERS=str(workers), MPS_REGISTRY_DIR=str(registry_dir))
            steps.append((build, workers, workers == 1 and model.is_fitted))
    return steps


def role_mb(row: dict[str, Any], name: str, key: str = "rss_mb") -> float:
    """The largest ``key`` among the row's processes of role ``name`` (0 if none)."""
    return max((p[key] for p in row["processes"] if p["role"] == name), default=0.0)


def summary_line(row: dict[str, Any]) -> str:
    """One console line: the server, its start to ready, and every process's RSS/PSS."""
    parts = ", ".join(f"{p['role']} {p['rss_mb']:.0f}/{p['pss_mb']:.0f}" for p in row["processes"])
    line = (
        f"{row['server']:<8} {row['model']:<14} w{row['workers']}  ready {row['start_to_ready_s']:5.2f} s "
        f"(CPU {row['start_cpu_s']:5.2f} s)  "
        f"RSS/PSS MB: {parts}; total {row['total_rss_mb']:.0f}/{row['total_pss_mb']:.0f}"
    )
    if "first_explain_ms" in row:
        line += (
            f"; explain first {row['first_explain_ms']:.0f} ms, then {row['second_explain_ms']:.0f} ms, "
            f"RSS after {row['rss_after_explain_mb']:.0f}"
        )
    return line


def measure(
    models: list[ModelType], registry_dir: Path, log_dir: Path, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Every step of ``plan``, printed as it comes; a server that fails is a row with its error."""
    rows = []
    for build, workers, explain in plan(models, registry_dir):
        spec = build()
        try:
            row = measure_server(spec, workers, log_dir, explain=explain)
        except (ServerError, OSError, ValueError) as error:
            row = {"server": spec.name, "model": spec.model, "workers": workers, "error": str(error)[:2000]}
            say(f"  {spec.name} {spec.model} w{workers}: FAILED {error}")
        else:
            say("  " + summary_line(row))
        rows.append(row)
    add_ratios(rows)
    return rows


def _find(rows: list[dict[str, Any]], server: str, model: str, workers: int = 1) -> dict[str, Any] | None:
    found = [r for r in rows if (r["server"], r["model"], r["workers"]) == (server, model, workers)]
    return found[0] if found and "error" not in found[0] else None


def worker_mb(row: dict[str, Any]) -> float:
    """The RSS of the row's largest serving process (the server itself with one worker, else a worker)."""
    return max(role_mb(row, "server"), role_mb(row, "worker"))


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row of ours gets ``x_baseline_ready`` and ``x_baseline_rss`` against the baseline of its model."""
    for row in rows:
        baseline = _find(rows, "baseline", row["model"])
        if row["server"] == "ours" and "error" not in row and baseline is not None:
            row["x_baseline_ready"] = row["start_to_ready_s"] / baseline["start_to_ready_s"]
            row["x_baseline_rss"] = worker_mb(row) / worker_mb(baseline)


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Issue 15's targets measured in ``rows``: (target, what was measured, met), for the models the run had."""
    found: list[tuple[str, str, bool]] = []
    ours = [r for r in rows if r["server"] == "ours" and "error" not in r]
    heuristic = _find(rows, "ours", "heuristic")
    if heuristic is not None and "x_baseline_rss" in heuristic:
        x = heuristic["x_baseline_rss"]
        found.append(
            (f"heuristic worker ≤ {HEURISTIC_X_BASELINE}× the tutorial app's RSS", times(x), x <= HEURISTIC_X_BASELINE)
        )
    fitted = [r for r in ours if r["model"] != "heuristic"]
    if fitted:
        largest = max(worker_mb(r) for r in fitted)
        found.append(
            (
                f"fitted-model worker ≤ {FITTED_WORKER_MB:.0f} MB",
                f"{largest:.0f} MB (largest)",
                largest <= FITTED_WORKER_MB,
            )
        )
    masters = [role_mb(r, "master") for r in ours if r["workers"] > 1]
    if masters:
        found.append(
            (
                f"master of two workers ≤ {MASTER_MB:.0f} MB",
                f"{max(masters):.0f} MB (largest)",
                max(masters) <= MASTER_MB,
            )
        )
    forest = _find(rows, "ours", "random_forest", 2)
    if forest is not None:
        total = role_mb(forest, "master") + sum(p["rss_mb"] for p in forest["processes"] if p["role"] == "worker")
        found.append(
            (
                f"two forest workers + master < {FOREST_TWO_WORKERS_MB:.0f} MB",
                f"{total:.0f} MB",
                total < FOREST_TWO_WORKERS_MB,
            )
        )
    for kind, limit in READY_S.items():
        ready = [
            r["start_to_ready_s"]
            for r in ours
            if r["workers"] == 1 and (r["model"] == "heuristic") == (kind == "heuristic")
        ]
        if ready:
            found.append(
                (
                    f"start to ready < {limit} s, {kind} (one worker)",
                    f"{max(ready):.2f} s (slowest)",
                    max(ready) < limit,
                )
            )
    return found


def _cell(row: dict[str, Any], role_name: str) -> str:
    if not any(p["role"] == role_name for p in row["processes"]):
        return "–"
    return f"{role_mb(row, role_name):.0f} / {role_mb(row, role_name, 'pss_mb'):.0f}"


def section(rows: list[dict[str, Any]]) -> list[str]:
    """results.md's start-up and memory section: a line per server, every process's RSS / PSS, and the targets."""
    header = [
        "server",
        "model",
        "workers",
        "start→ready s",
        "× baseline",
        "start CPU s",
        "server or worker RSS / PSS MB",
    ]
    header += ["× baseline", "master", "resource tracker", "total RSS / PSS MB", "first / second explain ms"]
    lines = ["## Start-up and memory per process (issue 15)", ""]
    body = []
    for row in rows:
        if "error" in row:
            body.append([row["server"], row["model"], str(row["workers"]), "failed", *["–"] * 8])
            continue
        serving = "worker" if row["workers"] > 1 else "server"
        explain = "–"
        if "first_explain_ms" in row:
            first, second = num(row["first_explain_ms"]), num(row["second_explain_ms"])
            explain = f"{first} / {second} (RSS after {row['rss_after_explain_mb']:.0f} MB)"
        body.append(
            [
                row["server"],
                row["model"],
                str(row["workers"]),
                f"{row['start_to_ready_s']:.2f}",
                times(row.get("x_baseline_ready")),
                f"{row['start_cpu_s']:.2f}",
                _cell(row, serving),
                times(row.get("x_baseline_rss")),
                _cell(row, "master"),
                _cell(row, "resource_tracker"),
                f"{row['total_rss_mb']:.0f} / {row['total_pss_mb']:.0f}",
                explain,
            ]
        )
    lines += [*table(header, body), ""]
    lines += [
        "Idle after ready (and after every worker's `model_loaded`). Start CPU is the CPU time every process of the "
        "server used until then (the model check process's included): less noisy than the wall time on a shared "
        "machine. RSS counts shared pages in every process that "
        "maps them; PSS splits them, so a server's PSS adds up. A worker's RSS is compared with the tutorial app's "
        "(baseline) for the same model; the first explanation of a fitted model loads its original Pipeline.",
        "",
    ]
    goals = targets(rows)
    if goals:
        lines += table(["target (issue 15)", "measured", "met"], ([t, m, "yes" if ok else "no"] for t, m, ok in goals))
        lines.append("")
    return lines


def readme_lines(bench: dict[str, Any]) -> list[str]:
    """The README's start-up and memory lines from a run's ``startup`` rows (older runs have none)."""
    rows = bench.get("startup")
    if not rows:
        return []
    return ["**Start-up and memory per process** (same run):", "", *section(rows)[2:]]


def main(argv: list[str] | None = None) -> int:
    """Measure the models named on the command line and print the rows as JSON."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--models", default=",".join(m.value for m in ModelType))
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR)
    args = parser.parse_args(argv)
    models = [ModelType(name.strip()) for name in args.models.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        rows = measure(models, args.registry_dir, Path(scratch), lambda text: print(text, flush=True))  # noqa: T201
    print(json.dumps(rows, indent=2))  # noqa: T201
    print("\n".join(section(rows)))  # noqa: T201
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
