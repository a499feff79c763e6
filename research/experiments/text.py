"""How numbers are written in reports, tables and the console, so every page says them the same way; and how a
README's marked sections are rewritten (research and benchmarks both write README sections)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pct(value: float | None, digits: int = 1) -> str:
    """0.9533 -> '95.3%'; None -> '—'."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def interval(bounds: Sequence[float] | None, digits: int = 1) -> str:
    """[0.9, 0.97] -> '[90.0, 97.0]' (percent)."""
    if not bounds:
        return "—"
    return f"[{100 * bounds[0]:.{digits}f}, {100 * bounds[1]:.{digits}f}]"


def mean_std(mean: float, std: float) -> str:
    """Percent mean ± standard deviation."""
    return f"{100 * mean:.1f}% ± {100 * std:.1f}"


def microseconds(value: float | None) -> str:
    """A latency in µs, or in ms from 1,000 µs."""
    if value is None:
        return "—"
    return f"{value / 1e3:.1f} ms" if value >= 1_000 else f"{value:.0f} µs" if value >= 10 else f"{value:.1f} µs"


def milliseconds(value: float | None) -> str:
    """A latency in ms."""
    return "—" if value is None else f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def size(value: int | None) -> str:
    """Bytes as B, KiB or MiB."""
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} B"
    return f"{value / 1024:.1f} KiB" if value < 1024 * 1024 else f"{value / 1024 / 1024:.1f} MiB"


def p_value(value: float) -> str:
    """A p-value to two significant figures, '<0.001' below that."""
    return "<0.001" if value < 0.001 else f"{value:.2g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def console_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [list(map(str, header)), *[list(map(str, row)) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def comparison_cells(pair: Any, name: str, bounds: str) -> list[str]:
    """One row of a paired-comparison table (``pair``: ``comparison.Comparison``): its name, the fold difference with
    ``bounds`` (its corrected interval, written by the caller), both p-values, the LOOCV disagreements, the verdict."""
    return [
        name,
        f"{100 * pair.folds.difference:+.2f} pts {bounds}",
        p_value(pair.folds.p_value),
        f"{pair.rows.only_a_right} / {pair.rows.only_b_right}",
        p_value(pair.rows.p_value),
        pair.verdict,
    ]


def replace_between_markers(text: str, name: str, content: str) -> str:
    """``text`` with everything between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->)\n?.*?(<!-- {re.escape(name)}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"markers <!-- {name}:start --> / <!-- {name}:end --> not found")
    return pattern.sub(lambda match: f"{match.group(1)}\n{content}\n{match.group(2)}", text, count=1)


def update_readme(readme: Path, sections: dict[str, str]) -> None:
    """Rewrite only the marked sections of ``readme`` (one quick read-modify-write)."""
    text = readme.read_text(encoding="utf-8")
    updated = text
    for name, content in sections.items():
        updated = replace_between_markers(updated, name, content)
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
