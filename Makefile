SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "%-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/dagnats-bridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(BIN)/dagnats-bridge ## Create .venv and install the bridge with its dev tools

run: install ## Serve the bridge on :8080 over an embedded nats-server (simulator on)
	$(BIN)/dagnats-bridge serve

run-memory: install ## Serve the bridge on :8080 with no NATS at all (in-memory simulator)
	$(BIN)/dagnats-bridge serve --backend memory

fmt: install ## Format and fix what ruff can fix safely
	$(BIN)/ruff format src tests examples bench
	$(BIN)/ruff check --fix src tests examples bench

lint: install ## ruff, ruff format --check, mypy --strict, import-linter
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: install ## Unit tests only (fast, no server process)
	$(BIN)/pytest -q -m 'not integration'

test: lint ## Lint, then every test (unit and integration)
	$(BIN)/pytest -q

wheel-smoke: install ## Build wheel and sdist, install the wheel alone in a fresh venv, serve and poll
	BUILD_PYTHON=$(BIN)/python VENV_PYTHON=$(PYTHON) .ci/wheel-smoke

FAULT_TASKS ?= 2000

faults: install ## Fault scenarios with FAULT_TASKS tasks each (default 2000); prints the reliability table
	$(BIN)/python -m tests.faults --tasks $(FAULT_TASKS)

bench: install ## Bridge vs direct nats-py worker (<10 min): bench/results/latest.{json,png}; QUICK=1 for a short run
	$(BIN)/python -m bench --batch-resolve $(if $(QUICK),--quick)

.PHONY: help install run run-memory fmt lint test-unit test faults bench wheel-smoke
