"""
Jobs and runs of the fake Databricks: how a run moves through its states, and how runs/get and
jobs/get render them.

Private. A :class:`Run` changes only under the state's lock (:mod:`._databricks_state`); the
functions here take the lifecycle settings as a :class:`Clock` so that they hold no state of
their own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_resumable.testing._databricks_wire import RESULT_STATES, TERMINAL_STATES, FakeDatabricksError

__all__ = ["Clock", "Job", "Run", "advance", "cancel", "render_job", "render_run", "repair", "terminate"]

# runs/get ``status.state`` (the "v2" lifecycle of API 2.2) for each ``state.life_cycle_state``.
_STATUS_STATE = {"SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED", "WAITING_FOR_RETRY": "WAITING"}
# ``status.termination_details`` (code, type) for each result state; anything else is a client error.
_TERMINATION = {
    "SUCCESS": ("SUCCESS", "SUCCESS"),
    "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS"),
    "CANCELED": ("USER_CANCELED", "SUCCESS"),
    "EXCLUDED": ("SKIPPED", "SUCCESS"),
    "MAXIMUM_CONCURRENT_RUNS_REACHED": ("MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR"),
}


def now_ms() -> int:
    """Wall-clock milliseconds, as Databricks stamps ``start_time`` and ``end_time``."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Clock:
    """The lifecycle settings a run advances by (see :meth:`FakeDatabricksState.set_lifecycle`)."""

    lifecycle: str
    run_duration: float
    final_result: str
    pending_polls: int


@dataclass
class Job:
    """A job that run-now starts; ``settings`` as jobs/create took them."""

    job_id: int
    settings: dict[str, Any]
    created_time: int


@dataclass
class Run:
    """
    One run and its tasks.

    ``created_at`` and ``ended_at`` are ``time.monotonic()`` stamps for the realism layer (how long
    a run is invisible after creation, when its history expires); ``clock_start`` restarts on
    repair, ``created_at`` never does.
    """

    run_id: int
    job_id: int
    run_type: str
    run_name: str
    request: dict[str, Any]
    tasks: list[tuple[int, dict[str, Any]]]
    clock_start: float
    start_time: int
    created_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    end_time: int = 0
    polls: int = 0
    pinned: bool = False
    expired: bool = False
    user_cancelled: bool = False
    token_key: tuple[Any, ...] | None = None
    notebook_result: str | None = None
    error: str | None = None
    repairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        """The run is in a terminal life cycle state."""
        return self.life_cycle_state in TERMINAL_STATES

    def pin(self, life_cycle_state: str, result_state: str | None, state_message: str) -> None:
        """Put the run in any state; neither the clock nor polls move it afterwards."""
        self.life_cycle_state, self.result_state = life_cycle_state, result_state
        self.state_message, self.pinned = state_message, True
        terminal = life_cycle_state in TERMINAL_STATES
        self.end_time = now_ms() if terminal else 0
        self.ended_at = time.monotonic() if terminal else None


def advance(run: Run, clock: Clock, *, observe: bool) -> None:
    """
    Move a run on as the lifecycle says: ``PENDING`` to ``RUNNING`` after ``pending_polls``
    observed polls; terminated once the clock's ``run_duration`` has passed.

    :param observe: the caller is a runs/get poll (it counts towards ``pending_polls``).
    """
    if run.pinned or run.terminal:
        return
    run.polls += 1 if observe else 0
    if clock.lifecycle == "clock" and time.monotonic() - run.clock_start >= clock.run_duration:
        message = "" if clock.final_result == "SUCCESS" else f"Run {clock.final_result} (fake clock)"
        terminate(run, "TERMINATED", clock.final_result, message)
        # It ended when the clock ran out, not when someone looked: retention counts from there.
        run.ended_at = run.clock_start + clock.run_duration
    elif run.life_cycle_state == "PENDING" and run.polls > clock.pending_polls:
        run.life_cycle_state = "RUNNING"


def terminate(run: Run, life_cycle_state: str, result_state: str, message: str) -> None:
    """End a run in ``life_cycle_state`` with ``result_state``."""
    if result_state not in RESULT_STATES:
        raise FakeDatabricksError(400, f"Unknown result state {result_state!r}")
    run.pin(life_cycle_state, result_state, message)


