"""
Worker shutdown is a checkpoint, a user's stop cancels: real signals to real Airflow processes.

Each test triggers its own run of ``dags/example_databricks_resumable.py`` (a resumable
Databricks submit-run) against the fake Databricks in its own process, injects one fault, and
asserts from the fake's ledger (submissions, cancels) and the task instance (state, try number).
Each prints its figures.
"""

from __future__ import annotations

import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing.cluster import wait_until

if TYPE_CHECKING:
    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

pytestmark = pytest.mark.system

TASK = "submit_run"
DECISION = "Resume decision"


@dataclass
class Scenario:
    """One DAG run and the fake-cloud figures that belong to it."""

    cluster: AirflowCluster
    fake: FakeDatabricksProcess
    dag_id: str
    run_name: str = field(default_factory=lambda: f"sys-{uuid.uuid4().hex[:8]}")
    run_id: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Scenario:
        self.run_id = self.cluster.trigger(self.dag_id, {"run_name": self.run_name})
        return self

    def submissions(self) -> list[int]:
        return [
            e.run_id
            for e in self.fake.client.submissions()
            if e.body.get("run_name") == self.run_name and e.run_id is not None
        ]

    def cancels(self) -> list[int]:
        mine = set(self.submissions())
        return [e.run_id for e in self.fake.client.cancels() if e.run_id in mine]

    def wait_for_remote_run(self, timeout: float = 60) -> int:
        """Wait until the task has submitted its run and is polling it; return the run id."""
        runs = wait_until(self.submissions, timeout=timeout, what=f"a run named {self.run_name}")
        self.wait_for_executions(1, timeout)
        # The fake moves a run from PENDING to RUNNING on its first runs/get: wait for that one too.
        wait_until(
            lambda: [
                e for e in self.fake.client.calls("runs/get") if e.run_id == runs[0] and e.status == 200
            ],
            timeout=timeout,
            what=f"a runs/get of run {runs[0]}",
        )
        return runs[0]

    def executions(self) -> int:
        """How many times the task started deciding (every try and every resumed reschedule)."""
        lines = 0
        for path in self.cluster.task_log_files(self.dag_id, self.run_id, TASK):
            lines += sum(DECISION in line for line in path.read_text(errors="replace").splitlines())
        return lines

    def wait_for_executions(self, count: int, timeout: float = 60) -> float:
        """Wait until the task started ``count`` executions; return when it did (monotonic)."""
        wait_until(lambda: self.executions() >= count, timeout=timeout, what=f"execution {count}")
        wait_until(self._polling, timeout=timeout, what="the task polling its run")
        return time.monotonic()

    def _polling(self) -> bool:
        ti = self.cluster.task_instance(self.dag_id, self.run_id, TASK)
        return ti["state"] == "running"

    def finish(self, remote_run: int, result: str = "SUCCESS") -> None:
        self.fake.client.finish_run(remote_run, result)

    def ti(self) -> dict[str, Any]:
        return self.cluster.task_instance(self.dag_id, self.run_id, TASK)

    def record(self) -> dict[str, Any]:
        return dict(self.cluster.task_state_store_get(self.dag_id, self.run_id, TASK, RECORD_KEY) or {})

    def report(self, capsys: pytest.CaptureFixture[str], title: str) -> None:
        figures = {
            "submits": len(self.submissions()),
            "cancels": len(self.cancels()),
            "tries": self.ti()["try_number"],
            **self.figures,
        }
        with capsys.disabled():
            print(f"\n  [{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def scenario(cluster: AirflowCluster, fake_databricks: FakeDatabricksProcess) -> Scenario:
    fake_databricks.client.clear_faults()
    return Scenario(cluster, fake_databricks, "resumable_databricks")


class TestWorkerShutdown:
    def test_sigterm_to_supervisor_is_a_checkpoint(
        self, scenario: Scenario, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SIGTERM to the supervisor: 1 submission, 0 cancels, same run finishes, no retry consumed."""
        remote_run = scenario.start().wait_for_remote_run()
        processes = scenario.cluster.task_processes(scenario.dag_id, TASK, scenario.run_id)
        fault_at = time.monotonic()
        processes.signal_supervisor(signal.SIGTERM)
        reconnected_at = scenario.wait_for_executions(2)
        scenario.figures["recovery_s"] = round(reconnected_at - fault_at, 2)
        assert scenario.fake.client.get_run(remote_run)["state"]["life_cycle_state"] in {"PENDING", "RUNNING"}
        scenario.finish(remote_run)
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        scenario.report(capsys, "worker SIGTERM")
        assert state == "success"
        assert scenario.submissions() == [remote_run] and scenario.cancels() == []
        assert scenario.ti()["try_number"] == 1
        assert scenario.record()["resumes"] == 1

    def test_sigkill_of_supervisor_and_task_reconnects(
        self, scenario: Scenario, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A hard crash runs no handler; the retry reconnects: 1 submission, task success."""
        remote_run = scenario.start().wait_for_remote_run()
        processes = scenario.cluster.task_processes(scenario.dag_id, TASK, scenario.run_id)
        fault_at = time.monotonic()
        processes.kill_both()
        reconnected_at = scenario.wait_for_executions(2, timeout=90)
        scenario.figures["recovery_s"] = round(reconnected_at - fault_at, 2)
        scenario.finish(remote_run)
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        scenario.report(capsys, "SIGKILL supervisor+task")
        assert state == "success"
        assert scenario.submissions() == [remote_run] and scenario.cancels() == []
        assert scenario.ti()["try_number"] == 2

    def test_three_sigterms_then_a_fourth_past_the_bound(
        self, scenario: Scenario, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Three SIGTERMs in a row: still 1 submission; a fourth past max_resumes=3 fails and cancels."""
        remote_run = scenario.start().wait_for_remote_run()
        recoveries = []
        for shutdown in range(1, 5):
            processes = scenario.cluster.task_processes(scenario.dag_id, TASK, scenario.run_id)
            fault_at = time.monotonic()
            processes.signal_supervisor(signal.SIGTERM)
            if shutdown < 4:
                recoveries.append(round(scenario.wait_for_executions(shutdown + 1) - fault_at, 2))
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        scenario.figures["recovery_s"] = recoveries
        scenario.report(capsys, "4 x worker SIGTERM, max_resumes=3")
        assert state == "failed"
        assert scenario.submissions() == [remote_run]
        assert scenario.cancels() == [remote_run]
        assert scenario.ti()["try_number"] == 1


class TestUserStop:
    def test_mark_failed_cancels(self, scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
        """A user's mark-failed through the REST API cancels the run; nothing is resubmitted."""
        remote_run = scenario.start().wait_for_remote_run()
        scenario.cluster.mark_ti(scenario.dag_id, scenario.run_id, TASK, "failed")
        wait_until(scenario.cancels, timeout=30, what="the run cancelled")
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        scenario.report(capsys, "user mark-failed")
        assert state == "failed"
        assert scenario.submissions() == [remote_run] and scenario.cancels() == [remote_run]

    def test_execution_timeout_cancels(
        self,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """execution_timeout shorter than the run: 1 cancel, the task fails."""
        scenario = Scenario(cluster, fake_databricks, "resumable_databricks_timeout").start()
        remote_run = scenario.wait_for_remote_run()
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        scenario.report(capsys, "execution_timeout")
        assert state == "failed"
        assert scenario.submissions() == [remote_run] and scenario.cancels() == [remote_run]


class TestNoOrphans:
    def test_polling_failing_for_good_cancels(
        self,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """retries=0 and runs/get answering 500 beyond every retry: the run is cancelled, not orphaned."""
        fake_databricks.client.clear_faults()
        scenario = Scenario(cluster, fake_databricks, "resumable_databricks_no_retries").start()
        remote_run = scenario.wait_for_remote_run()
        fake_databricks.client.inject_fault("runs/get", 500, count=-1)
        try:
            state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        finally:
            fake_databricks.client.clear_faults()
        scenario.report(capsys, "status 500 storm, retries=0")
        assert state == "failed"
        assert scenario.cancels() == [remote_run]
        assert fake_databricks.client.get_run(remote_run)["state"]["result_state"] == "CANCELED"

    def test_failed_cancel_is_logged_loudly(
        self,
        cluster: AirflowCluster,
        fake_databricks: FakeDatabricksProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """When the cancel fails too, the task log names the run that may be left running."""
        fake_databricks.client.clear_faults()
        scenario = Scenario(cluster, fake_databricks, "resumable_databricks_no_retries").start()
        remote_run = scenario.wait_for_remote_run()
        fake_databricks.client.inject_fault("runs/get", 500, count=-1)
        fake_databricks.client.inject_fault("runs/cancel", 500, count=-1)
        try:
            state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
            line = scenario.cluster.wait_for_log_line(
                scenario.dag_id, scenario.run_id, TASK, "COULD NOT CANCEL", timeout=30
            )
        finally:
            fake_databricks.client.clear_faults()
        scenario.report(capsys, "status and cancel 500, retries=0")
        assert state == "failed"
        assert str(remote_run) in line
        # The fake moves a run from PENDING to RUNNING on polls, and polls may all have failed:
        # what matters is that the run was neither cancelled nor finished.
        left_state = fake_databricks.client.get_run(remote_run)["state"]
        assert left_state["life_cycle_state"] in {"PENDING", "RUNNING"}, left_state
        fake_databricks.client.finish_run(remote_run, "CANCELED")


class TestCrashBetweenSubmitAndPersist:
    def test_crash_after_runs_submit_creates_no_duplicate(
        self, scenario: Scenario, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SIGKILL while runs/submit's answer is in flight: the retry resends the token, still 1 run."""
        scenario.fake.client.stall_responses("runs/submit", seconds=30)
        scenario.start()
        remote_run = wait_until(scenario.submissions, timeout=60, what="the run created")[0]
        processes = scenario.cluster.task_processes(scenario.dag_id, TASK, scenario.run_id)
        assert scenario.record().get("phase") == "intent", "the id must not be stored yet"
        fault_at = time.monotonic()
        processes.kill_both()
        scenario.wait_for_executions(2, timeout=90)
        scenario.figures["recovery_s"] = round(time.monotonic() - fault_at, 2)
        wait_until(lambda: scenario.record().get("external_id") == remote_run, timeout=30, what="id stored")
        scenario.finish(remote_run)
        state = scenario.cluster.wait_for_dag_run(scenario.dag_id, scenario.run_id, timeout=60)
        replays = [
            e
            for e in scenario.fake.client.calls("runs/submit")
            if e.body.get("run_name") == scenario.run_name
        ]
        scenario.figures["runs_submit_calls"] = len(replays)
        scenario.report(capsys, "SIGKILL between runs/submit and persist")
        assert state == "success"
        assert scenario.submissions() == [remote_run], "the token must deduplicate the resubmission"
        assert (
            len(replays) == 2 and replays[0].body["idempotency_token"] == replays[1].body["idempotency_token"]
        )
        assert scenario.ti()["try_number"] == 2
