"""
The ledger of jobs in flight: a second copy of each record, kept where a clear does not reach.

**Purpose:** the record in ``task_state_store`` is the source of truth, but a clear may delete a
task instance's state rows (apache/airflow#72100 and #72788 propose it). Without a copy, the next
try would find nothing and submit a second job beside the one still running. The ledger keeps a copy
of the record, as an Airflow Variable, for exactly as long as its job may be active: written with
the intent, updated with the id and each checkpoint, deleted once the job has completed, failed or
been cancelled. A try that finds no record in the store reads the ledger before submitting.

**What it holds:** the record (generation, nonce, token, spec hash, job id, phase), the task
instance's identity, and how to cancel the job (a registered canceller's name with connection ids,
regions and resource ids). Never a job spec, a connection or a secret, like the record itself. It
is also the custodian's list of jobs to watch (:mod:`airflow_resumable.custodian`).

**Trust:** a Variable is editable by every user with Variable edit rights, so an entry is *sealed*
(:mod:`airflow_resumable._trust`): only an entry whose seal verifies for the task instance it names
is read back by a try or acted on by the custodian; any other is reported and ignored. A user can
still delete an entry (the custodian then cannot cancel that job; the record in the task state store
is unaffected). ``docs/security.md`` is the whole boundary.

**Limits:** Variables live in the metadata database (``Variable.set`` always writes there, whatever
secrets backend is configured). Deleting a DAG run does not delete its ledger entries; an entry left
behind is harmless (it is read only by a try of the same task instance) and names its job.

The key prefix and the value's layout are public: never change them after a release.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Protocol

from airflow_resumable._trust import SEAL_FIELD, Verdict, seal, verify

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.record import JobRecord, TaskIdentity

#: How the custodian cancels a job: the name of a registered canceller
#: (:data:`airflow_resumable.custodian.CANCELLERS`) and its JSON keyword arguments.
CancelRecipe = tuple[str, "dict[str, JsonValue]"]

__all__ = [
    "LEDGER_CONTEXT_KEY",
    "LEDGER_KEY_PREFIX",
    "CancelRecipe",
    "JobLedger",
    "VariableLedger",
    "cancel_recipe_of_entry",
    "entry_verdict",
    "identity_of_entry",
    "ledger_entry",
    "ledger_key",
    "record_from_entry",
]

#: Prefix of every ledger Variable key. Never rename: in-flight retries read it.
LEDGER_KEY_PREFIX = "airflow_resumable.ledger."
#: A task context entry that replaces the Variable ledger (unit tests without an API server:
#: :func:`airflow_resumable.testing.state.make_context` puts an in-memory ledger there).
LEDGER_CONTEXT_KEY = "airflow_resumable_ledger"
#: What a ledger entry's seal is for (a record's seal never verifies as an entry's).
LEDGER_SEAL_PURPOSE = "ledger"


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


def ledger_entry(
    identity: TaskIdentity,
    record: JobRecord,
    cancel: CancelRecipe | None = None,
    *,
    cancel_on_user_stop: bool = True,
    cancel_on_failure: bool = True,
    try_id: str | None = None,
) -> dict[str, JsonValue]:
    """
    The entry stored for ``record``: the record's JSON, the task instance it belongs to, and how
    the custodian cancels its job (:mod:`airflow_resumable.custodian`) when no worker watches it.

    :param cancel: a registered canceller's name and its JSON arguments (connection ids, regions,
        resource ids; never a secret), or None.
    :param cancel_on_user_stop: the operator's switch, honoured by the custodian.
    :param cancel_on_failure: the operator's switch, honoured by the custodian for a failed task.
    :param try_id: the id of the try that wrote the entry (Airflow 3 gives every try its own): a
        user's stop heard for that try applies to this entry's job, and to no newer try's.
        ``.. versionadded:: 0.3.0``
    """
    task: dict[str, JsonValue] = {
        "dag_id": identity.dag_id,
        "run_id": identity.run_id,
        "task_id": identity.task_id,
        "map_index": identity.map_index,
    }
    entry: dict[str, JsonValue] = {**record.to_json(), "task": task}
    entry.pop(SEAL_FIELD, None)
    if try_id is not None:
        entry["try_id"] = try_id
    if cancel is not None:
        name, arguments = cancel
        entry["cancel"] = {
            "with": name,
            "args": dict(arguments),
            "on_user_stop": cancel_on_user_stop,
            "on_failure": cancel_on_failure,
        }
    return seal(entry, purpose=LEDGER_SEAL_PURPOSE)


def entry_verdict(key: str, entry: Any) -> Verdict:
    """
    Whether ``entry``, read under ``key``, may be believed: sealed by this deployment and stored
    under the key of the task instance it names (a sealed entry moved to another key is not).
    """
    identity = identity_of_entry(entry)
    if identity is None or ledger_key(identity) != key:
        return Verdict.FORGED if isinstance(entry, dict) and SEAL_FIELD in entry else Verdict.UNSEALED
    return verify(entry, purpose=LEDGER_SEAL_PURPOSE)


def identity_of_entry(entry: Any) -> TaskIdentity | None:
    """The task instance an entry names, or None when the entry is not one of ours."""
    from airflow_resumable.record import TaskIdentity

    task = entry.get("task") if isinstance(entry, dict) else None
    if not isinstance(task, dict):
        return None
    try:
        return TaskIdentity(
            dag_id=str(task["dag_id"]),
            run_id=str(task["run_id"]),
            task_id=str(task["task_id"]),
            map_index=int(task["map_index"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def cancel_recipe_of_entry(entry: Any, state: str | None = None) -> CancelRecipe | None:
    """
    The entry's cancel recipe, or None when it has none, a malformed one, or when the operator's
    switches say not to cancel for a task instance in ``state`` (``failed`` needs both
    ``cancel_on_user_stop`` and ``cancel_on_failure``: the custodian cannot tell a user's mark
    failed from a failure for good).
    """
    cancel = entry.get("cancel") if isinstance(entry, dict) else None
    if not isinstance(cancel, dict):
        return None
    name, arguments = cancel.get("with"), cancel.get("args")
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return None
    allowed = cancel.get("on_user_stop", True) is not False
    if state == "failed":
        allowed = allowed and cancel.get("on_failure", True) is not False
    return (name, arguments) if allowed else None


def record_from_entry(identity: TaskIdentity, entry: Any) -> JobRecord | None:
    """
    The record in a ledger entry, or None when the entry is absent or belongs to another task.

    :raises ~airflow_resumable.record.RecordFormatError: the entry is damaged, or its seal does
        not verify (written by hand, or by another deployment): it is not believed.
    """
    from airflow_resumable.record import JobRecord, RecordFormatError

    if entry is None:
        return None
    record = JobRecord.from_json(entry)
    task = entry.get("task") if isinstance(entry, dict) else None
    expected = ledger_entry(identity, record)["task"]
    if task != expected:
        return None
    verdict = entry_verdict(ledger_key(identity), entry)
    if not verdict.trusted:
        raise RecordFormatError(f"the ledger entry is not trusted: {verdict.value}")
    return record
