"""docs/griffe_rest.py turns the reST of the package's docstrings into the Markdown the site renders."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
_spec = importlib.util.spec_from_file_location("airflow_resumable_docs_griffe_rest", DOCS / "griffe_rest.py")
assert _spec is not None and _spec.loader is not None
rest = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rest
_spec.loader.exec_module(rest)


def test_roles_become_code_spans() -> None:
    """A role shows its last name as code; functions get parentheses; literals stay as they are."""
    text = "See :class:`~.contract.ResumableOperatorContract`, :meth:`find_job`, ``:class:``."
    assert rest.rest_to_markdown(text) == "See `ResumableOperatorContract`, `find_job()`, ``:class:``."


def test_literal_blocks_become_fenced_python() -> None:
    """``Example::`` and its indented block become a fenced, dedented code block."""
    text = "Example::\n\n    with X() as x:\n        x.go()\n\nAfter."
    assert rest.rest_to_markdown(text) == "Example:\n\n```python\nwith X() as x:\n    x.go()\n```\n\nAfter."


def test_simple_tables_become_markdown_tables() -> None:
    """A reST simple table, continuation lines included, becomes a Markdown table."""
    text = "====  ======\nkey   action\n====  ======\na     one\n      more\nb     two\n====  ======"
    assert rest.rest_to_markdown(text).strip() == (
        "| key | action |\n| --- | --- |\n| a | one more |\n| b | two |"
    )


def test_version_notes_move_before_the_fields() -> None:
    """A ``versionadded`` after the field list is not read as part of the last parameter."""
    text = "Summary.\n\n:param a: the a.\n\n.. versionadded:: 0.1.0"
    converted = rest.rest_to_markdown(text)
    assert converted.index("*Added in version 0.1.0.*") < converted.index(":param a:")


def test_kwargs_parameters_move_out_of_the_table() -> None:
    """A documented argument taken through ``**kwargs`` is listed apart; a real typo is kept."""
    text = "Summary.\n\n:param a: the a.\n:param stock: a stock argument,\n    on two lines."
    moved = rest.move_kwargs_params(text, {"a": False, "kwargs": True})
    assert "- `stock`: a stock argument, on two lines." in moved and ":param stock:" not in moved
    assert rest.move_kwargs_params(text, {"a": False}) == text
