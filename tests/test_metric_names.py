"""
Every metric the package emits is under ``airflow_resumable.`` and listed in docs/troubleshooting.md.

Names are found statically: each ``Stats.<method>(name, ...)`` call of the package is resolved by a
small evaluator over the source. It follows string constants, f-strings, ``+``, conditional
expressions (a condition on a bound name picks its branch), local and module-level assignments,
function parameters (through every call site of the function in the package) and dataclass
fields (through every construction of the dataclass). A name it cannot resolve fails the test:
make the name simpler, or teach the evaluator.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import airflow_resumable

PACKAGE = Path(airflow_resumable.__file__).resolve().parent
TROUBLESHOOTING = PACKAGE.parent / "docs" / "troubleshooting.md"
PREFIX = "airflow_resumable."
STATS_METHODS = frozenset({"incr", "decr", "gauge", "timing", "timer"})


class Unresolved(Exception):
    """An expression the evaluator cannot turn into a finite set of strings."""


@dataclass
class Scope:
    """Where an expression is evaluated: its module, its enclosing function, the bound names."""

    module: Path
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Site:
    """A call and the scope around it."""

    call: ast.Call
    module: Path
    function: ast.FunctionDef | ast.AsyncFunctionDef | None


class Source:
    """The package's syntax trees, with the indexes the evaluator needs."""

    def __init__(self, root: Path) -> None:
        self.trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(root.rglob("*.py"))}
        self.calls: list[Site] = []
        self.functions: dict[str, list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
        self.dataclasses: dict[str, list[str]] = {}
        for path, tree in self.trees.items():
            self._index(path, tree, None)

    def _index(
        self, path: Path, node: ast.AST, function: ast.FunctionDef | ast.AsyncFunctionDef | None
    ) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(child.name, []).append((path, child))
                self._index(path, child, child)
                continue
            if isinstance(child, ast.ClassDef) and any(
                "dataclass" in ast.unparse(d) for d in child.decorator_list
            ):
                fields = [
                    s.target.id
                    for s in child.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                ]
                self.dataclasses[child.name] = fields
            if isinstance(child, ast.Call):
                self.calls.append(Site(child, path, function))
            self._index(path, child, function)

    def calls_to(self, name: str) -> list[Site]:
        """Calls of ``name(...)`` or ``<anything>.name(...)``."""
        return [
            site
            for site in self.calls
            if (isinstance(site.call.func, ast.Name) and site.call.func.id == name)
            or (isinstance(site.call.func, ast.Attribute) and site.call.func.attr == name)
        ]

    def stats_calls(self) -> list[Site]:
        """``Stats.<method>(...)`` calls."""
        return [
            site
            for site in self.calls
            if isinstance(site.call.func, ast.Attribute)
            and site.call.func.attr in STATS_METHODS
            and isinstance(site.call.func.value, ast.Name)
            and site.call.func.value.id == "Stats"
        ]


class Evaluator:
    """Turns an expression into the set of strings it can take."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def values(self, expr: ast.expr, scope: Scope) -> set[str]:
        """Every value ``expr`` can take, enumerating the call sites of its function's parameters."""
        free = sorted(self._parameters_used(expr, scope) - scope.env.keys())
        if not free:
            return self._eval(expr, scope)
        assert scope.function is not None
        result: set[str] = set()
        for site in self.source.calls_to(scope.function.name):
            bound = [self._argument_values(site, scope.function, name) for name in free]
            for combination in itertools.product(*bound):
                env = {**scope.env, **dict(zip(free, combination, strict=True))}
                result |= self._eval(expr, Scope(scope.module, scope.function, env))
        if not result:
            raise Unresolved(f"no call site binds {free} of {scope.function.name}()")
        return result

    # -------------------------------------------------------------- parameters and call sites
    def _parameters_used(self, expr: ast.expr, scope: Scope, seen: frozenset[str] = frozenset()) -> set[str]:
        """The enclosing function's parameters that ``expr`` depends on, as :meth:`_eval` reads it."""
        if scope.function is None:
            return set()
        if isinstance(expr, ast.JoinedStr):
            parts = [p.value if isinstance(p, ast.FormattedValue) else p for p in expr.values]
            return set().union(*(self._parameters_used(p, scope, seen) for p in parts))
        if isinstance(expr, ast.BinOp):
            return self._parameters_used(expr.left, scope, seen) | self._parameters_used(
                expr.right, scope, seen
            )
        if isinstance(expr, ast.IfExp):
            parts = [expr.test, expr.body, expr.orelse]
            return set().union(*(self._parameters_used(p, scope, seen) for p in parts))
        if isinstance(expr, ast.Compare):
            return self._parameters_used(expr.left, scope, seen)
        if isinstance(expr, ast.Name) and expr.id not in seen:
            if expr.id in _parameter_names(scope.function):
                return {expr.id}
            assigned = self._local_assignment(expr.id, scope)
            if assigned is not None:
                return self._parameters_used(assigned, scope, seen | {expr.id})
        return set()  # constants; attributes resolve through dataclass fields, whatever their object

    def _argument_values(
        self, site: Site, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str
    ) -> set[str]:
        positional = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
        if isinstance(site.call.func, ast.Attribute) and positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        caller = Scope(site.module, site.function)
        for keyword in site.call.keywords:
            if keyword.arg == name:
                return self.values(keyword.value, caller)
        if name in positional and positional.index(name) < len(site.call.args):
            return self.values(site.call.args[positional.index(name)], caller)
        raise Unresolved(
            f"{ast.unparse(site.call)} ({site.module.name}:{site.call.lineno}) does not pass {name!r}"
        )

    def _local_assignment(self, name: str, scope: Scope) -> ast.expr | None:
        """The value of the only assignment to ``name`` in the enclosing function, if there is one."""
        if scope.function is None:
            return None
        assigned = [
            node.value
            for node in ast.walk(scope.function)
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name
        ]
        return assigned[0] if len(assigned) == 1 else None

    def _module_constant(self, name: str, module: Path) -> ast.expr | None:
        for statement in self.source.trees[module].body:
            if (
                isinstance(statement, ast.Assign)
                and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and statement.targets[0].id == name
            ):
                return statement.value
        return None

    # ------------------------------------------------------------------------------ evaluation
    def _eval(self, expr: ast.expr, scope: Scope) -> set[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.JoinedStr):
            return {"".join(p) for p in itertools.product(*(self._eval_part(p, scope) for p in expr.values))}
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return {a + b for a in self._eval(expr.left, scope) for b in self._eval(expr.right, scope)}
        if isinstance(expr, ast.IfExp):
            test = self._test(expr.test, scope)
            if test is None:
                return self._eval(expr.body, scope) | self._eval(expr.orelse, scope)
            return self._eval(expr.body if test else expr.orelse, scope)
        if isinstance(expr, ast.Name):
            return self._name(expr.id, scope)
        if isinstance(expr, ast.Attribute):
            return self._dataclass_field(expr.attr)
        raise Unresolved(f"{ast.unparse(expr)} ({scope.module.name}:{expr.lineno})")

    def _eval_part(self, part: ast.expr, scope: Scope) -> set[str]:
        if isinstance(part, ast.FormattedValue):
            if part.format_spec is not None or part.conversion != -1:
                raise Unresolved(f"formatted {ast.unparse(part)} ({scope.module.name}:{part.lineno})")
            return self._eval(part.value, scope)
        return self._eval(part, scope)

    def _name(self, name: str, scope: Scope) -> set[str]:
        if name in scope.env:
            return {scope.env[name]}
        local = self._local_assignment(name, scope)
        if local is not None:
            return self._eval(local, scope)
        constant = self._module_constant(name, scope.module)
        if constant is not None:
            return self._eval(constant, Scope(scope.module, None))
        raise Unresolved(f"name {name!r} in {scope.module.name}")

    def _test(self, test: ast.expr, scope: Scope) -> bool | None:
        """A condition ``name == "x"`` / ``!=`` on a bound name, else None (both branches count)."""
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Eq, ast.NotEq))
            and isinstance(test.left, ast.Name)
            and test.left.id in scope.env
            and isinstance(test.comparators[0], ast.Constant)
        ):
            equal = scope.env[test.left.id] == test.comparators[0].value
            return equal if isinstance(test.ops[0], ast.Eq) else not equal
        return None

    def _dataclass_field(self, name: str) -> set[str]:
        """Every value given to field ``name`` by a construction of a package dataclass that has one."""
        owners = {cls: fields for cls, fields in self.source.dataclasses.items() if name in fields}
        if not owners:
            raise Unresolved(f"attribute {name!r} is no dataclass field of the package")
        result: set[str] = set()
        for cls, fields in owners.items():
            for site in self.source.calls_to(cls):
                if not isinstance(site.call.func, ast.Name):
                    continue
                given = [k.value for k in site.call.keywords if k.arg == name]
                if not given and fields.index(name) < len(site.call.args):
                    given = [site.call.args[fields.index(name)]]
                for expr in given:
                    result |= self.values(expr, Scope(site.module, site.function))
        return result


