# Research targets: training, evaluation, promotion.
.PHONY: eval-heuristic train-decision-tree train-random-forest train-xgboost train-all

eval-heuristic: $(VENV_STAMP) ## Evaluate the heuristic and promote its manifest into registry/prd
	$(RUN) python -m research.experiments.heuristic

train-decision-tree: $(VENV_STAMP) ## Train, validate (LOOCV) and promote the decision tree
	$(RUN) python -m research.experiments.decision_tree

train-random-forest: $(VENV_STAMP) ## Train, validate (LOOCV) and promote the random forest
	$(RUN) python -m research.experiments.random_forest

train-xgboost: $(VENV_STAMP) ## Train, validate (LOOCV) and promote XGBoost
	$(RUN) python -m research.experiments.xgboost_model

train-all: eval-heuristic train-decision-tree train-random-forest train-xgboost ## Every model above
