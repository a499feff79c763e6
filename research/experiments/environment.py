"""What a run was measured on: the machine and the library versions (research and benchmarks both record them)."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ml_production_service.manifest import installed_library_versions

EXTRA_LIBRARIES = ("scipy", "matplotlib", "tqdm", "skl2onnx", "onnxmltools", "onnx")
"""Libraries a research run records beyond the ones every manifest tracks."""

NOT_INSTALLED = "not-installed"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from ``/proc/cpuinfo``; elsewhere what ``platform`` knows, or ``unknown``."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores and platform string."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def distribution_versions(names: Iterable[str], missing: str = NOT_INSTALLED) -> dict[str, str]:
    """The installed version of each distribution, ``missing`` for one that is not installed."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = missing
    return found


def library_versions() -> dict[str, str]:
    """Versions of python, every library a manifest tracks, and the research tools."""
    return {**installed_library_versions(), **distribution_versions(EXTRA_LIBRARIES)}
