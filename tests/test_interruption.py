"""Stop signals in a running try: checkpoint on a worker shutdown, cancel on a user's stop or a timeout.

Real signals are sent to this test process; the handler that calls ``on_kill`` is the one Airflow's
task runner installs (``_on_term``), reproduced by :func:`airflow_sigterm_handler`.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from unittest import mock

import pluggy
import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowTaskTimeout
from airflow.sdk.execution_time.timeout import timeout
from structlog.testing import capture_logs
from tenacity import wait_none

from airflow_resumable.exceptions import (
    HandedOverError,
    ResumeLimitError,
    StoppedByUserError,
    TransientCloudError,
)
from airflow_resumable.interruption import StopKind, classify_stop, supervisor_signal_mode
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity, seal_record
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.state import InMemoryTaskStateStore, make_context
from airflow_resumable.testing.toy import ToyJobOperator, ToyJobService, toy_service

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

FAST = RetryPolicy(attempts=2, wait=wait_none())


@contextmanager
def airflow_sigterm_handler(op: ToyJobOperator) -> Iterator[None]:
    """What Airflow's task runner installs: SIGTERM calls task.on_kill() and returns."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_on_poll(svc: ToyJobService, signum: int, *, at_poll: int = 1) -> None:
    """Make the service's status call number ``at_poll`` deliver ``signum`` to this process."""
    real_status = svc.status
    calls = {"n": 0}

    def status(job_id: str) -> str:
        calls["n"] += 1
        if calls["n"] == at_poll:
            os.kill(os.getpid(), signum)
        return real_status(job_id)

    svc.status = status  # type: ignore[method-assign]


def make(svc: ToyJobService, **kwargs: Any) -> ToyJobOperator:
    return ToyJobOperator(
        task_id=f"t{uuid.uuid4().hex[:4]}",
        service=svc.name,
        command="train",
        poll_interval=30,  # a long interval: the signal must wake the loop, not the timer
        cloud_retry=FAST,
        state_store_retry=FAST,
        resume_delay=timedelta(seconds=7),
        **kwargs,
    )


@pytest.fixture
def svc() -> ToyJobService:
    return toy_service(f"stop-{uuid.uuid4().hex[:6]}")


