"""
The :class:`~airflow_resumable.testing.cluster.AirflowCluster` harness, proven with a toy operator,
and what Airflow 3.3.2 does to a running task when its worker is disrupted (see
``docs/_notes/airflow-3.3.2-signals.md``).

One cluster serves the module; each test triggers its own run of ``dags/harness_probe.py``, whose
task records what happens to it in ``events.jsonl`` in the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from airflow_resumable.testing.cluster import AirflowCluster, airflow_cluster, wait_until

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.system

DAGS = Path(__file__).parent / "dags"
DAG_ID = "harness_probe"
TASK_ID = "probe"
POLLING = "probe: polling"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    metadata_database: Callable[..., contextlib.AbstractContextManager[str | None]],
) -> Iterator[AirflowCluster]:
    """One real Airflow deployment for the whole module."""
    with (
        metadata_database(required=False) as database_url,
        airflow_cluster(tmp_path_factory, DAGS, dag_ids={DAG_ID}, database_url=database_url) as started,
    ):
        yield started


class ProbeRun:
    """One run of the probe DAG and the events its task recorded."""

    def __init__(self, cluster: AirflowCluster, marker_dir: Path, mode: str) -> None:
        self.cluster = cluster
        self.marker_dir = marker_dir
        self.run_id = cluster.trigger(DAG_ID, {"marker_dir": str(marker_dir), "mode": mode})

    def events(self, name: str, try_number: int | None = None) -> list[dict[str, Any]]:
        """The recorded events called ``name`` (of one try when ``try_number`` is given)."""
        path = self.marker_dir / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines]
        return [
            e
            for e in events
            if e["event"] == name and (try_number is None or e.get("try_number") == try_number)
        ]

    def wait_event(self, name: str, count: int = 1, try_number: int | None = None) -> dict[str, Any]:
        """Wait until the ``count``-th event called ``name`` was recorded; return it."""

        def nth() -> dict[str, Any] | None:
            events = self.events(name, try_number)
            return events[count - 1] if len(events) >= count else None

        return wait_until(nth, timeout=60, what=f"probe event {name!r} #{count}", check=self.cluster.check)

    def ti(self) -> dict[str, Any]:
        """The probe's task instance."""
        return self.cluster.task_instance(DAG_ID, self.run_id, TASK_ID)

    def wait_polling(self, try_number: int = 1) -> None:
        """Wait until the try logged that it polls (it wrote its task_state_store entry before)."""
        self.cluster.wait_for_log_line(DAG_ID, self.run_id, TASK_ID, POLLING, 60, try_number=try_number)

    def release(self) -> None:
        """Let every current and future execution of the task return."""
        (self.marker_dir / "release").touch()

    def finish(self) -> str:
        """Release the task and wait for the run's final state."""
        self.release()
        return self.cluster.wait_for_dag_run(DAG_ID, self.run_id, timeout=60)


@pytest.fixture
def probe(cluster: AirflowCluster, tmp_path: Path) -> Iterator[Callable[[str], ProbeRun]]:
    """Start probe runs in a given mode; release them all at the end so none keeps a worker busy."""
    runs: list[ProbeRun] = []

    def start(mode: str) -> ProbeRun:
        marker_dir = tmp_path / f"run{len(runs)}"
        marker_dir.mkdir()
        runs.append(run := ProbeRun(cluster, marker_dir, mode))
        return run

    yield start
    for run in runs:
        run.release()


