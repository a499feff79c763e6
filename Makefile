# ML Production Service. `make help` lists the targets; every Python command runs through `uv run`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv uses the machine's interpreter and never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
UV_RUN := $(UV) run --locked
# Bytecode is compiled once: installed packages at sync (--compile-bytecode), the project's own modules on first
# import. A machine that sets PYTHONDONTWRITEBYTECODE (this one does) would otherwise compile every module from
# source in every process it starts: about 580 modules, 0.9 s of CPU per server start, test and benchmark.
unexport PYTHONDONTWRITEBYTECODE
VENV_STAMP := .venv/.synced
API_URL ?= http://127.0.0.1:$(or $(MPS_API_PORT),8000)

.PHONY: help uv environment-create environment-sync format lint type-check validate-branch unit-test \
	functional-test test-fast all-test all-test-validate-branch api-run serve api-validate api-key

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-26s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv from PyPI if it is missing
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

$(VENV_STAMP): pyproject.toml uv.lock
	@$(MAKE) --no-print-directory uv
	$(UV) sync --locked --compile-bytecode
	@touch $@

environment-create: $(VENV_STAMP) ## Create .venv from uv.lock (runtime + dev tools) if missing or stale

environment-sync: uv ## Re-sync .venv with uv.lock
	$(UV) sync --locked --compile-bytecode
	@touch $(VENV_STAMP)

format: $(VENV_STAMP) ## Format and auto-fix the code
	$(UV_RUN) ruff format .
	$(UV_RUN) ruff check --fix .

lint: $(VENV_STAMP) ## ruff check and format check
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .

type-check: $(VENV_STAMP) ## mypy --strict on the package
	$(UV_RUN) mypy

validate-branch: lint type-check ## Everything a branch must pass before merge: lint, format, types

unit-test: $(VENV_STAMP) ## Unit tests
	$(UV_RUN) pytest tests/unit

functional-test: $(VENV_STAMP) ## Functional tests through HTTP
	$(UV_RUN) pytest tests/functional

test-fast: $(VENV_STAMP) ## The tests that need no root, no system tool and no server process (under a minute)
	$(UV_RUN) pytest -m "not slow" -q

all-test: $(VENV_STAMP) system-tools ## The whole test suite with the branch-coverage gate (95%); installs Debian tools (root)
	$(UV_RUN) pytest --cov --cov-report=term

all-test-validate-branch: validate-branch all-test ## validate-branch, then all-test

api-run: $(VENV_STAMP) ## Serve the API (MPS_MODEL_TYPE, MPS_API_HOST, MPS_API_PORT, ... are honoured)
	$(UV_RUN) python -m ml_production_service

serve: api-run ## Production server: exactly the container's command (MPS_WORKERS workers)

api-validate: $(VENV_STAMP) ## Post the 150 training rows to a running server (API_URL): in-sample smoke test, not accuracy
	$(UV_RUN) python scripts/api_validate.py --url $(API_URL)

api-key: $(VENV_STAMP) ## Make an API key: ID=<id> [FILE=<keys file>]; prints the key once, stores only its sha256
	@test -n '$(ID)' || { echo 'usage: make api-key ID=<id> [FILE=<keys file>]' >&2; exit 2; }
	$(UV_RUN) python -m ml_production_service.keys new '$(ID)' $(if $(FILE),--file '$(FILE)')


# Research (issue: research pipeline), deployment and benchmarks live in their own fragments.
include mk/research.mk mk/deploy.mk mk/bench.mk
