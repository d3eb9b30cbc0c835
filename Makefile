# Two entry points a new user needs: `make demo` and `make test`.
# Each one creates .venv from the package registries on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints-3.11.txt

.PHONY: demo benchmark mass-resume proof parity test lint typecheck docs unit system chaos venv clean browser wheel-check

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

# Three operators, stock against resumable (~3 min); `make demo ALL=1`: all twelve side by side.
demo: $(STAMP)
	$(BIN)/python demo/run_demo.py $(if $(ALL),--all,)

# Stock vs resumable operators under the same seeded worker disruptions, the worker-slot cost of
# waiting, deferrable or not, one worker with 32 tasks shut down at once (needs PostgreSQL and
# Redis), and 64 tasks per operator resuming at once against a throttled API (~18 min; not part
# of `test`).
benchmark: $(STAMP)
	$(BIN)/python benchmarks/chaos_benchmark.py
	$(BIN)/python benchmarks/worker_slots.py
	$(BIN)/python benchmarks/mass_shutdown.py
	$(BIN)/python benchmarks/mass_resume.py
	$(BIN)/python benchmarks/mass_resume.py --airflow --services batch

# 64 resumable tries per operator (Batch, Databricks submit-run) resume at the same instant against
# a throttled fake, then 64 Batch tasks on Airflow after a node drain (needs PostgreSQL): 0
# duplicates, 0 retries, the seconds until all reconnected (~6 min).
mass-resume: $(STAMP)
	$(BIN)/python benchmarks/mass_resume.py
	$(BIN)/python benchmarks/mass_resume.py --airflow --services batch

lint: $(STAMP)
	$(BIN)/ruff check airflow_resumable tests system_tests demo benchmarks scripts docs/*.py
	$(BIN)/ruff format --check airflow_resumable tests system_tests demo benchmarks scripts docs/*.py

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy scripts/parity.py scripts/parity_kit

# The documentation site, warnings as errors (mkdocs.yml; nothing is fetched but PyPI packages).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# Unit tests on every core, a test module per worker (module-scoped fakes stay shared).
UNIT := $(BIN)/pytest -n auto --dist loadfile tests

unit: $(STAMP)
	$(UNIT)

# Debian's chromium and chromium-driver for the "Resumable jobs" browser test (system_tests/ui),
# installed from the machine's package registry when missing and apt-get is usable (as root).
# Without them that test is skipped with one line, or fails under CI=true.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "browser: $$(chromium --version 2>/dev/null | head -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			|| echo "browser: could not install chromium; the browser test will be skipped"; \
	else \
		echo "browser: chromium missing and apt-get not usable here; the browser test will be skipped"; \
	fi

system: $(STAMP) browser
	$(BIN)/pytest system_tests

# The whole chaos matrix: every case for every operator on LocalExecutor and every worker-level
# case on Celery (`make test` runs every case for the Databricks submit-run and Batch operators and
# the operator-specific subset for the others; see system_tests/chaos/test_chaos.py). About 25
# minutes on two cores.
chaos: $(STAMP) proof
	AIRFLOW_RESUMABLE_CHAOS=full $(BIN)/pytest system_tests/chaos

# The contract kit's proof under a 10 s visibility lag, for the toy and every operator: lost submit
# response, crash before persist, a checkpoint right after the submit, reconnect after expiry; one
# line per case (jobs, tries, final state) under "resumable proof". `make test` runs it at 0.7 s.
proof: $(STAMP)
	AIRFLOW_RESUMABLE_PROOF_LAG=10 $(BIN)/pytest -n auto --dist loadfile -k "proof or young_job" \
		tests/test_toy_contract.py tests/providers

# The providers' own unit tests (from their PyPI sdists) on stock and on the resumable operators:
# one line per operator (tests, passing on stock, on ours, with the payload compared without our
# token), every difference classified in scripts/parity_expectations.toml (~2.5 min).
parity: $(STAMP)
	$(BIN)/python scripts/parity.py

# The package as users get it: sdist and wheel built, the wheel installed with [amazon,databricks]
# into a fresh build/wheel-check/venv and checked there from outside the checkout (providers list,
# plugin, every module and operator imported, config options), then with [testing] the contract
# kit run on one operator (scripts/check_wheel.sh; about 2 minutes with a warm pip cache).
wheel-check: $(STAMP)
	scripts/check_wheel.sh $(BIN)/python

test: lint typecheck docs browser wheel-check
	$(UNIT)
	$(BIN)/pytest system_tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
