"""Markdown building blocks shared by results.md and the README: number formats, tables, lookups in results.json."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

REFERENCE_CONCURRENCY = 8
"""The concurrency the summary tables and the targets compare at."""
TAIL_CONCURRENCY = 64
"""The concurrency whose p99 the summary tables and the targets report."""

Column = tuple[str, Callable[[dict[str, Any]], str]]
"""A table column: its header and how a row of results.json becomes its cell."""


def num(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators; a dash when missing."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    """A ratio as ``0.42×`` (``12×`` from 10 up); a dash when missing."""
    if value is None:
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def ms(value: float | None) -> str:
    """Milliseconds, two decimals below 100; a dash when missing."""
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def column_table(columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> list[str]:
    """A Markdown table with a line per row and a cell per column."""
    return table([header for header, _ in columns], ([cell(row) for _, cell in columns] for row in rows))


def get(row: dict[str, Any] | None, *keys: str) -> Any:
    """``row[k1][k2]...``, or None where a level is missing."""
    value: Any = row
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def server_label(row: dict[str, Any]) -> str:
    """The server's name, with MLServer's parallel_workers setting."""
    settings = row.get("settings") or {}
    if row["server"].startswith("mlserver"):
        return f"{row['server']} (parallel_workers={settings.get('parallel_workers')})"
    return str(row["server"])


def model_label(row: dict[str, Any]) -> str:
    """The row's model, a dash for the ceiling."""
    return str(row["model"] or "–")


def machine_line(results: dict[str, Any]) -> str:
    """One line: CPU, cores, kernel, Python, load generator, load average."""
    m = results["machine"]
    return (
        f"{m['cpu_model']}, {m['cores']} cores (usable {m['usable_cores']}), Linux {m['kernel']}, "
        f"Python {m['python']}, {m['load_generator']}; load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m.get('loadavg_end', [0])[0]:.2f} at end"
    )


def versions_line(versions: dict[str, str | None]) -> str:
    """``name version`` pairs of what is installed."""
    return ", ".join(f"{name} {version}" for name, version in versions.items() if version)


def find_http(results: dict[str, Any], server: str, model: str | None, endpoint: str, c: int) -> dict[str, Any] | None:
    """The HTTP row of that server, model, endpoint and concurrency, if measured."""
    return next(
        (
            r
            for r in results.get("http", [])
            if r["server"] == server and r["model"] == model and r["endpoint"] == endpoint and r["concurrency"] == c
        ),
        None,
    )


def served_path(model: str) -> str:
    """The in-process path the service serves ``model`` by: the fast path, or the rules for the heuristic."""
    return "served" if model == "heuristic" else "fast"