def _parameter_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = function.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}


def emitted_metrics() -> dict[str, str]:
    """Every metric name the package can emit, with the place of its ``Stats`` call."""
    source = Source(PACKAGE)
    evaluator = Evaluator(source)
    names: dict[str, str] = {}
    for site in source.stats_calls():
        where = f"{site.module.relative_to(PACKAGE.parent)}:{site.call.lineno}"
        try:
            for name in evaluator.values(site.call.args[0], Scope(site.module, site.function)):
                names[name] = where
        except Unresolved as err:
            pytest.fail(f"cannot resolve the metric name at {where}: {err}")
    return names


def documented_metrics() -> set[str]:
    """The metric names in the "Metrics" section of docs/troubleshooting.md."""
    text = TROUBLESHOOTING.read_text()
    section = re.search(r"^## Metrics\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section, "docs/troubleshooting.md has no '## Metrics' section"
    return set(re.findall(r"`(airflow_resumable\.[a-z0-9_.]+)`", section.group(1)))


@pytest.fixture(scope="module")
def metrics() -> dict[str, str]:
    return emitted_metrics()


def test_the_scanner_finds_the_known_metrics(metrics: dict[str, str]) -> None:
    """The scan resolves the decision, checkpoint and cancel metrics (guards the scanner itself)."""
    for name in ("checkpoint", "cancel", "cancel_failed", "decision.fresh", "decision.stock_id_reconnect"):
        assert PREFIX + name in metrics
    assert PREFIX + "decision.record_reconnect" not in metrics  # the "record" path has no prefix


def test_every_metric_is_under_one_prefix(metrics: dict[str, str]) -> None:
    """Every metric name starts with ``airflow_resumable.``."""
    stray = {name: where for name, where in metrics.items() if not name.startswith(PREFIX)}
    assert not stray


def test_every_metric_is_documented(metrics: dict[str, str]) -> None:
    """The Metrics section of the troubleshooting page lists every emitted metric."""
    missing = {name: where for name, where in metrics.items() if name not in documented_metrics()}
    assert not missing, f"add these to the Metrics section of docs/troubleshooting.md: {missing}"


def test_no_documented_metric_is_stale(metrics: dict[str, str]) -> None:
    """The Metrics section lists no metric the package does not emit."""
    assert documented_metrics() - metrics.keys() == set()
