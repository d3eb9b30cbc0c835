"""
``make parity``: fetch the sdists, build the scratch tree, run the upstream tests on stock, on ours
and on ours with the payload compared without our token, check the classified differences, report.

Exit 0 when every difference is classified and no entry is stale; 1 otherwise; 2 when a run
produced no results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from parity_kit import expectations, sources
from parity_kit.cases import CASES
from parity_kit.report import Runs, render

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "parity"
EXPECTATIONS = ROOT / "scripts" / "parity_expectations.toml"
MIGRATION = ROOT / "docs" / "migration.md"
STANDIN = Path(__file__).resolve().parent / "standin"
#: The runs, in order; the plugin reads the mode (:mod:`.plugin`).
MODES = ("stock", "ours", "ours-tokenless")
#: Seconds one upstream test may take before it fails (none comes near it; a guard, not a wait).
TEST_TIMEOUT = 60


def _environment(mode: str, tests: Path, deps: Path, results: Path) -> dict[str, str]:
    """The run's environment: none of the caller's Airflow settings, an Airflow home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "DATABRICKS"))}
    home = BUILD / "airflow_home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PYTHONPATH=os.pathsep.join(str(p) for p in (ROOT / "scripts", STANDIN, deps, tests)),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PARITY_MODE=mode,
        PARITY_RESULTS=str(results),
    )
    if mode != "stock":  # a mock answers at once: nothing to wait for (adapters.no_waits)
        env["AIRFLOW__RESUMABLE__VISIBILITY_WINDOW_SECONDS"] = "0"
    return env


def _run(mode: str, tests: Path, deps: Path, selection: list[str]) -> tuple[dict[str, Any], float]:
    results = BUILD / f"results-{mode}.json"
    results.unlink(missing_ok=True)
    log = BUILD / f"{mode}.log"
    command = [
        sys.executable, "-m", "pytest", "-p", "parity_kit.plugin", "-p", "tests_common.pytest_plugin",
        "-c", str(tests / "pytest.ini"), "--rootdir", str(tests), "-q", "--no-header",
        "-o", f"timeout={TEST_TIMEOUT}", *selection,
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(
            command, cwd=tests, env=_environment(mode, tests, deps, results), stdout=out, stderr=out
        )
    seconds = time.monotonic() - started
    if not results.exists():
        print(f"parity: the {mode} run wrote no results; see {log}", file=sys.stderr)
        sys.exit(2)
    data: dict[str, Any] = json.loads(results.read_text())
    return data, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--operator", action="append", default=[], help="only this operator (repeatable)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="judge the last runs' results again (after editing the expectations)",
    )
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.operator or c.name in args.operator]
    if not cases:
        parser.error(f"no operator named {args.operator}; known: {', '.join(c.name for c in CASES)}")
    BUILD.mkdir(parents=True, exist_ok=True)
    roots = {provider: sources.sdist_tests(provider, BUILD) for provider in {c.provider for c in CASES}}
    tests = sources.prepare_tests([(roots[c.provider], c.module) for c in CASES], BUILD / "tests")
    (tests / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    deps = sources.install_test_dependencies(BUILD / "deps")
    selection = sorted({c.module for c in cases})
    outcomes: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for mode in MODES:
        if args.reuse:
            outcomes[mode], seconds[mode] = json.loads((BUILD / f"results-{mode}.json").read_text()), 0.0
            continue
        outcomes[mode], seconds[mode] = _run(mode, tests, deps, selection)
        print(f"parity: {mode} run: {len(outcomes[mode]['tests'])} tests in {seconds[mode]:.0f} s")
    names = {c.name for c in cases}
    runs = Runs(
        stock=outcomes["stock"]["tests"],
        ours=outcomes["ours"]["tests"],
        tokenless=outcomes["ours-tokenless"]["tests"],
        unavailable={k: v for k, v in outcomes["stock"]["unavailable"].items() if k in names},
    )
    for name, reason in sorted(runs.unavailable.items()):
        print(f"parity: skipping {name}: {reason}")
    entries, problems = expectations.load(EXPECTATIONS, MIGRATION.read_text())
    ran = set(runs.compared())
    passing = {n for n in ran if runs.passed(runs.tokenless, n)}
    verdict = expectations.judge(entries, problems, runs.differing(), passing, ran)
    worse = sorted(n for n in ran if runs.passed(runs.ours, n) and not runs.passed(runs.tokenless, n))
    verdict.problems += [
        f"{n}: passes with our token, fails without it (the stripping broke it)" for n in worse
    ]
    fixed = sorted(
        (e for e in entries.values() if e.cls == expectations.FIXED and e.node in passing),
        key=lambda e: e.node,
    )
    (BUILD / "report.md").write_text(render(runs, verdict, fixed, seconds, full=True))
    print(render(runs, verdict, fixed, seconds, full=False))
    print(f"parity: report written to {BUILD / 'report.md'}")
    if not verdict.ok:
        print("parity: FAILED: unclassified, regressed or stale entries (see above)", file=sys.stderr)
        return 1
    return 0