def cancel(run: Run, clock: Clock) -> None:
    """runs/cancel: a live run ends ``TERMINATED``/``CANCELED``; a terminal one is left alone."""
    advance(run, clock, observe=False)
    if not run.terminal:
        terminate(run, "TERMINATED", "CANCELED", "Run cancelled.")
        run.user_cancelled = True


def repair(run: Run, clock: Clock, repair_id: int) -> int:
    """runs/repair: a terminated run is ``RUNNING`` again; a live one cannot be repaired (400)."""
    advance(run, clock, observe=False)
    if not run.terminal:
        raise FakeDatabricksError(400, f"Run {run.run_id} is still active and cannot be repaired.")
    run.repairs.append({"type": "REPAIR", "id": repair_id, "start_time": now_ms(), "end_time": 0})
    run.life_cycle_state, run.result_state, run.state_message = "RUNNING", None, ""
    run.end_time, run.ended_at, run.pinned, run.clock_start = 0, None, False, time.monotonic()
    return repair_id


def _state(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    state: dict[str, Any] = {
        "life_cycle_state": run.life_cycle_state,
        "state_message": run.state_message,
        "user_cancelled_or_timedout": run.user_cancelled or run.result_state == "TIMEDOUT",
    }
    status: dict[str, Any] = {"state": _STATUS_STATE.get(run.life_cycle_state, run.life_cycle_state)}
    if run.result_state is not None:
        state["result_state"] = run.result_state
    if run.terminal:
        code, kind = _TERMINATION.get(run.result_state or "", ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"))
        if run.life_cycle_state == "INTERNAL_ERROR":
            code, kind = "INTERNAL_ERROR", "INTERNAL_ERROR"
        elif run.life_cycle_state == "SKIPPED":
            code, kind = "SKIPPED", "SUCCESS"
        status["termination_details"] = {"code": code, "type": kind, "message": run.state_message}
    return state, status


def render_run(run: Run, task_run_id: int | None, base_url: str, *, history: bool = False) -> dict[str, Any]:
    """
    The run (or one of its task runs) as runs/get answers it.

    :param task_run_id: a task's run id, or None for the parent run.
    :param base_url: the fake's url, for ``run_page_url``.
    :param history: add ``repair_history`` (runs/get ``include_history``).
    """
    state, status = _state(run)
    times = {"start_time": run.start_time, "end_time": run.end_time}
    duration = (run.end_time or now_ms()) - run.start_time
    durations = {"setup_duration": 0, "execution_duration": duration, "cleanup_duration": 0}

    def url(run_id: int) -> str:
        return f"{base_url}/?o=1234567890#job/{run.job_id}/run/{run_id}"

    tasks = [
        {
            **spec,
            "run_id": tid,
            "task_key": spec["task_key"],
            "state": dict(state),
            "status": dict(status),
            "attempt_number": len(run.repairs),
            "run_page_url": url(tid),
            **times,
            **durations,
        }
        for tid, spec in run.tasks
        if task_run_id in (None, tid)
    ]
    rendered = {
        "job_id": run.job_id,
        "run_id": task_run_id or run.run_id,
        "number_in_job": task_run_id or run.run_id,
        "original_attempt_run_id": task_run_id or run.run_id,
        "creator_user_name": "fake-user@example.com",
        "run_name": tasks[0]["task_key"] if task_run_id else run.run_name,
        "run_type": run.run_type,
        "run_page_url": url(task_run_id or run.run_id),
        "state": state,
        "status": status,
        "tasks": tasks,
        "trigger": "ONE_TIME",
        "format": "MULTI_TASK",
        "attempt_number": 0,
        "run_duration": duration,
        **times,
        **durations,
    }
    if history:
        original = {"type": "ORIGINAL", "state": state, "task_run_ids": [t for t, _ in run.tasks], **times}
        rendered["repair_history"] = [original, *copy.deepcopy(run.repairs)]
    return rendered


def render_job(job: Job, *, expand_tasks: bool) -> dict[str, Any]:
    """The job as jobs/get (``expand_tasks``) or jobs/list answers it."""
    settings = copy.deepcopy(job.settings)
    if not expand_tasks:
        settings.pop("tasks", None)
        settings.pop("job_clusters", None)
    return {
        "job_id": job.job_id,
        "creator_user_name": "fake-user@example.com",
        "run_as_user_name": "fake-user@example.com",
        "created_time": job.created_time,
        "settings": settings,
    }
