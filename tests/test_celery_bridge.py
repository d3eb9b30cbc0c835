"""
The Celery warm-shutdown bridge and the registry of running resumable tasks it reads.

Real processes and real signals: each test starts child processes of the test process (which
plays the Celery worker), one registered as a resumable task, one not, and checks which of them
the bridge signals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest
from celery.signals import worker_shutting_down

from airflow_resumable import _running
from airflow_resumable.celery import CELERY_CONFIG, checkpoint_resumable_tasks, resumable_tasks_under
from airflow_resumable.testing.cluster import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: A child that registers itself (or not), notes a SIGTERM in a file, and runs until killed.
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from airflow_resumable import _running
    marker = Path(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: marker.write_text("SIGTERM"))
    if sys.argv[2] == "resumable":
        _running.register("ti-" + marker.stem, "dag.job[-1]")
    marker.with_suffix(".ready").write_text("")
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own registry directory (children inherit it through the environment)."""
    folder = tmp_path / "running"
    monkeypatch.setenv(_running.RUNTIME_DIR_ENV, str(folder))
    return folder


Children = dict[str, tuple["subprocess.Popen[bytes]", "Path"]]


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """A resumable task process and a plain one, children of this process, ready."""
    started = {}
    for kind in ("resumable", "plain"):
        marker = tmp_path / f"{kind}.signal"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), kind])
        started[kind] = (proc, marker)
    for _, marker in started.values():
        wait_until(marker.with_suffix(".ready").exists, timeout=30, what=f"{marker.stem} ready", step=0.05)
    yield started
    for proc, _ in started.values():
        proc.kill()
        proc.wait(10)


def test_register_writes_ids_only_and_unregister_removes_it(runtime_dir: Path) -> None:
    """An entry holds pids, start time and the task's id and label, and goes away on unregister."""
    _running.register("ti-1", "dag.job[-1]")
    entry = json.loads((runtime_dir / f"{os.getpid()}.json").read_text())
    assert set(entry) == {"task_pid", "supervisor_pid", "started_at", "ti_id", "label"}
    assert (entry["task_pid"], entry["supervisor_pid"], entry["ti_id"]) == (os.getpid(), os.getppid(), "ti-1")
    assert [task.ti_id for task in _running.running_tasks()] == ["ti-1"]
    _running.unregister()
    assert _running.running_tasks() == []


def test_entries_of_ended_or_reused_processes_are_pruned(runtime_dir: Path) -> None:
    """A dead pid's entry, and an entry whose pid now belongs to another process, are dropped."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(ended.stdout)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    for pid, started_at in ((dead_pid, 0.0), (os.getpid(), 1.0)):  # 1.0: not this process's start
        entry = {"task_pid": pid, "supervisor_pid": 1, "started_at": started_at, "ti_id": "x", "label": "x"}
        (runtime_dir / f"{pid}.json").write_text(json.dumps(entry))
    assert _running.running_tasks() == []
    assert list(runtime_dir.glob("*.json")) == []


def test_bridge_signals_resumable_tasks_only(
    children: Children,
) -> None:
    """The resumable task process gets SIGTERM; the plain task is left alone."""
    (resumable, resumable_marker), (_, plain_marker) = children["resumable"], children["plain"]
    assert [task.task_pid for task in resumable_tasks_under(os.getpid())] == [resumable.pid]
    signalled = checkpoint_resumable_tasks()
    assert [task.task_pid for task in signalled] == [resumable.pid]
    wait_until(resumable_marker.exists, timeout=10, what="the SIGTERM noted", step=0.05)
    assert not plain_marker.exists(), "a task of another operator must not be signalled"


def test_tasks_of_another_worker_are_not_signalled(
    children: Children,
) -> None:
    """Only descendants of the shutting-down worker count: another worker's tasks on the host do not."""
    assert _running.running_tasks(), "the resumable child is registered"
    other_worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert resumable_tasks_under(other_worker.pid) == []
        assert checkpoint_resumable_tasks(other_worker.pid) == []
    finally:
        other_worker.kill()
        other_worker.wait(10)
    assert not children["resumable"][1].exists()


@pytest.mark.parametrize(("how", "signalled"), [("Warm", True), ("Cold", False)])
def test_worker_shutting_down_receiver(children: Children, how: str, signalled: bool) -> None:
    """Celery's worker_shutting_down signal checkpoints resumable tasks on a warm shutdown only."""
    worker_shutting_down.send(sender="celery@test", sig="SIGTERM", how=how, exitcode=0)
    marker = children["resumable"][1]
    if signalled:
        wait_until(marker.exists, timeout=10, what="the SIGTERM noted", step=0.05)
    else:
        children["resumable"][0].poll()
        assert not marker.exists(), "a cold shutdown is Celery's own: the bridge does nothing"
    assert not children["plain"][1].exists()


def test_celery_config_is_airflows_default() -> None:
    """CELERY_CONFIG changes nothing of Airflow's default Celery configuration."""
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    assert CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    assert CELERY_CONFIG is not DEFAULT_CELERY_CONFIG
