"""
A griffe extension that turns the reST of our docstrings into the Markdown mkdocstrings renders.

The package's docstrings follow Airflow's style (reST, ``:param:`` fields), parsed by griffe's
``sphinx`` parser. The fields are handled there; the prose is rendered as Markdown, where reST
constructs would show raw. This extension rewrites, outside code:

- roles (``:class:`~.contract.X```, ``:meth:`find_job```...) into code spans (``X``, ``find_job()``);
- literal blocks (``Example::`` and an indented block) into fenced Python code;
- simple tables (``====  ====`` borders) into Markdown tables;
- ``.. versionadded::`` / ``versionchanged`` / ``deprecated`` into a line of text, ``.. note::``
  and ``.. warning::`` into admonitions;

and gives module and class attributes documented by a ``#:`` comment (Sphinx's convention, used
for the task-state-store keys) that comment as their docstring.

A ``:param:`` that names no parameter of the signature, where the signature takes ``**kwargs``
(a drop-in operator documents a stock argument whose meaning changed), is moved out of the
parameter table into a list of the other arguments: griffe would otherwise warn that it cannot
find its annotation. A ``:param:`` unknown to a signature without ``**kwargs`` is left alone, so
that the build still fails on it.

Loaded by mkdocstrings (``extensions:`` in ``mkdocs.yml``); never imported by the package.
"""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from collections.abc import Iterator

_ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<target>[^`]+)`")
_CALLABLE_ROLES = frozenset({"func", "meth"})
_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<name>[a-z-]+)::\s*(?P<argument>.*)$")
_VERSION_DIRECTIVES = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}
_ADMONITIONS = frozenset({"note", "warning", "tip", "important", "seealso"})
_TABLE_BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")
_PARAM_FIELD = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?(?P<name>\w+):(?P<rest>.*)$"
)
_ANY_FIELD = re.compile(r"^:[a-z]+[^:]*:")


def rest_to_markdown(text: str) -> str:
    """Rewrite the reST constructs of one docstring as Markdown (see the module docstring)."""
    return "\n".join(_version_notes_before_fields(list(_convert(text.split("\n")))))


def _version_notes_before_fields(lines: list[str]) -> list[str]:
    """
    Move version notes written after the field list to just before it.

    griffe's sphinx parser would otherwise read them as the end of the last field's description.
    """
    first_field = next((i for i, line in enumerate(lines) if _ANY_FIELD.match(line)), None)
    if first_field is None:
        return lines
    notes = [
        i
        for i, line in enumerate(lines)
        if i > first_field and line.startswith(tuple(f"*{v} " for v in _VERSION_DIRECTIVES.values()))
    ]
    if not notes:
        return lines
    moved = [lines[i] for i in notes]
    rest = [line for i, line in enumerate(lines) if i not in set(notes)]
    return [*rest[:first_field], *moved, "", *rest[first_field:]]


def _convert(lines: list[str]) -> Iterator[str]:
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TABLE_BORDER.match(line):
            end = _table_end(lines, i)
            if end is not None:
                yield from _table(lines[i : end + 1])
                i = end + 1
                continue
        directive = _DIRECTIVE.match(line)
        if directive:
            body, i = _indented_block(lines, i + 1, len(directive["indent"]))
            yield from _directive(directive["indent"], directive["name"], directive["argument"], body)
            continue
        if line.rstrip().endswith("::"):
            indent = len(line) - len(line.lstrip())
            block, after = _indented_block(lines, i + 1, indent)
            if any(b.strip() for b in block):
                intro = line.rstrip()[:-2].rstrip()
                if intro.strip():
                    yield _roles(intro + ":")
                code = textwrap.dedent("\n".join(block)).strip("\n")
                yield ""
                yield " " * indent + "```python"
                yield from (" " * indent + c if c else "" for c in code.split("\n"))
                yield " " * indent + "```"
                if after < len(lines) and lines[after].strip():
                    yield ""
                i = after
                continue
        yield _roles(line)
        i += 1


def _roles(line: str) -> str:
    """Roles become code spans; code spans already in the line are left alone."""
    parts = re.split(r"(``[^`]+``)", line)
    return "".join(part if part.startswith("``") else _ROLE.sub(_role, part) for part in parts)


