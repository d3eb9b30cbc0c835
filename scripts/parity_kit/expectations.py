"""
The classified differences (``scripts/parity_expectations.toml``) and the check that keeps them
honest: every test that passes on stock and fails on ours has an entry; every entry still differs.

The file has a ``[reasons]`` table (an id per reason: ``class``, ``text``, and for ``intended`` a
``migration`` line) and a ``[tests]`` table: node id = reason id, or an inline table with
``class``, ``reason`` and ``migration``. The classes:

- ``fixed``: the test differed and our operator was changed so that it passes; it must pass now
  (a regression fails the run);
- ``intended``: a documented behaviour difference; ``migration`` quotes the line of
  docs/migration.md that says so (checked to be there);
- ``internal call sequence replaced``: the test asserts mocks of internal calls or their order
  that the resumable path replaces (a hook method our operator does not call, a client it calls
  instead of the hook, a stock helper that the engine replaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import tomllib

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CLASSES", "Expectation", "Verdict", "judge", "load"]

FIXED, INTENDED, INTERNAL = "fixed", "intended", "internal call sequence replaced"
CLASSES = (FIXED, INTENDED, INTERNAL)


@dataclass(frozen=True)
class Expectation:
    """One classified test."""

    node: str
    cls: str
    reason: str
    migration: str = ""


@dataclass
class Verdict:
    """What the runs say against the file: problems make ``make parity`` fail."""

    classified: dict[str, Expectation]
    unclassified: list[str]
    stale: list[str]
    regressed: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not (self.unclassified or self.stale or self.regressed or self.problems)


def load(path: Path, migration_text: str) -> tuple[dict[str, Expectation], list[str]]:
    """The entries of ``path``, and the problems found in the file itself."""
    data = tomllib.loads(path.read_text())
    problems: list[str] = []
    reasons: dict[str, dict[str, str]] = {}
    for rid, fields in (data.get("reasons") or {}).items():
        reasons[rid] = {k: str(v) for k, v in fields.items()}
        reasons[rid].setdefault("reason", reasons[rid].pop("text", ""))
    entries: dict[str, Expectation] = {}
    used: set[str] = set()
    for node, value in (data.get("tests") or {}).items():
        if isinstance(value, str):
            if value not in reasons:
                problems.append(f"{node}: unknown reason {value!r}")
                continue
            used.add(value)
            fields = reasons[value]
        elif isinstance(value, dict):
            fields = {k: str(v) for k, v in value.items()}
        else:
            problems.append(f"{node}: neither a reason id nor a table")
            continue
        entry = Expectation(
            node, fields.get("class", ""), fields.get("reason", ""), fields.get("migration", "")
        )
        if entry.cls not in CLASSES:
            problems.append(f"{node}: class {entry.cls!r} is not one of {', '.join(CLASSES)}")
        if not entry.reason.strip():
            problems.append(f"{node}: no reason")
        if entry.cls == INTENDED and (not entry.migration or entry.migration not in migration_text):
            problems.append(f"{node}: intended, but its migration line is not in docs/migration.md")
        entries[node] = entry
    problems += [f"reason {rid!r} is used by no test" for rid in sorted(set(reasons) - used)]
    return entries, problems


def judge(
    entries: dict[str, Expectation],
    problems: list[str],
    differing: set[str],
    passing_on_ours: set[str],
    tests_of_available: set[str],
) -> Verdict:
    """
    Compare the differences of this run (``differing``: pass on stock, fail on ours) with the file.

    :param passing_on_ours: tests that pass on ours (``fixed`` entries must be among them).
    :param tests_of_available: every test that ran (entries of operators that did not run are
        neither checked nor stale).
    """
    unclassified = sorted(node for node in differing if entries.get(node) is None)
    regressed = sorted(node for node in differing if node in entries and entries[node].cls == FIXED)
    stale = []
    for node, entry in sorted(entries.items()):
        if node not in tests_of_available:
            if _operator_ran(node, tests_of_available):
                stale.append(f"{node} ({entry.cls}): no longer an upstream test")
            continue
        if entry.cls != FIXED and node not in differing:
            stale.append(f"{node} ({entry.cls}): no longer differs")
        if entry.cls == FIXED and node not in passing_on_ours and node not in differing:
            stale.append(f"{node} (fixed): does not pass on stock any more")
    classified = {node: entries[node] for node in differing if node in entries}
    return Verdict(classified, unclassified, stale, regressed, list(problems))


def _operator_ran(node: str, tests: set[str]) -> bool:
    """Whether the test's module and class ran at all (else its operator was not available)."""
    prefix = node.rsplit("::", 1)[0] + "::"
    return any(test.startswith(prefix) for test in tests)
