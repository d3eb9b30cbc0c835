"""The configuration reference is generated from ``_config.OPTIONS``, so it lists every option."""

from __future__ import annotations

import inspect
from pathlib import Path

from airflow_resumable._config import OPTIONS
from airflow_resumable.mixin import ResumableJobMixin
from tests.test_docs_examples import hooks

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_the_page_uses_the_generated_table() -> None:
    """docs/configuration.md expands the generated table instead of a hand-written copy."""
    names = [d.name for d in hooks.find_directives(PAGE.read_text())]
    assert names.count("resumable_config_options") == 1


def test_the_table_lists_every_option_with_its_default() -> None:
    """Each option appears with its type, default, environment variable and description."""
    table = hooks.config_options_markdown()
    for name, option in OPTIONS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{option.default}`" in row and option.type in row and option.description in row
        assert f"`AIRFLOW__RESUMABLE__{name.upper()}`" in row
        assert f"{name} = {option.default}" in table


def test_each_option_names_the_argument_that_overrides_it() -> None:
    """The operator argument shown for an option is a real argument of the mixin."""
    arguments = inspect.signature(ResumableJobMixin.__init__).parameters
    for name, option in OPTIONS.items():
        if option.per_operator:
            assert hooks.operator_argument(name).strip("`") in arguments
        else:
            assert name.removesuffix("_seconds") not in arguments
            assert "deployment-wide" in hooks.operator_argument(name)
