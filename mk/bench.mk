# Benchmark targets: in-process and HTTP load (wrk) against a ceiling, a tutorial baseline and MLServer; the guard's
# cost (in-process and HTTP) and one worker under overload (wrk at concurrency 512) in the same run.
.PHONY: bench bench-quick bench-peers bench-report bench-wrk bench-peers-env

PEERS_DIR := .peers
MLSERVER_VENV := $(PEERS_DIR)/mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
MLSERVER_VERSION := 1.7.1
BENCH_FLAGS ?=

bench-wrk: ## Install wrk (Debian's package) when missing and root; otherwise stop with the command to run
	@$(MAKE) --no-print-directory system-tools SYSTEM_TOOLS=wrk:wrk

bench: $(VENV_STAMP) bench-wrk ## In-process, HTTP, guard, overload, monitoring (~8 min): benchmarks/results/<timestamp>/
	BENCH_COMMAND="make bench" $(UV_RUN) python -m benchmarks.run $(BENCH_FLAGS)

bench-quick: $(VENV_STAMP) bench-wrk ## The benchmark with tiny counts, ~2 min (proves the harness; asserts no speed)
	BENCH_COMMAND="make bench-quick" $(UV_RUN) python -m benchmarks.run --quick $(BENCH_FLAGS)

# MLServer pins older FastAPI/Starlette: it gets its own venv, with our artifacts' exact scikit-learn/xgboost/numpy
# (xgboost-cpu: no CUDA download) and httptools, so that its uvicorn parses HTTP as fast as ours. uvloop 0.22+
# raises in asyncio.get_event_loop() without a running loop, which kills MLServer 1.7.1's parallel workers.
$(MLSERVER_STAMP): uv.lock mk/bench.mk | $(VENV_STAMP)
	$(UV) venv --allow-existing --python $(PYTHON) $(MLSERVER_VENV)
	$(UV) pip install --python $(MLSERVER_VENV)/bin/python mlserver==$(MLSERVER_VERSION) \
		mlserver-sklearn==$(MLSERVER_VERSION) httptools "uvloop<0.22" $$($(UV_RUN) python -m benchmarks.peers pins)
	$(UV) pip install --python $(MLSERVER_VENV)/bin/python --no-deps mlserver-xgboost==$(MLSERVER_VERSION)
	@touch $@

bench-peers-env: $(MLSERVER_STAMP) ## Create MLServer's venv under .peers/ (done by bench-peers)

bench-peers: $(VENV_STAMP) bench-wrk $(MLSERVER_STAMP) ## Our V2 against MLServer on the same artifacts (~7 min)
	BENCH_COMMAND="make bench-peers" $(UV_RUN) python -m benchmarks.run --peers $(BENCH_FLAGS)

bench-report: $(VENV_STAMP) ## Write README's performance table from the latest full bench and bench-peers results
	$(UV_RUN) python -m benchmarks.readme