class TestWorkerShutdownCheckpoint:
    def test_sigterm_while_server_holds_running_is_a_checkpoint(self, svc: ToyJobService) -> None:
        """SIGTERM with the try still running on the server: no cancel, interrupted record, reschedule."""
        seen: list[dict[str, Any]] = []
        op = make(svc, on_checkpoint_callback=lambda context: seen.append(context["checkpoint"]))
        store = InMemoryTaskStateStore()
        signal_on_poll(svc, signal.SIGTERM)
        started = datetime.now(tz=timezone.utc)
        with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException) as resched:
            op.execute(make_context(store, try_number=1))
        assert svc.cancels == [] and svc.jobs[svc.submissions[0]].state == "RUNNING"
        assert resched.value.reschedule_date >= started + timedelta(seconds=7)
        record = JobRecord.from_json(store.get(RECORD_KEY))
        assert (record.phase, record.resumes, record.external_id) == ("interrupted", 1, svc.submissions[0])
        assert record.interruption is not None and record.interruption["signal"] == "SIGTERM"
        assert seen and seen[0]["external_id"] == svc.submissions[0] and seen[0]["resumes"] == 1

    def test_the_poll_loop_wakes_at_once(self, svc: ToyJobService) -> None:
        """With a 30 s poll interval the checkpoint still happens within a second of the signal."""
        op = make(svc)
        signal_on_poll(svc, signal.SIGTERM)
        # timeout(5) would raise AirflowTaskTimeout if the loop slept through its 30 s interval
        with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException), timeout(5):
            op.execute(make_context())

    def test_map_index_zero_is_looked_up_as_itself(self, svc: ToyJobService) -> None:
        """Map index 0 is asked about as `task_0`, not as the unmapped task (found by the chaos suite)."""
        op = make(svc)
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException):
            op.execute(make_context(map_index=0))
        assert svc.cancels == []

    def test_sigint_is_handled_like_sigterm(self, svc: ToyJobService) -> None:
        """SIGINT (forwarded by the supervisor) checkpoints too, without a KeyboardInterrupt."""
        op = make(svc)
        signal_on_poll(svc, signal.SIGINT)
        with pytest.raises(AirflowRescheduleException):
            op.execute(make_context())
        assert svc.cancels == []

    def test_unreachable_server_is_treated_as_worker_shutdown(self, svc: ToyJobService) -> None:
        """If the server does not answer within the bound, the job is left running (the safe side)."""
        op = make(svc, stop_classification_timeout=0.2)
        context = make_context()
        context["ti"].server_unreachable = True
        signal_on_poll(svc, signal.SIGTERM)
        try:
            with (
                capture_logs() as logs,
                airflow_sigterm_handler(op),
                pytest.raises(AirflowRescheduleException),
            ):
                op.execute(context)
        finally:
            context["ti"].release_server.set()
        assert svc.cancels == []
        classified = [e for e in logs if e["event"] == "Stop signal classified"]
        assert classified[0]["kind"] == "unknown"
        # It may have been a user's stop: the log names the job that might be left running.
        warned = [e for e in logs if e["log_level"] == "warning" and "not classified in time" in e["event"]]
        assert warned and warned[0]["external_id"] == svc.submissions[0]

    def test_unclassified_stop_is_kept_in_the_record(self, svc: ToyJobService) -> None:
        """A checkpoint taken on an unanswered stop says so in the record (``kind: unknown``)."""
        op, store = make(svc, stop_classification_timeout=0.2), InMemoryTaskStateStore()
        context = make_context(store)
        context["ti"].server_unreachable = True
        signal_on_poll(svc, signal.SIGTERM)
        try:
            with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException):
                op.execute(context)
        finally:
            context["ti"].release_server.set()
        interruption = JobRecord.from_json(store.get(RECORD_KEY)).interruption
        assert interruption is not None and interruption["kind"] == "unknown"

    def test_next_try_reconnects_after_a_checkpoint(self, svc: ToyJobService) -> None:
        """The try after a checkpoint polls the same job; the resume count is kept."""
        store = InMemoryTaskStateStore()
        op = make(svc)
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException):
            op.execute(make_context(store))
        svc.complete_after_polls = 1
        svc.status = ToyJobService.status.__get__(svc)  # type: ignore[method-assign]
        result = make(svc).execute(make_context(store))
        assert result["job_id"] == svc.submissions[0] and len(svc.submissions) == 1

    def test_resume_limit_fails_and_cancels(self, svc: ToyJobService) -> None:
        """A shutdown after max_resumes consecutive checkpoints fails the task and cancels the job."""
        store = InMemoryTaskStateStore()
        job_id = svc.submit("train", "tok")
        identity = TaskIdentity("dag", "manual__1", "task")
        record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
        store.set(
            RECORD_KEY,
            seal_record(identity, record.evolve(external_id=job_id, phase="interrupted", resumes=3)),
        )
        op = make(svc, max_resumes=3)
        signal_on_poll(svc, signal.SIGTERM, at_poll=2)  # poll 1 is the attempt-start decision
        with airflow_sigterm_handler(op), pytest.raises(ResumeLimitError, match="max_resumes=3"):
            op.execute(make_context(store))
        assert svc.cancels == [job_id]


class TestUserStop:
    def test_sigterm_after_mark_failed_cancels(self, svc: ToyJobService) -> None:
        """SIGTERM when the server holds the try as failed: cancel the job, record it, no retry."""
        op, store = make(svc), InMemoryTaskStateStore()
        context = make_context(store)
        context["ti"].server_state = "failed"
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(StoppedByUserError, match="failed"):
            op.execute(context)
        assert svc.cancels == svc.submissions
        assert JobRecord.from_json(store.get(RECORD_KEY)).phase == "cancelled"

    def test_run_deleted_while_running_cancels(self, svc: ToyJobService) -> None:
        """SIGTERM when the server no longer knows the task instance (its DAG run deleted): cancel."""
        op = make(svc)
        context = make_context()
        context["ti"].server_knows = False
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(StoppedByUserError, match="gone"):
            op.execute(context)
        assert svc.cancels == svc.submissions

    def test_cancel_on_user_stop_can_be_switched_off(self, svc: ToyJobService) -> None:
        """cancel_on_user_stop=False leaves the job running."""
        op = make(svc, cancel_on_user_stop=False)
        context = make_context()
        context["ti"].server_state = "success"
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(StoppedByUserError):
            op.execute(context)
        assert svc.cancels == []


