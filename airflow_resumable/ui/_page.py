"""
The HTML of the "Resumable jobs" page: one self-contained document (no script, no external asset).

It is shown inside the Airflow UI (an iframe of the plugin's external view) and works as well on
its own. Plain links and a GET form do the filtering and paging; every value is escaped (Jinja2
autoescape): a DAG id, a run id or a record value cannot inject markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2

from airflow_resumable.ui._rows import ACTIVE_PHASES, ENDED_PHASES

if TYPE_CHECKING:
    from airflow_resumable.ui._query import JobFilter
    from airflow_resumable.ui._rows import JobRow

__all__ = ["PageView", "render_page"]

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Resumable jobs</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:20px;margin:0 0 4px} p.sub{margin:0 0 12px;color:#52606d}
form{display:flex;gap:12px;align-items:end;flex-wrap:wrap;margin-bottom:12px}
label{display:flex;flex-direction:column;font-size:12px;color:#52606d}
select,button{font:inherit;padding:4px 8px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e4e7eb;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600;font-size:12px;color:#3e4c59}
tr.attention td{background:#fff4e5} tr.attention td:first-child{border-left:4px solid #d9822b}
.why{color:#b44d12;font-size:12px} .muted{color:#7b8794} .mono{font-family:ui-monospace,monospace}
.phase{display:inline-block;padding:1px 6px;border-radius:8px;background:#e4e7eb;font-size:12px}
.phase-completed{background:#d9f2e3}.phase-cancelled{background:#f0e1e1}.phase-interrupted{background:#fde7c2}
.summary{display:flex;gap:16px;margin:4px 0 12px} .summary a{font-weight:600}
nav.pages{margin-top:12px;display:flex;gap:12px}
</style></head>
<body>
<h1>Resumable jobs</h1>
<p class="sub">{{ subtitle }}</p>
<div class="summary">
  <span><b id="total">{{ total }}</b> records</span>
  <a id="attention-link" href="{{ attention_href }}">{{ attention_total }} need attention</a>
  {% if ledger_only %}<span>{{ ledger_only|length }} only in the ledger</span>{% endif %}
  {% if ledger_unread %}<span id="ledger-unread" class="why">{{ ledger_unread }} ledger entries not read yet
  (one request reads {{ ledger_read }}):
  <a id="ledger-next" href="{{ ledger_next_href }}">read on</a></span>{% endif %}
  <span class="muted">read in {{ '%.0f'|format(query_ms) }} ms</span>
</div>
{% if not single %}
<form method="get">
  <label>DAG<select name="dag_id"><option value="">all DAGs</option>
  {% for dag in dag_ids %}
  <option value="{{ dag }}"{% if dag == filters.dag_id %} selected{% endif %}>{{ dag }}</option>
  {% endfor %}
  </select></label>
  <label>Phase<select name="phase"><option value="">any phase</option>
  {% for phase in phases %}
  <option{% if phase == filters.phase %} selected{% endif %}>{{ phase }}</option>
  {% endfor %}
  </select></label>
  <label>Show<select name="attention">
  <option value="">every record</option>
  <option value="1"{% if filters.attention_only %} selected{% endif %}>needs attention only</option>
  </select></label>
  <button type="submit">Filter</button>
</form>
{% endif %}
<table id="jobs">
<thead><tr><th>DAG</th><th>Run</th><th>Task</th><th>Map</th><th>Operator</th><th>Job id</th><th>Gen</th>
<th>Phase</th><th>Task state</th><th>Watched by</th><th>Checkpoints</th><th>Age</th></tr></thead>
<tbody>
{% for row in rows %}
<tr class="job{% if row.attention %} attention{% endif %}"
    data-dag="{{ row.dag_id }}" data-task="{{ row.task_id }}" data-phase="{{ row.phase }}"
    data-attention="{{ 'yes' if row.attention else 'no' }}">
<td>{{ row.dag_id }}</td><td class="mono">{{ row.run_id }}</td><td>{{ row.task_id }}</td>
<td>{{ row.map_index if row.map_index >= 0 else '' }}</td><td>{{ row.operator }}</td>
<td class="mono">{% if row.external_id is none %}<span class="muted">none yet</span>
{% elif row.link %}<a href="{{ row.link }}" target="_blank" rel="noopener">{{ row.external_id }}</a>
{% else %}{{ row.external_id }}{% endif %}</td>
<td>{{ row.generation if row.generation is not none else '' }}</td>
<td><span class="phase phase-{{ row.phase }}">{{ row.phase }}</span>
{% if row.source == 'ledger' %}<span class="muted">(ledger only)</span>{% endif %}</td>
<td>{{ row.ti_state }}</td><td>{{ row.watched_by }}</td>
<td class="checkpoints">{% if row.checkpoints %}{{ row.checkpoints }}<br><span class="muted">
{{ (row.last_checkpoint_at or '')[:19]|replace('T', ' ') }} {{ row.last_checkpoint_signal or '' }}</span>
{%- else %}0{% endif %}</td>
<td>{{ age(row.age_seconds) }}</td>
</tr>
{% if row.attention %}<tr class="why-row attention">
<td colspan="12" class="why">needs attention: {{ row.attention|join('; ') }}</td></tr>{% endif %}
{% else %}
<tr><td colspan="12" class="muted">No resumable job records
{%- if filters.dag_id or filters.phase or filters.attention_only %} match{% endif %}.</td></tr>
{% endfor %}
</tbody></table>
{% if pages > 1 %}
<nav class="pages">
{% if page > 1 %}<a href="{{ page_href(page - 1) }}">&larr; newer</a>{% endif %}
<span>page {{ page }} of {{ pages }}</span>
{% if page < pages %}<a id="next-page" href="{{ page_href(page + 1) }}">older &rarr;</a>{% endif %}
</nav>
{% endif %}
</body></html>
"""

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_COMPILED = _ENVIRONMENT.from_string(_TEMPLATE)


