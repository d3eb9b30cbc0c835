"""
Which resumable tasks run on this host right now: a directory of one small file per task process.

A worker's shutdown hook (:mod:`airflow_resumable.celery`) must tell the task processes it may
checkpoint (resumable ones: the job keeps running, the task resumes elsewhere) from those it must
leave alone (a stock operator would cancel its job on a SIGTERM). A task process cannot be asked,
and a pool process does not know what it runs; so a resumable operator registers its task
process while it watches a job, and removes the entry when it stops watching.

An entry holds process ids, the process's start time (so a reused pid is never mistaken for the
task) and the task instance's id and label — never a job spec, token or credential. The
directory is per host and per user: ``AIRFLOW_RESUMABLE_RUNTIME_DIR``, or
``<tempdir>/airflow-resumable-<uid>/running``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

__all__ = ["RUNTIME_DIR_ENV", "RunningTask", "register", "running_tasks", "runtime_dir", "unregister"]

RUNTIME_DIR_ENV = "AIRFLOW_RESUMABLE_RUNTIME_DIR"


@dataclass(frozen=True)
class RunningTask:
    """One registered task process: its pid, its parent (the supervisor), and which task it is."""

    task_pid: int
    supervisor_pid: int
    started_at: float
    ti_id: str
    label: str

    def is_alive(self) -> bool:
        """Whether the registered process still runs (the same process: a reused pid does not count)."""
        try:
            proc = psutil.Process(self.task_pid)
            return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.started_at) < 1
        except psutil.Error:
            return False


def runtime_dir() -> Path:
    """This host's directory of running resumable tasks (created on first use)."""
    configured = os.environ.get(RUNTIME_DIR_ENV)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / _user_dir() / "running"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _user_dir() -> str:
    return f"airflow-resumable-{os.getuid()}" if hasattr(os, "getuid") else "airflow-resumable"


def register(ti_id: str, label: str) -> None:
    """Register the calling process as a resumable task of task instance ``ti_id``."""
    pid = os.getpid()
    entry = RunningTask(pid, os.getppid(), psutil.Process(pid).create_time(), ti_id, label)
    folder = runtime_dir()
    partial = folder / f".{pid}.tmp"
    partial.write_text(json.dumps(asdict(entry)))
    partial.replace(folder / f"{pid}.json")  # atomic: a reader never sees half an entry


def unregister() -> None:
    """Remove the calling process's entry (nothing happens if it has none)."""
    with contextlib.suppress(OSError):
        (runtime_dir() / f"{os.getpid()}.json").unlink()


def running_tasks() -> list[RunningTask]:
    """Every registered task process that still runs; entries of processes gone are removed."""
    tasks = []
    for path in runtime_dir().glob("*.json"):
        try:
            task = RunningTask(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if task.is_alive():
            tasks.append(task)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return tasks