class TestTimeoutAndFinalFailure:
    def test_execution_timeout_cancels(self, svc: ToyJobService) -> None:
        """Airflow's own SIGALRM timeout inside the poll loop cancels the job, then the timeout propagates."""
        op = make(svc)
        with pytest.raises(AirflowTaskTimeout), timeout(1):
            op.execute(make_context())
        assert svc.cancels == svc.submissions != []

    def test_timeout_cancel_can_be_switched_off(self, svc: ToyJobService) -> None:
        """cancel_on_timeout=False leaves the job running."""
        with pytest.raises(AirflowTaskTimeout), timeout(1):
            make(svc, cancel_on_timeout=False).execute(make_context())
        assert svc.cancels == []

    def test_final_failure_while_active_cancels(self, svc: ToyJobService) -> None:
        """No retries left and polling failing for good: the active job is cancelled, not orphaned."""
        op = make(svc)
        op.resumable_poll_interval = 0
        real_status = svc.status
        calls = {"n": 0}

        def status(job_id: str) -> str:
            calls["n"] += 1
            if calls["n"] > 1:
                raise TransientCloudError("HTTP 500 from the status endpoint")
            return real_status(job_id)

        svc.status = status  # type: ignore[method-assign]
        with pytest.raises(TransientCloudError):
            op.execute(make_context(try_number=1, max_tries=0))
        assert svc.cancels == svc.submissions != []

    def test_failure_with_retries_left_does_not_cancel(self, svc: ToyJobService) -> None:
        """With retries left the job keeps running: the retry reconnects to it."""
        op = make(svc)
        svc.fail_next("status", 10)
        with pytest.raises(TransientCloudError):
            op.execute(make_context(try_number=1, max_tries=2))
        assert svc.cancels == []

    def test_failed_cancel_is_reported_loudly(self, svc: ToyJobService) -> None:
        """When the cancel itself fails the log names the job that may be left running."""
        op = make(svc)
        svc.fail_next("status", 100)
        svc.fail_next("cancel", 100)
        with capture_logs() as logs, pytest.raises(TransientCloudError):
            op.execute(make_context(max_tries=0))
        loud = [e for e in logs if e["log_level"] == "error" and "COULD NOT CANCEL" in e["event"]]
        assert loud and loud[0]["external_id"] == svc.submissions[0]

    def test_failed_cancel_is_kept_in_the_record(self, svc: ToyJobService) -> None:
        """The record names the job whose cancel failed, with the error's class but not its message."""
        op, store = make(svc), InMemoryTaskStateStore()
        svc.fail_next("status", 100)
        svc.fail_next("cancel", 100)
        with pytest.raises(TransientCloudError):
            op.execute(make_context(store, max_tries=0))
        failed = JobRecord.from_json(store.get(RECORD_KEY)).cancel_failed
        assert failed is not None
        assert failed["external_id"] == svc.submissions[0]
        assert failed["error"] == "TransientCloudError"
        assert "task failed for good" in str(failed["reason"])


class TestCancelRace:
    def test_a_job_someone_else_cancelled_first_is_not_an_error(self, svc: ToyJobService) -> None:
        """The custodian cancelled the job first: the try's own cancel fails, and that is fine."""
        op, store = make(svc), InMemoryTaskStateStore()
        context = make_context(store)
        context["ti"].server_state = "failed"
        real_status = svc.status

        def custodian_was_quicker(job_id: str) -> str:
            state = real_status(job_id)
            svc.jobs[job_id].state = "CANCELLED"  # cancelled elsewhere...
            svc.fail_next("cancel", times=10)  # ...so our cancel call fails
            os.kill(os.getpid(), signal.SIGTERM)
            return state

        svc.status = custodian_was_quicker  # type: ignore[method-assign]
        with capture_logs() as logs, airflow_sigterm_handler(op), pytest.raises(StoppedByUserError):
            op.execute(context)
        assert not [e for e in logs if e["log_level"] == "error"]
        assert JobRecord.from_json(store.get(RECORD_KEY)).phase == "cancelled"


class TestClearedWhileRunning:
    def test_clear_is_a_hand_over_not_a_stop(self, svc: ToyJobService) -> None:
        """A clear puts the try in 'restarting': the job is left running and the record untouched."""
        op, store = make(svc), InMemoryTaskStateStore()
        context = make_context(store)
        context["ti"].server_state = "restarting"
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(HandedOverError, match="reconnects"):
            op.execute(context)
        assert svc.cancels == []
        record = JobRecord.from_json(store.get(RECORD_KEY))
        assert (record.phase, record.external_id, record.resumes) == ("submitted", svc.submissions[0], 0)

    def test_next_try_reconnects_to_the_handed_over_job(self, svc: ToyJobService) -> None:
        """The try after a clear polls the same job: one job, no cancel."""
        op, store = make(svc), InMemoryTaskStateStore()
        context = make_context(store)
        context["ti"].server_state = "restarting"
        signal_on_poll(svc, signal.SIGTERM)
        with airflow_sigterm_handler(op), pytest.raises(HandedOverError):
            op.execute(context)
        svc.finish(svc.submissions[0])
        result = make(svc).execute(make_context(store, try_number=2))
        assert result["job_id"] == svc.submissions[0]
        assert len(svc.submissions) == 1 and svc.cancels == []


