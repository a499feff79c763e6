"""Validate, fit and save the decision tree (research/configs/decision_tree.json)."""

from ml_production_service.configs import ModelType
from research.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main(ModelType.DECISION_TREE, __doc__ or ""))
