"""The guard's cost in-process: ``/predict`` through the whole ASGI app, with and without keys and rate limits.

``benchmarks.inprocess`` times the predictor alone; here the app built by ``create_app`` (its lifespan run, every
middleware, the route, the log line and the metrics) is called with one ``/predict`` request at a time, the way
uvicorn calls it, minus the socket and the HTTP parser. Every variant is built in the same process and timed in
turns, block after block, so that a slow spell of the shared machine falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import uvloop

from benchmarks.endpoints import single_json
from benchmarks.guard import GUARD_RATE_LIMIT, GUARD_STORAGE, BenchKey
from benchmarks.inprocess import timing_summary
from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.server.app import create_app


@dataclass(frozen=True)
class GuardBudget:
    """How the variants take turns: ``rounds`` blocks of ``calls`` timed requests each, after ``warmup`` each."""

    rounds: int
    calls: int
    warmup: int


@dataclass(frozen=True)
class Variant:
    """One app under test: its name and the guard settings it is built with."""

    name: str
    settings: dict[str, Any]


def variants(key: BenchKey) -> list[Variant]:
    """Off (the default), keys only, limits only, keys and limits (the ``ours-guard`` server's settings)."""
    limits = {"rate_limit": GUARD_RATE_LIMIT, "rate_limit_storage": GUARD_STORAGE}
    keys = {"api_keys_file": key.path}
    return [
        Variant("off", {}),
        Variant("keys", keys),
        Variant("limits", limits),
        Variant("keys + limits", {**keys, **limits}),
    ]


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """The service writes a log line per request to fd 2: send it to /dev/null (as a server's goes to a file)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Request:
    """One ``/predict`` request as uvicorn hands it to the app: a fresh scope, the body in one message."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
        self.headers += [(b"content-length", str(len(body)).encode())]
        self.headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.status = 0

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 40000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "headers": self.headers,
            "state": {},
        }

    async def call(self, app: Any) -> int:
        """Send the request through ``app``; the status it answered."""
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await app(self.scope(), receive, send)
        return self.status


async def _time_block(app: Any, request: _Request, calls: int, into: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        status = await request.call(app)
        into.append(clock() - started)
        if status != 200:
            raise RuntimeError(f"/predict answered {status} in-process")


async def _measure(model: ModelType, key: BenchKey, budget: GuardBudget) -> list[dict[str, Any]]:
    body = single_json()
    headers = {"X-API-Key": key.key}  # every variant gets the same request; only the guard's ones read the key
    apps: list[tuple[Variant, Any]] = []
    async with AsyncExitStack() as stack:
        for variant in variants(key):
            app = create_app(ServiceConfig(model_type=model, log_level="INFO", log_format="json", **variant.settings))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append((variant, app))
        timings: dict[str, list[int]] = {variant.name: [] for variant, _ in apps}
        request = _Request(body, headers)
        for _, app in apps:
            await _time_block(app, request, budget.warmup, [])
        for turn in range(budget.rounds):
            # Rotate who goes first, so that no variant always follows the same one.
            for variant, app in apps[turn % len(apps) :] + apps[: turn % len(apps)]:
                await _time_block(app, request, budget.calls, timings[variant.name])
    rows = []
    reference = timing_summary(timings["off"])
    for variant, _ in apps:
        summary = timing_summary(timings[variant.name])
        rows.append(
            {
                "model": model.value,
                "variant": variant.name,
                **summary,
                "added_p50_us": summary["p50_us"] - reference["p50_us"],
                "added_mean_us": summary["mean_us"] - reference["mean_us"],
                "x_off_p50": summary["p50_us"] / reference["p50_us"],
            }
        )
    return rows


def measure(model: ModelType, key: BenchKey, budget: GuardBudget) -> list[dict[str, Any]]:
    """A row per variant: p50, p99 and mean of ``/predict`` through the app, and what it adds to ``off``."""
    with _stderr_to_devnull(), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure(model, key, budget))
