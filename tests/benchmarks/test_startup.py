"""The start-up and memory benchmark on the heuristic: every process found, named and measured; its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import startup
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The heuristic's rows: the tutorial baseline, ours with one and with two workers."""
    said: list[str] = []
    measured = startup.measure(
        [ModelType.HEURISTIC], DEFAULT_REGISTRY_DIR, tmp_path_factory.mktemp("logs"), said.append
    )
    assert len(said) == len(measured) == 3
    return measured


def test_every_process_of_every_server_is_found_and_named(rows: list[dict[str, Any]]) -> None:
    """The baseline and one worker are one process; two workers are a master, two workers and the resource tracker,
    each with a resident and a proportional size (and the CPU time they used), adding up to the totals."""
    assert [(r["server"], r["workers"]) for r in rows] == [("baseline", 1), ("ours", 1), ("ours", 2)]
    assert [p["role"] for p in rows[0]["processes"]] == ["server"]
    assert [p["role"] for p in rows[1]["processes"]] == ["server"]
    assert sorted(p["role"] for p in rows[2]["processes"]) == ["master", "resource_tracker", "worker", "worker"]
    for row in rows:
        assert row["start_to_ready_s"] > 0 and row["start_cpu_s"] > 0
        assert all(0 < p["pss_mb"] <= p["rss_mb"] for p in row["processes"])
        assert row["total_rss_mb"] == pytest.approx(sum(p["rss_mb"] for p in row["processes"]), abs=0.2)
        assert row["start_cpu_s"] == pytest.approx(sum(p["cpu_s"] for p in row["processes"]), abs=0.02)
    assert rows[1]["x_baseline_rss"] == pytest.approx(rows[1]["processes"][0]["rss_mb"] / rows[0]["total_rss_mb"])


def test_the_report_shows_every_server_and_the_targets_it_can_judge(rows: list[dict[str, Any]]) -> None:
    """results.md's section has a line per server and the heuristic's targets (RSS against the baseline, the
    master, start to ready); the README gets the same table."""
    lines = startup.section(rows)
    body = [line for line in lines if line.startswith("| ours") or line.startswith("| baseline")]
    assert len(body) == 3
    judged = [target for target, _, _ in startup.targets(rows)]
    assert len(judged) == 3
    assert any("heuristic worker" in t for t in judged) and any("master" in t for t in judged)
    assert startup.readme_lines({"startup": rows})[2:] == lines[2:]
    assert startup.readme_lines({}) == []


def test_a_failed_server_is_a_row_with_its_error(tmp_path: Path) -> None:
    """A registry without the model: our server refuses to start, which is recorded, not raised."""
    said: list[str] = []
    measured = startup.measure([ModelType.DECISION_TREE], tmp_path / "empty", tmp_path, said.append)
    assert [("error" in row) for row in measured] == [True, True, True]
    assert "| failed |" in "\n".join(startup.section(measured))
