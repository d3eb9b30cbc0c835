"""
The "Resumable jobs" page's reads of the metadata database: filtered, counted and paginated in SQL.

One query pages the records in ``task_state_store`` (key :data:`~airflow_resumable.record.RECORD_KEY`)
joined to their task instances, restricted to the DAGs the user may read, filtered by DAG, phase
and "needs attention", newest record first, with ``LIMIT``/``OFFSET`` or a keyset cursor
(``before_id``); one more query counts the totals. The record's fields are read in SQL with the
database's JSON functions (sqlite, PostgreSQL, MySQL). Nothing here writes, and nothing calls a cloud.

**Order.** By ``task_state_store.id`` descending: the primary key, so the database walks its index
and stops after a page, where ``updated_at`` (no index; Airflow owns the table) needs a sort of
every matching row. The id is given when a task instance's record is first written (its intent),
so the order is the order in which the jobs were started (what the Age column shows), and a row
does not jump to the first page each time its record is rewritten.

The ledger (:mod:`airflow_resumable.ledger`) is read twice: which of the shown rows it still holds
(jobs the custodian can cancel, one query), and its entries whose record is gone (a deleted DAG
run, a wiped store). Ledger values may be encrypted (Fernet), so they are decoded in Python, read
by ``Variable.id`` in batches of :data:`LEDGER_BATCH` (keyset paging, ``key LIKE`` the prefix), at
most :data:`LEDGER_SCAN_BUDGET` a request; the rest is counted and reported
(:attr:`LedgerScan.unread`) with a cursor to read on from (:attr:`LedgerScan.next_after`), never
dropped silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, func, literal, or_, select, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from airflow_resumable._custody import WATCHED_STATES
from airflow_resumable.ledger import LEDGER_KEY_PREFIX, entry_verdict, identity_of_entry, ledger_key
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.ui._rows import ACTIVE_PHASES, ENDED_PHASES, StoredRecord

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.orm import Session

__all__ = [
    "LEDGER_BATCH",
    "LEDGER_SCAN_BUDGET",
    "JobFilter",
    "JobPage",
    "LedgerScan",
    "attention_clause",
    "json_text",
    "ledger_keys_present",
    "ledger_only",
    "query_jobs",
]

#: Ledger Variables read per query when looking for entries whose record is gone.
LEDGER_BATCH = 500
#: Ledger Variables read at most per request; the rest are counted and reported, with a cursor.
LEDGER_SCAN_BUDGET = 5000
_KNOWN_PHASES = (*ACTIVE_PHASES, *ENDED_PHASES)


class json_text(FunctionElement[str]):
    """``json_text(column, "a", "b")``: the text at ``$.a.b`` of a JSON text column, NULL if absent."""

    type = String()
    inherit_cache = True


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: Any, **kw: Any) -> str:
    column, *keys = list(element.clauses)
    path = "$" + "".join(f'."{key.value}"' for key in keys)
    document = compiler.process(column, **kw)
    # json_extract raises on malformed JSON: guard it so one damaged value cannot break the page.
    return f"CASE WHEN json_valid({document}) THEN json_extract({document}, '{path}') END"


@compiles(json_text, "postgresql")
def _json_text_postgresql(element: json_text, compiler: Any, **kw: Any) -> str:
    column, *keys = list(element.clauses)
    path = ",".join(key.value for key in keys)
    return f"(CAST({compiler.process(column, **kw)} AS JSON) #>> '{{{path}}}')"


@compiles(json_text, "mysql")
def _json_text_mysql(element: json_text, compiler: Any, **kw: Any) -> str:
    column, *keys = list(element.clauses)
    path = "$" + "".join(f'."{key.value}"' for key in keys)
    return f"JSON_UNQUOTE(JSON_EXTRACT({compiler.process(column, **kw)}, '{path}'))"


@dataclass(frozen=True)
class JobFilter:
    """
    What the user asked for: one DAG, one phase, the attention set, or one task instance.

    :param task: the task-instance tab's one task instance (dag_id, run_id, task_id, map_index).
    """

    dag_id: str | None = None
    phase: str | None = None
    attention_only: bool = False
    task: TaskIdentity | None = None


@dataclass(frozen=True)
class JobPage:
    """
    One page of records, the totals of the filtered set, and how long the reads took.

    :param next_before_id: the keyset cursor of the next (older) page; None on the last page.
    """

    records: list[StoredRecord]
    total: int
    attention_total: int
    query_seconds: float
    next_before_id: int | None = None


@dataclass(frozen=True)
class LedgerScan:
    """
    The ledger entries whose record is gone, and how much of the ledger was not read.

    :param records: the entries found (of the DAGs the user may read, matching the filters).
    :param read: ledger Variables read by this scan.
    :param unread: ledger Variables after the scan's last one, not read (0: the scan saw them all).
    :param next_after: the ``Variable.id`` to continue from (``ledger_after``); None when ``unread`` is 0.
    """

    records: list[StoredRecord]
    read: int = 0
    unread: int = 0
    next_after: int | None = None


def _models() -> tuple[Any, Any]:
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance

    return TaskStateStoreModel, TaskInstance


def attention_clause(fields: Any = None) -> ColumnElement[bool]:
    """
    SQL for "needs attention", the definition :func:`._rows.job_row` applies to each row.

    A job that may still run (active phase, or a phase this version cannot read) while no worker or
    trigger polls it; a record whose cancel failed; a checkpoint taken on an unclassified stop.

    :param fields: columns named as :func:`_attention_fields` names them (a subquery's ``.c``),
        each record's JSON read once; None reads them from the joined tables.
    """
    if fields is None:
        fields = _attention_fields()
        phase, ti_task_id, ti_state = fields["phase"], fields["ti_task_id"], fields["ti_state"]
        cancel_failed_text, kind = fields["cancel_failed"], fields["kind"]
    else:
        phase, ti_task_id, ti_state = fields.phase, fields.ti_task_id, fields.ti_state
        cancel_failed_text, kind = fields.cancel_failed, fields.kind
    unreadable = or_(phase.is_(None), phase.not_in(_KNOWN_PHASES))
    active = or_(unreadable, phase.in_(ACTIVE_PHASES))
    unwatched = or_(ti_task_id.is_(None), ti_state.is_(None), ti_state.not_in(sorted(WATCHED_STATES)))
    # sqlite and PostgreSQL give NULL for a JSON null, MySQL the text 'null'
    cancel_failed = func.coalesce(cancel_failed_text, "null").not_in(("null", ""))
    unclassified = kind == "unknown"
    return or_(unreadable, and_(active, unwatched), cancel_failed, and_(active, unclassified))


def _attention_fields() -> dict[str, Any]:
    """What "needs attention" reads of a record and its task instance, as labelled columns."""
    tss, ti = _models()
    return {
        "phase": json_text(tss.value, literal("phase")),
        "cancel_failed": json_text(tss.value, literal("cancel_failed")),
        "kind": json_text(tss.value, literal("interruption"), literal("kind")),
        "ti_task_id": ti.task_id,
        "ti_state": ti.state,
    }


def _filtered(statement: Any, readable_dag_ids: Collection[str], filters: JobFilter) -> Any:
    """``statement`` (a select) over the records of readable DAGs, with the filters but the attention one."""
    tss, ti = _models()
    statement = statement.select_from(tss).outerjoin(
        ti,
        and_(
            ti.dag_id == tss.dag_id,
            ti.run_id == tss.run_id,
            ti.task_id == tss.task_id,
            ti.map_index == tss.map_index,
        ),
    )
    statement = statement.where(tss.key == RECORD_KEY, tss.dag_id.in_(sorted(readable_dag_ids)))
    if filters.dag_id:
        statement = statement.where(tss.dag_id == filters.dag_id)
    if filters.phase:
        statement = statement.where(json_text(tss.value, literal("phase")) == filters.phase)
    if filters.task is not None:
        task = filters.task
        statement = statement.where(
            tss.dag_id == task.dag_id,
            tss.run_id == task.run_id,
            tss.task_id == task.task_id,
            tss.map_index == task.map_index,
        )
    return statement


def query_jobs(
    session: Session,
    *,
    readable_dag_ids: Collection[str],
    filters: JobFilter,
    limit: int,
    offset: int,
    before_id: int | None = None,
) -> JobPage:
    """
    One page of records (newest record first) of the DAGs in ``readable_dag_ids``, with totals.

    ``limit``, ``offset`` and the filters go to the database; so do the counts. Two queries.

    :param before_id: keyset cursor: only records whose ``task_state_store.id`` is below it
        (:attr:`JobPage.next_before_id` of the page before); ``offset`` then counts from there.
    """
    tss, ti = _models()
    began = time.perf_counter()
    if not readable_dag_ids:
        return JobPage([], 0, 0, time.perf_counter() - began)
    columns = select(
        tss.id,
        tss.dag_id,
        tss.run_id,
        tss.task_id,
        tss.map_index,
        tss.value,
        tss.updated_at,
        ti.task_id.label("ti_task_id"),
        ti.state,
        func.coalesce(func.nullif(ti.custom_operator_name, ""), ti.operator).label("operator"),
        ti.try_number,
    )
    statement = _filtered(columns, readable_dag_ids, filters)
    if filters.attention_only:
        statement = statement.where(attention_clause())
    if before_id is not None:
        statement = statement.where(tss.id < before_id)
    statement = statement.order_by(tss.id.desc()).limit(limit).offset(offset)
    records = [
        StoredRecord(
            store_id=row.id,
            dag_id=row.dag_id,
            run_id=row.run_id,
            task_id=row.task_id,
            map_index=row.map_index,
            value=row.value,
            updated_at=row.updated_at,
            ti_found=row.ti_task_id is not None,
            ti_state=None if row.state is None else str(getattr(row.state, "value", row.state)),
            operator=row.operator,
            try_number=row.try_number,
        )
        for row in session.execute(statement)
    ]
    # Each record's JSON is parsed once: the fields come from a subquery that ``OFFSET 0`` keeps
    # PostgreSQL from folding into the count (which would parse it once per use: 5x slower).
    fields = _filtered(
        select(*(column.label(name) for name, column in _attention_fields().items())),
        readable_dag_ids,
        filters,
    )
    per_record = fields.offset(0).subquery()
    counted = select(func.count(), func.count().filter(attention_clause(per_record.c)))
    total, attention_total = session.execute(counted).one()
    if filters.attention_only:
        total = attention_total
    next_before = records[-1].store_id if len(records) == limit else None
    return JobPage(records, int(total), int(attention_total), time.perf_counter() - began, next_before)


def ledger_keys_present(session: Session, identities: Collection[TaskIdentity]) -> set[TaskIdentity]:
    """Which of these task instances still have a ledger entry (a job the custodian can reach)."""
    from airflow.models.variable import Variable

    keys = {ledger_key(identity): identity for identity in identities}
    if not keys:
        return set()
    present = session.scalars(select(Variable.key).where(Variable.key.in_(sorted(keys))))
    return {keys[key] for key in present}


def ledger_only(
    session: Session,
    *,
    readable_dag_ids: Collection[str],
    filters: JobFilter,
    after_id: int = 0,
    budget: int | None = None,
    batch: int = LEDGER_BATCH,
) -> LedgerScan:
    """
    Ledger entries of readable DAGs whose record is no longer in the task state store.

    Such a job may still run, but the store cannot show it: its DAG run was deleted (the store's
    rows go with it), or its store was wiped. Reads the ledger Variables after ``after_id`` in
    ``Variable.id`` order, ``batch`` a query (at most three queries a batch), ``budget`` at most;
    what is left is counted in one more query, never dropped silently.

    :param after_id: keyset cursor (:attr:`LedgerScan.next_after` of an earlier scan); 0 from the start.
    :param budget: Variables read at most; None for :data:`LEDGER_SCAN_BUDGET`.
    """
    budget = LEDGER_SCAN_BUDGET if budget is None else budget
    from airflow.models.variable import Variable

    is_ledger = Variable.key.like(LEDGER_KEY_PREFIX.replace("_", r"\_") + "%", escape="\\")
    records: list[StoredRecord] = []
    last, read = after_id, 0
    while read < budget:
        wanted = min(batch, budget - read)
        variables = session.scalars(
            select(Variable).where(is_ledger, Variable.id > last).order_by(Variable.id).limit(wanted)
        ).all()
        if variables:
            read += len(variables)
            last = variables[-1].id
            records.extend(_orphans(session, variables, readable_dag_ids, filters))
        if len(variables) < wanted:
            return LedgerScan(records, read)
    unread = int(
        session.scalar(select(func.count()).select_from(Variable).where(is_ledger, Variable.id > last)) or 0
    )
    return LedgerScan(records, read, unread, last if unread else None)


def _orphans(
    session: Session, variables: Collection[Any], readable_dag_ids: Collection[str], filters: JobFilter
) -> list[StoredRecord]:
    """The entries among ``variables`` (ledger Variables) whose record is gone: two queries at most."""
    tss, ti = _models()
    entries: dict[TaskIdentity, str] = {}
    for variable in variables:
        try:
            raw = variable.val
            entry = json.loads(raw or "null")
            identity = identity_of_entry(entry)
        except ValueError:
            continue
        if (
            identity is None
            or ledger_key(identity) != variable.key
            or identity.dag_id not in readable_dag_ids
            or not entry_verdict(variable.key, entry).trusted  # a forged Variable is not a job of ours
        ):
            continue
        if filters.dag_id and identity.dag_id != filters.dag_id:
            continue
        if filters.task is not None and identity != filters.task:
            continue
        if filters.phase and _phase_of(raw) != filters.phase:
            continue
        entries[identity] = raw
    if not entries:
        return []
    wanted = [(i.dag_id, i.run_id, i.task_id, i.map_index) for i in entries]
    identity_columns = (tss.dag_id, tss.run_id, tss.task_id, tss.map_index)
    stored = {
        TaskIdentity(*row)
        for row in session.execute(
            select(*identity_columns).where(tss.key == RECORD_KEY, tuple_(*identity_columns).in_(wanted))
        )
    }
    wanted = [(i.dag_id, i.run_id, i.task_id, i.map_index) for i in entries if i not in stored]
    if not wanted:
        return []
    ti_columns = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
    states = {
        TaskIdentity(*row[:4]): row[4]
        for row in session.execute(select(*ti_columns, ti.state).where(tuple_(*ti_columns).in_(wanted)))
    }
    return [
        StoredRecord(
            dag_id=identity.dag_id,
            run_id=identity.run_id,
            task_id=identity.task_id,
            map_index=identity.map_index,
            value=raw,
            ti_found=identity in states,
            ti_state=None if identity not in states else _state_text(states[identity]),
            source="ledger",
        )
        for identity, raw in entries.items()
        if identity not in stored
    ]


def _state_text(state: Any) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


def _phase_of(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    phase = value.get("phase") if isinstance(value, dict) else None
    return phase if isinstance(phase, str) else None
