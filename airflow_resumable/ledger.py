"""
The ledger of jobs in flight: a second copy of each record, kept where a clear does not reach.

**Purpose:** the record in ``task_state_store`` is the source of truth, but a clear may delete a
task instance's state rows (apache/airflow#72100 and #72788 propose it). Without a copy, the next
try would find nothing and submit a second job beside the one still running. The ledger keeps a copy
of the record, as an Airflow Variable, for exactly as long as its job may be active: written with
the intent, updated with the id and each checkpoint, deleted once the job has completed, failed or
been cancelled. A try that finds no record in the store reads the ledger before submitting.

**What it holds:** the record (generation, nonce, token, spec hash, job id, phase) and the task
instance's identity. Never a job spec, a connection or a secret, like the record itself.

**Limits:** Variables live in the metadata database (``Variable.set`` always writes there, whatever
secrets backend is configured). Deleting a DAG run does not delete its ledger entries; an entry left
behind is harmless (it is read only by a try of the same task instance) and names its job.

The key prefix and the value's layout are public: never change them after a release.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.record import JobRecord, TaskIdentity

__all__ = [
    "LEDGER_CONTEXT_KEY",
    "LEDGER_KEY_PREFIX",
    "JobLedger",
    "VariableLedger",
    "ledger_entry",
    "ledger_key",
    "record_from_entry",
]

#: Prefix of every ledger Variable key. Never rename: in-flight retries read it.
LEDGER_KEY_PREFIX = "airflow_resumable.ledger."
#: A task context entry that replaces the Variable ledger (unit tests without an API server:
#: :func:`airflow_resumable.testing.state.make_context` puts an in-memory ledger there).
LEDGER_CONTEXT_KEY = "airflow_resumable_ledger"


class JobLedger(Protocol):
    """Where ledger entries live: ``get`` (None when absent), ``set`` and ``delete`` by key."""

    def get(self, key: str) -> JsonValue: ...
    def set(self, key: str, value: JsonValue) -> None: ...
    def delete(self, key: str) -> None: ...


class VariableLedger:
    """The default ledger: one Airflow Variable per task instance with a job in flight."""

    def get(self, key: str) -> JsonValue:
        """The entry, or None."""
        from airflow.sdk import Variable

        value: JsonValue = Variable.get(key, default=None, deserialize_json=True)
        return value

    def set(self, key: str, value: JsonValue) -> None:
        """Write (or overwrite) the entry."""
        from airflow.sdk import Variable

        Variable.set(key, value, serialize_json=True, description="airflow_resumable: a job in flight")

    def delete(self, key: str) -> None:
        """Remove the entry (absent is fine)."""
        from airflow.sdk import Variable

        Variable.delete(key)


def ledger_key(identity: TaskIdentity) -> str:
    """The Variable key of a task instance's entry: the prefix and a hash of its identity."""
    material = "\x1f".join((identity.dag_id, identity.run_id, identity.task_id, str(identity.map_index)))
    return LEDGER_KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:40]


def ledger_entry(identity: TaskIdentity, record: JobRecord) -> dict[str, JsonValue]:
    """The entry stored for ``record``: the record's JSON plus the task instance it belongs to."""
    task: dict[str, JsonValue] = {
        "dag_id": identity.dag_id,
        "run_id": identity.run_id,
        "task_id": identity.task_id,
        "map_index": identity.map_index,
    }
    return {**record.to_json(), "task": task}


def record_from_entry(identity: TaskIdentity, entry: Any) -> JobRecord | None:
    """
    The record in a ledger entry, or None when the entry is absent or belongs to another task.

    :raises ~airflow_resumable.record.RecordFormatError: the entry is damaged.
    """
    from airflow_resumable.record import JobRecord

    if entry is None:
        return None
    record = JobRecord.from_json(entry)
    task = entry.get("task") if isinstance(entry, dict) else None
    expected = ledger_entry(identity, record)["task"]
    if task != expected:
        return None
    return record
