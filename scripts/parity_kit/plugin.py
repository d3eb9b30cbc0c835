"""
The pytest plugin of one ``make parity`` run (``-p parity_kit.plugin``), set by environment:

- ``PARITY_MODE``: ``stock`` (the tests as shipped), ``ours`` (each stock class replaced by its
  resumable subclass) or ``ours-tokenless`` (ours, with the payload compared without our token:
  :mod:`.tokens`);
- ``PARITY_RESULTS``: the JSON file this run writes (operators available, and per test its
  operator, outcome and a one-line message).

The replacement is import-time substitution: before collection, the stock module's attribute
(``airflow.providers.amazon.aws.operators.batch.BatchOperator``) is set to the resumable class,
so ``from ... import BatchOperator`` in the test module gets ours. The resumable module imported
the stock class before that, which is what it subclasses. Tests outside the counting rule
(:mod:`.cases`) are deselected.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from parity_kit import adapters
from parity_kit.cases import CASES, OperatorCase, load_class

if TYPE_CHECKING:
    from collections.abc import Callable

#: Why an operator is not in this run (its resumable class does not import), by name.
_unavailable: dict[str, str] = {}
#: Per test node id: operator, outcome, message.
_results: dict[str, dict[str, str]] = {}
_owner: dict[str, str] = {}
_per_test_resets: list[Callable[[], None]] = []


def _mode() -> str:
    return os.environ.get("PARITY_MODE", "stock")


def pytest_configure(config: pytest.Config) -> None:
    adapters.block_network()
    for case in CASES:
        try:
            ours = load_class(case.ours)
            stock = load_class(case.stock)
        except (ImportError, AttributeError) as error:
            _unavailable[case.name] = f"{case.ours} does not import: {error}"
            continue
        if not issubclass(ours, stock):
            _unavailable[case.name] = f"{case.name} is not a subclass of {case.stock_name}"
            continue
        if _mode() != "stock":
            adapters.context_without_store(ours)
            setattr(importlib.import_module(case.stock.partition(":")[0]), case.stock_name, ours)
    if _mode() != "stock":
        adapters.submit_through_hook_client()
        _per_test_resets.append(adapters.no_waits())
    if _mode() == "ours-tokenless":
        from parity_kit import tokens

        tokens.install()
        _per_test_resets.append(tokens.reset)


def _case_of(item: pytest.Item) -> OperatorCase | None:
    module = Path(str(item.path)).relative_to(item.config.rootpath).as_posix()
    cls = item.cls.__name__ if isinstance(item, pytest.Function) and item.cls is not None else None
    function = item.originalname if isinstance(item, pytest.Function) else item.name
    for case in CASES:
        if case.name not in _unavailable and case.owns(module, cls, function):
            return case
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests of available operators (the counting rule); deselect the rest."""
    kept, dropped = [], []
    for item in items:
        case = _case_of(item)
        if case is None:
            dropped.append(item)
        else:
            _owner[item.nodeid] = case.name
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_runtest_setup(item: pytest.Item) -> None:
    for reset in _per_test_resets:
        reset()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """One outcome per test: the first failing phase, else skipped, else passed."""
    entry = _results.setdefault(
        report.nodeid, {"operator": _owner.get(report.nodeid, ""), "outcome": "passed", "message": ""}
    )
    if entry["outcome"] in ("failed", "error"):
        return
    if report.skipped:
        entry.update(outcome="skipped", message=_skip_reason(report))
    elif report.failed:
        entry.update(outcome="failed" if report.when == "call" else "error", message=_message(report))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(report.longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("PARITY_RESULTS")
    if path:
        payload = {"mode": _mode(), "unavailable": _unavailable, "tests": _results}
        Path(path).write_text(json.dumps(payload, indent=1, sort_keys=True))
