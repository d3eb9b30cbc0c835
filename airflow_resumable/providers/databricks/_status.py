"""
Databricks run states as one status string, and what each status means to the resume decision.

Pure functions over a ``runs/get`` response, so every state is testable without a server.

A status is ``"LIFE_CYCLE:RESULT"`` (``"RUNNING:"``, ``"TERMINATED:FAILED"``), the same shape the
stock operators use. Two values are ours: ``REPAIRING:<result before the repair>`` for a terminated
run that a repair made active again, and an unknown life cycle state passes through unchanged (and
counts as active: never resubmit a run that may still be running).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ACTIVE_LIFE_CYCLE_STATES",
    "REPAIRING",
    "SUCCEEDED",
    "TERMINAL_LIFE_CYCLE_STATES",
    "failure_message",
    "is_active",
    "is_succeeded",
    "run_status",
    "trigger_waits",
]

#: Life cycle states of a run that is still going (or waiting to go).
ACTIVE_LIFE_CYCLE_STATES = frozenset(
    {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"}
)
#: Life cycle states after which a run never moves again (unless repaired).
TERMINAL_LIFE_CYCLE_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
#: Our life cycle for a terminated run that is being repaired: active again.
REPAIRING = "REPAIRING"
#: The one status that counts as success (``SUCCESS_WITH_FAILURES`` fails the task, as in stock).
SUCCEEDED = "TERMINATED:SUCCESS"

_EXECUTING = frozenset({"RUNNING", "TERMINATING"})
# API 2.2 ``status.state`` -> ``state.life_cycle_state``.
_STATUS_STATE = {
    "BLOCKED": "BLOCKED",
    "PENDING": "PENDING",
    "QUEUED": "QUEUED",
    "RUNNING": "RUNNING",
    "TERMINATING": "TERMINATING",
    "TERMINATED": "TERMINATED",
    "WAITING": "WAITING_FOR_RETRY",
}
# API 2.2 ``status.termination_details.code`` -> ``state.result_state`` (anything else: FAILED).
_TERMINATION_RESULT = {
    "SUCCESS": "SUCCESS",
    "SUCCESS_WITH_FAILURES": "SUCCESS_WITH_FAILURES",
    "USER_CANCELED": "CANCELED",
    "CANCELED": "CANCELED",
    "MAX_CONCURRENT_RUNS_EXCEEDED": "MAXIMUM_CONCURRENT_RUNS_REACHED",
    "SKIPPED": "EXCLUDED",
    "DISABLED": "DISABLED",
    "EXCLUDED": "EXCLUDED",
    "UPSTREAM_FAILED": "UPSTREAM_FAILED",
    "UPSTREAM_CANCELED": "UPSTREAM_CANCELED",
    "TIMEDOUT": "TIMEDOUT",
    "RUN_TIMED_OUT": "TIMEDOUT",
}


def run_status(run: Mapping[str, Any]) -> str:
    """
    The status string of a ``runs/get`` response.

    ``state`` (``life_cycle_state``, ``result_state``) wins when present; the API 2.2 ``status``
    object fills in what it lacks. A terminated run whose ``status``, tasks or last repair are
    active again is ``REPAIRING:<result>``.

    :param run: the JSON of ``runs/get``.
    """
    state = _mapping(run.get("state"))
    status = _mapping(run.get("status"))
    life = str(state.get("life_cycle_state") or "")
    result = str(state.get("result_state") or "")
    if life not in ACTIVE_LIFE_CYCLE_STATES | TERMINAL_LIFE_CYCLE_STATES:
        life = _life_from_status(status) or life or "UNKNOWN"
    if not result and life in TERMINAL_LIFE_CYCLE_STATES:
        result = _result_from_status(status)
    if life in TERMINAL_LIFE_CYCLE_STATES and _reactivated(run, status):
        return f"{REPAIRING}:{result}"
    return f"{life}:{result}"


def is_active(status: str) -> bool:
    """True while the run may still change: active states, a repair, or a state we do not know."""
    life = status.split(":", 1)[0]
    return life not in TERMINAL_LIFE_CYCLE_STATES


def trigger_waits(status: str) -> bool:
    """
    True if the stock ``DatabricksExecutionTrigger`` would wait for this run (not fire at once).

    The trigger reads only ``state.life_cycle_state``: a repair behind a terminated ``state``, or a
    state it does not know, would make it fire (or fail) immediately, so such runs are polled by
    the worker instead of deferred.
    """
    return status.split(":", 1)[0] in ACTIVE_LIFE_CYCLE_STATES


def is_succeeded(status: str) -> bool:
    """True only for ``TERMINATED:SUCCESS``."""
    return status == SUCCEEDED


def failure_message(run: Mapping[str, Any]) -> str:
    """
    The run's own explanation: ``state.state_message``, else the 2.2 termination message.

    :param run: the JSON of ``runs/get``.
    """
    message = str(_mapping(run.get("state")).get("state_message") or "")
    if not message:
        details = _mapping(_mapping(run.get("status")).get("termination_details"))
        message = str(details.get("message") or "")
    return message


def _life_from_status(status: Mapping[str, Any]) -> str:
    life = _STATUS_STATE.get(str(status.get("state") or ""), "")
    details = _mapping(status.get("termination_details"))
    if life == "TERMINATED" and (
        details.get("type") == "INTERNAL_ERROR" or details.get("code") == "INTERNAL_ERROR"
    ):
        return "INTERNAL_ERROR"
    return life


def _result_from_status(status: Mapping[str, Any]) -> str:
    code = str(_mapping(status.get("termination_details")).get("code") or "")
    if not code:
        return ""
    return _TERMINATION_RESULT.get(code, "FAILED")


def _reactivated(run: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """
    A terminated run with work going on in it again: only a repair does that.

    Evidence, any of: the 2.2 ``status.state`` is active, the last ``repair_history`` entry (present
    with ``include_history``) is active, or a task is ``RUNNING``/``TERMINATING``. Tasks that never
    started (``PENDING``, ``BLOCKED``) are not evidence: a failed run can leave them so.
    """
    if _STATUS_STATE.get(str(status.get("state") or "")) in ACTIVE_LIFE_CYCLE_STATES:
        return True
    history = run.get("repair_history")
    if isinstance(history, list) and len(history) > 1:
        last = _mapping(history[-1])
        if last.get("type") == "REPAIR" and _life(last) in ACTIVE_LIFE_CYCLE_STATES:
            return True
    tasks = run.get("tasks")
    return isinstance(tasks, list) and any(_life(task) in _EXECUTING for task in tasks)


def _life(item: Any) -> str:
    return str(_mapping(_mapping(item).get("state")).get("life_cycle_state") or "")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
