"""One CLI per model family (heuristic, decision_tree, random_forest, xgboost_model) on one evaluation module.

``common`` (data, pipeline, configs, recipes), ``evaluation`` (the protocol), ``stats`` (intervals and paired
tests), ``experiment`` (a run: results and candidate), ``promotion`` (gate, promote, rollback), ``report`` and
``journey`` (compare, EXPERIMENTS_JOURNEY.md, README tables), ``run_all`` (every family, then the reports).
"""
