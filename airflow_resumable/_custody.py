"""
Who watches a remote job in each task state, and what a user's action means for it: one table.

Everything that reacts to a stop or a clear asks this module, never a rule of its own: the running
try (:func:`~airflow_resumable.interruption.classify_stop`), the trigger of a deferred task
(``on_kill``), the custodian of jobs no process polls (:mod:`airflow_resumable.custodian`), and the
next try's decision (:mod:`airflow_resumable._decision`). The documentation
page ``docs/stopping.md`` renders :data:`TABLE` itself, so the page cannot drift from the code.

The rule behind the table: a **clear** means "run this task's intent again" (an active job whose
spec is unchanged is reconnected, an ended one is followed by a fresh job, a job whose spec changed
is cancelled first); a **mark failed / mark success / DAG run failed / DAG run deleted** means "this
task no longer wants its job" (cancelled); a **worker, scheduler or triggerer restart** never
touches the job.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ACTIONS",
    "STATES",
    "TABLE",
    "Effect",
    "StopMeaning",
    "Watcher",
    "stop_meaning",
    "watcher_now",
    "watcher_of",
]


class Watcher(enum.Enum):
    """The component that polls the job (and so hears a user's stop) in a task state."""

    WORKER = "worker (the running try)"
    TRIGGERER = "triggerer (the operator's trigger)"
    #: No process polls the job; the custodian (:mod:`airflow_resumable.custodian`, in the
    #: scheduler and the API server) hears a user's stop and cancels it.
    CUSTODIAN = "nobody polls it; the custodian (scheduler, API server) hears a user's stop"
    NONE_NEEDED = "nobody (the job has ended)"
    #: Not a row of :data:`TABLE`: the record says the job may still be active, but its task is
    #: finished or gone (or will run again and has not yet): no process polls the job now.
    NOBODY = "nobody, although the job may still run"


class Effect(enum.Enum):
    """What happens to the remote job."""

    KEPT = "untouched; its watcher carries on (or the next try reconnects)"
    RECONNECT = "kept; the next try reconnects to it"
    FRESH = "already ended; the next try submits a fresh job"
    CANCEL = "cancelled"
    CANCEL_BY_CUSTODIAN = "cancelled by the custodian (at once, or within its sweep interval)"
    CANCEL_THEN_FRESH = "cancelled, then the next try submits the new spec"
    CHECKPOINT = "kept; the try is checkpointed (no retry used) and the next try reconnects"
    NOTHING = "nothing to do (the job has ended)"


class StopMeaning(enum.Enum):
    """What a watcher told to stop concludes from the server's current state of its task instance."""

    #: The server still holds the try as running: the worker is going away, the task is not.
    WORKER_SHUTDOWN = "worker_shutdown"
    #: The task instance will run again (a clear, a retry, a reschedule): leave the job to that try.
    HAND_OVER = "hand_over"
    #: The task instance is finished or gone (marked failed or success, DAG run failed or deleted).
    USER_STOP = "user_stop"


#: Server states of a task instance that a future try will pick up: a watcher that sees one leaves
#: the job to that try. ``None`` is a cleared task instance (Airflow sets no state on a clear).
_WILL_RUN_AGAIN = frozenset(
    {None, "none", "scheduled", "queued", "restarting", "up_for_retry", "up_for_reschedule", "deferred"}
)


def stop_meaning(server_state: str | None, *, found: bool = True) -> StopMeaning:
    """
    Interpret the server's state of the task instance whose watcher is being stopped.

    :param server_state: the state name the API server holds (``None`` after a clear).
    :param found: False when the server no longer knows the task instance (its DAG run deleted).
    """
    if not found:
        return StopMeaning.USER_STOP
    if server_state == "running":
        return StopMeaning.WORKER_SHUTDOWN
    if server_state in _WILL_RUN_AGAIN:
        return StopMeaning.HAND_OVER
    return StopMeaning.USER_STOP


@dataclass(frozen=True)
class Row:
    """The task state, who watches the job in it, and each action's effect on the job."""

    state: str
    description: str
    watcher: Watcher
    effects: dict[str, Effect]


#: The user actions (and component events) in :data:`TABLE`, in column order, with their labels.
ACTIONS: dict[str, str] = {
    "clear": "clear",
    "clear_spec_changed": "clear, spec changed",
    "mark_failed": "mark failed / success",
    "dag_run_failed": "DAG run failed / deleted",
    "worker_shutdown": "worker shutdown",
    "restart": "scheduler / API server / triggerer restart",
}

_STOP = {"mark_failed": Effect.CANCEL, "dag_run_failed": Effect.CANCEL}
_CLEAR_ACTIVE = {"clear": Effect.RECONNECT, "clear_spec_changed": Effect.CANCEL_THEN_FRESH}
#: A task whose job has ended: only a clear does anything (a fresh job).
_ENDED = {
    "clear": Effect.FRESH,
    "clear_spec_changed": Effect.FRESH,
    "mark_failed": Effect.NOTHING,
    "dag_run_failed": Effect.NOTHING,
    "worker_shutdown": Effect.NOTHING,
    "restart": Effect.NOTHING,
}
_UNWATCHED_STOP = {"mark_failed": Effect.CANCEL_BY_CUSTODIAN, "dag_run_failed": Effect.CANCEL_BY_CUSTODIAN}

TABLE: tuple[Row, ...] = (
    Row(
        "running",
        "a worker polls the job",
        Watcher.WORKER,
        {**_CLEAR_ACTIVE, **_STOP, "worker_shutdown": Effect.CHECKPOINT, "restart": Effect.KEPT},
    ),
    Row(
        "deferred",
        "the trigger polls the job (``deferrable=True``)",
        Watcher.TRIGGERER,
        {**_CLEAR_ACTIVE, **_STOP, "worker_shutdown": Effect.KEPT, "restart": Effect.KEPT},
    ),
    Row(
        "up_for_reschedule",
        "checkpointed after a worker shutdown, waiting for ``resume_delay``",
        Watcher.CUSTODIAN,
        {**_CLEAR_ACTIVE, **_UNWATCHED_STOP, "worker_shutdown": Effect.KEPT, "restart": Effect.KEPT},
    ),
    Row(
        "up_for_retry",
        "after a crash (heartbeat timeout), waiting for ``retry_delay``",
        Watcher.CUSTODIAN,
        {**_CLEAR_ACTIVE, **_UNWATCHED_STOP, "worker_shutdown": Effect.KEPT, "restart": Effect.KEPT},
    ),
    Row(
        "success",
        "the task returned its job's result",
        Watcher.NONE_NEEDED,
        _ENDED,
    ),
    Row(
        "failed",
        "the job failed or was cancelled (a user's stop, a timeout, retries exhausted)",
        Watcher.NONE_NEEDED,
        _ENDED,
    ),
)

#: Task states in :data:`TABLE`, in row order.
STATES: tuple[str, ...] = tuple(row.state for row in TABLE)


def watcher_of(state: str) -> Watcher:
    """Who watches the job of a task instance in ``state`` (a :data:`STATES` name)."""
    for row in TABLE:
        if row.state == state:
            return row.watcher
    raise KeyError(f"no row for task state {state!r}; known: {', '.join(STATES)}")


#: Task states in which a process polls the job (:data:`TABLE` rows watched by a worker or a trigger).
WATCHED_STATES: frozenset[str] = frozenset(
    row.state for row in TABLE if row.watcher in (Watcher.WORKER, Watcher.TRIGGERER)
)


def watcher_now(state: str | None, *, found: bool = True, job_may_be_active: bool = True) -> Watcher:
    """
    Who watches a job right now, from its task instance's state and what its record says.

    The reading of :data:`TABLE` for a job that may still run: a :data:`WATCHED_STATES` state is
    watched by its worker or trigger, a waiting one (``up_for_reschedule``, ``up_for_retry``) by
    nobody but the custodian; any other state (finished, gone, or cleared and not yet running
    again) leaves the job with :attr:`Watcher.NOBODY`. A job that has ended needs nobody.

    :param state: the task instance's state name (None: cleared, or no state yet).
    :param found: False when the task instance no longer exists (its DAG run was deleted).
    :param job_may_be_active: False when the record says the job completed or was cancelled.

    .. versionadded:: 0.2.0
    """
    if not job_may_be_active:
        return Watcher.NONE_NEEDED
    if found and state in STATES:
        watcher = watcher_of(state)
        return Watcher.NOBODY if watcher is Watcher.NONE_NEEDED else watcher
    return Watcher.NOBODY
