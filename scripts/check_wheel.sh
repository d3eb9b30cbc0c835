#!/usr/bin/env bash
# The package as a user installs it (`make wheel-check`, part of `make test`).
#
# Builds the sdist and, from it, the wheel; installs the wheel into a fresh virtual environment
# (build/wheel-check/venv, made anew every run) with the runtime extras [amazon,databricks] only,
# pinned by the constraints file; then, with a throw-away AIRFLOW_HOME and from a directory outside
# the checkout (so nothing is imported from the source tree):
#   - every file of the package in the checkout is in the wheel;
#   - `airflow providers list` shows airflow-resumable and `airflow plugins` shows airflow_resumable;
#   - every module of the package imports, and the fourteen operators of both providers' __all__;
#   - `airflow config list --section resumable --show-values` lists every declared option.
# Then it adds [testing], imports every module of airflow_resumable.testing and runs the contract
# kit on ResumableDatabricksSubmitRunOperator (scripts/wheel_check/test_installed_kit.py) with the
# venv's pytest. A runtime import of a dev-only package, or a file left out of the wheel, fails here.
#
# Usage: scripts/check_wheel.sh [PYTHON]   (PYTHON builds the package and needs `build`: .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${1:-$ROOT/.venv/bin/python}
OUT=$ROOT/build/wheel-check
VENV=$OUT/venv
CONSTRAINTS=$ROOT/requirements/constraints-3.11.txt
START=$SECONDS

step() { printf '%s wheel-check [%3ss] %s\n' "$(date +%T)" "$((SECONDS - START))" "$*"; }
# Run a quiet command; on failure show what it printed.
quiet() {
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		echo "wheel-check: FAILED: $*" >&2
		return 1
	fi
}
# Fail unless the command's output has a line with the given word.
shows() {
	local word=$1
	shift
	local output
	output=$("$@" 2>&1) || { echo "$output" >&2; echo "wheel-check: FAILED: $*" >&2; return 1; }
	if ! grep -w -- "$word" <<<"$output"; then
		echo "$output" >&2
		echo "wheel-check: FAILED: '$*' does not show $word" >&2
		return 1
	fi
}

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airflow-resumable-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step "building the sdist, then the wheel from the sdist"
quiet "$OUT/build.log" "$PY" -m build --outdir "$OUT/dist" "$ROOT"
WHEEL=$(ls "$OUT"/dist/airflow_resumable-*.whl)
step "built $(cd "$OUT/dist" && ls)"

step "the wheel holds every package file of the checkout"
mapfile -t SOURCES < <(git -C "$ROOT" ls-files airflow_resumable)
"$PY" "$ROOT/scripts/wheel_check/checks.py" files "$WHEEL" "${SOURCES[@]}"

step "a fresh virtual environment with ${WHEEL##*/}[amazon,databricks]"
BASE=$("$PY" -c 'import sys; print(sys._base_executable)')
"$BASE" -m venv "$VENV"
quiet "$OUT/install-runtime.log" "$VENV/bin/python" -m pip install --disable-pip-version-check \
	-c "$CONSTRAINTS" "$WHEEL[amazon,databricks]"

# From outside the checkout, with an Airflow home of its own; nothing of the caller's Airflow.
cp -r "$ROOT/scripts/wheel_check" "$WORK/kit"
cd "$WORK"
unset PYTHONPATH AIRFLOW_CONFIG
for var in $(compgen -e | grep '^AIRFLOW__' || true); do unset "$var"; done
export AIRFLOW_HOME=$WORK/airflow-home
export AIRFLOW__CORE__LOAD_EXAMPLES=False
AIRFLOW=$VENV/bin/airflow

step "airflow providers list / airflow plugins"
shows airflow-resumable "$AIRFLOW" providers list
shows airflow_resumable "$AIRFLOW" plugins

step "every runtime module and the fourteen operators import"
"$VENV/bin/python" "$WORK/kit/checks.py" imports RUNTIME

step "airflow config list --section resumable --show-values"
"$AIRFLOW" config list --section resumable --show-values >"$OUT/config.txt" 2>&1 \
	|| { cat "$OUT/config.txt" >&2; exit 1; }
"$VENV/bin/python" "$WORK/kit/checks.py" config <"$OUT/config.txt"

step "adding [testing]"
quiet "$OUT/install-testing.log" "$VENV/bin/python" -m pip install --disable-pip-version-check \
	-c "$CONSTRAINTS" "$WHEEL[amazon,databricks,testing]"
"$VENV/bin/python" "$WORK/kit/checks.py" imports TESTING

step "the contract kit on ResumableDatabricksSubmitRunOperator, from the wheel"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:randomly --rootdir "$WORK/kit" "$WORK/kit"

step "passed"
