"""The guard's cost over HTTP: API keys and memory rate limits against the default, servers up side by side.

The ``ours-enabled`` row of the HTTP table is loaded like every server, minutes after ``ours``; on a shared machine
that is too far apart to see 10 µs in 250. Here the default server, the same with shedding off and the guarded
one run at the same time, and one wrk run at concurrency 8 goes to each in turn, round after round. One worker
saturated by a closed loop serves one request at a time, so 1/throughput is the server's time per request, and
the per-round difference of those times is what the guard adds to each request.
"""

from __future__ import annotations

import secrets
import statistics
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.endpoints import Endpoint, ours_predict_endpoint
from benchmarks.processes import RunningServer, running_together
from benchmarks.servers import ServerSpec, ours_spec
from ml_production_service.guard import key_digest

GUARD_RATE_LIMIT = "1000000/second"
"""So high that nothing is refused: what is measured is the counting, never a 429."""
GUARD_STORAGE = "memory://"
KEY_ID = "bench"
REFERENCE_CONCURRENCY = 8
"""Closed-loop clients of the A/B runs: enough to keep the one worker busy, as the HTTP table's reference."""


@dataclass(frozen=True)
class BenchKey:
    """The API key a run's guarded servers accept: its id, the key itself (sent by wrk) and its keys file."""

    key_id: str
    key: str
    path: Path

    @property
    def headers(self) -> dict[str, str]:
        """The header that carries it."""
        return {"X-API-Key": self.key}


def write_key(folder: Path) -> BenchKey:
    """A fresh random key and its keys file (``id:sha256``, mode 0600) in ``folder``; the key lives in memory."""
    key = "mps_" + secrets.token_urlsafe(32)
    path = folder / "api-keys"
    path.write_text(f"{KEY_ID}:{key_digest(key.encode('ascii')).hex()}\n")
    path.chmod(0o600)
    return BenchKey(KEY_ID, key, path)


def guard_settings(key: BenchKey) -> dict[str, str]:
    """The MPS_* settings of a guarded server: the key file, and a limit counted in memory that refuses nothing."""
    return {
        "MPS_API_KEYS_FILE": str(key.path),
        "MPS_RATE_LIMIT": GUARD_RATE_LIMIT,
        "MPS_RATE_LIMIT_STORAGE": GUARD_STORAGE,
    }


def ours_guard_spec(model: str, key: BenchKey) -> ServerSpec:
    """Our server with keys and memory rate limits on (``ours-guard``); its recorded settings name no path."""
    spec = ours_spec(model, "ours-guard", **guard_settings(key))
    return replace(spec, settings={**spec.settings, "MPS_API_KEYS_FILE": f"(one key, id {key.key_id})"})


PAYLOAD_SAMPLE = "1"
"""The enabled row's payload log samples every row: its upper bound."""


def ours_enabled_spec(model: str, key: BenchKey) -> ServerSpec:
    """Our server with every per-request option on (``ours-enabled``): keys and memory rate limits, and the payload
    log of every row into a file next to the keys file (monitoring is on by default); no path recorded."""
    payload = {"MPS_PAYLOAD_LOG_SAMPLE": PAYLOAD_SAMPLE, "MPS_PAYLOAD_LOG_PATH": str(key.path.parent / "payload.jsonl")}
    spec = ours_spec(model, "ours-enabled", **guard_settings(key), **payload)
    recorded = {"MPS_API_KEYS_FILE": f"(one key, id {key.key_id})", "MPS_PAYLOAD_LOG_PATH": "(a file)"}
    return replace(spec, settings={**spec.settings, **recorded})


def guard_endpoint(key: BenchKey) -> Endpoint:
    """``/predict`` with the key in ``X-API-Key`` (wrk sends it on every request)."""
    return ours_predict_endpoint(key.headers)


def http_variants(model: str, key: BenchKey) -> list[tuple[str, partial[ServerSpec]]]:
    """The servers compared: the default (shedding at 128, no keys, no limit), shedding off, keys and limits."""
    return [
        ("off (default)", partial(ours_spec, model)),
        ("shedding off", partial(ours_spec, model, "ours", MPS_MAX_IN_FLIGHT="0")),
        ("keys + limits", partial(ours_guard_spec, model, key)),
    ]


def _round(server: RunningServer, endpoint: Endpoint, duration_s: int) -> dict[str, float]:
    request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
    summary = load.run_load(server.spec.url, request, REFERENCE_CONCURRENCY, duration_s)
    errors = sum(summary["errors"].values())
    if errors:
        raise load.LoadError(f"{server.spec.name} answered {errors} errors in the guard A/B: {summary['errors']}")
    rps = summary["requests"] / (summary["duration_us"] / 1e6)
    return {
        "requests_per_s": rps,
        "us_per_request": 1e6 / rps,
        "p50_ms": summary["latency_us"]["p50"] / 1000,
        "p99_ms": summary["latency_us"]["p99"] / 1000,
    }


def measure(model: str, key: BenchKey, rounds: int, duration_s: int, warmup_s: int, log_dir: Path) -> dict[str, Any]:
    """The A/B: per variant its median throughput, latency and time per request, and what it adds to the default.

    Every request carries the key, so that all variants parse the same bytes.
    """
    endpoint = guard_endpoint(key)
    names = [name for name, _ in http_variants(model, key)]
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with running_together([build() for _, build in http_variants(model, key)], log_dir) as started:
        servers: list[tuple[str, RunningServer]] = list(zip(names, started, strict=True))
        for _, server in servers:
            endpoint.check(server.spec.name, server.spec.url)
        request = load.Request(endpoint.path, endpoint.body, endpoint.headers)
        for _, server in servers:
            if warmup_s:
                load.run_load(server.spec.url, request, REFERENCE_CONCURRENCY, warmup_s)
        for turn in range(rounds):
            for name, server in servers[turn % len(servers) :] + servers[: turn % len(servers)]:
                per_round[name].append(_round(server, endpoint, duration_s))
        settings = {name: server.spec.settings for name, server in servers}
    reference = per_round[names[0]]
    variants = []
    for name in names:
        measured = per_round[name]
        added = [m["us_per_request"] - r["us_per_request"] for m, r in zip(measured, reference, strict=True)]
        rps = statistics.median(m["requests_per_s"] for m in measured)
        variants.append(
            {
                "variant": name,
                "settings": settings[name],
                "rounds": measured,
                "requests_per_s": rps,
                "us_per_request": statistics.median(m["us_per_request"] for m in measured),
                "p50_ms": statistics.median(m["p50_ms"] for m in measured),
                "p99_ms": statistics.median(m["p99_ms"] for m in measured),
                "added_us_per_request": statistics.median(added),
                "x_default_throughput": rps / statistics.median(r["requests_per_s"] for r in reference),
            }
        )
    return {
        "model": model,
        "concurrency": REFERENCE_CONCURRENCY,
        "duration_s": duration_s,
        "rounds": rounds,
        "variants": variants,
    }
