"""HTTP load: closed-loop wrk (1 thread) with the harness's Lua script, which prints one parseable JSON summary."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
RESULT_PREFIX = "BENCH_RESULT "
WRK_INSTALL_HINT = "run `apt-get update && apt-get install -y wrk` as root (`make bench-wrk` does)"
FD_HEADROOM = 64
"""Open files wrk needs beyond one per connection (its own, the event loop's, the script's)."""


class LoadError(RuntimeError):
    """wrk is missing or failed, or printed no summary."""


@dataclass(frozen=True)
class Request:
    """What every request of one load run sends."""

    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def wrk_path() -> str | None:
    """Where wrk is installed, or None."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """wrk's version, e.g. ``debian/4.1.0-3+b2``."""
    output = subprocess.run([_wrk(), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r"wrk\s+(\S+)", output.stdout + output.stderr)
    return match.group(1) if match else "unknown"


def _wrk() -> str:
    path = wrk_path()
    if path is None:
        raise LoadError(f"wrk is not installed: {WRK_INSTALL_HINT}")
    return path


def open_files_for(concurrency: int) -> int:
    """Raise this process's soft open-files limit (``ulimit -n``, which wrk inherits) to fit ``concurrency``
    connections when it is lower; the soft limit now. A LoadError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = concurrency + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise LoadError(
                f"wrk at concurrency {concurrency} needs {needed} open files, and `ulimit -Hn` is {hard}: "
                "raise the hard limit (as root) and run again"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


def run_load(
    url: str,
    request: Request,
    concurrency: int,
    duration_s: int,
    timeout_s: int = 10,
    by_status: bool = False,
    steady_after_s: float = 0.0,
) -> dict[str, Any]:
    """One wrk run (``concurrency`` keep-alive connections for ``duration_s``); the summary the Lua script prints:
    requests, duration_us, bytes, errors by kind and latency_us (min, mean, stdev, max, p50, p90, p99, p99.9).

    ``by_status`` adds ``sent``, ``by_status`` (per status: count and latency percentiles in µs, measured by the
    script per request, without wrk's coordinated-omission correction), ``by_status_steady`` (the same over the
    requests started ``steady_after_s`` or later) and ``uncorrelated`` (answers without a known request id, per
    status); every request then carries its own ``X-Request-ID``.
    """
    open_files = open_files_for(concurrency)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    if by_status:
        env["BENCH_BY_STATUS"] = "1"
        env["BENCH_STEADY_AFTER_US"] = str(round(steady_after_s * 1e6))
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".bin") as body_file:
        if request.body is not None:
            body_file.write(request.body)
            body_file.flush()
            env["BENCH_BODY_FILE"] = body_file.name
        env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        command = [
            _wrk(),
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            f"--timeout={timeout_s}s",
            "-s",
            str(LUA_SCRIPT),
            url.rstrip("/") + request.path,
        ]
        completed = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, env=env, timeout=duration_s + timeout_s + 30, check=False
        )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            summary: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            summary["generator"] = "wrk"
            summary["open_files_limit"] = open_files
            return summary
    raise LoadError(f"wrk printed no result (exit {completed.returncode}): {completed.stderr.strip()[-500:]}")
