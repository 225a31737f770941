# The menu: each target is a one-liner that calls the real tool. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MNIST_DATA_DIR ?= $(if $(wildcard ../shared/data/mnist),$(abspath ../shared/data/mnist),$(abspath data/mnist))
PYTEST_ARGS ?=
# Each pytest session of `make test` leaves its counts here; tests/support/tally.py adds them up at the end.
TALLY := $(abspath test-output/tally)

.DEFAULT_GOAL := help
.PHONY: help install run serve test test-setup lint format bench train evaluate manifests image image-trainer \
        image-test cassandra-image tools soak cassandra-up cassandra-down cassandra-cluster-up cassandra-cluster-down \
        test-cluster e2e clean cluster-build cluster-up cluster-down cluster-status test-k8s

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(BIN)/mnist: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	@touch $@

install: $(BIN)/mnist ## Create .venv and install the project with its test extras

run: install ## Serve on http://127.0.0.1:8000 with the shipped models (SQLite store unless MNIST_STORE_URL says otherwise)
	$(BIN)/mnist serve

test: test-setup install ## Set up what is missing, lint, every test (real gunicorn, Cassandra, Chromium, podman, helm ...), one total
	@rm -rf $(TALLY); mkdir -p $(TALLY); export MNIST_TEST_TALLY=$(TALLY); status=0; \
	if $(MAKE) lint; then echo ok >$(TALLY)/lint.json; else echo failed >$(TALLY)/lint.json; status=1; fi; \
	MNIST_TEST_SESSION=main $(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	$(MAKE) test-cluster || status=1; \
	MNIST_TEST_SESSION=k8s $(MAKE) test-k8s || status=1; \
	$(BIN)/python -m tests.support.tally $(TALLY) lint main cluster k8s || status=1; \
	exit $$status

test-setup: ## Install missing system packages (through sudo when not root) and build helm + kubeconform
	scripts/install-system-deps.sh
	$(MAKE) tools

lint: install ## ruff (lint + format check) and mypy on service/
	$(BIN)/ruff check service tests scripts
	$(BIN)/ruff format --check service tests scripts
	$(BIN)/mypy

format: install ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format service tests scripts
	$(BIN)/ruff check --fix service tests scripts

bench: install ## Load-test the real server with wrk and write BENCHMARKS.md
	$(BIN)/python scripts/bench.py

soak: install ## 30 min on Cassandra at half of capacity, every record checked; the Soak block of BENCHMARKS.md (not in CI)
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

train: install ## Train both models into models/ (see docs/models.md for the exact commands)
	$(BIN)/mnist train --model softmax
	$(BIN)/mnist train --model cnn

evaluate: install ## Re-measure the shipped models on the 10k test set
	for m in models/*/*/; do $(BIN)/mnist evaluate $$m || exit 1; done

cassandra-up: ## Start one Apache Cassandra 5.0 node on 127.0.0.1:9042 (downloads once into ~/.m2)
	scripts/cassandra.sh up

cassandra-down: ## Stop the node started by cassandra-up
	scripts/cassandra.sh down

cassandra-cluster-up: ## Start a 3-node cluster on 127.0.0.1-3
	scripts/cassandra.sh cluster-up

cassandra-cluster-down: ## Stop the 3-node cluster
	scripts/cassandra.sh cluster-down

test-cluster: install ## The 3-node (RF=3) Cassandra tests, after the rest (make test runs them too)
	MNIST_TEST_SESSION=cluster $(BIN)/pytest -m cluster tests/test_cassandra_cluster.py

tools: ## Build helm and kubeconform from the Go module proxy into .cache/bin
	scripts/install-tools.sh

manifests: tools ## Regenerate k8s/ plain manifests from the Helm chart
	scripts/render-manifests.sh

image: ## Build the container image with podman on a local debootstrap base
	scripts/build-image.sh

image-trainer: ## Build localhost/mnist-service-trainer (the service plus TensorFlow: the retrain CronJob's image)
	TARGET=trainer scripts/build-image.sh

cassandra-image: ## Build localhost/mnist-cassandra:<version> (the official image's contract) with podman
	scripts/build-cassandra-image.sh

image-test: install ## Build the image, run it read-only, predict, /metrics, SIGTERM (part of `make test`)
	$(BIN)/pytest tests/test_image.py

e2e: install ## End-to-end test on the cluster KUBECONFIG points at (kind, minikube, ...; see k8s/README.md)
	$(BIN)/pytest -m k8s tests/e2e $(PYTEST_ARGS)

cluster-build: ## Build (or reuse) the local cluster's pinned binaries, cached in ~/.cache/mnist-service
	scripts/local-cluster.sh build

cluster-up: ## Start the local single-node Kubernetes (root); kubeconfig in var/kubeconfig
	scripts/local-cluster.sh up

cluster-down: ## Stop the local cluster and restore the host
	scripts/local-cluster.sh down

cluster-status: ## Processes, node, pods and the containment guard's counters of the local cluster
	scripts/local-cluster.sh status

test-k8s: install tools ## The e2e suite on the local cluster (brought up, and down again, if it was not up)
	scripts/test-k8s.sh $(PYTEST_ARGS)

clean: ## Remove caches and build output (keeps .venv and downloads)
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache test-output
