VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

# Create the virtual environment once; reinstall when the dependencies change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[pipeline,test]'
	touch $(STAMP)

install: $(STAMP)

# The demo fleet end to end: build the tiny models offline, then export, validate and profile them all.
run: $(STAMP)
	$(PY) -m cli demo-models out/demo-models
	$(PY) -m cli run-fleet deployments/fleets/demo.yaml --output-dir out/fleet

# Two pytest workers (pytest-xdist): most tests wait on subprocesses and servers, so two run in ~2/3 the time.
test: $(STAMP)
	$(PY) -m pytest -n 2

# ruff's lint and format check (pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Ratios measured in one run (see benchmarks/): prints a table, writes benchmarks/results.json and results.md.
bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
