# Set-up and the two entry points of the README.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo lint test install install-demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

## The package alone (numpy, scipy, pandas, formulaic, numba): what the demo needs.
$(VENV)/.installed-demo: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

## The package with the test stack (pytest, ruff, mypy, pyreadstat, pyarrow, polars, matplotlib, dask).
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-demo

install-demo: $(VENV)/.installed-demo
install: $(VENV)/.installed

## The main job: the HLM report of the seminar's model 4 on the shipped HSB data.
demo: install-demo
	$(PY) -m multilevel.examples.hsb

## The linter and the type checker, as configured in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

## The whole test suite, after the linter and the type checker.
test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV)
