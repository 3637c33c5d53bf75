# The two commands of the README, for humans and CI alike. Each creates .venv
# when it is missing and installs what it needs there; nothing else is needed
# on the machine but Python 3.11 or newer.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Only the folders that exist yet: ruff fails on a missing path.
LINT_PATHS := $(wildcard src tests benchmarks examples)

.PHONY: test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

lint: $(VENV)/.test-installed
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/python -m pytest

demo: $(VENV)/.test-installed
	$(BIN)/python examples/persistence.py

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bus.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
