# `make run` and `make test` each build .venv when it is missing. `make run` installs only
# what serving needs (the package and its runtime dependencies); `make test` adds the
# development set (pytest, mypy, ruff, the optional extras). Each has its own stamp, so
# one never reinstalls for the other.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
CONFIG ?= examples/stack.toml

.PHONY: run test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(RUN_STAMP)
	$(BIN)/callgate serve --config $(CONFIG) --store sqlite:///callgate.db --host 127.0.0.1 --port 8080

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/python -m pytest -q

bench: $(DEV_STAMP)
	$(BIN)/python bench/run.py

# Removes the environment and the state `make run` keeps between runs (./callgate.db).
clean:
	rm -rf $(VENV) callgate.db callgate.db-wal callgate.db-shm
