# Set-up and entry points. `make demo` and `make test` work on a fresh clone.
# GPU users: `make setup TORCH_SPEC=torch` takes the default (CUDA) torch build instead
# of the CPU build this machine keeps on local disk.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/cft-rl eval --recipe recipes/toy/eval.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: setup
	$(BIN)/pytest -q

test: lint pytest