def _role(match: re.Match[str]) -> str:
    target = match["target"].strip()
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<ref>[^>]+)>", target)
    if titled:
        return f"`{titled['title']}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    target = target.lstrip(".")
    if match["role"] in _CALLABLE_ROLES and not target.endswith(")"):
        target += "()"
    return f"`{target}`"


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``indent`` (blank lines included)."""
    end = start
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def _directive(indent: str, name: str, argument: str, body: list[str]) -> Iterator[str]:
    text = " ".join(b.strip() for b in body if b.strip())
    if name in _VERSION_DIRECTIVES:
        version, _, rest = argument.partition(" ")
        sentence = f"*{_VERSION_DIRECTIVES[name]} {version}.*"
        yield indent + " ".join(filter(None, [sentence, _roles(rest.strip()), _roles(text)]))
    elif name in _ADMONITIONS:
        yield f"{indent}!!! {name}"
        yield ""
        for line in textwrap.dedent("\n".join([argument, *body])).strip("\n").split("\n"):
            yield f"{indent}    {_roles(line)}" if line.strip() else ""
    else:  # unknown: keep it visible rather than dropping text
        yield f"{indent}{name}: {_roles(argument)}"
        yield from (_roles(b) for b in body)


def _table_end(lines: list[str], start: int) -> int | None:
    """Index of the closing border of the simple table whose top border is at ``start``."""
    borders = [j for j in range(start, len(lines)) if _TABLE_BORDER.match(lines[j])]
    blank = next((j for j in range(start, len(lines)) if not lines[j].strip()), len(lines))
    inside = [j for j in borders if j < blank]
    return inside[-1] if len(inside) >= 3 else None


def _table(lines: list[str]) -> Iterator[str]:
    """A reST simple table (top border, header, border, rows, bottom border) as a Markdown table."""
    border = lines[0]
    spans = [m.start() for m in re.finditer(r"=+", border)]
    rows: list[list[str]] = []
    for line in lines[1:-1]:
        if _TABLE_BORDER.match(line):
            continue
        cells = [line[a:b].strip() for a, b in zip(spans, [*spans[1:], None], strict=True)]
        if rows and not cells[0]:  # a continuation line of the row above
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    indent = border[: len(border) - len(border.lstrip())]
    yield ""
    for number, row in enumerate(rows):
        yield indent + "| " + " | ".join(_roles(c).replace("|", "\\|") for c in row) + " |"
        if number == 0:
            yield indent + "|" + "|".join(" --- " for _ in row) + "|"
    yield ""


def move_kwargs_params(text: str, parameters: dict[str, bool] | None) -> str:
    """
    Move ``:param:`` fields that ``parameters`` lacks into a list of other arguments.

    :param parameters: the signature's parameter names, each with True for ``**kwargs``; None when
        the signature could not be determined (every unknown name is moved then).
    """
    if parameters is not None and not any(parameters.values()):
        return text
    lines = text.split("\n")
    kept: list[str] = []
    moved: list[str] = []
    first_field: int | None = None
    i = 0
    while i < len(lines):
        field = _PARAM_FIELD.match(lines[i])
        if _ANY_FIELD.match(lines[i]) and first_field is None:
            first_field = len(kept)
        end = i + 1
        while end < len(lines) and lines[end].startswith((" ", "\t")) and lines[end].strip():
            end += 1
        if field and (parameters is None or field["name"] not in parameters):
            described = " ".join([field["rest"].strip(), *(line.strip() for line in lines[i + 1 : end])])
            moved.append(f"- `{field['name']}`: {described}".rstrip())
            i = end
            continue
        kept.extend(lines[i:end])
        i = end
    if not moved:
        return text
    block = ["**Other arguments** (taken through `**kwargs`):", "", *moved, ""]
    at = len(kept) if first_field is None else first_field
    return "\n".join([*kept[:at], *block, *kept[at:]])


def _parameters(obj: griffe.Object) -> dict[str, bool] | None:
    """The signature's parameter names (True for ``**kwargs``), or None when unknown."""
    try:
        parameters = obj.parameters  # type: ignore[attr-defined]
    except Exception:
        return None
    if not len(parameters):
        return None
    return {p.name: p.kind is griffe.ParameterKind.var_keyword for p in parameters}


def _comment_docstring(attr: griffe.Attribute) -> str | None:
    """The ``#:`` comment lines right above an attribute's assignment, if any."""
    if attr.lineno is None or attr.filepath is None or isinstance(attr.filepath, list):
        return None
    try:
        source = attr.lines_collection[attr.filepath]
    except KeyError:
        return None
    comment: list[str] = []
    row = attr.lineno - 2
    while row >= 0 and source[row].lstrip().startswith("#:"):
        comment.insert(0, source[row].lstrip()[2:].strip())
        row -= 1
    return "\n".join(comment) or None


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring's reST as Markdown; document ``#:``-commented attributes."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.is_attribute and obj.docstring is None:
            comment = _comment_docstring(obj)  # type: ignore[arg-type]
            if comment is not None:
                obj.docstring = griffe.Docstring(
                    comment,
                    lineno=obj.lineno,
                    endlineno=obj.lineno,
                    parent=obj,
                    parser=loader.docstring_parser,
                    parser_options=loader.docstring_options,
                )
        if obj.docstring is not None:
            value = rest_to_markdown(obj.docstring.value)
            if obj.is_class or obj.is_function:
                value = move_kwargs_params(value, _parameters(obj))
            obj.docstring.value = value
