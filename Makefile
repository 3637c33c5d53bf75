# The two commands of the README, for humans and CI alike. Each creates .venv
# when it is missing and installs what it needs there; nothing else is needed
# on the machine but Python 3.11 or newer.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint demo bench bench-bus bench-autoreload bench-servers bench-site bench-workers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/python -m pytest

# The demo site in the foreground: open the addresses it prints; Ctrl-C stops it.
# Its visits are counted in ./visits.sqlite3.
demo: $(VENV)/.demo-installed
	$(BIN)/sitebus run examples/site/site.toml

# Each benchmark runs its systems side by side in one run and prints ratios.
bench: bench-bus bench-autoreload bench-servers bench-site bench-workers

bench-bus: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bus.py

bench-autoreload: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/autoreload.py

bench-servers: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/servers.py

# Needs wrk (apt-get install wrk): the 3% it judges is below a Python client's noise.
bench-site: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/site.py

# Needs wrk too; 1 and 2 workers against gunicorn's and uvicorn's, and a rolling restart.
bench-workers: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/workers.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
