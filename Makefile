# Two entry points a new user needs: `make demo` and `make test`.
# Each one creates .venv from the package registries on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints-3.11.txt

.PHONY: demo benchmark test lint typecheck docs unit system venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py

# Stock vs resumable operators under the same seeded worker disruptions, then the worker-slot cost
# of waiting, deferrable or not (~7 min; not part of `test`).
benchmark: $(STAMP)
	$(BIN)/python benchmarks/chaos_benchmark.py
	$(BIN)/python benchmarks/worker_slots.py

lint: $(STAMP)
	$(BIN)/ruff check airflow_resumable tests system_tests demo benchmarks docs/*.py
	$(BIN)/ruff format --check airflow_resumable tests system_tests demo benchmarks docs/*.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The documentation site, warnings as errors (mkdocs.yml; nothing is fetched but PyPI packages).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

unit: $(STAMP)
	$(BIN)/pytest tests

system: $(STAMP)
	$(BIN)/pytest system_tests

test: lint typecheck docs
	$(BIN)/pytest tests system_tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
