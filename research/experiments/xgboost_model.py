"""Train, validate and promote XGBoost (a fixed number of rounds: no early stopping on an unvalidated split)."""

from xgboost import XGBClassifier

from ml_production_service.configs import ModelType
from research.experiments.common import SEED, parse_registry_dir, report, train_and_promote

HYPERPARAMETERS = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "n_jobs": 1, "tree_method": "hist"}

if __name__ == "__main__":
    registry = parse_registry_dir(__doc__ or "")
    report(train_and_promote(ModelType.XGBOOST, XGBClassifier(random_state=SEED, **HYPERPARAMETERS), registry))
