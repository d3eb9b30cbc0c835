"""
The Celery warm-shutdown bridge and the registry of running resumable tasks it reads.

Real processes and real signals: the test process plays the Celery worker; under it, two
"supervisors" (pool processes) each run a task process, one registered as a resumable task, one
not. The supervisors ignore SIGTERM and forward nothing, as the warm-shutting-down supervisor of
apache/airflow#69034 does: the bridge must reach the task process itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import psutil
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
    import os, signal, sys, time
    from pathlib import Path
    from airflow_resumable import _running
    marker = Path(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: marker.write_text("SIGTERM"))
    if sys.argv[2] == "resumable":
        _running.register("ti-" + marker.stem, "dag.job[-1]")
    marker.with_suffix(".ready").write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)
    """
)

#: A supervisor that ignores SIGTERM (forwards nothing) and runs the task process.
SUPERVISOR = textwrap.dedent(
    """
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
    """
)


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own registry directory (children inherit it through the environment)."""
    folder = tmp_path / "running"
    monkeypatch.setenv(_running.RUNTIME_DIR_ENV, str(folder))
    return folder


#: kind -> (task process id, the file its SIGTERM handler writes)
Children = dict[str, tuple[int, "Path"]]


def _written(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """Two supervisors under this process, each running a task (resumable, plain), ready."""
    started: Children = {}
    supervisors = []
    for kind in ("resumable", "plain"):
        marker = tmp_path / f"{kind}.signal"
        supervisors.append(subprocess.Popen([sys.executable, "-c", SUPERVISOR, CHILD, str(marker), kind]))
        ready = marker.with_suffix(".ready")
        wait_until(functools.partial(_written, ready), timeout=30, what=f"{kind} ready", step=0.05)
        started[kind] = (int(ready.read_text()), marker)
    yield started
    for task_pid, _ in started.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(task_pid, signal.SIGKILL)
    for supervisor in supervisors:
        supervisor.wait(10)


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
    """The resumable task gets SIGTERM, through a supervisor that forwards nothing; the plain one not."""
    (resumable_pid, resumable_marker), (_, plain_marker) = children["resumable"], children["plain"]
    assert [task.task_pid for task in resumable_tasks_under(os.getpid())] == [resumable_pid]
    signalled = checkpoint_resumable_tasks()
    assert [task.task_pid for task in signalled] == [resumable_pid]
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
def test_worker_shutting_down_receiver(
    children: Children, how: str, signalled: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Celery's worker_shutting_down signal checkpoints resumable tasks on a warm shutdown only."""
    caplog.set_level(logging.INFO, logger="airflow_resumable.celery")
    worker_shutting_down.send(sender="celery@test", sig="SIGTERM", how=how, exitcode=0)
    asked = [r.getMessage() for r in caplog.records if "asked" in r.getMessage()]
    if signalled:
        assert asked == [
            "airflow_resumable: SIGTERM warm shutdown: asked 1 resumable task(s) to checkpoint: "
            "dag.job[-1]; other tasks are left to finish"
        ]
        wait_until(children["resumable"][1].exists, timeout=10, what="the SIGTERM noted", step=0.05)
    else:
        assert asked == [], "a cold shutdown is Celery's own: the bridge signals nothing"
    assert not children["plain"][1].exists()


def test_celery_config_is_airflows_default() -> None:
    """CELERY_CONFIG changes nothing of Airflow's default Celery configuration."""
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    assert CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    assert CELERY_CONFIG is not DEFAULT_CELERY_CONFIG


def test_a_resumable_operator_is_registered_while_it_watches_its_job() -> None:
    """While the engine polls, this process is registered (under the task's label); afterwards not."""
    from airflow_resumable.testing.state import InMemoryTaskStateStore, make_context
    from airflow_resumable.testing.toy import ToyJobOperator, toy_service

    svc = toy_service(f"bridge-{os.getpid()}")
    svc.complete_after_polls = 2
    seen: list[list[str]] = []
    real_status = svc.status

    def spy(job_id: str) -> str:
        seen.append([task.label for task in _running.running_tasks() if task.task_pid == os.getpid()])
        return real_status(job_id)

    op = ToyJobOperator(task_id="job", service=svc.name, command="echo hi", poll_interval=0)
    svc.status = spy  # type: ignore[method-assign]
    op.execute(make_context(InMemoryTaskStateStore(), dag_id="dag", task_id="job"))
    assert seen and all(labels == ["dag.job[-1]"] for labels in seen)
    assert _running.running_tasks() == [], "the entry is removed when the task stops watching"


