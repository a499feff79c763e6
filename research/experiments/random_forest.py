"""Train, validate and promote the random forest (saved with n_jobs=1: one row needs no process pool)."""

from sklearn.ensemble import RandomForestClassifier

from ml_production_service.configs import ModelType
from research.experiments.common import SEED, parse_registry_dir, report, train_and_promote

HYPERPARAMETERS = {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1}

if __name__ == "__main__":
    registry = parse_registry_dir(__doc__ or "")
    report(
        train_and_promote(
            ModelType.RANDOM_FOREST, RandomForestClassifier(random_state=SEED, **HYPERPARAMETERS), registry
        )
    )