def test_harness_runs_a_dag_and_reads_the_task_state_store(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """A triggered run executes on the LocalExecutor, logs to AIRFLOW_HOME and its state store is readable."""
    run = probe("continue")
    run.wait_polling()
    processes = cluster.task_processes(DAG_ID, TASK_ID)  # newest running instance
    assert processes.task_pid == run.wait_event("started")["pid"] == run.ti()["pid"]
    stored = cluster.task_state_store_get(DAG_ID, run.run_id, TASK_ID, "probe")
    assert stored == {"try_number": 1, "pid": processes.task_pid}
    assert cluster.task_state_store_get(DAG_ID, run.run_id, TASK_ID, "missing") is None
    assert run.finish() == "success"
    assert [p.name for p in cluster.task_log_files(DAG_ID, run.run_id, TASK_ID)] == ["attempt=1.log"]


def test_sigterm_to_supervisor_is_forwarded_and_execute_keeps_running(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """SIGTERM to the supervisor reaches the task at once: on_kill runs, nothing else; execute may go on."""
    run = probe("continue")
    run.wait_polling()
    processes = cluster.task_processes(DAG_ID, TASK_ID, run.run_id)
    sent = time.time()
    processes.signal_supervisor(signal.SIGTERM)

    on_kill = run.wait_event("on_kill")
    seen = run.wait_event("term_seen")
    assert on_kill["pid"] == processes.task_pid
    assert on_kill["time"] - sent < 1.0
    # From the main thread, right after the signal: the API still says "running", within a blink.
    assert seen["error"] is None
    assert seen["states"] == {run.run_id: {TASK_ID: "running"}}
    assert seen["seconds"] < 1.0
    assert run.ti()["state"] == "running"
    assert psutil.pid_exists(processes.supervisor_pid)

    assert run.finish() == "success"
    assert run.wait_event("released")["pid"] == processes.task_pid  # the same execution went on
    assert [(t["try_number"], t["state"]) for t in cluster.task_tries(DAG_ID, run.run_id, TASK_ID)] == [
        (1, "success")
    ]


def test_sigterm_then_raise_ends_the_try_and_retries(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """A task that raises once on_kill ran goes up_for_retry and its next try starts after retry_delay."""
    run = probe("exit")
    run.wait_polling()
    processes = cluster.task_processes(DAG_ID, TASK_ID, run.run_id)
    processes.signal_supervisor(signal.SIGTERM)
    seen = run.wait_event("term_seen")

    retried = run.wait_event("started", try_number=2)
    assert retried["time"] - seen["time"] < cluster.heartbeat_timeout  # not the heartbeat-timeout path
    assert run.finish() == "success"
    tries = cluster.task_tries(DAG_ID, run.run_id, TASK_ID)
    # The history keeps the first try as "failed" (it was up_for_retry while waiting for the retry).
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")]


def test_sigterm_then_reschedule_reruns_the_same_try(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """AirflowRescheduleException raised after SIGTERM parks try 1 up_for_reschedule, then re-runs it."""
    run = probe("reschedule")
    run.wait_polling()
    cluster.task_processes(DAG_ID, TASK_ID, run.run_id).signal_supervisor(signal.SIGTERM)
    seen = run.wait_event("term_seen")

    parked = cluster.wait_for_ti_state(DAG_ID, run.run_id, TASK_ID, {"up_for_reschedule"}, timeout=30)
    assert parked["try_number"] == 1
    again = run.wait_event("started", count=2)
    assert again["try_number"] == 1
    assert again["time"] - seen["time"] >= 1.5  # the reschedule date (now + 2 s) was respected
    assert run.finish() == "success"
    assert [(t["try_number"], t["state"]) for t in cluster.task_tries(DAG_ID, run.run_id, TASK_ID)] == [
        (1, "success")
    ]


def test_user_mark_failed_reaches_the_task_through_the_heartbeat(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """Mark-failed: the next heartbeat gets 409, the supervisor SIGTERMs the task, SIGKILLs it 5 s later."""
    run = probe("continue")
    run.wait_polling()
    processes = cluster.task_processes(DAG_ID, TASK_ID, run.run_id)
    marked = time.time()
    cluster.mark_ti(DAG_ID, run.run_id, TASK_ID, "failed")

    on_kill = run.wait_event("on_kill")
    assert on_kill["pid"] == processes.task_pid
    assert on_kill["time"] - marked < 3.0  # [workers] min_heartbeat_interval = 1
    seen = run.wait_event("term_seen")
    assert seen["error"] is None
    assert seen["states"] == {run.run_id: {TASK_ID: "failed"}}
    cluster.wait_for_log_line(
        DAG_ID, run.run_id, TASK_ID, "Server indicated the task shouldn't be running", 10
    )

    # execute ignores the SIGTERM, so the supervisor escalates to SIGKILL after its fixed 5 s.
    processes.wait_task_gone(timeout=20)
    assert 4.0 <= time.time() - on_kill["time"] < 10.0
    assert not run.events("released")
    assert cluster.wait_for_dag_run(DAG_ID, run.run_id, timeout=30) == "failed"
    assert psutil.pid_exists(processes.supervisor_pid)  # the worker survives and serves the next task
    assert [(t["try_number"], t["state"]) for t in cluster.task_tries(DAG_ID, run.run_id, TASK_ID)] == [
        (1, "failed")
    ]

    cluster.clear_ti(DAG_ID, run.run_id, TASK_ID)  # the harness can also run it again
    run.wait_event("started", try_number=2)
    assert run.finish() == "success"


@pytest.mark.parametrize(("mode", "refused"), [("reschedule", "RescheduleTask"), ("exit", "RetryTask")])
def test_user_mark_failed_wins_over_the_tasks_own_outcome(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun], mode: str, refused: str
) -> None:
    """After a mark-failed the server refuses the task's reschedule or retry (409): it stays failed."""
    run = probe(mode)
    run.wait_polling()
    processes = cluster.task_processes(DAG_ID, TASK_ID, run.run_id)
    cluster.mark_ti(DAG_ID, run.run_id, TASK_ID, "failed")
    assert run.wait_event("term_seen")["states"] == {run.run_id: {TASK_ID: "failed"}}

    cluster.wait_for_log_line(DAG_ID, run.run_id, TASK_ID, "Failed to report terminal task state", 20)
    # It exits by itself; the supervisor reaps it only when its 5 s SIGTERM->SIGKILL wait ends.
    assert processes.wait_task_gone(timeout=20) < 4.0
    # The supervisor replays the refused call once the process is reaped; refused again.
    ti_id = run.ti()["id"]
    cluster.wait_for_process_log_line("scheduler", f"msg_type={refused} ti_id=UUID('{ti_id}')", 20)
    assert cluster.wait_for_dag_run(DAG_ID, run.run_id, timeout=30) == "failed"
    assert run.ti()["state"] == "failed"
    assert len(run.events("started")) == 1


def test_sigkill_of_supervisor_and_task_is_retried_after_the_heartbeat_timeout(
    cluster: AirflowCluster, probe: Callable[[str], ProbeRun]
) -> None:
    """With both processes SIGKILLed, the try fails after task_instance_heartbeat_timeout and is retried."""
    run = probe("continue")
    run.wait_polling()
    cluster.task_processes(DAG_ID, TASK_ID, run.run_id).kill_both()
    killed = time.time()

    retried = run.wait_event("started", try_number=2)
    waited = retried["time"] - killed
    assert cluster.heartbeat_timeout - 2 <= waited < cluster.heartbeat_timeout + 15
    assert not run.events("on_kill")
    assert run.finish() == "success"
    tries = cluster.task_tries(DAG_ID, run.run_id, TASK_ID)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")]