def _register_foreign(folder: Path, pid: int, label: str) -> None:
    """Write the registry entry of process ``pid`` (as its own ``register`` would have)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    entry = {
        "task_pid": pid,
        "supervisor_pid": os.getpid(),
        "started_at": psutil.Process(pid).create_time(),
        "ti_id": f"ti-{pid}",
        "label": label,
    }
    (folder / f"{pid}.json").write_text(json.dumps(entry))


@pytest.fixture
def sleepers(runtime_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three registered resumable task processes under this process (labels dag.t0 … dag.t2)."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    for number, proc in enumerate(procs):
        _register_foreign(runtime_dir, proc.pid, f"dag.t{number}[-1]")
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


class TestSignallingErrors:
    @pytest.mark.parametrize(
        ("error", "level"),
        [
            pytest.param(PermissionError(1, "Operation not permitted"), logging.WARNING, id="run_as_user"),
            pytest.param(ProcessLookupError(3, "No such process"), logging.INFO, id="ended"),
            pytest.param(OSError(22, "Invalid argument"), logging.ERROR, id="other OSError"),
            pytest.param(psutil.AccessDenied(0), logging.ERROR, id="psutil error"),
        ],
    )
    def test_one_failure_does_not_stop_the_others(
        self,
        sleepers: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        error: Exception,
        level: int,
    ) -> None:
        """The middle task cannot be signalled: it is logged with its label, the two others get SIGTERM."""
        refused = sleepers[1].pid
        real_kill = os.kill

        def kill(pid: int, sig: int) -> None:
            if pid == refused and sig == signal.SIGTERM:  # the fixture still SIGKILLs it
                raise error
            real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", kill)
        caplog.set_level(logging.INFO, logger="airflow_resumable.celery")
        signalled = checkpoint_resumable_tasks()
        assert sorted(task.label for task in signalled) == ["dag.t0[-1]", "dag.t2[-1]"]
        assert [sleepers[0].wait(10), sleepers[2].wait(10)] == [-signal.SIGTERM, -signal.SIGTERM]
        assert sleepers[1].poll() is None
        logged = [r for r in caplog.records if "dag.t1[-1]" in r.getMessage()]
        assert [r.levelno for r in logged] == [level]

    def test_receiver_reports_only_the_tasks_signalled(
        self,
        sleepers: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """On a warm shutdown with one task refused, the receiver logs the two asked and raises nothing."""
        refused = sleepers[0].pid
        real_kill = os.kill

        def kill(pid: int, sig: int) -> None:
            if pid == refused and sig == signal.SIGTERM:  # the fixture still SIGKILLs it
                raise PermissionError(1, "Operation not permitted")
            real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", kill)
        caplog.set_level(logging.INFO, logger="airflow_resumable.celery")
        worker_shutting_down.send(sender="celery@test", sig="SIGTERM", how="Warm", exitcode=0)
        [asked] = [r.getMessage() for r in caplog.records if "asked" in r.getMessage()]
        assert "asked 2 resumable task(s)" in asked
        assert "dag.t0[-1]" not in asked

    def test_uninspectable_worker_has_no_tasks(
        self, sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A psutil error listing the worker's descendants yields no task instead of an exception."""

        def denied(self: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
            raise psutil.AccessDenied(self.pid)

        monkeypatch.setattr(psutil.Process, "children", denied)
        assert resumable_tasks_under(os.getpid()) == []
        assert checkpoint_resumable_tasks() == []
        assert all(proc.poll() is None for proc in sleepers)


class TestPlantedRegistry:
    def test_entry_naming_pid_1_is_never_signalled(
        self, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A valid entry for a live process that is not this worker's descendant (pid 1) is not signalled."""
        _register_foreign(runtime_dir, 1, "dag.init[-1]")
        assert [task.task_pid for task in _running.running_tasks()] == [1], "the entry itself is valid"
        sent: list[int] = []
        monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(pid))  # never a real signal to pid 1
        assert resumable_tasks_under(os.getpid()) == []
        assert checkpoint_resumable_tasks() == []
        assert sent == []

    def test_untrusted_registry_signals_nothing(
        self, children: Children, runtime_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A registry that became group/other-writable is refused: the warm shutdown signals nobody."""
        runtime_dir.chmod(0o777)
        caplog.set_level(logging.INFO, logger="airflow_resumable")
        worker_shutting_down.send(sender="celery@test", sig="SIGTERM", how="Warm", exitcode=0)
        messages = [r.getMessage() for r in caplog.records]
        assert any("not trusted" in m and "writable by group or others" in m for m in messages)
        assert any("asked 0 resumable task(s) to checkpoint: none running" in m for m in messages)
        assert not children["resumable"][1].exists()
