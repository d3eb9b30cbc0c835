"""The per-operator table, the classified differences and the problems, as text and Markdown."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parity_kit.expectations import FIXED, INTENDED, INTERNAL, Expectation

if TYPE_CHECKING:
    from parity_kit.expectations import Verdict

__all__ = ["NEEDS", "Counts", "Runs", "count", "render"]

#: The stand-in's skip reasons start with this (tests_common.NEEDS).
NEEDS = "needs tests_common:"
Results = dict[str, dict[str, str]]
CLASS_ORDER = (FIXED, INTENDED, INTERNAL)


@dataclass(frozen=True)
class Runs:
    """The three runs' results, by test node id, and the operators that did not run."""

    stock: Results
    ours: Results
    tokenless: Results
    unavailable: dict[str, str]

    def passed(self, results: Results, node: str) -> bool:
        return results.get(node, {}).get("outcome") == "passed"

    def compared(self) -> list[str]:
        """Tests in both columns: not skipped on stock (the stand-in's skips and upstream's own)."""
        return sorted(node for node, entry in self.stock.items() if entry["outcome"] != "skipped")

    def differing(self) -> set[str]:
        """Pass on stock, fail on ours with the payload compared without our token."""
        return {
            n for n in self.compared() if self.passed(self.stock, n) and not self.passed(self.tokenless, n)
        }


@dataclass
class Counts:
    """One operator's line."""

    upstream: int = 0
    needs: int = 0
    skipped: int = 0
    stock: int = 0
    ours: int = 0
    tokenless: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def count(runs: Runs, verdict: Verdict) -> dict[str, Counts]:
    """Per operator: tests, skips, passes per run, differences per class."""
    table: dict[str, Counts] = defaultdict(Counts)
    differing = runs.differing()
    for node, entry in runs.stock.items():
        line = table[entry["operator"]]
        if entry["outcome"] == "skipped":
            if entry["message"].startswith(NEEDS):
                line.needs += 1
            else:
                line.skipped += 1
            continue
        line.upstream += 1
        line.stock += runs.passed(runs.stock, node)
        line.ours += runs.passed(runs.ours, node)
        line.tokenless += runs.passed(runs.tokenless, node)
        if node in differing:
            expectation = verdict.classified.get(node)
            line.by_class[expectation.cls if expectation else "unclassified"] += 1
    return dict(sorted(table.items()))


def render(
    runs: Runs, verdict: Verdict, fixed: list[Expectation], seconds: dict[str, float], *, full: bool
) -> str:
    """
    The report in Markdown (readable as plain text): the table, the summary and the problems;
    with ``full``, also every classified test, grouped by reason.
    """
    table = count(runs, verdict)
    fixed_by: dict[str, int] = defaultdict(int)
    for entry in fixed:
        fixed_by[runs.stock[entry.node]["operator"]] += 1
    out = ["# make parity: the providers' own unit tests on the resumable operators", ""]
    out += [
        "| operator | upstream | stock pass | ours pass | ours pass, no token | differ | fixed "
        "| intended | internal calls | unclassified | needs tests_common |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = Counts()
    for name, line in table.items():
        differ = sum(line.by_class.values())
        out.append(
            f"| {name} | {line.upstream} | {line.stock} | {line.ours} | {line.tokenless} | {differ} "
            f"| {fixed_by[name]} | {line.by_class[INTENDED]} | {line.by_class[INTERNAL]} "
            f"| {line.by_class['unclassified']} | {line.needs} |"
        )
        for attr in ("upstream", "needs", "skipped", "stock", "ours", "tokenless"):
            setattr(total, attr, getattr(total, attr) + getattr(line, attr))
        for cls, number in line.by_class.items():
            total.by_class[cls] += number
    out.append(
        f"| **total** | {total.upstream} | {total.stock} | {total.ours} | {total.tokenless} "
        f"| {sum(total.by_class.values())} | {len(fixed)} | {total.by_class[INTENDED]} "
        f"| {total.by_class[INTERNAL]} | {total.by_class['unclassified']} | {total.needs} |"
    )
    out += ["", _summary(runs, total, fixed, seconds), ""]
    for name, reason in sorted(runs.unavailable.items()):
        out.append(f"- not run: {name}: {reason}")
    out += _section(
        "UNCLASSIFIED (pass on stock, fail on ours; add to scripts/parity_expectations.toml or fix)",
        [f"- `{n}`: {runs.tokenless.get(n, {}).get('message', '')}" for n in verdict.unclassified],
    )
    out += _section("REGRESSED (classified fixed, fail again)", [f"- `{n}`" for n in verdict.regressed])
    out += _section("STALE entries (remove or reclassify)", [f"- `{s}`" for s in verdict.stale])
    out += _section("Problems in the expectations file", [f"- {p}" for p in verdict.problems])
    groups = _by_reason([*fixed, *verdict.classified.values()])
    out += _section("Reasons", [f"- {len(nodes)} {entry.cls}: {entry.reason}{_cite(entry)}"
                                for entry, nodes in groups])  # fmt: skip
    if full:
        for entry, nodes in groups:
            out += _section(f"{entry.cls} ({len(nodes)}): {entry.reason}{_cite(entry)}",
                            [f"- `{node}`" for node in nodes])  # fmt: skip
        needs = sorted({e["message"] for e in runs.stock.values() if e["message"].startswith(NEEDS)})
        out += _section(f"Excluded from both columns ({total.needs} tests)", [f"- {m}" for m in needs])
    return "\n".join(out) + "\n"


def _by_reason(entries: list[Expectation]) -> list[tuple[Expectation, list[str]]]:
    """Entries grouped by class and reason, the largest group first."""
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for entry in entries:
        groups[(entry.cls, entry.reason, entry.migration)].append(entry.node)
    ordered = sorted(groups.items(), key=lambda item: (CLASS_ORDER.index(item[0][0]), -len(item[1])))
    return [
        (Expectation("", cls, reason, migration), sorted(nodes))
        for (cls, reason, migration), nodes in ordered
    ]


def _summary(runs: Runs, total: Counts, fixed: list[Expectation], seconds: dict[str, float]) -> str:
    token = sum(
        1
        for node in runs.compared()
        if runs.passed(runs.tokenless, node) and not runs.passed(runs.ours, node)
    )
    timing = ", ".join(f"{mode} {value:.0f} s" for mode, value in seconds.items())
    return (
        f"{total.upstream} upstream tests compared, {total.needs} need tests_common, {total.skipped} skipped "
        f"upstream; {total.stock} pass on stock, {total.ours} on ours, {total.tokenless} on ours with the "
        f"payload compared without our token (that turns {token} from fail to pass); "
        f"{len(fixed)} fixed in our operators. Runs: {timing}."
    )


def _cite(entry: Expectation) -> str:
    return f' (docs/migration.md: "{entry.migration}")' if entry.migration else ""


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", f"## {title}", "", *lines] if lines else []
