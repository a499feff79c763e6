"""HTTP load: wrk with the harness's Lua script, or a small asyncio generator when wrk is not installed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
RESULT_PREFIX = "BENCH_RESULT "
WRK_INSTALL_HINT = "apt-get update && apt-get install -y wrk"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


class LoadError(RuntimeError):
    """The load generator failed or could not parse its own output."""


@dataclass(frozen=True)
class Request:
    """What every request of one load run sends."""

    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def wrk_path() -> str | None:
    """Where wrk is installed, or None."""
    return shutil.which("wrk")


def wrk_version() -> str | None:
    """wrk's version line, e.g. ``4.1.0-3+b2``, or None when it is missing."""
    path = wrk_path()
    if path is None:
        return None
    output = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r"wrk\s+(\S+)", output.stdout + output.stderr)
    return match.group(1) if match else "unknown"


def run_wrk(url: str, request: Request, concurrency: int, duration_s: int, timeout_s: int = 10) -> dict[str, Any]:
    """One closed-loop wrk run (1 thread, ``concurrency`` keep-alive connections); the parsed summary."""
    path = wrk_path()
    if path is None:
        raise LoadError(f"wrk is not installed: {WRK_INSTALL_HINT}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".bin") as body_file:
        if request.body is not None:
            body_file.write(request.body)
            body_file.flush()
            env["BENCH_BODY_FILE"] = body_file.name
        env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        command = [
            path,
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
            return summary
    raise LoadError(f"wrk printed no result (exit {completed.returncode}): {completed.stderr.strip()[-500:]}")


def run_python_load(url: str, request: Request, concurrency: int, duration_s: float) -> dict[str, Any]:
    """The same closed loop as wrk, in asyncio (for machines without wrk; far slower, for quick mode only)."""
    return asyncio.run(_python_load(url, request, concurrency, duration_s))


async def _python_load(url: str, request: Request, concurrency: int, duration_s: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = {"Host": f"{host}:{port}", "Connection": "keep-alive", **request.headers}
    method = "GET"
    body = b""
    if request.body is not None:
        method, body = "POST", request.body
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(body))
    head = f"{method} {request.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    wire = head.encode() + body
    latencies: list[float] = []
    counts = {"bytes": 0, "status": 0, "read": 0, "connect": 0}
    started = time.perf_counter()
    deadline = started + duration_s

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(wire)
                status_line = await reader.readline()
                length, received = 0, len(status_line)
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    received += len(line)
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                counts["bytes"] += received + 2 + len(payload)
                if not status_line.split(b" ")[1].startswith((b"2", b"3")):
                    counts["status"] += 1
        except (OSError, asyncio.IncompleteReadError, IndexError):
            counts["read"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    micros = np.asarray(latencies, dtype=np.float64) * 1e6 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": counts["bytes"],
        "errors": {
            "connect": counts["connect"],
            "read": counts["read"],
            "write": 0,
            "status": counts["status"],
            "timeout": 0,
        },
        "latency_us": {
            "min": float(micros.min()),
            "mean": float(micros.mean()),
            "stdev": float(micros.std()),
            "max": float(micros.max()),
        }
        | {name: float(np.percentile(micros, q)) for name, q in PERCENTILES.items()},
        "generator": "python",
    }


def run_load(url: str, request: Request, concurrency: int, duration_s: int) -> dict[str, Any]:
    """wrk when installed, else the asyncio fallback; both return the same summary shape."""
    if wrk_path() is not None:
        return run_wrk(url, request, concurrency, duration_s)
    return run_python_load(url, request, concurrency, duration_s)
