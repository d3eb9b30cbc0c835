"""
The Celery bridge: a warm shutdown of an ``airflow celery worker`` becomes a checkpoint.

A deploy stops a Celery worker with SIGTERM: Celery's *warm* shutdown stops taking tasks and
waits for the running ones to finish. No signal reaches the tasks, so a resumable task keeps
polling until the container's grace period ends and everything is killed; its try is then lost
to the heartbeat timeout and a retry is burned. Enable the bridge with one line::

    [celery]
    celery_config_options = airflow_resumable.celery.CELERY_CONFIG

(``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=airflow_resumable.celery.CELERY_CONFIG``).
:data:`CELERY_CONFIG` is Airflow's own default Celery configuration, unchanged; importing this
module connects a receiver to Celery's ``worker_shutting_down`` signal. On a warm shutdown it
sends SIGTERM to the task process of every **resumable** task this worker runs (registered by
:mod:`airflow_resumable._running`): the task asks the server, which still holds it as running,
and checkpoints — the remote job keeps running, the try ends ``up_for_reschedule`` and resumes
on another worker without consuming a retry. Its Celery task then returns, so the worker exits
as soon as the resumable tasks have checkpointed. Every other task keeps Celery's warm-shutdown
behaviour: it is left to finish (a stock operator's ``on_kill`` would cancel its job on every
deploy).

The signal goes to the task process, not to its supervisor (the pool process): Airflow 3.3's
supervisor forwards a SIGTERM to the task, but the supervisor of apache/airflow#69034 shuts down
warmly and would not; the task process reacts the same under both.

Whom to signal is read from the registry of :mod:`airflow_resumable._running`, a directory only
the worker's user may write (checked on every read: an unsafe one is logged and nothing is
signalled). An entry counts only for a live descendant of this worker whose start time matches.
A task that cannot be signalled — a ``run_as_user`` task runs as another user, so the worker
gets :exc:`PermissionError` — is logged with its label and skipped; the others are still
signalled, and nothing is raised into Celery's shutdown.

A cold shutdown (SIGQUIT, or a second SIGTERM) is left to Celery: it terminates the pool
processes, whose supervisors forward the SIGTERM (Airflow 3.3), and resumable tasks checkpoint.

To combine the bridge with your own Celery options, build on :data:`CELERY_CONFIG` in your module
and point ``celery_config_options`` at it::

    from airflow_resumable.celery import CELERY_CONFIG as RESUMABLE_CELERY_CONFIG

    CELERY_CONFIG = {**RESUMABLE_CELERY_CONFIG, "worker_max_tasks_per_child": 100}

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import psutil
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_shutting_down

from airflow_resumable._running import RunningTask, running_tasks

__all__ = ["CELERY_CONFIG", "checkpoint_resumable_tasks", "resumable_tasks_under"]

log = logging.getLogger(__name__)

#: Airflow's default Celery configuration; importing this module installs the shutdown bridge.
CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


def resumable_tasks_under(worker_pid: int) -> list[RunningTask]:
    """
    The registered resumable task processes that descend from process ``worker_pid``.

    An entry naming any other process (another worker's task, or a process that is no task at
    all) is left out. Never raises: a worker that is gone or cannot be inspected has none.
    """
    try:
        descendants = {proc.pid for proc in psutil.Process(worker_pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return []
    except psutil.Error as error:
        log.warning("airflow_resumable: cannot list the processes under pid %d: %r", worker_pid, error)
        return []
    return [task for task in running_tasks() if task.task_pid in descendants]


def checkpoint_resumable_tasks(worker_pid: int | None = None) -> list[RunningTask]:
    """
    Send SIGTERM to every resumable task process under ``worker_pid`` (this process by default).

    Each one checkpoints (a worker shutdown, as the server still holds it running). Tasks of
    other operators are not signalled. A task that cannot be signalled — it ended meanwhile, or
    it runs as another user (``run_as_user``: :exc:`PermissionError`), or any other error — is
    logged with its label and skipped; the others are still signalled. Never raises into
    Celery's shutdown.

    :param worker_pid: the worker whose descendants are signalled.
    :return: the tasks signalled (those that failed are only logged).
    """
    tasks = resumable_tasks_under(os.getpid() if worker_pid is None else worker_pid)
    return [task for task in tasks if _signal(task)]


def _signal(task: RunningTask) -> bool:
    """SIGTERM to ``task``'s process; whether it was sent (a failure is logged, never raised)."""
    try:
        os.kill(task.task_pid, signal.SIGTERM)
    except ProcessLookupError:
        log.info(
            "airflow_resumable: resumable task %s (pid %d) ended before the signal", task.label, task.task_pid
        )
    except PermissionError:
        log.warning(
            "airflow_resumable: may not signal resumable task %s (pid %d): it runs as another user "
            "(run_as_user?); it keeps Celery's warm-shutdown behaviour",
            task.label,
            task.task_pid,
        )
    except Exception:  # any other error: log it and signal the others
        log.exception(
            "airflow_resumable: could not signal resumable task %s (pid %d)", task.label, task.task_pid
        )
    else:
        return True
    return False


@worker_shutting_down.connect
def _on_worker_shutting_down(sig: str = "", how: str = "", exitcode: int = 0, **_: Any) -> None:
    """Celery's ``worker_shutting_down`` receiver: on a warm shutdown, checkpoint resumable tasks."""
    if how != "Warm":
        return
    try:
        signalled = checkpoint_resumable_tasks()
    except Exception:  # never break Celery's own shutdown
        log.exception("airflow_resumable: could not ask the resumable tasks to checkpoint")
        return
    log.warning(
        "airflow_resumable: %s warm shutdown: asked %d resumable task(s) to checkpoint: %s; "
        "other tasks are left to finish",
        sig,
        len(signalled),
        ", ".join(task.label for task in signalled) or "none running",
    )
