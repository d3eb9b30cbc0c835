"""
pytest plugin of the package (entry point ``pytest11``): the contract kit's assertions show values.

pytest rewrites ``assert`` statements only in test modules, conftest files and modules registered
before they are imported. The kit's scenarios live in this package, so without this a failed
scenario would end in a bare ``AssertionError``; with it, in pytest's usual ``assert 2 == 1``
explanation. Installed with the package; nothing else is configured.

It also lists, in the terminal summary, the line each proof case of the kit adds to its report
(``proof <Operator> <case> lag=<s>: jobs=<n> tries=<n> final=<state>``), also under xdist.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite(
    "airflow_resumable.testing.contract",
    "airflow_resumable.testing._contract_interruptions",
    "airflow_resumable.testing._contract_proof",
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A ``resumable proof`` section with the proof lines of the tests that ran."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "proof"
    ]
    if lines:
        terminalreporter.section("resumable proof")
        for line in sorted(lines):
            terminalreporter.write_line(line)
