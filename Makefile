# Set-up and the two entry points of the README.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

## The main job: the HLM report of the seminar's model 4 on the shipped HSB data.
demo: install
	$(PY) -m multilevel.examples.hsb

## The whole test suite.
test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV)
