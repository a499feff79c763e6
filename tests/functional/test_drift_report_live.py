"""The drift report on a payload log written by the running service (the real command), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from sklearn.datasets import load_iris

from ml_production_service.features import FEATURE_NAMES
from tests.functional.server_process import REPOSITORY, running_server

pytestmark = pytest.mark.slow


def test_a_log_written_by_the_service_gives_a_report_without_skew_and_with_the_shift(tmp_path: Path) -> None:
    """150 iris rows and 150 rows with petal_length + 1.5 cm, logged by two workers: the report finds drift on
    petal_length only and no training/serving skew (the fast path's answers replay within 1e-6)."""
    log = tmp_path / "payload.jsonl"
    iris = load_iris().data.tolist()
    shifted = [[a, b, c + 1.5, d] for a, b, c, d in iris]
    settings = {"MPS_MODEL_TYPE": "random_forest", "MPS_WORKERS": "2", "MPS_PAYLOAD_LOG_SAMPLE": "1"}
    with running_server(MPS_PAYLOAD_LOG_PATH=str(log), **settings) as server:
        for rows in (iris, shifted):
            body = {"instances": [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows]}
            request = urllib.request.Request(
                f"{server.url}/predict/batch",
                data=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                assert response.status == 200
    assert len(log.read_text().splitlines()) == 300
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "research.drift_report", "--log", str(log), "--out", str(out)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = (out / "drift_report.md").read_text()
    assert "No training/serving skew" in report
    drifting = [line for line in report.splitlines() if line.startswith("| ") and "significant" in line]
    assert drifting and all("petal_length" in line for line in drifting), drifting
    assert len(list(out.glob("*.png"))) == len(FEATURE_NAMES)
