"""
MkDocs hooks (``hooks:`` in ``mkdocs.yml``): two directives that keep pages true to the code.

A directive stands alone on a line, outside fenced code:

- ``{{ include_example("system_tests/dags/<file>.py", "<marker>") }}`` is replaced by the lines
  between ``# [START <marker>]`` and ``# [END <marker>]`` of that file (Airflow's own markers),
  as a fenced Python block. Only files under ``system_tests/dags/`` may be included, so every DAG
  the documentation shows is one the system tests run. A missing file or marker fails the build.
- ``{{ resumable_config_options() }}`` is replaced by the table of the ``[resumable]`` options,
  generated from ``airflow_resumable._config.OPTIONS``, so the reference cannot drift.
- ``{{ resumable_custody_table() }}`` is replaced by the table of task state x user action ->
  what happens to the remote job and who watches it, generated from
  ``airflow_resumable._custody.TABLE``, the table the code itself consults.
- ``{{ fake_fidelity_table() }}`` is replaced by the table of fake service x behaviour ->
  reproduced / not reproduced / not documented, with each behaviour's public source, generated
  from the entries the fakes declare (``airflow_resumable.testing.realism.fidelity_rows``).
- ``{{ visibility_window_table() }}`` is replaced by the table of every shipped operator's
  visibility window and its key in ``[resumable] visibility_window_seconds``, read from the classes.

``tests/test_docs_examples.py`` runs the same functions over every page.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

#: Included examples must live here (relative to the repository root): the system tests' DAGs.
EXAMPLES_DIR = "system_tests/dags"

_DIRECTIVE_LINE = re.compile(r"^[ \t]*\{\{\s*(?P<name>[a-z_]+)\((?P<args>.*)\)\s*\}\}[ \t]*$")
_DIRECTIVE_ANYWHERE = re.compile(
    r"\{\{\s*(?P<name>include_example|resumable_config_options|resumable_custody_table|fake_fidelity_table"
    r"|visibility_window_table)\b"
)
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})")
_ARITY = {
    "include_example": 2,
    "resumable_config_options": 0,
    "resumable_custody_table": 0,
    "fake_fidelity_table": 0,
    "visibility_window_table": 0,
}


class DocsDirectiveError(PluginError):
    """A directive is malformed or points at a file or marker that does not exist."""


@dataclass(frozen=True)
class Directive:
    """One directive found in a page: its name, its string arguments and its 1-based line."""

    name: str
    args: tuple[str, ...]
    line: int


def find_directives(markdown: str) -> list[Directive]:
    """
    Every directive of a page, outside fenced code blocks.

    :raises DocsDirectiveError: a directive is not alone on its line, has the wrong number of
        arguments, or arguments that are not string literals.
    """
    found: list[Directive] = []
    fence: str | None = None
    for number, line in enumerate(markdown.split("\n"), start=1):
        opening = _FENCE.match(line)
        if opening:
            marker = opening["fence"]
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        match = _DIRECTIVE_LINE.match(line)
        if match is None or match["name"] not in _ARITY:
            if _DIRECTIVE_ANYWHERE.search(line):
                raise DocsDirectiveError(f"line {number}: a directive must stand alone on its line: {line!r}")
            continue
        found.append(Directive(match["name"], _arguments(match["name"], match["args"], number), number))
    return found


def _arguments(name: str, source: str, line: int) -> tuple[str, ...]:
    try:
        args = ast.literal_eval(f"({source},)") if source.strip() else ()
    except (SyntaxError, ValueError) as err:
        raise DocsDirectiveError(f"line {line}: cannot read the arguments of {name}: {source!r}") from err
    if len(args) != _ARITY[name] or not all(isinstance(a, str) for a in args):
        raise DocsDirectiveError(f"line {line}: {name} takes {_ARITY[name]} string argument(s), got {args!r}")
    return tuple(args)


def example_path(root: Path, path: str) -> Path:
    """
    The file an ``include_example`` names, checked to be a system-test DAG file.

    :raises DocsDirectiveError: the path leaves ``system_tests/dags/`` or the file does not exist.
    """
    examples = (root / EXAMPLES_DIR).resolve()
    resolved = (root / path).resolve()
    if examples not in resolved.parents:
        raise DocsDirectiveError(
            f"include_example({path!r}): examples must be DAG files under {EXAMPLES_DIR}/, "
            f"so that every example in the docs is one the system tests run"
        )
    if not resolved.is_file():
        raise DocsDirectiveError(f"include_example({path!r}): no such file")
    return resolved


def example_code(root: Path, path: str, marker: str) -> str:
    """
    The dedented lines between ``# [START marker]`` and ``# [END marker]`` of ``path``.

    :raises DocsDirectiveError: the file is not a system-test DAG, or a marker is missing, repeated,
        out of order, or encloses nothing.
    """
    lines = example_path(root, path).read_text().split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [START {marker}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [END {marker}]"]
    if len(starts) != 1 or len(ends) != 1:
        raise DocsDirectiveError(
            f"include_example({path!r}, {marker!r}): expected one '# [START {marker}]' and one "
            f"'# [END {marker}]' line, found {len(starts)} and {len(ends)}"
        )
    code = textwrap.dedent("\n".join(lines[starts[0] + 1 : ends[0]])).strip("\n")
    if not code.strip():
        raise DocsDirectiveError(f"include_example({path!r}, {marker!r}): the markers enclose nothing")
    return code


def config_options_markdown() -> str:
    """The ``[resumable]`` reference: a table of every option, then an ``airflow.cfg`` excerpt."""
    from airflow_resumable._config import OPTIONS, SECTION

    rows = [
        "| option | type | default | environment variable | operator argument | meaning |",
        "|--------|------|---------|----------------------|-------------------|---------|",
    ]
    for name, option in OPTIONS.items():
        env = f"AIRFLOW__{SECTION.upper()}__{name.upper()}"
        rows.append(
            f"| `{name}` | {option.type} | `{option.default}` | `{env}` | {operator_argument(name)} "
            f"| {option.description} |"
        )
    ini = "\n".join([f"[{SECTION}]", *(f"{name} = {o.default}" for name, o in OPTIONS.items())])
    return "\n".join(rows) + f'\n\n```ini title="airflow.cfg (the built-in defaults)"\n{ini}\n```'


def custody_table_markdown() -> str:
    """Task state x user action -> the job's fate, and who watches the job in that state."""
    from airflow_resumable._custody import ACTIONS, TABLE

    header = ["task state", "who watches the job", *ACTIONS.values()]
    rows = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in TABLE:
        effects = [row.effects[action].value for action in ACTIONS]
        cells = [f"`{row.state}`: {row.description}", row.watcher.value, *effects]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def fidelity_table_markdown() -> str:
    """Per fake service and behaviour: what the fake does, whether the service does it, the source."""
    from airflow_resumable.testing.realism import fidelity_rows

    rows = ["| service | behaviour | fidelity | what the fake does | source |", "|---|---|---|---|---|"]
    for entry in fidelity_rows():
        how = entry.how + (f" *{entry.note}*" if entry.note else "")
        source = f"[{_source_label(entry.source)}]({entry.source})" if entry.source else "—"
        behaviour = entry.behaviour.replace("_", " ")
        rows.append(f"| {entry.service} | {behaviour} | {entry.status} | {_cell(how)} | {source} |")
    return "\n".join(rows)


