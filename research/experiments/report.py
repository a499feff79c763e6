"""Everything written from the results rather than typed: ``compare``, the journey, the README's tables.

``python -m research.experiments.report compare`` prints the latest run of every model side by side;
``python -m research.experiments.report write`` rewrites research/EXPERIMENTS_JOURNEY.md, the summary figure
and the README between its ``model-table`` and ``research`` markers (nothing else in the README is touched).
"""

from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, REPOSITORY_ROOT, ModelType
from ml_production_service.predictors.base import ManifestError
from ml_production_service.registry import read_manifest
from research.experiments import figures
from research.experiments.common import RESEARCH_DIR, RESULTS_DIR, load_dataset, relative
from research.experiments.experiment import REPORT_FILE, Run, latest_runs, list_runs
from research.experiments.run_report import render_report
from research.experiments.stats import McNemar, PairedTest, corrected_paired_test, mcnemar
from research.experiments.text import (
    comparison_cells,
    console_table,
    interval,
    mean_std,
    microseconds,
    milliseconds,
    pct,
    size,
    table,
)

README = REPOSITORY_ROOT / "README.md"
JOURNEY = RESEARCH_DIR / "EXPERIMENTS_JOURNEY.md"
SUMMARY_DIR_NAME = "summary"


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` against model ``b`` on the same folds (repeated CV) and the same rows (LOOCV)."""

    a: Run
    b: Run
    folds: PairedTest
    rows: McNemar

    @property
    def verdict(self) -> str:
        """Within noise, or which one is better at 95%."""
        if self.folds.within_noise:
            return "within noise"
        better = self.a if self.folds.difference > 0 else self.b
        return f"{better.model_type.value} better"


def compare_pair(a: Run, b: Run) -> Comparison | None:
    """Paired tests of two runs, or None when they were not scored on the same rows and folds."""
    if a.comparable_key != b.comparable_key:
        return None
    targets = load_dataset(a.metrics["protocol"]["every"]).targets
    ra, rb = a.metrics["repeated_cv"], b.metrics["repeated_cv"]
    folds = corrected_paired_test(
        np.asarray(ra["fold_accuracy"]), np.asarray(rb["fold_accuracy"]), ra["test_train_ratio"]
    )
    rows = mcnemar(
        np.asarray(a.metrics["loocv"]["predicted"]) == targets, np.asarray(b.metrics["loocv"]["predicted"]) == targets
    )
    return Comparison(a, b, folds, rows)


def comparisons(latest: dict[ModelType, Run]) -> list[Comparison]:
    """Every comparable pair of the latest runs."""
    pairs = (compare_pair(a, b) for a, b in itertools.combinations(latest.values(), 2))
    return [pair for pair in pairs if pair is not None]


def served_latency(run: Run) -> dict[str, float]:
    """Latency of the path the service uses by default: the fast path when there is one."""
    latency = run.metrics["serving"]["latency"]
    return latency.get("fast_path") or latency.get("pipeline") or latency["rules"]


def _serving(run: Run, registry_dir: Path) -> str:
    try:
        manifest = read_manifest(registry_dir, run.model_type)
    except ManifestError:
        return "no"
    return "yes" if manifest.metrics.get("run_id") == run.run_id else "no"


def _latency_cell(run: Run, key: str, unit: Any) -> str:
    latency = run.metrics["serving"]["latency"]
    if "rules" in latency:
        return unit(latency["rules"][key])
    cells = [unit(latency[path][key]) for path in ("fast_path", "pipeline") if path in latency]
    return " / ".join(cells)


def _memory_cell(memory: dict[str, int] | None) -> str:
    if not memory:
        return "—"
    total, pipeline = memory["load_and_predict_bytes"], memory["pipeline_bytes"]
    return size(total) if pipeline == memory["load_bytes"] else f"{size(total)} (joblib {size(pipeline)})"


def _files_cell(run: Run) -> str:
    files = {k: v for k, v in run.metrics["serving"]["artifact_bytes"].items() if k != "manifest.json"}
    return " + ".join(size(v) for v in files.values()) if files else "none (rules in code)"


def model_table(latest: dict[ModelType, Run], registry_dir: Path) -> str:
    """The README's model table: accuracy with intervals, latency, memory, size, and whether it serves."""
    rows = []
    for model_type, run in latest.items():
        m = run.metrics
        memory = m["serving"]["memory"]
        rows.append(
            [
                f"`{model_type.value}`",
                f"{pct(m['repeated_cv']['accuracy_mean'])} {interval(m['repeated_cv']['accuracy_ci95'])}",
                f"{pct(m['loocv']['accuracy'])} {interval(m['loocv']['accuracy_ci95'])}",
                _latency_cell(run, "single_row_us_median", microseconds),
                _latency_cell(run, "batch_1000_ms_median", milliseconds),
                _memory_cell(memory),
                _files_cell(run),
                f"[{run.run_id}]({relative(run.directory / 'report.md')})",
                _serving(run, registry_dir),
            ]
        )
    header = [
        "model",
        "10×10 CV accuracy [95% CI]",
        "LOOCV accuracy [95% CI]",
        "1 row (ONNX / joblib)",
        "1000 rows (ONNX / joblib)",
        "memory",
        "artifact (joblib + ONNX)",
        "run",
        "in registry/prd",
    ]
    key = next(iter(latest.values())).metrics if latest else None
    note = (
        ""
        if key is None
        else (
            f"\n\nGenerated by `make research-report` from the latest run of each model in `research/results/`. "
            f"Accuracy: repeated stratified {key['protocol']['folds']}-fold x {key['protocol']['repeats']} "
            f"(seed {key['protocol']['seed']}; the same folds for every model), mean with the Nadeau-Bengio corrected "
            "95% interval; leave-one-out with the Wilson 95% interval. The heuristic's thresholds were read off these "
            "same rows, so its numbers are in-sample. Latency: median of one `predict_proba` call on this machine "
            f"({key['machine']['cpu']}, {key['machine']['cores']} cores), on the ONNX fast path the service uses "
            "by default and on the joblib pipeline. Memory: resident growth of a fresh process that loads the "
            "model (both paths; the ONNX Runtime session is most of it) and predicts 1000 rows. Comparisons, "
            "noise and conclusions: [research/EXPERIMENTS_JOURNEY.md](research/EXPERIMENTS_JOURNEY.md)."
        )
    )
    return table(header, rows) + note


_COMMANDS = table(
    ["command", "what it does"],
    [
        [
            "`make run-all-experiments`",
            "all four experiments, then `research-report` (no promotion); `JOBS=2` fits in parallel",
        ],
        [
            "`make eval-heuristic`, `make train-decision-tree`, `make train-random-forest`, `make train-xgboost`",
            "one experiment, then a gated promotion of its candidate",
        ],
        [
            "`make promote MODEL=<type> [RUN=<run-id>] [FORCE=1]`",
            "promote a run's candidate (default: the newest run of the model) unless its 10×10 accuracy is below "
            "production's on the same protocol",
        ],
        [
            "`make rollback MODEL=<type>`",
            "swap `registry/prd/<type>` with the model it replaced (kept whole in `registry/previous/<type>`)",
        ],
        ["`make compare`", "the latest run of every model side by side, with paired tests"],
        [
            "`make research-report`",
            "regenerate `research/EXPERIMENTS_JOURNEY.md`, `research/results/summary/` and these README tables",
        ],
    ],
)


def research_section(latest: dict[ModelType, Run]) -> str:
    """The README's research section: what the pipeline does and the commands."""
    runs = ", ".join(f"`{run.run_id}`" for run in latest.values()) or "none yet"
    return f"""Every number above is produced by a command. Each model family has one CLI
(`python -m research.experiments.<family>`) on one shared evaluation module, with its recipe in
`research/configs/<family>.json`: leave-one-out CV (confusion matrix, per-class precision and recall,
misclassified row ids), repeated stratified 10-fold x 10 on the same folds for every model, OOB for the
random forest, nested CV over a small grid, and latency, memory and artifact size measured on this machine.
A run writes `research/results/<run-id>/` (`metrics.json` with the data sha256, git commit, package and
library versions, seed and parameters; `report.md`; PNG figures) and its candidate to
`research/models/<run-id>/<type>/`: the validated recipe fitted on all rows, no early stopping.

{_COMMANDS}

Latest runs: {runs}. The story, with which differences are within noise:
[research/EXPERIMENTS_JOURNEY.md](research/EXPERIMENTS_JOURNEY.md).

![Fold accuracies of every model](research/results/summary/cv_scores.png)"""


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


def compare_text(results_dir: Path, registry_dir: Path) -> str:
    """The console comparison: one line per model, then the paired tests."""
    latest = latest_runs(results_dir)
    if not latest:
        return f"no runs in {results_dir}: make run-all-experiments"
    rows = []
    for model_type, run in latest.items():
        m = run.metrics
        served = served_latency(run)
        memory = m["serving"]["memory"]
        rows.append(
            [
                model_type.value,
                run.run_id.removeprefix(f"{model_type.value}-"),
                f"{pct(m['loocv']['accuracy'])} {interval(m['loocv']['accuracy_ci95'])}",
                f"{mean_std(m['repeated_cv']['accuracy_mean'], m['repeated_cv']['accuracy_std'])} "
                f"{interval(m['repeated_cv']['accuracy_ci95'])}",
                pct(m["oob"]["accuracy"]) if m["oob"] else "—",
                pct(m["nested_cv"]["accuracy_mean"]) if m["nested_cv"] else "—",
                f"{m['loocv']['macro_f1']:.3f}",
                microseconds(served["single_row_us_median"]),
                milliseconds(served["batch_1000_ms_median"]),
                size(memory["load_and_predict_bytes"]) if memory else "—",
                _files_cell(run),
                _serving(run, registry_dir),
            ]
        )
    header = ["model", "run", "LOOCV [95%]", "10x10 mean ± sd [95%]", "OOB", "nested", "F1", "1 row", "1000 rows"]
    lines = [console_table([*header, "memory", "artifact", "serving"], rows), ""]
    pairs = comparisons(latest)
    if pairs:
        lines.append(
            console_table(
                ["a - b", "10x10 diff [95%]", "p", "LOOCV only a / only b right", "p", "verdict"],
                [_pair_row(c) for c in pairs],
            )
        )
    return "\n".join(lines)


def _pair_row(c: Comparison) -> list[str]:
    bounds = f"[{100 * c.folds.interval[0]:+.2f}, {100 * c.folds.interval[1]:+.2f}]"
    return comparison_cells(c, f"{c.a.model_type.value} - {c.b.model_type.value}", bounds)


def write_all(
    results_dir: Path = RESULTS_DIR,
    registry_dir: Path = DEFAULT_REGISTRY_DIR,
    readme: Path | None = README,
    journey: Path = JOURNEY,
) -> list[Path]:
    """Regenerate every run's report.md, the journey, the summary figure and (with ``readme``) the README sections."""
    from research.experiments.journey import render_journey

    latest = latest_runs(results_dir)
    written = []
    for run in list_runs(results_dir):  # each run's report.md is rendered from its metrics.json, so it never drifts
        (run.directory / REPORT_FILE).write_text(render_report(run), encoding="utf-8")
    if latest:
        summary = results_dir / SUMMARY_DIR_NAME
        summary.mkdir(parents=True, exist_ok=True)
        comparable = latest_runs(results_dir, like=list(latest.values())[-1])
        key = next(iter(comparable.values())).metrics["protocol_key"]
        scores = {t.value: r.metrics["repeated_cv"]["fold_accuracy"] for t, r in comparable.items()}
        title = f"{key['repeats']}x{key['folds']}-fold CV accuracy, same folds (latest run of each model)"
        written.append(figures.cv_distributions(scores, title, summary / "cv_scores.png"))
    journey.write_text(
        render_journey(list_runs(results_dir), latest, comparisons(latest), journey.parent), encoding="utf-8"
    )
    written.append(journey)
    if readme is not None:
        update_readme(readme, {"model-table": model_table(latest, registry_dir), "research": research_section(latest)})
        written.append(readme)
    return written


def main(argv: list[str] | None = None) -> int:
    """``compare`` prints the table; ``write`` regenerates the journey, the summary figure and the README tables."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["compare", "write"])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--journey", type=Path, default=JOURNEY)
    args = parser.parse_args(argv)
    if args.action == "compare":
        print(compare_text(args.results_dir, args.registry_dir))
        return 0
    for path in write_all(args.results_dir, args.registry_dir, args.readme, args.journey):
        print(f"wrote {relative(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
