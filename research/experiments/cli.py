"""The command line every model family shares: run the experiment, then optionally promote through the gate."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ml_production_service.configs import ModelType
from ml_production_service.predictors.base import ModelLoadError
from research.experiments.common import MODELS_DIR, RESULTS_DIR, FamilyConfig
from research.experiments.evaluation import Protocol
from research.experiments.experiment import Run, run_experiment
from research.experiments.promotion import PromotionError, add_promotion_arguments, promote_from_args
from research.experiments.results import headline, seed_spread_text
from research.experiments.text import interval, mean_std, microseconds, milliseconds, pct, size


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """Where results go and how thoroughly to validate (the defaults are the committed protocol)."""
    defaults = Protocol()
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where candidates are written")
    parser.add_argument("--folds", type=int, default=defaults.folds)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the CV splits")
    parser.add_argument("--every", type=int, default=defaults.every, help="use every N-th iris row (1 = all)")
    parser.add_argument("--no-nested", action="store_true", help="skip nested CV")
    parser.add_argument("--timing-budget", type=float, default=defaults.timing_budget_s, help="seconds per latency")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probe (a subprocess)")
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="parallel fits (joblib)")
    parser.add_argument(
        "--spread-seeds", type=int, default=defaults.spread_seeds, help="other fold seeds to re-measure on"
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the drop-one feature ablation")


def protocol_from(args: argparse.Namespace) -> Protocol:
    """The Protocol the parsed arguments describe."""
    return Protocol(
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        every=args.every,
        nested=not args.no_nested,
        timing_budget_s=args.timing_budget,
        measure_memory=not args.no_memory,
        jobs=args.jobs,
        spread_seeds=args.spread_seeds,
        ablation=not args.no_ablation,
    )


def summarise(run: Run) -> str:
    """A few lines for the console: the numbers that matter and where the rest is."""
    m = run.record
    loocv, repeated = m.loocv, m.repeated_cv
    lines = [
        f"  headline accuracy {headline(m).text()}; {seed_spread_text(m)}",
        f"  LOOCV accuracy {pct(loocv.accuracy)} {interval(loocv.accuracy_ci95)}, macro F1 {loocv.macro_f1:.3f}, "
        f"misclassified rows {[w.row_id for w in loocv.misclassified]}",
        f"  {m.protocol.repeats}x{m.protocol.folds}-fold accuracy "
        f"{mean_std(repeated.accuracy_mean, repeated.accuracy_std)} {interval(repeated.accuracy_ci95)}",
    ]
    # Out-of-bag and nested-CV figures are in the run's report.md (the last line says where).
    for path, latency in m.serving.latency.items():
        lines.append(
            f"  {path}: 1 row {microseconds(latency.single_row_us_median)}, "
            f"1000 rows {milliseconds(latency.batch_1000_ms_median)}"
        )
    memory = m.serving.memory
    files = ", ".join(f"{name} {size(b)}" for name, b in m.serving.artifact_bytes.items())
    lines.append(f"  files {files}; memory {size(memory.load_and_predict_bytes) if memory else '—'}")
    lines.append(f"  results {run.directory} ({m.elapsed_seconds:.1f} s)")
    return "\n".join(lines)


def main(model_type: ModelType, description: str, argv: list[str] | None = None) -> int:
    """Run one family's experiment; with ``--promote``, promote its candidate through the gate."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=None, help=f"default: research/configs/{model_type.value}.json")
    parser.add_argument("--promote", action="store_true", help="promote the candidate through the gate")
    add_promotion_arguments(parser)
    add_protocol_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run = run_experiment(
        FamilyConfig.load(model_type, args.config), protocol_from(args), args.results_dir, args.models_dir
    )
    print(summarise(run))
    if args.promote:
        try:
            print(promote_from_args(model_type, run.run_id, args))
        except (PromotionError, ModelLoadError) as error:
            print(error, file=sys.stderr)
            return 1
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
