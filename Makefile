# Every target installs what it needs first: `make test` on a fresh machine works.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint bench run clean mutation mutation-report

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test,bench]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow" -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Mutation testing of the engine, executor and worker (tools/mutation.py; the modules
# and tests: [tool.mutmut] in pyproject.toml). Not part of .ci/run: it takes minutes.
mutation: $(VENV)/.mutation-installed
	$(PY) tools/mutation.py

# the last result again, with each survivor's diff
mutation-report: $(VENV)/.mutation-installed
	$(PY) tools/mutation.py --report-only --diffs

$(VENV)/.mutation-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutation]'
	touch $@

bench: install
	$(PY) -m bench --quick

run: install
	$(VENV)/bin/runtime run --all --flows examples/flows

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants mutation-results