def _source_label(url: str) -> str:
    """A short label for a source link: ``apache/airflow#38998`` or the page's host and last segment."""
    match = re.match(r"https://github\.com/([^/]+/[^/]+)/(?:issues|pull)/(\d+)", url)
    if match:
        return f"{match[1]}#{match[2]}"
    host, _, path = url.removeprefix("https://").partition("/")
    last = path.rstrip("/").rsplit("/", 1)[-1].split("#")[0] or host
    return f"{host}: {last}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def visibility_window_table_markdown() -> str:
    """Every shipped operator's visibility window and configuration key."""
    import importlib

    rows = [
        "| operator | key in `visibility_window_seconds` | default window |",
        "|---|---|---|",
    ]
    for package in ("databricks", "amazon"):
        module = importlib.import_module(f"airflow_resumable.providers.{package}")
        for name in module.__all__:
            cls = getattr(module, name)
            rows.append(f"| `{name}` | `{cls.visibility_key}` | {cls.default_visibility_window:g} s |")
    return "\n".join(rows)


def operator_argument(option: str) -> str:
    """The operator argument that overrides an option (``resume_delay_seconds`` -> ``resume_delay``)."""
    from airflow_resumable._config import OPTIONS

    if not OPTIONS[option].per_operator:
        return "— (deployment-wide)"
    return f"`{option.removesuffix('_seconds')}`"


def render(markdown: str, root: Path) -> str:
    """Replace every directive of a page by what it stands for."""
    directives = {d.line: d for d in find_directives(markdown)}
    if not directives:
        return markdown
    lines = markdown.split("\n")
    for number, directive in directives.items():
        indent = lines[number - 1][: len(lines[number - 1]) - len(lines[number - 1].lstrip())]
        if directive.name == "include_example":
            path, marker = directive.args
            block = f'```python title="{Path(path).name}"\n{example_code(root, path, marker)}\n```'
        elif directive.name == "resumable_custody_table":
            block = custody_table_markdown()
        elif directive.name == "fake_fidelity_table":
            block = fidelity_table_markdown()
        elif directive.name == "visibility_window_table":
            block = visibility_window_table_markdown()
        else:
            block = config_options_markdown()
        lines[number - 1] = textwrap.indent(block, indent)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """MkDocs event: expand the directives of each page (a failure names the page)."""
    root = Path(config["config_file_path"]).resolve().parent
    try:
        return render(markdown, root)
    except DocsDirectiveError as err:
        raise DocsDirectiveError(f"{page.file.src_path}: {err}") from err
