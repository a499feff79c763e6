"""What the numbers were measured on: the machine, the library versions and the registry artifacts of a run."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.load import wrk_version
from ml_production_service import __version__
from ml_production_service.configs import ModelType
from ml_production_service.predictors.base import ModelLoadError
from ml_production_service.registry import read_manifest
from research.experiments.environment import cpu_model

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
"""The distributions whose versions a run records, after the service's own."""


def machine() -> dict[str, Any]:
    """CPU, cores, kernel, Python, the load generator, OpenBLAS settings and the load average at the start."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_generator": f"wrk {wrk_version()} (1 thread)",
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        "loadavg_start": list(os.getloadavg()),
    }


def versions() -> dict[str, str | None]:
    """Versions of the service and what it runs on (None: not installed)."""
    found: dict[str, str | None] = {"ml-production-service": __version__}
    for name in VERSION_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def artifacts(registry_dir: Path, models: list[ModelType]) -> dict[str, dict[str, str | None]]:
    """Version and sha256 of each model's registry artifact at the start of the run (none for the heuristic)."""
    found = {}
    for model in models:
        try:
            manifest = read_manifest(registry_dir, model)
        except ModelLoadError:
            continue
        found[model.value] = {"version": manifest.version, "sha256": manifest.sha256}
    return found
