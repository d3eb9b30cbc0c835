"""
One row of the "Resumable jobs" page, from what the deployment stores: a pure function, no I/O.

:func:`job_row` turns a stored record (the ``task_state_store`` row, or a ledger entry whose record
is gone) and its task instance's state into what the page shows: who watches the job now (asked
of :func:`airflow_resumable._custody.watcher_now`, never decided here), its checkpoints, its age,
and why it needs attention. :mod:`._query` selects the same "needs attention" set in SQL; the
unit tests hold the two to one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from airflow_resumable._custody import Watcher, watcher_now
from airflow_resumable.record import JobRecord, RecordFormatError

if TYPE_CHECKING:
    from pydantic import JsonValue

__all__ = ["ACTIVE_PHASES", "ENDED_PHASES", "JobRow", "StoredRecord", "job_row"]

#: Record phases in which the remote job may still be running.
ACTIVE_PHASES: tuple[str, ...] = ("intent", "submitted", "interrupted")
#: Record phases in which the job has ended (the task returned its result, or this package cancelled it).
ENDED_PHASES: tuple[str, ...] = ("completed", "cancelled")

#: Short labels of :class:`~airflow_resumable._custody.Watcher` for the page's "watched by" column.
WATCHER_LABELS: dict[Watcher, str] = {
    Watcher.WORKER: "worker",
    Watcher.TRIGGERER: "triggerer",
    Watcher.CUSTODIAN: "nobody (custodian listens)",
    Watcher.NOBODY: "nobody",
    Watcher.NONE_NEEDED: "— (job ended)",
}


@dataclass(frozen=True)
class StoredRecord:
    """
    A record as read from the metadata database, with its task instance.

    :param value: the raw JSON text of the record (``task_state_store.value`` or the ledger
        Variable's value); parsed by :func:`job_row`, which reports a damaged one.
    :param ti_found: False when the task instance no longer exists (its DAG run was deleted).
    :param source: ``store`` (the task state store) or ``ledger`` (only the ledger still has it).
    :param store_id: ``task_state_store.id`` of the record (the page's order and keyset cursor);
        None for a ledger entry.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    value: str
    updated_at: datetime | None = None
    ti_found: bool = True
    ti_state: str | None = None
    operator: str | None = None
    try_number: int | None = None
    source: Literal["store", "ledger"] = "store"
    store_id: int | None = None


@dataclass(frozen=True)
class JobRow:
    """What the page shows for one job record; ``attention`` lists why it needs a look (empty: fine)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    operator: str
    external_id: str | None
    generation: int | None
    phase: str
    ti_state: str
    watcher: Watcher
    checkpoints: int
    last_checkpoint_at: str | None
    last_checkpoint_signal: str | None
    age_seconds: float | None
    attention: tuple[str, ...]
    source: str
    try_number: int | None = None
    #: The operator's extra link for the job (set by the page for the rows it shows).
    link: str | None = field(default=None, compare=False)

    @property
    def watched_by(self) -> str:
        """The short label of :attr:`watcher`."""
        return WATCHER_LABELS[self.watcher]

    def to_json(self) -> dict[str, JsonValue]:
        """The row as the page's JSON endpoint returns it."""
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "operator": self.operator,
            "external_id": self.external_id,
            "link": self.link,
            "generation": self.generation,
            "phase": self.phase,
            "ti_state": self.ti_state,
            "try_number": self.try_number,
            "watched_by": self.watched_by,
            "checkpoints": self.checkpoints,
            "last_checkpoint_at": self.last_checkpoint_at,
            "last_checkpoint_signal": self.last_checkpoint_signal,
            "age_seconds": self.age_seconds,
            "attention": list(self.attention),
            "source": self.source,
        }


def job_row(stored: StoredRecord, now: datetime | None = None) -> JobRow:
    """
    The page's row for one stored record.

    Needs attention (the same set :func:`._query.attention_clause` selects): a job that may still
    run while no worker or trigger polls it (the task finished, waits, or is gone), a record whose
    cancel failed, a checkpoint taken on an unclassified stop, and a record that cannot be read.
    """
    now = now or datetime.now(tz=timezone.utc)
    state = stored.ti_state if stored.ti_found else None
    ti_state = (state or "none") if stored.ti_found else "gone"
    base = {
        "dag_id": stored.dag_id,
        "run_id": stored.run_id,
        "task_id": stored.task_id,
        "map_index": stored.map_index,
        "operator": stored.operator or "",
        "ti_state": ti_state,
        "source": stored.source,
        "try_number": stored.try_number,
    }
    try:
        record = JobRecord.from_json(json.loads(stored.value))
    except (ValueError, RecordFormatError) as err:
        reason = err if isinstance(err, RecordFormatError) else "not JSON"
        return JobRow(
            **base,  # type: ignore[arg-type]
            external_id=None,
            generation=None,
            phase="unreadable",
            watcher=watcher_now(state, found=stored.ti_found),
            checkpoints=0,
            last_checkpoint_at=None,
            last_checkpoint_signal=None,
            age_seconds=_age(None, stored.updated_at, now),
            attention=(f"unreadable record ({reason})",),
        )
    active = record.phase in ACTIVE_PHASES
    watcher = watcher_now(state, found=stored.ti_found, job_may_be_active=active)
    interruption = record.interruption or {}
    attention: list[str] = []
    if watcher is Watcher.CUSTODIAN:
        attention.append(f"no process polls the job while the task waits ({ti_state})")
    elif watcher is Watcher.NOBODY:
        attention.append(f"the job may still run but its task is {ti_state}")
    if record.cancel_failed is not None:
        attention.append(f"cancel failed ({record.cancel_failed.get('reason', 'no reason recorded')})")
    gave_up = _custodian_gave_up(stored)
    if gave_up is not None:
        attention.append(gave_up)
    if active and interruption.get("kind") == "unknown":
        attention.append("unclassified stop: if a user stopped the task, the job may be left running")
    return JobRow(
        **base,  # type: ignore[arg-type]
        external_id=None if record.external_id is None else _id_text(record.external_id),
        generation=record.generation,
        phase=record.phase,
        watcher=watcher,
        checkpoints=record.resumes,
        last_checkpoint_at=_text(interruption.get("at")),
        last_checkpoint_signal=_text(interruption.get("signal")),
        age_seconds=_age(record.created_at, stored.updated_at, now),
        attention=tuple(attention),
    )


def _custodian_gave_up(stored: StoredRecord) -> str | None:
    """For a ledger-only row (a deleted run, a wiped store): the custodian's give-up, said on the row."""
    if stored.source != "ledger":
        return None
    try:
        notes = json.loads(stored.value).get("custodian")
    except (ValueError, AttributeError):
        return None
    if not isinstance(notes, dict) or not notes.get("gave_up"):
        return None
    return (
        f"the custodian gave up cancelling it ({notes.get('failures', '?')} failed attempts, last "
        f"{notes.get('error', 'error unknown')}): stop it by hand"
    )


def _id_text(value: JsonValue) -> str:
    """A job id as text: a list of ids (EMR steps) joined by commas."""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _text(value: JsonValue) -> str | None:
    return None if value is None else str(value)


def _age(created_at: str | None, updated_at: datetime | None, now: datetime) -> float | None:
    """Seconds since the intent was written; records from before 0.2.0: since the last write."""
    since: datetime | None = None
    if created_at:
        try:
            since = datetime.fromisoformat(created_at)
        except ValueError:
            since = None
    if since is None:
        since = updated_at
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return max(0.0, (now - since).total_seconds())
