"""PNG figures of one run: throughput by server and concurrency, latency percentiles, in-process latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): there is no display

from benchmarks.ratios import LATENCIES
from benchmarks.tables import server_label


def _series_label(row: dict[str, Any]) -> str:
    parts = [server_label(row).replace(" (parallel_workers=", " pw=").rstrip(")")]
    if row["model"]:
        parts.append(row["model"])
    if row["endpoint"] not in ("constant", "/predict"):
        parts.append(row["endpoint"])
    return "\n".join(parts)


def _series(results: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    series: dict[str, dict[int, dict[str, Any]]] = {}
    for row in results.get("http", []):
        series.setdefault(_series_label(row), {})[row["concurrency"]] = row
    return series


def throughput_figure(results: dict[str, Any], path: Path) -> None:
    """Grouped bars: rows/s of every server and endpoint, one bar per concurrency, log scale."""
    series = _series(results)
    concurrency = results["settings"]["concurrency"]
    figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(series) + 2), 5.5))
    width = 0.8 / max(1, len(concurrency))
    for index, c in enumerate(concurrency):
        values = [series[label].get(c, {}).get("rows_per_s", 0) for label in series]
        positions = [i + (index - (len(concurrency) - 1) / 2) * width for i in range(len(series))]
        axes.bar(positions, values, width, label=f"c={c}")
    axes.set_xticks(range(len(series)), list(series), rotation=60, ha="right", fontsize=7)
    axes.set_yscale("log")
    axes.set_ylabel("rows/s (requests/s × rows per request)")
    axes.set_title(f"Throughput by server and concurrency ({results['kind']}, {results['started_at']})")
    axes.legend()
    axes.grid(axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def latency_figure(results: dict[str, Any], path: Path) -> None:
    """Latency p50/p99/p99.9 per server and endpoint, one panel per concurrency, log scale."""
    series = _series(results)
    concurrency = results["settings"]["concurrency"]
    figure, panels = plt.subplots(
        1, len(concurrency), figsize=(5 * len(concurrency), max(4.0, 0.35 * len(series) + 1.5)), squeeze=False
    )
    labels = list(series)
    height = 0.8 / len(LATENCIES)
    for panel, c in zip(panels[0], concurrency, strict=True):
        for index, name in enumerate(LATENCIES):
            values = [series[label].get(c, {}).get("latency_ms", {}).get(name, 0) for label in labels]
            positions = [i + (index - 1) * height for i in range(len(labels))]
            panel.barh(positions, values, height, label=name)
        panel.set_yticks(range(len(labels)), [label.replace("\n", " ") for label in labels], fontsize=7)
        panel.invert_yaxis()
        panel.set_xscale("log")
        panel.set_xlabel("latency ms")
        panel.set_title(f"c={c}")
        panel.grid(axis="x", which="both", alpha=0.3)
    panels[0][0].legend()
    figure.suptitle(f"Latency percentiles ({results['kind']}, {results['started_at']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


FIGURE_PATHS = (
    (("fast", "served"), "served (fast path; the rules for the heuristic)"),
    (("original",), "original (joblib Pipeline)"),
    (("baseline",), "baseline call (pipeline.predict)"),
)


def inprocess_figure(results: dict[str, Any], path: Path) -> None:
    """In-process p50 per model: served (fast) path, original and the baseline call; 1 row and 1,000 rows."""
    rows = results.get("inprocess") or []
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.5))
    for panel, kind, title in zip(panels, ("single", "batch"), ("1 row", "1,000 rows"), strict=True):
        models = list(dict.fromkeys(r["model"] for r in rows))
        width = 0.8 / len(FIGURE_PATHS)
        for index, (names, label) in enumerate(FIGURE_PATHS):
            values = [
                next((r["p50_us"] for r in rows if r["model"] == m and r["path"] in names and r["kind"] == kind), 0)
                for m in models
            ]
            positions = [i + (index - (len(FIGURE_PATHS) - 1) / 2) * width for i in range(len(models))]
            panel.bar(positions, values, width, label=label)
        panel.set_xticks(range(len(models)), models)
        panel.set_yscale("log")
        panel.set_ylabel("p50 µs")
        panel.set_title(f"In-process predict, {title}")
        panel.grid(axis="y", which="both", alpha=0.3)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_figures(results: dict[str, Any], out: Path) -> None:
    """throughput.png and latency.png (when there was HTTP load) and inprocess.png (when measured)."""
    if results.get("http"):
        throughput_figure(results, out / "throughput.png")
        latency_figure(results, out / "latency.png")
    if results.get("inprocess"):
        inprocess_figure(results, out / "inprocess.png")