@dataclass(frozen=True)
class PageView:
    """Everything one rendering of the page needs."""

    rows: list[JobRow]
    ledger_only: list[JobRow]
    filters: JobFilter
    dag_ids: list[str]
    total: int
    attention_total: int
    page: int
    page_size: int
    query_seconds: float
    base_path: str
    #: Ledger Variables the request did not read, and the cursor to read on from.
    ledger_unread: int = 0
    ledger_next_after: int | None = None
    #: The cursor this request read the ledger from (0: its start).
    ledger_after: int = 0
    ledger_read: int = 0


def render_page(view: PageView) -> str:
    """The page's HTML."""
    filters = view.filters
    pages = max(1, -(-view.total // view.page_size))
    query: dict[str, Any] = {"dag_id": filters.dag_id or "", "phase": filters.phase or ""}
    if filters.attention_only:
        query["attention"] = "1"
    single = filters.task is not None
    if single:
        task = filters.task
        assert task is not None
        subtitle = f"Task instance {task.dag_id}.{task.task_id}"
        subtitle += f"[{task.map_index}]" if task.map_index >= 0 else ""
        subtitle += f", run {task.run_id}"
    else:
        subtitle = (
            "Every remote job record of the DAGs you may read: what the task state store and the ledger say."
        )

    def page_href(number: int) -> str:
        return f"{view.base_path}?{urlencode({**query, 'page': number})}"

    attention_href = f"{view.base_path}?{urlencode({**query, 'attention': '1'})}"
    ledger_next_href = f"{view.base_path}?{urlencode({**query, 'ledger_after': view.ledger_next_after or 0})}"
    return _COMPILED.render(
        rows=[*(view.ledger_only if view.page == 1 or view.ledger_after else []), *view.rows],
        ledger_only=view.ledger_only,
        filters=filters,
        dag_ids=view.dag_ids,
        phases=[*ACTIVE_PHASES, *ENDED_PHASES],
        total=view.total,
        attention_total=view.attention_total,
        page=view.page,
        pages=pages,
        query_ms=view.query_seconds * 1000,
        single=single,
        subtitle=subtitle,
        page_href=page_href,
        attention_href=attention_href,
        ledger_unread=view.ledger_unread,
        ledger_read=view.ledger_read,
        ledger_next_href=ledger_next_href,
        age=_age_text,
    )


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
