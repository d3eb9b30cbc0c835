"""Every example DAG in docs/ is included from a system-test DAG file, between markers that exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SYSTEM_TESTS = ROOT / "system_tests"
EXAMPLE = "system_tests/dags/example_databricks_resumable.py"


def load_hooks() -> ModuleType:
    """docs/hooks.py, the MkDocs hook that expands the directives, as a module."""
    spec = importlib.util.spec_from_file_location("airflow_resumable_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def includes() -> list[tuple[Path, str, str]]:
    """(page, file, marker) of every ``include_example`` in docs/."""
    found = []
    for page in pages():
        for directive in hooks.find_directives(page.read_text()):
            if directive.name == "include_example":
                found.append((page, *directive.args))
    return found


def dag_ids(code: str) -> set[str]:
    """DAG ids defined in ``code``: ``DAG("id"``, ``DAG(dag_id="id"`` or ``@dag(dag_id="id"``."""
    pattern = r"""(?:\bDAG|@dag)\(\s*(?:dag_id\s*=\s*)?["']([^"']+)["']"""
    return set(re.findall(pattern, code))


def test_the_docs_include_examples() -> None:
    """At least the Databricks example is included (guards the scan itself)."""
    assert any(file == EXAMPLE for _, file, _ in includes())


@pytest.mark.parametrize(("page", "file", "marker"), includes(), ids=lambda v: str(v))
def test_every_example_is_a_marked_system_test_dag(page: Path, file: str, marker: str) -> None:
    """Each include names a file under system_tests/dags/ and a START/END marker pair in it."""
    assert file.startswith(hooks.EXAMPLES_DIR + "/"), f"{page.name}: {file} is not a system-test DAG"
    assert hooks.example_code(ROOT, file, marker).strip()


@pytest.mark.parametrize(("page", "file", "marker"), includes(), ids=lambda v: str(v))
def test_every_included_dag_is_run_by_the_system_tests(page: Path, file: str, marker: str) -> None:
    """The DAG an example defines (or, for a fragment, its file's DAGs) is triggered by a system test."""
    ids = dag_ids(hooks.example_code(ROOT, file, marker)) or dag_ids((ROOT / file).read_text())
    assert ids, f"{file} defines no DAG"
    tests = "\n".join(p.read_text() for p in SYSTEM_TESTS.glob("*.py"))
    unused = {dag_id for dag_id in ids if not re.search(rf"""["']{re.escape(dag_id)}["']""", tests)}
    assert not unused, f"{page.name}: no system test runs {sorted(unused)}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_no_dag_is_written_inline(page: Path) -> None:
    """Fenced code in the docs defines no DAG: DAGs come from system_tests/dags/ through include_example."""
    blocks = re.findall(r"^[ \t]*(`{3,}|~{3,}).*?\n(.*?)^[ \t]*\1", page.read_text(), flags=re.M | re.S)
    inline = [code for _, code in blocks if re.search(r"\bDAG\(|@dag\b|\bwith DAG\b", code)]
    assert not inline, f"{page.name}: include the DAG from system_tests/dags/ instead of writing it inline"


class TestTheHook:
    def test_an_example_is_included_as_fenced_python(self) -> None:
        """The directive becomes a python block with the lines between the markers, dedented."""
        page = f'Before\n\n{{{{ include_example("{EXAMPLE}", "howto_resumable_databricks_submit_run") }}}}\n'
        rendered = hooks.render(page, ROOT)
        assert (
            '```python title="example_databricks_resumable.py"\nwith DAG("resumable_databricks"' in rendered
        )
        assert "[START" not in rendered and "[END" not in rendered

    def test_a_missing_marker_fails_the_build(self) -> None:
        """A marker that the file lacks is an error naming it."""
        page = f'{{{{ include_example("{EXAMPLE}", "no_such_marker") }}}}'
        with pytest.raises(hooks.DocsDirectiveError, match="no_such_marker"):
            hooks.render(page, ROOT)

    def test_a_file_outside_the_system_test_dags_is_refused(self) -> None:
        """Only system-test DAG files may be included, so every example is one that runs."""
        with pytest.raises(hooks.DocsDirectiveError, match="system_tests/dags"):
            hooks.render('{{ include_example("demo/run_demo.py", "x") }}', ROOT)
        with pytest.raises(hooks.DocsDirectiveError, match="system_tests/dags"):
            hooks.render('{{ include_example("system_tests/dags/../conftest.py", "x") }}', ROOT)

    def test_a_directive_inside_text_is_an_error(self) -> None:
        """A directive must stand alone on its line (it expands to a block)."""
        with pytest.raises(hooks.DocsDirectiveError, match="alone"):
            hooks.render(f'See {{{{ include_example("{EXAMPLE}", "x") }}}} here', ROOT)

    def test_directives_in_fenced_code_are_left_alone(self) -> None:
        """Showing the directive's syntax in a code block does not expand it."""
        page = '```\n{{ include_example("nowhere.py", "x") }}\n```\n'
        assert hooks.render(page, ROOT) == page


class TestGeneratedTables:
    def test_the_window_table_lists_every_operator_with_its_key(self) -> None:
        """concepts.md renders one row per shipped operator, read from the classes."""
        from airflow_resumable.providers import amazon, databricks

        page = (DOCS / "concepts.md").read_text()
        assert "visibility_window_table" in {d.name for d in hooks.find_directives(page)}
        table = hooks.visibility_window_table_markdown()
        for name in [*amazon.__all__, *databricks.__all__]:
            cls = getattr(amazon, name, None) or getattr(databricks, name)
            assert f"| `{name}` | `{cls.visibility_key}` |" in table
            assert cls.visibility_key, f"{name} has no visibility_key"

    def test_the_fidelity_page_renders_every_declared_entry(self) -> None:
        from airflow_resumable.testing.realism import fidelity_rows

        page = (DOCS / "fidelity.md").read_text()
        assert "fake_fidelity_table" in {d.name for d in hooks.find_directives(page)}
        rows = fidelity_rows()
        table = hooks.fidelity_table_markdown().splitlines()
        assert len(table) == 2 + len(rows)
        for entry, line in zip(rows, table[2:], strict=True):
            assert line.startswith(
                f"| {entry.service} | {entry.behaviour.replace('_', ' ')} | {entry.status} |"
            )

    def test_every_fake_service_states_every_behaviour(self) -> None:
        """Each service of the fakes says, per behaviour, reproduced / not reproduced / not documented."""
        from airflow_resumable.testing.realism import BEHAVIOURS, fidelity_rows

        by_service: dict[str, list[str]] = {}
        for entry in fidelity_rows():
            by_service.setdefault(entry.service, []).append(entry.behaviour)
        assert {"Databricks Jobs", "AWS Batch", "Step Functions"} <= set(by_service)
        assert len(by_service) == 12
        for service, behaviours in by_service.items():
            assert behaviours == list(BEHAVIOURS), service
