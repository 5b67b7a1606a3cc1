# hpchub developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help deps venv apiserver lint test unit integration crds demo bench clean \
	kind-demo kind-demo-down

help:
	@echo "make demo   - install what is missing and run the local portal (real stack)"
	@echo "make test   - install what is missing, lint, run unit + integration tests"
	@echo "make lint   - ruff, mypy, import contracts"
	@echo "make crds   - regenerate crds/ from the typed models"
	@echo "make bench  - benchmarks (BENCH_MODE=quick|full)"
	@echo "make kind-demo - the Helm chart on a local kind cluster (needs Docker, kind, kubectl)"

deps:
	bash scripts/install-deps.sh

# The venv is made from Debian's /usr/bin/python3: Slurm jobs and login-node servers run
# as other Unix users and must be able to execute it (root's pyenv home is mode 700).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[hub,node,dev]'
	touch $@

venv: $(VENV)/.installed

apiserver:
	bash scripts/build-kube-apiserver.sh

lint: venv
	$(BIN)/ruff check $(wildcard operator hub tests benchmarks scripts)
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

integration: venv
	$(BIN)/pytest -q tests/integration $(PYTEST_ARGS)

test: deps venv apiserver lint
	$(BIN)/pytest -q -ra tests/unit tests/integration $(wildcard tests/e2e) $(PYTEST_ARGS)

crds: venv
	$(BIN)/hpchub crds --out crds
	$(BIN)/python scripts/sync-chart.py

demo: deps venv apiserver
	$(BIN)/hpchub demo

# The Helm path on kind: cluster, images, mini HPC, chart (docs/helm.md).
kind-demo:
	bash scripts/kind-demo.sh up

kind-demo-down:
	bash scripts/kind-demo.sh down

bench: deps venv apiserver
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks $${BENCH_MODE:+--mode $$BENCH_MODE}

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
