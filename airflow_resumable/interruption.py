"""
Telling a worker's shutdown apart from a user's stop, without talking to the supervisor from a
signal handler.

Airflow 3.3's task runner turns SIGTERM into a call of ``task.on_kill()`` from its signal handler.
SIGTERM reaches a task in two very different situations: the worker is shutting down (deploy,
eviction, spot reclaim; the supervisor forwards the signal) or the server told the supervisor that
the task instance must stop (marked failed or success, cleared, run deleted). The server still
holds the task instance as ``running`` in the first case only.

The supervisor channel is not re-entrant: a request made from a signal handler while the main
thread waits for a reply never returns. So the handler only *records* the signal
(:class:`InterruptionWatch`); the main thread notices it at its next safe point (the poll loop
wakes at once) and calls :func:`classify_stop`, which asks the server with a bounded timeout.
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_resumable._custody import StopMeaning, stop_meaning

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "Interruption",
    "InterruptionWatch",
    "StopKind",
    "classify_stop",
    "classify_trigger_kill",
    "supervisor_signal_mode",
]


class StopKind(enum.Enum):
    """Why a running try is asked to stop."""

    WORKER_SHUTDOWN = "worker_shutdown"
    USER_STOP = "user_stop"
    #: The task instance was cleared (the server says ``restarting``, or it already holds a later
    #: state of a new try): the job is left running for the next try, which reconnects to it.
    #:
    #: .. versionadded:: 0.2.0
    HAND_OVER = "hand_over"
    #: The server did not answer in time (or the call failed): handled as a worker shutdown, the
    #: safe side, but it may have been a user's stop.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Interruption:
    """A stop signal the task received: which one, and when (wall clock and monotonic)."""

    signal_name: str
    received_at: str
    received_monotonic: float


class InterruptionWatch:
    """
    A signal-safe latch: :meth:`notify` only records, :meth:`wait` wakes the main thread early.

    Installed around ``execute``; SIGINT is caught here too (instead of a ``KeyboardInterrupt``
    raised in the middle of a supervisor request, which would leave the channel half-read).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.interruption: Interruption | None = None

    def notify(self, signum: int) -> None:
        """Record a signal. Safe to call from a signal handler: no I/O, no locks held long."""
        if self.interruption is None:
            self.interruption = Interruption(
                signal_name=signal.Signals(signum).name,
                received_at=datetime.now(tz=timezone.utc).isoformat(timespec="milliseconds"),
                received_monotonic=time.monotonic(),
            )
        self._event.set()

    @property
    def is_set(self) -> bool:
        """True once a stop signal arrived."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True at once if a signal arrives meanwhile."""
        return self._event.wait(max(0.0, seconds))

    def reset(self) -> None:
        """Forget the recorded signal (a new try starts)."""
        self._event.clear()
        self.interruption = None

    def catching_sigint(self) -> _SigintGuard:
        """A context manager that routes SIGINT to :meth:`notify` (main thread only)."""
        return _SigintGuard(self)


class _SigintGuard:
    def __init__(self, watch: InterruptionWatch) -> None:
        self._watch = watch
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda signum, frame: self._watch.notify(signum))
            self._installed = True

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def classify_stop(
    get_task_states: Callable[[], Mapping[str, Any]],
    *,
    run_id: str,
    task_id: str,
    map_index: int,
    timeout: float,
) -> tuple[StopKind, str]:
    """
    Ask the server (through ``get_task_states``) whether it still holds this try as running.

    The call runs in a helper thread and is abandoned after ``timeout`` seconds: an unreachable
    server gives :attr:`StopKind.UNKNOWN`, which the operators handle as a worker disruption, the
    safe side (the job keeps running, the record lets the next try reconnect; nothing is
    cancelled on a guess).

    :return: the kind of stop and a short reason for logs and the record.
    """
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer["states"] = get_task_states()
        except Exception as err:
            answer["error"] = err

    worker = threading.Thread(target=ask, name="airflow-resumable-classify", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return StopKind.UNKNOWN, f"the server did not answer within {timeout:g}s"
    if "error" in answer:
        return StopKind.UNKNOWN, f"the server could not be asked ({answer['error']!r})"
    key = task_id if map_index < 0 else f"{task_id}_{map_index}"
    run_states = (answer.get("states") or {}).get(run_id) or {}
    state = run_states.get(key)
    state_name = getattr(state, "value", state)
    meaning = stop_meaning(state_name, found=key in run_states)
    if meaning is StopMeaning.WORKER_SHUTDOWN:
        return StopKind.WORKER_SHUTDOWN, "the server still holds the task instance as running"
    if meaning is StopMeaning.HAND_OVER:
        return StopKind.HAND_OVER, f"the server holds the task instance as {state_name or 'cleared'}"
    return StopKind.USER_STOP, f"the server holds the task instance as {state_name or 'gone'}"


def supervisor_signal_mode() -> str:
    """
    How the installed Airflow's supervisor reacts to SIGTERM: ``"forward"`` or ``"warm"``.

    Airflow 3.3.x forwards SIGTERM/SIGINT to the task (``ActivitySubprocess.wait``), so the task
    checkpoints itself. Airflow's main branch (apache/airflow#69034) lets the supervisor shut down
    warmly instead: the task keeps running until it ends or is killed, and a killed try is
    reconnected through the record. Both keep the contract; this tells the logs which one applies.
    """
    import inspect

    from airflow.sdk.execution_time import supervisor

    source = inspect.getsource(supervisor)
    if "_forward_signal" in source and "warm_shutdown" not in source:
        return "forward"
    return "warm"


async def classify_trigger_kill(task_instance: Any, *, timeout: float) -> tuple[StopKind, str]:
    """
    Why the triggerer cancelled a deferred task's trigger "by user action" (``on_kill``).

    Airflow 3.3's triggerer calls ``on_kill`` for any user action on the task instance (a clear as
    well as a mark failed) and never for its own shutdown. Asking the server for the task
    instance's state now tells them apart (the state changed before the trigger was cancelled):

    - finished or gone (marked failed or success, DAG run failed or deleted): :attr:`StopKind.USER_STOP`;
    - cleared, scheduled, queued, or already running again: :attr:`StopKind.HAND_OVER` (a next try
      owns the job and reconnects to it; cancelling it would fail that try);
    - no answer in time: :attr:`StopKind.UNKNOWN`.

    :param task_instance: the trigger's ``task_instance`` (a runtime task instance in the
        triggerer, whose ``get_task_states`` asks the server through the triggerer's supervisor).
    """
    import asyncio

    ask = getattr(task_instance, "get_task_states", None)
    if ask is None:  # the triggerer's plain task instance model: ask through the Task SDK
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        ask = RuntimeTaskInstance.get_task_states
    map_index = getattr(task_instance, "map_index", None)
    dag_id, task_id, run_id = task_instance.dag_id, task_instance.task_id, task_instance.run_id
    kind, why = await asyncio.to_thread(
        classify_stop,
        lambda: ask(dag_id=dag_id, task_ids=[task_id], run_ids=[run_id]),
        run_id=task_instance.run_id,
        task_id=task_instance.task_id,
        map_index=-1 if map_index is None else int(map_index),
        timeout=timeout,
    )
    if kind is StopKind.WORKER_SHUTDOWN:
        # "running" seen from a trigger means the next try has already started: it owns the job.
        return StopKind.HAND_OVER, "a new try of the task instance is already running"
    return kind, why
