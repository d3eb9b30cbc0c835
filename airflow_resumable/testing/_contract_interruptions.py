"""
The contract kit's stop-signal scenarios: real SIGTERMs to the process that runs ``dag.test()``.

Private: mixed into :class:`airflow_resumable.testing.contract.ResumableOperatorContract`.
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing.airflow_env import DagRunOutcome

from airflow_resumable.testing._contract_probe import CloudDriver, ScenarioProbe

__all__ = ["InterruptionContract"]


def _sigterm_self() -> None:
    """Deliver a real SIGTERM to this process: Airflow's task-runner handler calls ``on_kill``."""
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


def _mark_task_instance(probe: ScenarioProbe, state: str) -> None:
    """Change the task instance's state on the server, as a user's "mark failed" does."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import update

    ti = probe.context["ti"]
    with create_session() as session:
        session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.dag_id == ti.dag_id,
                TaskInstance.run_id == ti.run_id,
                TaskInstance.task_id == ti.task_id,
                TaskInstance.map_index == ti.map_index,
            )
            .values(state=state)
        )


class InterruptionContract:
    """
    Stop-signal scenarios, with real SIGTERMs to the process running ``dag.test()``.

    Mixed into :class:`ResumableOperatorContract`; kept apart to keep each class readable.
    """

    if TYPE_CHECKING:
        operator_class: ClassVar[Any]

        def _run(self, cloud: CloudDriver, probe: ScenarioProbe, **overrides: Any) -> DagRunOutcome: ...
        @staticmethod
        def _record(outcome: DagRunOutcome, map_index: int = -1) -> dict[str, Any]: ...

    def test_worker_shutdown_is_a_checkpoint(self, cloud: CloudDriver) -> None:
        """SIGTERM while the server holds the try running: job kept, reschedule, same try reconnects."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if probe.attempt == 1 and index == 0:
                _sigterm_self()
            elif probe.attempt > 1:
                probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1, "a checkpoint must not consume a retry"
        assert probe.executions == 2
        assert len(cloud.submitted_ids()) == 1 and cloud.cancelled_ids() == []
        record = self._record(outcome)
        assert record["resumes"] == 1 and record["interruption"]["signal"] == "SIGTERM"

    def test_three_shutdowns_in_a_row(self, cloud: CloudDriver) -> None:
        """Three consecutive worker shutdowns within max_resumes=3: one job, no retry consumed."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if probe.attempt <= 3 and index == 0:
                _sigterm_self()
            elif probe.attempt > 3:
                probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "success"
        assert outcome.task("job").try_number == 1
        assert probe.executions == 4 and len(cloud.submitted_ids()) == 1
        assert self._record(outcome)["resumes"] == 3

    def test_user_stop_cancels(self, cloud: CloudDriver) -> None:
        """SIGTERM after the server marked the try failed: the job is cancelled and not resubmitted."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if index == 0:
                _mark_task_instance(probe, "failed")
                _sigterm_self()

        probe = ScenarioProbe(cloud, on_poll)
        outcome = self._run(cloud, probe)
        assert outcome.task("job").state == "failed"
        assert len(cloud.submitted_ids()) == 1
        assert cloud.cancelled_ids() == cloud.submitted_ids()
        assert probe.executions == 1

    def test_execution_timeout_cancels(self, cloud: CloudDriver) -> None:
        """execution_timeout while the job runs: the job is cancelled and the task fails."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            if index == 0:
                threading.Event().wait(20)  # a status call that outlives the timeout (SIGALRM ends it)

        probe = ScenarioProbe(cloud, on_poll)
        # 3 s, not 1 s: a full garbage collection of a big test process alone can take a second.
        outcome = self._run(cloud, probe, retries=0, execution_timeout=timedelta(seconds=3))
        assert outcome.task("job").state == "failed"
        assert len(cloud.submitted_ids()) == 1
        assert cloud.cancelled_ids() == cloud.submitted_ids()
