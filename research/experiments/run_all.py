"""Every family's experiment in one process (no promotion), then the journey, summary figure and README tables."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ml_production_service.configs import DEFAULT_REGISTRY_DIR
from research.experiments.cli import add_protocol_arguments, protocol_from, summarise
from research.experiments.common import FamilyConfig
from research.experiments.experiment import FAMILY_ORDER, run_experiment
from research.experiments.report import DATA_CARD_PATH, JOURNEY, README, compare_text, write_all


def main(argv: list[str] | None = None) -> int:
    """Run heuristic, decision tree, random forest and XGBoost under one protocol; then write the reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_protocol_arguments(parser)
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR, help="read: what serves")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--journey", type=Path, default=JOURNEY)
    parser.add_argument("--data-card", type=Path, default=DATA_CARD_PATH)
    args = parser.parse_args(argv)
    protocol = protocol_from(args)
    started = time.perf_counter()
    for model_type in FAMILY_ORDER:
        run = run_experiment(FamilyConfig.load(model_type), protocol, args.results_dir, args.models_dir)
        print(summarise(run))
    write_all(args.results_dir, args.registry_dir, args.readme, args.journey, args.data_card)
    print()
    print(compare_text(args.results_dir, args.registry_dir))
    print(f"\nrun-all-experiments: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
