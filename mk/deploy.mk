# Deployment targets: system tools, container image, compose A/B test, Kubernetes manifests.
.PHONY: system-tools service-build service-start service-stop service-validate service-quick-start \
	deploy-lint k8s-validate

# Debian packages the tests run for real: nginx (the A/B router), docker-compose (`docker-compose config`),
# wrk (load generation), gettext-base (envsubst, which renders the router template as the nginx image does),
# redis-server (the shared rate-limit storage, started per test by tests/functional/redis_server.py),
# prometheus (promtool: check and unit-test deploy/prometheus/) and prometheus-alertmanager (amtool: check
# deploy/prometheus/alertmanager.yml; Debian names its daemon prometheus-alertmanager, so amtool is the probe).
SYSTEM_TOOLS := nginx:nginx docker-compose:docker-compose wrk:wrk envsubst:gettext-base redis-server:redis-server \
	promtool:prometheus amtool:prometheus-alertmanager
IMAGE ?= ml-production-service
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' ml_production_service/__init__.py)
# Debian's docker-compose (v1) when installed, else the Docker CLI plugin.
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)
ROUTER_URL ?= http://127.0.0.1:8000
K8S_MANIFESTS := $(filter-out k8s/kustomization.yaml,$(wildcard k8s/*.yaml))
KSERVE_MANIFESTS := $(wildcard k8s/kserve/*.yaml)
MONITORING_MANIFESTS := $(wildcard k8s/monitoring/*.yaml)
# The oldest Kubernetes minor the manifests target, and the newest kubernetes-validate knows.
K8S_VERSIONS := 1.30.0 1.37.0

system-tools: ## Install the Debian tools the tests use (nginx, docker-compose, wrk, envsubst) when missing
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing:$$missing; run as root: apt-get update && apt-get install -y --no-install-recommends$$missing" >&2; \
		exit 1; \
	fi; \
	echo "installing:$$missing"; \
	policy=/usr/sbin/policy-rc.d; made_policy=""; \
	if [ ! -e "$$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$$policy" && chmod +x "$$policy" && made_policy=1; fi; \
	status=0; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing; } \
		|| status=$$?; \
	if [ -n "$$made_policy" ]; then rm -f "$$policy"; fi; \
	exit $$status

service-build: ## Build the image ml-production-service:<version> and :latest (needs a Docker engine)
	docker build --tag $(IMAGE):$(IMAGE_TAG) --tag $(IMAGE):latest .

service-start: ## Start the A/B stack: random_forest on :8001, decision_tree on :8002, the router on :8000
	SERVICE_IMAGE=$(IMAGE):$(IMAGE_TAG) $(COMPOSE) up --detach

service-stop: ## Stop the A/B stack and remove its containers
	SERVICE_IMAGE=$(IMAGE):$(IMAGE_TAG) $(COMPOSE) down

service-validate: $(VENV_STAMP) ## Check a started stack: in-sample agreement on each variant's training rows, then the router's split
	$(UV_RUN) python deploy/ab_check.py --url $(ROUTER_URL) --wait 60 --requests 0
	$(UV_RUN) python scripts/api_validate.py --url http://127.0.0.1:8001
	$(UV_RUN) python scripts/api_validate.py --url http://127.0.0.1:8002
	$(UV_RUN) python deploy/ab_check.py --url $(ROUTER_URL) --requests 200

service-quick-start: service-build service-start service-validate ## Build, start and validate the A/B stack

deploy-lint: $(VENV_STAMP) ## hadolint, docker-compose config (monitoring profile too), promtool and amtool, k8s-validate
	$(UV_RUN) hadolint Dockerfile
	$(COMPOSE) --file docker-compose.yml config --quiet
	$(COMPOSE) --file docker-compose.yml --profile monitoring config --quiet
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/rules.test.yml
	amtool check-config deploy/prometheus/alertmanager.yml
	@$(MAKE) --no-print-directory k8s-validate

k8s-validate: $(VENV_STAMP) ## kubernetes-validate --strict on k8s/; KServe and prometheus-operator resources on their schemas
	$(UV_RUN) kubernetes-validate --strict $(addprefix -k ,$(K8S_VERSIONS)) $(K8S_MANIFESTS)
	$(UV_RUN) python deploy/validate_kserve.py $(addprefix -k ,$(K8S_VERSIONS)) $(KSERVE_MANIFESTS)
	$(UV_RUN) python deploy/prometheus/monitoring_manifests.py validate \
		$(addprefix --kubernetes-version=,$(K8S_VERSIONS)) $(MONITORING_MANIFESTS)
