# Deployment targets: container, compose, Kubernetes (filled in by the deployment issue).
.PHONY: system-tools
system-tools: ## Install the system tools the tests use (nginx, docker-compose, wrk) where possible
	@true
