"""Validate, fit and save XGBoost (research/configs/xgboost.json; a fixed number of rounds, no early stopping)."""

from ml_production_service.configs import ModelType
from research.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main(ModelType.XGBOOST, __doc__ or ""))
