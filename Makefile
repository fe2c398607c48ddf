# `make test` and `make demo` each do all the set-up on a fresh machine: a .venv with the locked
# dependencies and acmtool in editable mode. A second run reuses what is installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo clean

$(STAMP): requirements.lock setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

demo: $(STAMP)
	$(BIN)/acmtool demo

clean:
	rm -rf $(VENV) build *.egg-info