class TestClassification:
    @pytest.mark.parametrize(
        ("state", "kind"),
        [
            ("running", StopKind.WORKER_SHUTDOWN),
            ("failed", StopKind.USER_STOP),
            ("success", StopKind.USER_STOP),
            ("skipped", StopKind.USER_STOP),
            ("upstream_failed", StopKind.USER_STOP),
            ("restarting", StopKind.HAND_OVER),
            (None, StopKind.HAND_OVER),
            ("scheduled", StopKind.HAND_OVER),
            ("queued", StopKind.HAND_OVER),
            ("up_for_retry", StopKind.HAND_OVER),
        ],
    )
    def test_server_state_decides(self, state: str | None, kind: StopKind) -> None:
        """'running' is a worker shutdown, a state of a next try a clear, a finished state a user's stop."""
        answer: Callable[[], dict[str, Any]] = lambda: {"r": {"t_2": state}}  # noqa: E731
        assert classify_stop(answer, run_id="r", task_id="t", map_index=2, timeout=1)[0] is kind

    def test_task_instance_gone_is_a_user_stop(self) -> None:
        """No state at all for the task instance (its DAG run deleted) is a user's stop."""
        kind, why = classify_stop(lambda: {}, run_id="r", task_id="t", map_index=-1, timeout=1)
        assert (kind, why) == (StopKind.USER_STOP, "the server holds the task instance as gone")

    def test_no_answer_in_time_is_unknown(self) -> None:
        """A server that does not answer within the bound leaves the kind unknown."""
        release = threading.Event()

        def slow() -> dict[str, Any]:
            release.wait(5)
            return {"r": {"t": "failed"}}

        try:
            kind, why = classify_stop(slow, run_id="r", task_id="t", map_index=-1, timeout=0.05)
        finally:
            release.set()
        assert kind is StopKind.UNKNOWN and "did not answer within 0.05s" in why

    def test_failing_call_is_unknown(self) -> None:
        """A call that raises (the supervisor could not reach the server) leaves the kind unknown."""

        def failing() -> dict[str, Any]:
            raise ConnectionError("refused")

        kind, why = classify_stop(failing, run_id="r", task_id="t", map_index=-1, timeout=1)
        assert kind is StopKind.UNKNOWN and "ConnectionError" in why

    def test_installed_airflow_forwards_sigterm(self) -> None:
        """Airflow 3.3.x's supervisor forwards SIGTERM to the task (the warm-shutdown change is later)."""
        assert supervisor_signal_mode() == "forward"


class CheckpointListener:
    """A listener as an Airflow plugin would register it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @pluggy.HookimplMarker("airflow")
    def on_task_instance_checkpointed(
        self, previous_state: str, task_instance: Any, checkpoint_data: dict[str, Any]
    ) -> None:
        self.calls.append({"previous_state": previous_state, **checkpoint_data})


class TestCheckpointListener:
    def test_listener_hook_is_called_on_checkpoint(self, svc: ToyJobService) -> None:
        """A registered on_task_instance_checkpointed listener receives the checkpoint data."""
        from airflow.sdk.listener import get_listener_manager

        listener = CheckpointListener()
        manager = get_listener_manager()
        manager.pm.register(listener)
        try:
            op = make(svc)
            signal_on_poll(svc, signal.SIGTERM)
            with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException):
                op.execute(make_context())
        finally:
            manager.pm.unregister(listener)
        assert listener.calls == [mock.ANY]
        assert listener.calls[0]["previous_state"] == "running"
        assert listener.calls[0]["external_id"] == svc.submissions[0]

    def test_failing_listener_does_not_stop_the_checkpoint(self, svc: ToyJobService) -> None:
        """A listener that raises is logged; the try still ends in a checkpoint."""
        from airflow.sdk.listener import get_listener_manager

        class Broken:
            @pluggy.HookimplMarker("airflow")
            def on_task_instance_checkpointed(
                self, previous_state: str, task_instance: Any, checkpoint_data: Any
            ) -> None:
                raise RuntimeError("listener bug")

        broken = Broken()
        get_listener_manager().pm.register(broken)
        try:
            op = make(svc, on_checkpoint_callback=lambda context: 1 / 0)
            signal_on_poll(svc, signal.SIGTERM)
            with airflow_sigterm_handler(op), pytest.raises(AirflowRescheduleException):
                op.execute(make_context())
        finally:
            get_listener_manager().pm.unregister(broken)
        assert svc.cancels == []
