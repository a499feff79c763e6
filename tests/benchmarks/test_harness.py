"""The harness without servers or wrk: committed results re-render byte for byte, wrk is required, MLServer's inputs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

from benchmarks import RESULTS_DIR, endpoints, peers, readme, report, run
from benchmarks.ratios import add_ratios
from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.registry import load_artifact, read_manifest, sha256_file

COMMITTED = sorted(path for path in RESULTS_DIR.glob("*/results.json") if not path.parent.name.endswith("-quick"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("results_json", COMMITTED, ids=lambda path: path.parent.name)
def test_committed_results_render_as_committed(results_json: Path) -> None:
    """Each committed run's results.md is what the report writes from its results.json, and its ratios are what
    add_ratios computes from its raw rows: the report code still reads and writes the committed format."""
    results = _load(results_json)
    assert report.markdown(results) == (results_json.parent / "results.md").read_text()
    raw = copy.deepcopy(results)
    for row in raw.get("http", []) + raw.get("servers", []):
        del row["vs_ceiling"], row["vs_baseline"]
    add_ratios(raw)
    assert raw == results


def test_readme_perf_section_is_what_bench_report_writes() -> None:
    """The README's performance section is bench-report's output for the result folders it names (no hand edits)."""
    text = readme.README.read_text()
    section = text[text.index(readme.START_MARKER) + len(readme.START_MARKER) : text.index(readme.END_MARKER)]
    named = re.findall(r"`(benchmarks/results/[^`]+)`", section)
    folders = {"peers" if path.endswith("-peers") else "bench": readme.REPOSITORY / path for path in named}
    assert len(folders) == len(named) >= 1
    loaded = {kind: _load(folder / "results.json") for kind, folder in folders.items()}
    expected = readme.readme_section(loaded.get("bench"), loaded.get("peers"), folders)
    assert section == "\n" + expected.rstrip("\n") + "\n"


def test_without_wrk_the_run_stops_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """wrk is required (there is no fallback): without it the run says how to install it, exits 2, writes nothing."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert run.main(["--quick", "--out", str(out)]) == 2
    assert "apt-get install -y wrk" in capsys.readouterr().out
    assert not out.exists()


def test_mlserver_sklearn_runtime_loads_the_bytes_our_manifest_names(tmp_path: Path) -> None:
    """MLServer's sklearn runtime is pointed at the registry's artifact itself: the file whose sha256 we verify."""
    uri = peers.write_repository(tmp_path, ModelType.XGBOOST, "sklearn", DEFAULT_REGISTRY_DIR, 1)
    model_settings = json.loads((tmp_path / "xgboost" / "model-settings.json").read_text())
    assert Path(model_settings["parameters"]["uri"]) == uri
    assert sha256_file(uri) == read_manifest(DEFAULT_REGISTRY_DIR, ModelType.XGBOOST).sha256


def test_mlserver_xgboost_runtime_booster_answers_as_our_pipeline(tmp_path: Path) -> None:
    """The Booster exported for MLServer's xgboost runtime, sent the engineered row the harness sends, gives the
    probabilities our Pipeline gives for the raw row (so both servers compute the same thing)."""
    uri = peers.write_repository(tmp_path, ModelType.XGBOOST, "xgboost", DEFAULT_REGISTRY_DIR, 1)
    model_settings = json.loads((tmp_path / "xgboost" / "model-settings.json").read_text())
    assert Path(model_settings["parameters"]["uri"]) == uri
    exported = xgboost.XGBClassifier()
    exported.load_model(uri)  # as the runtime's sklearn interface loads it
    pipeline, _ = load_artifact(DEFAULT_REGISTRY_DIR, ModelType.XGBOOST)
    expected = pipeline.predict_proba(np.asarray([endpoints.ROW]))
    np.testing.assert_allclose(exported.predict_proba(np.asarray([peers.engineered_row(endpoints.ROW)])), expected)
