# Two entry points: `make demo` and `make test`. Both create .venv and install surgesim
# with pinned versions (constraints.txt) first; re-running is cheap.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@echo "installing surgesim and its pinned dependencies into $(VENV) (about a minute; pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 || (tail -n 30 $(VENV)/install.log; exit 1)
	@$(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' >> $(VENV)/install.log 2>&1 || (tail -n 30 $(VENV)/install.log; exit 1)
	@touch $(STAMP)
	@echo "installed: $(VENV)/bin/surgesim"

install: $(STAMP)

demo: install
	$(VENV)/bin/surgesim demo

# Two pytest workers (pytest-xdist), whole files per worker: the live tests mostly wait on
# wall-clock runs, so two of them overlap well on 2 cores (README, Tests).
test: install
	$(PY) -m pytest -n 2 --dist loadfile

test-unit: install
	$(PY) -m pytest -n 2 --dist loadfile -m "not integration"

lint: install
	VENV=$(VENV) bash .ci/lint

test-integration: install
	$(PY) -m pytest -m integration

bench: install
	@echo "Each benchmark is its own script in bench/; docs/benchmarks.md lists them with the exact commands and results."

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
