"""One CLI per model family (heuristic, decision_tree, random_forest, xgboost_model) on one evaluation module.

``contract`` (the data's rules, checked on every load), ``common`` (data, pipeline, configs, recipes),
``evaluation`` (the protocol), ``ablation`` (feature evidence), ``stats`` (intervals and paired tests),
``experiment`` (a run: results and candidate), ``results`` (metrics.json's schema, read and written there, and
which accuracy is the headline), ``gate`` and ``promotion`` (gate, promote, rollback), ``comparison`` (paired
tests of two runs), ``report``, ``run_report``, ``journey`` and ``model_card`` (compare, EXPERIMENTS_JOURNEY.md,
README tables, model and data cards), ``text`` and ``environment`` (formatting, README markers, machine and library
versions), ``memory_probe`` (run in a subprocess), ``run_all`` (every family, then the reports).
"""
