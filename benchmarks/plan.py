"""What one run measures: how long and how hard (``Mode``), and which servers it starts with which endpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from benchmarks import peers
from benchmarks.asgi import TurnBudget
from benchmarks.endpoints import (
    ROW,
    Endpoint,
    bare_endpoints,
    baseline_endpoints,
    ceiling_endpoints,
    ours_endpoints,
    ours_predict_endpoint,
    v2_endpoint,
)
from benchmarks.guard import BenchKey, guard_endpoint, ours_enabled_spec
from benchmarks.inprocess import Budget
from benchmarks.monitoring import MonitoringBudget, ScrapeBudget
from benchmarks.overload import SHEDDING
from benchmarks.servers import ServerSpec, bare_spec, baseline_spec, ceiling_spec, ours_spec
from ml_production_service.configs import ModelType

FITTED = [ModelType.DECISION_TREE, ModelType.RANDOM_FOREST, ModelType.XGBOOST]
"""The models with a registry artifact, which MLServer can serve."""
OVERLOADED = [ModelType.HEURISTIC, ModelType.RANDOM_FOREST]
"""The models put under overload: the cheapest model, and the slowest one that still runs on the event loop."""


@dataclass(frozen=True)
class Mode:
    """How long and how hard one run measures."""

    name: str
    duration_s: int
    warmup_s: int
    concurrency: tuple[int, ...]
    batch_rows: int
    single: Budget
    batch: Budget
    guard: TurnBudget
    """In-process ``/predict`` through the app, with and without the guard."""
    guard_rounds: int
    guard_duration_s: int
    """The guard's HTTP A/B: rounds of one wrk run per server, each this long."""
    overload_concurrency: int
    overload_duration_s: int
    """Each overload case: the reference run (concurrency 8) and the overload run last this long."""
    overload_shedding: tuple[int, ...]
    """The ``MPS_MAX_IN_FLIGHT`` values each overloaded model is run with (``0``: shedding off)."""
    monitoring: MonitoringBudget
    """Monitoring in-process: ``observe_one``/``observe_many`` alone, and ``/predict`` through the app."""
    scrape: ScrapeBudget
    """``GET /metrics`` of two workers: the traffic before, the scrapes timed."""


FULL = Mode(
    "full",
    duration_s=5,
    warmup_s=1,
    concurrency=(1, 8, 64),
    batch_rows=100,
    single=Budget(calls=3000, seconds=3.0, floor=200, warmup=100),
    batch=Budget(calls=300, seconds=3.0, floor=20, warmup=5),
    guard=TurnBudget(rounds=20, calls=250, warmup=200),
    guard_rounds=5,
    guard_duration_s=2,
    overload_concurrency=512,
    overload_duration_s=8,
    overload_shedding=SHEDDING,
    monitoring=MonitoringBudget(
        blocks=200, block_rows=1000, batches=300, app=TurnBudget(rounds=40, calls=250, warmup=200)
    ),
    scrape=ScrapeBudget(singles=1000, batches=4, batch_rows=1000, warmup=4, scrapes=30),
)
QUICK = replace(
    FULL,
    name="quick",
    duration_s=1,
    warmup_s=0,
    concurrency=(8,),
    batch_rows=10,
    single=Budget(calls=50, seconds=0.5, floor=10, warmup=5),
    batch=Budget(calls=5, seconds=0.5, floor=2, warmup=1),
    guard=TurnBudget(rounds=2, calls=10, warmup=5),
    guard_rounds=1,
    guard_duration_s=1,
    overload_duration_s=1,
    overload_shedding=SHEDDING[:1],  # shedding on: its 200s and 503s both show the harness works
    monitoring=MonitoringBudget(blocks=3, block_rows=100, batches=3, app=TurnBudget(rounds=2, calls=10, warmup=5)),
    scrape=ScrapeBudget(singles=10, batches=1, batch_rows=100, warmup=1, scrapes=5),
)


@dataclass(frozen=True)
class Step:
    """One server to measure: how to build its spec (ports are picked just before it starts), its endpoints, and
    whether to probe what it can do."""

    build: Callable[[], ServerSpec]
    endpoints: list[Endpoint]
    probe: bool = False


def guard_model(models: list[ModelType]) -> ModelType:
    """The model the guard is measured on: the heuristic (whose ``ours`` row the guard must not slow), else the
    first of the run's models."""
    return ModelType.HEURISTIC if ModelType.HEURISTIC in models else models[0]


def overload_models(models: list[ModelType]) -> list[ModelType]:
    """The run's models that are put under overload (``OVERLOADED``); the first model when it has none of them."""
    return [m for m in models if m in OVERLOADED] or models[:1]


MULTI_WORKERS = "2"
"""The workers of ``ours-2w``, against one worker of ``ours`` (metrics in multiprocess mode)."""


def bench_plan(mode: Mode, models: list[ModelType], registry_dir: Path, key: BenchKey | None) -> list[Step]:
    """make bench: the ceiling, the bare FastAPI route, then the baseline and ours for every model; right after
    ours of the guard's model, ``ours-2w`` (two workers) and ``ours-enabled`` (keys and memory rate limits, wrk
    sending ``key``, and the payload log; none without a key) on ``/predict``."""
    plan = [Step(ceiling_spec, ceiling_endpoints()), Step(bare_spec, bare_endpoints())]
    plan += [Step(partial(baseline_spec, m.value, registry_dir), baseline_endpoints()) for m in models]
    for model in models:
        plan.append(Step(partial(ours_spec, model.value), ours_endpoints(model.value, mode.batch_rows)))
        if model == guard_model(models):
            two = partial(ours_spec, model.value, "ours-2w", MPS_WORKERS=MULTI_WORKERS)
            plan.append(Step(two, [ours_predict_endpoint()]))
            if key is not None:
                plan.append(Step(partial(ours_enabled_spec, model.value, key), [guard_endpoint(key)]))
    return plan


def peers_plan(mode: Mode, models: list[ModelType], registry_dir: Path, work: Path, venv: Path) -> list[Step]:
    """make bench-peers: the ceiling and the bare route; per fitted model the baseline, our V2 (fast and joblib) and
    MLServer's."""
    plan = [Step(ceiling_spec, ceiling_endpoints()), Step(bare_spec, bare_endpoints())]
    variants = [0, 1] if mode.name == "full" else [1]
    for model in (m for m in models if m in FITTED):
        name = model.value
        plan.append(Step(partial(baseline_spec, name, registry_dir), baseline_endpoints()))
        plan.append(Step(partial(ours_spec, name), [v2_endpoint(name)]))
        plan.append(Step(partial(ours_spec, name, "ours-joblib", MPS_FAST_PATH="false"), [v2_endpoint(name)]))
        for workers in variants:
            root = work / f"mlserver-{name}-sklearn-pw{workers}"
            spec = partial(peers.mlserver_spec, root, model, "sklearn", registry_dir, workers, venv)
            plan.append(Step(spec, [v2_endpoint(name)], probe=workers == 1))
        if model == ModelType.XGBOOST:
            root = work / f"mlserver-{name}-xgboost-pw1"
            spec = partial(peers.mlserver_spec, root, model, "xgboost", registry_dir, 1, venv)
            plan.append(Step(spec, [v2_endpoint(name, peers.engineered_row(ROW))]))
    return plan
