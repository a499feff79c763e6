"""Validate, fit and save the random forest (research/configs/random_forest.json; OOB too; saved with n_jobs=1)."""

from ml_production_service.configs import ModelType
from research.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main(ModelType.RANDOM_FOREST, __doc__ or ""))
