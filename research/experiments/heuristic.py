"""Evaluate the rule-based heuristic through the shared protocol (its thresholds were read off these rows)."""

from ml_production_service.configs import ModelType
from research.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main(ModelType.HEURISTIC, __doc__ or ""))
