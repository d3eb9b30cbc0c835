"""
The attempt-start decision: what to do with whatever the previous tries left behind.

Pure logic over injected callables so every row of the decision table is testable without a
cloud or Airflow. The mixin feeds it the stored values and its hooks, then acts on the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from airflow_resumable.exceptions import CorruptRecordError, JobNotFoundError, ResumableError
from airflow_resumable.record import RECORD_KEY, JobRecord, RecordFormatError, TaskIdentity

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import JsonValue

Action = Literal["submit", "reconnect", "return_result"]


@dataclass(frozen=True)
class Decision:
    """
    What this attempt does first.

    :param action: ``submit`` (the record's token, maybe a reused one), ``reconnect`` (poll the
        record's job) or ``return_result`` (the job already succeeded: no poll, no submit).
    :param record: the record to act on and to store before acting.
    :param reason: a short stable name, used as the metric suffix and the log's ``reason`` field.
    :param detail: one human sentence for the log line.
    :param supersedes: the id of an earlier generation's job that may still be active and whose
        spec is no longer the task's (a clear after a spec change): cancel it before submitting.
    """

    action: Action
    record: JobRecord
    reason: str
    detail: str
    supersedes: JsonValue = None


@dataclass(frozen=True)
class Backend:
    """The hooks the decision needs, bound to one task instance."""

    identity: TaskIdentity
    external_id_key: str
    fingerprint: str | None
    submission_is_idempotent: bool
    get_status: Callable[[JsonValue], str]
    is_active: Callable[[str], bool]
    is_succeeded: Callable[[str], bool]
    find_job: Callable[[str], JsonValue] | None
    is_valid_external_id: Callable[[JsonValue], bool]
    #: The record kept in the ledger of jobs in flight (:mod:`airflow_resumable.ledger`), read only
    #: when the task state store holds nothing: a clear may have deleted it.
    read_ledger: Callable[[], JobRecord | None] | None = None
    #: Whether the stored record's seal verifies (:mod:`airflow_resumable._trust`): None when it
    #: does (or the deployment has no key), else why not. An untrusted record is not believed.
    distrust_record: Callable[[JsonValue], str | None] | None = None
    #: ``get_status`` for a job submitted at a known time (a record's ``created_at``): a job the
    #: service does not find while it may still be invisible is asked for again, inside the call.
    await_status: Callable[[JsonValue, str | None], str] | None = None
    #: ``find_job`` for an intent of a known time: keeps looking while its job may be invisible.
    await_find: Callable[[str, str | None], JsonValue] | None = None


def _status(backend: Backend, external_id: JsonValue, born: str | None) -> str:
    """The job's status; patient with a young job when the backend can be (:attr:`Backend.await_status`)."""
    if backend.await_status is not None and born is not None:
        return backend.await_status(external_id, born)
    return backend.get_status(external_id)


def _find(backend: Backend, record: JobRecord) -> JsonValue:
    """The job of an intent's token; patient while a young job may be invisible."""
    if backend.await_find is not None and record.created_at is not None:
        return backend.await_find(record.token, record.created_at)
    assert backend.find_job is not None
    return backend.find_job(record.token)


def decide(stored_record: JsonValue, stored_bare_id: JsonValue, backend: Backend) -> Decision:
    """
    Apply the decision table to the values found in the task state store.

    :param stored_record: the value under :data:`RECORD_KEY` (None when absent).
    :param stored_bare_id: the value under ``external_id_key`` (written by the stock operator, or
        by us as a mirror of the record's id).
    :raises CorruptRecordError: a stored value cannot be trusted and no job id can be recovered.
    """
    bare_id = _usable_bare_id(stored_bare_id, backend)
    record: JobRecord | None = None
    if stored_record is not None:
        try:
            record = JobRecord.from_json(stored_record)
            why = backend.distrust_record(stored_record) if backend.distrust_record is not None else None
            if why is not None:
                raise RecordFormatError(
                    f"its seal does not verify ({why}); it was not written by this deployment's "
                    f"airflow_resumable for this task instance, so the job it names is not believed"
                )
        except RecordFormatError as err:
            if bare_id is None:
                raise CorruptRecordError(
                    f"The task state store key {RECORD_KEY!r} of {_where(backend.identity)} cannot be "
                    f"read: {err}. No job id can be recovered from it, so submitting could start a "
                    f"duplicate of a job that is still running. Check the remote service for a job "
                    f"of this task, then delete the key (UI: task instance > Task State, or the REST "
                    f"API) to let the next try submit fresh."
                ) from err
            return _judge(bare_id, _adopted(backend, 1, bare_id), backend, via="unreadable_record")

    if record is None:
        if bare_id is not None:
            return _judge(bare_id, _adopted(backend, 1, bare_id), backend, via="stock_id")
        kept = backend.read_ledger() if backend.read_ledger is not None else None
        if kept is None:
            return Decision("submit", _intent(backend, 1), "fresh", "No earlier job recorded; submitting.")
        return _from_record(kept, backend, via="ledger")

    if bare_id is not None and bare_id != record.external_id and record.external_id is not None:
        # Another operator (the stock one, after a class swap) submitted a newer job.
        return _judge(bare_id, _adopted(backend, record.generation + 1, bare_id), backend, via="stock_id")
    return _from_record(record, backend, via="record")


def _from_record(record: JobRecord, backend: Backend, *, via: str) -> Decision:
    """The table's rows for a record found in the store (``via="record"``) or the ledger."""
    prefix = "" if via == "record" else f"{via}_"
    origin = "" if via == "record" else " (the task state store was empty; the ledger kept the record)"
    next_generation = record.generation + 1
    if record.phase == "completed":
        return Decision(
            "submit",
            _intent(backend, next_generation),
            "prior_completed",
            f"The task already returned the result of job {record.external_id!r}; this is a new run "
            f"of the task (cleared or re-run), so a fresh job is submitted.",
        )
    if record.phase == "cancelled":
        return Decision(
            "submit",
            _intent(backend, next_generation),
            "prior_cancelled",
            f"Job {record.external_id!r} was cancelled by an earlier try; submitting fresh.",
        )
    if record.stop_requested is not None:
        return _stopped_by_user(record, backend, origin)
    if backend.fingerprint and record.fingerprint and backend.fingerprint != record.fingerprint:
        return _spec_changed(record, backend, origin)
    if record.external_id is None:
        return _resolve_intent(record, backend, prefix=prefix)
    return _judge(record.external_id, record, backend, via=via)


def _spec_changed(record: JobRecord, backend: Backend, origin: str) -> Decision:
    """
    A new spec: submit the next generation, and name the old job if it may still be running.

    A clear after the user fixed an input must not leave the old generation's job running with
    nobody watching it; the mixin cancels ``supersedes`` before it submits.
    """
    old_id, state, supersedes = _earlier_job(record, backend)
    detail = (
        f"The rendered job spec changed since generation {record.generation} (job {old_id!r}: "
        f"{state}){origin}; not adopting it, submitting fresh"
    )
    return _superseding(record, backend, "spec_changed", detail, supersedes)


def _stopped_by_user(record: JobRecord, backend: Backend, origin: str) -> Decision:
    """
    A user stopped the try that owned this job, and the task was cleared before the custodian's
    cancel landed: the stop still holds for that job, so it is not reconnected; the mixin cancels it
    (``cancel_on_user_stop``) and the cleared task runs the next generation.
    """
    old_id, state, supersedes = _earlier_job(record, backend)
    detail = (
        f"A user stopped the try that owned job {old_id!r} ({state}, generation {record.generation})"
        f"{origin}; the task was cleared since, so a fresh job is submitted"
    )
    return _superseding(record, backend, "prior_stopped", detail, supersedes)


def _earlier_job(record: JobRecord, backend: Backend) -> tuple[JsonValue, str, JsonValue]:
    """The earlier generation's job id, its state in words, and the id again if it may still run."""
    old_id = record.external_id
    if old_id is None and record.phase == "intent" and backend.find_job is not None:
        old_id = _find(backend, record)
    if old_id is None:
        if record.phase == "intent":
            return None, "an intent whose job, if any, cannot be looked up", None
        return None, "no job recorded", None
    try:
        status = _status(backend, old_id, record.created_at)
    except JobNotFoundError:
        return old_id, "unknown to the service", None
    return old_id, status, old_id if backend.is_active(status) else None


def _superseding(
    record: JobRecord, backend: Backend, reason: str, detail: str, supersedes: JsonValue
) -> Decision:
    detail += f" after cancelling job {supersedes!r}." if supersedes is not None else "."
    return Decision("submit", _intent(backend, record.generation + 1), reason, detail, supersedes=supersedes)


def _resolve_intent(record: JobRecord, backend: Backend, *, prefix: str = "") -> Decision:
    """An intent without an id: the previous try may or may not have created the job."""
    if backend.submission_is_idempotent:
        return Decision(
            "submit",
            record,
            prefix + "intent_retry",
            "An earlier try recorded an intent but no job id; resubmitting with the same token, "
            "which the service deduplicates.",
        )
    if backend.find_job is None:
        raise ResumableError(
            f"An earlier try of {_where(backend.identity)} may have submitted a job (token "
            f"{record.token}) but did not record its id, and this operator can neither deduplicate "
            f"by token nor look the job up (find_job). Refusing to submit a possible duplicate."
        )
    found = _find(backend, record)
    if found is None:
        return Decision(
            "submit",
            record,
            prefix + "intent_retry",
            "An earlier try recorded an intent but no job id, and no job carries its token; "
            "submitting with the same token.",
        )
    return _judge(found, record.evolve(external_id=found, phase="submitted"), backend, via="token")


def _judge(external_id: JsonValue, record: JobRecord, backend: Backend, *, via: str) -> Decision:
    """Ask the service about a known job and choose reconnect, adopt or resubmit."""
    origin = {
        "record": "recorded",
        "ledger": "kept in the ledger of jobs in flight; the task state store was empty",
        "token": "found by its submission token",
        "stock_id": f"stored by the stock operator under {backend.external_id_key!r}",
        "unreadable_record": f"stored under {backend.external_id_key!r} (the record was unreadable)",
    }[via]
    prefix = "" if via == "record" else f"{via}_"
    # A stock operator's id, or one kept beside an unreadable record, has no known age: the job
    # was submitted by an earlier try, at least a retry delay ago, so not found means gone.
    born = None if via in ("stock_id", "unreadable_record") else record.created_at
    try:
        status = _status(backend, external_id, born)
    except JobNotFoundError:
        return Decision(
            "submit",
            _intent(backend, record.generation + 1),
            "prior_not_found",
            f"Job {external_id!r} ({origin}) is unknown to the service (expired or deleted); "
            f"submitting fresh.",
        )
    if backend.is_active(status):
        return Decision(
            "reconnect",
            record,
            prefix + "reconnect",
            f"Job {external_id!r} ({origin}) is still {status}; reconnecting.",
        )
    if backend.is_succeeded(status):
        return Decision(
            "return_result",
            record,
            prefix + "already_succeeded",
            f"Job {external_id!r} ({origin}) already {status}; returning its result without polling.",
        )
    return Decision(
        "submit",
        _intent(backend, record.generation + 1),
        "prior_failed",
        f"Job {external_id!r} ({origin}) ended {status}; submitting fresh.",
    )


def _usable_bare_id(value: JsonValue, backend: Backend) -> JsonValue:
    if value is None:
        return None
    if not backend.is_valid_external_id(value):
        raise CorruptRecordError(
            f"The task state store key {backend.external_id_key!r} of {_where(backend.identity)} holds "
            f"a {type(value).__name__} that is not a valid job id for this operator. Delete the key "
            f"(UI or REST API) once you have checked the remote service for a running job."
        )
    return value


def _intent(backend: Backend, generation: int) -> JobRecord:
    return JobRecord.new_intent(backend.identity, generation=generation, fingerprint=backend.fingerprint)


def _adopted(backend: Backend, generation: int, external_id: JsonValue) -> JobRecord:
    return _intent(backend, generation).evolve(external_id=external_id, phase="submitted")


def _where(identity: TaskIdentity) -> str:
    where = f"{identity.dag_id}.{identity.task_id} (run {identity.run_id}"
    return where + (f", map index {identity.map_index})" if identity.map_index >= 0 else ")")
