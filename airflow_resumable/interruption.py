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

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "Interruption",
    "InterruptionWatch",
    "StopKind",
    "classify_stop",
    "supervisor_signal_mode",
]


class StopKind(enum.Enum):
    """Why a running try is asked to stop."""

    WORKER_SHUTDOWN = "worker_shutdown"
    USER_STOP = "user_stop"
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
    state = (answer.get("states") or {}).get(run_id, {}).get(key)
    state_name = getattr(state, "value", state)
    if state_name == "running":
        return StopKind.WORKER_SHUTDOWN, "the server still holds the task instance as running"
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
