"""
A user marks a running resumable task failed and clears it right after (issue 19, point 3).

The stop holds for the job of the marked try: it is cancelled, even when the clear lands before
the custodian (:meth:`airflow_resumable.custodian.Custodian._after_hook`) or the task itself acts;
the cleared task then submits a fresh job (decision ``prior_stopped`` when it found the record
``stop_requested``) and keeps it to the end. Real Airflow processes, the fake Databricks in its own
process; the gap between the mark and the clear is 0.1 s and 2 s. Each case prints its figures.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_resumable.ledger import ledger_key
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing.cluster import wait_until

if TYPE_CHECKING:
    from airflow_resumable.testing.cluster import AirflowCluster
    from airflow_resumable.testing.databricks import FakeDatabricksProcess

pytestmark = pytest.mark.system

DAG_ID = "resumable_databricks"
TASK = "submit_run"
#: Generous: a loaded 2-core machine, and the new try waits for the scheduler and a free slot.
TIMEOUT = 120.0
#: How long the test waits for the cleared task to run again before it checks whether Airflow lost the clear.
LOST_CLEAR_TIMEOUT = 45.0


@dataclass
class Scenario:
    """One DAG run of ``resumable_databricks`` and the fake Databricks' figures that belong to it."""

    cluster: AirflowCluster
    fake: FakeDatabricksProcess
    run_name: str = field(default_factory=lambda: f"sys-mfc-{uuid.uuid4().hex[:8]}")
    run_id: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Scenario:
        self.run_id = self.cluster.trigger(DAG_ID, {"run_name": self.run_name})
        return self

    def submissions(self) -> list[int]:
        """The distinct remote runs submitted under this scenario's run name, oldest first."""
        runs = [
            e.run_id
            for e in self.fake.client.submissions()
            if e.body.get("run_name") == self.run_name and e.run_id is not None
        ]
        return list(dict.fromkeys(runs))

    def cancels(self) -> list[int]:
        mine = set(self.submissions())
        return [e.run_id for e in self.fake.client.cancels() if e.run_id in mine]

    def wait_polled(self, remote_run: int) -> None:
        """Wait until the task polled ``remote_run`` once (the fake then moves it to RUNNING)."""
        wait_until(
            lambda: [
                e for e in self.fake.client.calls("runs/get") if e.run_id == remote_run and e.status == 200
            ],
            timeout=TIMEOUT,
            what=f"a runs/get of run {remote_run}",
        )

    def ti(self) -> dict[str, Any]:
        return self.cluster.task_instance(DAG_ID, self.run_id, TASK)

    def record(self) -> dict[str, Any]:
        return dict(self.cluster.task_state_store_get(DAG_ID, self.run_id, TASK, RECORD_KEY) or {})

    def decisions(self) -> list[str]:
        """The task's ``Resume decision`` log lines, every try, in order."""
        lines = []
        for path in self.cluster.task_log_files(DAG_ID, self.run_id, TASK):
            text = path.read_text(errors="replace")
            lines += [line for line in text.splitlines() if "Resume decision" in line]
        return lines

    def ledger_entry_present(self) -> bool:
        """Whether the ledger of jobs in flight has an entry for this task instance now."""
        key = ledger_key(TaskIdentity(DAG_ID, self.run_id, TASK))
        return key in self.cluster.variables(key)

    def wait_marked_try_ended(self, try_number: int, timeout: float = 30) -> bool:
        """Wait (bounded) until the marked try's log shows its task process ended; False if not seen."""
        ends = ("Task failed with exception", "Process exited", "Task killed")

        def ended() -> bool:
            for path in self.cluster.task_log_files(DAG_ID, self.run_id, TASK):
                if path.name == f"attempt={try_number}.log":
                    return any(end in path.read_text(errors="replace") for end in ends)
            return False

        try:
            wait_until(ended, timeout=timeout, what=f"try {try_number} ended")
        except TimeoutError:
            return False
        return True

    def mark_failed_then_clear(self, gap: float) -> float:
        """PATCH the task instance to failed, wait ``gap`` seconds, clear it; return when cleared."""
        self.cluster.mark_ti(DAG_ID, self.run_id, TASK, "failed")
        time.sleep(gap)  # the gap is what the test varies: nothing to await
        self.clear()
        return time.monotonic()

    def clear(self) -> None:
        """Clear the task instance and reset its DAG run, as the UI's clear does."""
        body = {
            "task_ids": [TASK],
            "dag_run_id": self.run_id,
            "only_failed": False,
            "dry_run": False,
            "reset_dag_runs": True,
        }
        self.cluster.api("POST", f"/dags/{quote(DAG_ID)}/clearTaskInstances", json=body)

    def wait_second_run(self, timeout: float) -> list[int]:
        """The runs submitted, once there are two."""
        return wait_until(
            lambda: runs if len(runs := self.submissions()) >= 2 else None,
            timeout=timeout,
            what="a second run submitted",
        )

    def report(self, capsys: pytest.CaptureFixture[str], title: str) -> None:
        ti = self.ti()
        figures = {
            "submits": len(self.submissions()),
            "cancels": len(self.cancels()),
            "state": ti["state"],
            "try_number": ti["try_number"],
            **self.figures,
        }
        with capsys.disabled():
            print(f"\n  [{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
            for line in self.decisions():
                print(f"    {line.strip()[:300]}")


@pytest.fixture
def scenario(cluster: AirflowCluster, fake_databricks: FakeDatabricksProcess) -> Scenario:
    fake_databricks.client.clear_faults()
    return Scenario(cluster, fake_databricks)


class TestMarkFailedThenClear:
    @pytest.mark.parametrize("gap", [0.1, 2.0], ids=["gap-100ms", "gap-2s"])
    def test_marked_try_job_cancelled_new_try_keeps_fresh_job(
        self, scenario: Scenario, gap: float, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Mark failed, clear after ``gap``: the first job is cancelled, a second one runs to success."""
        scenario.start()
        first = wait_until(scenario.submissions, timeout=TIMEOUT, what="the first run")[0]
        scenario.wait_polled(first)
        first_try = scenario.ti()["try_number"]
        began = time.monotonic()
        cleared_at = scenario.mark_failed_then_clear(gap)
        wait_until(lambda: first in scenario.cancels(), timeout=TIMEOUT, what=f"run {first} cancelled")
        # Looked for only after the clear: never below the gap.
        scenario.figures["cancel_seen_after_mark_s"] = round(time.monotonic() - began, 2)
        scenario.figures["airflow_lost_the_clear"] = False
        try:
            runs = scenario.wait_second_run(timeout=LOST_CLEAR_TIMEOUT)
        except TimeoutError:
            # Seen once in six runs on a loaded machine: the scheduler failed the DAG run while the
            # clear reset it, and Airflow left the run failed with the task cleared (never scheduled
            # again). That race is Airflow's; a user clears again, and so does the test.
            run_state = scenario.cluster.dag_run(DAG_ID, scenario.run_id)["state"]
            ti = scenario.ti()
            if run_state != "failed" or ti["state"] not in (None, ""):
                raise AssertionError(
                    f"no second run; DAG run {run_state}, task {ti['state']} (try {ti['try_number']})"
                ) from None
            scenario.figures["airflow_lost_the_clear"] = True
            scenario.clear()
            runs = scenario.wait_second_run(timeout=TIMEOUT)
        second = runs[1]
        scenario.figures["second_submit_s"] = round(time.monotonic() - cleared_at, 2)
        scenario.wait_polled(second)
        scenario.figures["marked_try_end_seen"] = scenario.wait_marked_try_ended(first_try)
        # Issue 19: the marked try's exit must not take the new try's job out of the ledger.
        scenario.figures["ledger_has_second"] = scenario.ledger_entry_present()
        scenario.fake.client.finish_run(second, "SUCCESS")
        state = scenario.cluster.wait_for_dag_run(DAG_ID, scenario.run_id, timeout=TIMEOUT)
        scenario.figures["first_try"] = first_try
        scenario.figures["tries"] = [
            (t["try_number"], t["state"]) for t in scenario.cluster.task_tries(DAG_ID, scenario.run_id, TASK)
        ]
        scenario.figures["cancel_calls_first"] = scenario.cancels().count(first)
        scenario.report(capsys, f"mark failed, clear after {gap:g} s")
        assert state == "success"
        assert scenario.ti()["state"] == "success"
        assert scenario.submissions() == [first, second], "exactly one fresh job after the clear"
        assert set(scenario.cancels()) == {first}, "the second job must never be cancelled"
        assert scenario.fake.client.get_run(first)["state"]["result_state"] == "CANCELED"
        assert scenario.fake.client.get_run(second)["state"]["result_state"] == "SUCCESS"
        assert scenario.ti()["try_number"] > first_try
        assert scenario.record().get("external_id") == second
        assert scenario.figures["ledger_has_second"], "the marked try's end must leave the new try's entry"
