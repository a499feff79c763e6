"""``/predict`` through the whole ASGI app in-process, variants in turns: the guard's cost (keys, rate limits) here.

``benchmarks.inprocess`` times the predictor alone; here the app built by ``create_app`` (its lifespan run, every
middleware, the route, the log line and the metrics) is called with one ``/predict`` request at a time, the way
uvicorn calls it, minus the socket and the HTTP parser. Every variant is built in the same process and timed in
turns, block after block, so that a slow spell of the shared machine falls on all of them alike.
``benchmarks.monitoring`` times its variants (the monitor as served, inactive, off) with the same turns.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop

from benchmarks.endpoints import single_json
from benchmarks.guard import GUARD_RATE_LIMIT, GUARD_STORAGE, BenchKey
from benchmarks.inprocess import timing_summary
from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.server.app import create_app

T = TypeVar("T")


@dataclass(frozen=True)
class TurnBudget:
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


def _as_is() -> None:
    """An app that is already the variant it stands for."""


@dataclass(frozen=True)
class Contender:
    """One variant in the turns: its name, its app (lifespan entered), and what makes the app this variant before
    each of its blocks (several variants may share one app and differ by what ``enter`` sets on it)."""

    name: str
    app: Any
    enter: Callable[[], None] = _as_is


async def in_turns(contenders: list[Contender], request: _Request, budget: TurnBudget) -> dict[str, list[int]]:
    """Each contender's warm-up, then ``budget.rounds`` rounds of a block each; the timings (ns) per name."""
    timings: dict[str, list[int]] = {contender.name: [] for contender in contenders}
    for contender in contenders:
        contender.enter()
        await _time_block(contender.app, request, budget.warmup, [])
    for turn in range(budget.rounds):
        # Rotate who goes first, so that no variant always follows the same one.
        start = turn % len(contenders)
        for contender in contenders[start:] + contenders[:start]:
            contender.enter()
            await _time_block(contender.app, request, budget.calls, timings[contender.name])
    return timings


def compared(model: ModelType, timings: dict[str, list[int]], reference: str) -> list[dict[str, Any]]:
    """A row per variant (in ``timings``' order): p50, p99, mean, and what it adds to ``reference`` (the ``off``
    variant: ``x_off_p50`` is the ratio of p50s)."""
    base = timing_summary(timings[reference])
    rows = []
    for name, measured in timings.items():
        summary = timing_summary(measured)
        rows.append(
            {
                "model": model.value,
                "variant": name,
                **summary,
                "added_p50_us": summary["p50_us"] - base["p50_us"],
                "added_mean_us": summary["mean_us"] - base["mean_us"],
                "x_off_p50": summary["p50_us"] / base["p50_us"],
            }
        )
    return rows


def predict_request(headers: dict[str, str] | None = None) -> _Request:
    """The one-row ``/predict`` every variant is sent (the harness's ``ROW``)."""
    return _Request(single_json(), headers or {})


def run_quietly(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on uvloop (as the server does), the service's log lines sent to /dev/null."""
    with _stderr_to_devnull(), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


async def _measure(model: ModelType, key: BenchKey, budget: TurnBudget) -> list[dict[str, Any]]:
    headers = {"X-API-Key": key.key}  # every variant gets the same request; only the guard's ones read the key
    contenders: list[Contender] = []
    async with AsyncExitStack() as stack:
        for variant in variants(key):
            app = create_app(ServiceConfig(model_type=model, log_level="INFO", log_format="json", **variant.settings))
            await stack.enter_async_context(app.router.lifespan_context(app))
            contenders.append(Contender(variant.name, app))
        timings = await in_turns(contenders, predict_request(headers), budget)
    return compared(model, timings, "off")


def measure(model: ModelType, key: BenchKey, budget: TurnBudget) -> list[dict[str, Any]]:
    """A row per variant: p50, p99 and mean of ``/predict`` through the app, and what it adds to ``off``."""
    return run_quietly(_measure(model, key, budget))
