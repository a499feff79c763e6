"""Train, validate and promote the decision tree."""

from sklearn.tree import DecisionTreeClassifier

from ml_production_service.configs import ModelType
from research.experiments.common import SEED, parse_registry_dir, report, train_and_promote

HYPERPARAMETERS = {"max_depth": 4, "min_samples_leaf": 1, "criterion": "gini"}

if __name__ == "__main__":
    registry = parse_registry_dir(__doc__ or "")
    report(
        train_and_promote(
            ModelType.DECISION_TREE, DecisionTreeClassifier(random_state=SEED, **HYPERPARAMETERS), registry
        )
    )
