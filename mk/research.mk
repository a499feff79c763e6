# Research targets: experiments, reports, gated promotion and rollback (research/experiments).
.PHONY: eval-heuristic train-decision-tree train-random-forest train-xgboost train-all run-all-experiments \
	promote rollback reproduce-registry refresh-reference compare research-report readme-model-table drift-report

JOBS ?= 1
RESEARCH_FORCE = $(if $(filter 1 true yes,$(FORCE)),--force)
RESEARCH_RUN_ID = $(or $(RUN_ID),$(RUN))
# Gate margin as a fraction (0.01 = 1 point; default: the recipe's "gate" section); replaced models kept per type.
RESEARCH_GATE = $(if $(MARGIN),--margin $(MARGIN)) $(if $(KEEP),--keep $(KEEP))

eval-heuristic: $(VENV_STAMP) ## Run the heuristic through the research protocol, then promote its manifest (gated)
	$(UV_RUN) python -m research.experiments.heuristic --promote --jobs $(JOBS) $(RESEARCH_FORCE)

train-decision-tree: $(VENV_STAMP) ## Validate (LOOCV, 10x10 CV, nested CV), fit on all rows, promote (gated; FORCE=1)
	$(UV_RUN) python -m research.experiments.decision_tree --promote --jobs $(JOBS) $(RESEARCH_FORCE)

train-random-forest: $(VENV_STAMP) ## Validate (LOOCV, 10x10 CV, OOB, nested CV), fit on all rows, promote (gated)
	$(UV_RUN) python -m research.experiments.random_forest --promote --jobs $(JOBS) $(RESEARCH_FORCE)

train-xgboost: $(VENV_STAMP) ## Validate (LOOCV, 10x10 CV, nested CV), fit on all rows (no early stopping), promote
	$(UV_RUN) python -m research.experiments.xgboost_model --promote --jobs $(JOBS) $(RESEARCH_FORCE)

train-all: eval-heuristic train-decision-tree train-random-forest train-xgboost ## Every model above

run-all-experiments: $(VENV_STAMP) ## All four experiments (no promotion), then the journey and README tables
	$(UV_RUN) python -m research.experiments.run_all --jobs $(JOBS)

promote: $(VENV_STAMP) ## Promote a run's candidate through the gate: MODEL=<type> [RUN=<run-id>] [MARGIN=0.01] [FORCE=1]
	@test -n "$(MODEL)" || { echo "usage: make promote MODEL=<type> [RUN=<run-id>] [MARGIN=0.01] [FORCE=1]" >&2; exit 2; }
	$(UV_RUN) python -m research.experiments.promotion promote --model $(MODEL) \
		$(if $(RESEARCH_RUN_ID),--run $(RESEARCH_RUN_ID)) --jobs $(JOBS) $(RESEARCH_FORCE) $(RESEARCH_GATE)

rollback: $(VENV_STAMP) ## Serve the newest model in registry/history/<type> again (a second rollback undoes it): MODEL=<type> [TO=<run-id>]
	@test -n "$(MODEL)" || { echo "usage: make rollback MODEL=<type> [TO=<run-id or history entry>]" >&2; exit 2; }
	$(UV_RUN) python -m research.experiments.promotion rollback --model $(MODEL) $(if $(TO),--to $(TO)) $(RESEARCH_GATE)

reproduce-registry: $(VENV_STAMP) ## Retrain every fitted model of registry/prd from its recipe; fail unless the bytes match: [MODEL=<type>]
	$(UV_RUN) python -m research.experiments.promotion reproduce $(if $(MODEL),--model $(MODEL))

refresh-reference: $(VENV_STAMP) ## Record reference profile + golden predictions in registry/prd, no retraining: [MODEL=<type>]
	$(UV_RUN) python -m research.experiments.promotion refresh-reference $(if $(MODEL),--model $(MODEL))

compare: $(VENV_STAMP) ## The latest run of every model side by side, with paired tests
	$(UV_RUN) python -m research.experiments.report compare

research-report: $(VENV_STAMP) ## Regenerate research/EXPERIMENTS_JOURNEY.md, the summary figure and README tables
	$(UV_RUN) python -m research.experiments.report write

readme-model-table: research-report ## Same as research-report (the README model table comes from the latest runs)

drift-report: $(VENV_STAMP) ## Drift and skew of a payload log against MPS_REGISTRY_DIR's models: LOG=<file> [OUT=<dir>]
	@test -n '$(LOG)' || { echo 'usage: make drift-report LOG=<payload log> [OUT=<dir>]' >&2; exit 2; }
	$(UV_RUN) python -m research.drift_report --log '$(LOG)' $(if $(OUT),--out '$(OUT)')
