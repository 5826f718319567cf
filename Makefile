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
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/dagnats-bridge ## Create .venv and install the bridge with its dev tools

run: install ## Serve the bridge on :8080 over an embedded nats-server (simulator on)
	$(BIN)/dagnats-bridge serve

run-memory: install ## Serve the bridge on :8080 with no NATS at all (in-memory simulator)
	$(BIN)/dagnats-bridge serve --backend memory

fmt: install ## Format and fix what ruff can fix safely
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

lint: install ## ruff, ruff format --check, mypy --strict, import-linter
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: install ## Unit tests only (fast, no server process)
	$(BIN)/pytest -q -m 'not integration'

test: lint ## Lint, then every test (unit and integration)
	$(BIN)/pytest -q

.PHONY: help install run run-memory fmt lint test-unit test
