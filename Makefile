# Two entry points: `make demo` and `make test`. Both create .venv and install surgesim
# with pinned versions (constraints.txt) first; re-running is cheap.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/surgesim demo

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m "not integration"

test-integration: install
	$(PY) -m pytest -m integration

bench: install
	@echo "Each benchmark is its own script in bench/; docs/benchmarks.md lists them with the exact commands and results."

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
