"""The custodian: a user's stop reaches jobs that no worker or trigger polls."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from airflow_resumable.custodian import MAX_CANCEL_ATTEMPTS, LedgerItem, SweepReport, run_canceller, sweep
from airflow_resumable.ledger import ledger_entry, ledger_key
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity
from airflow_resumable.testing.toy import ToyJobService, toy_service

IDENTITY = TaskIdentity("dag", "manual__1", "job")


class Ledger:
    """The I/O the sweep needs, in memory: task states, forgotten entries, attempts, marks."""

    def __init__(self, states: dict[TaskIdentity, str | None] | None = None) -> None:
        self.states = states if states is not None else {}
        self.forgotten: list[str] = []
        self.attempts: list[str] = []
        self.marked: list[str] = []
        self.cancel_failed: dict[str, dict[str, Any]] = {}
        self.log = _Log()

    def run(self, *items: LedgerItem, cancel: Any = run_canceller) -> SweepReport:
        def task_state(identity: TaskIdentity) -> tuple[bool, str | None]:
            return (identity in self.states, self.states.get(identity))

        return sweep(
            items,
            task_state=task_state,
            cancel=cancel,
            forget=lambda item: self.forgotten.append(item.key),
            mark_cancelled=lambda item: self.marked.append(item.key),
            count_attempt=lambda item: self.attempts.append(item.key),
            log=self.log,
            mark_cancel_failed=lambda item, failure: self.cancel_failed.update({item.key: failure}),
        )


class _Log:
    """Records what the sweep logs, as structlog's ``capture_logs`` would."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.entries.append({"log_level": level, "event": event, **fields})

        return record


def service() -> ToyJobService:
    return toy_service(f"custodian-{uuid.uuid4().hex[:6]}")


def item(
    svc: ToyJobService,
    *,
    identity: TaskIdentity = IDENTITY,
    with_id: bool = True,
    recipe: bool = True,
    attempts: int = 0,
    **switches: bool,
) -> LedgerItem:
    """A ledger entry of a running toy job (or of an intent without an id)."""
    record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
    if with_id:
        record = record.evolve(external_id=svc.submit("train", record.token), phase="interrupted")
    cancel = ("toy_job", {"service": svc.name}) if recipe else None
    entry = json.loads(json.dumps(ledger_entry(identity, record, cancel, **switches)))
    return LedgerItem(ledger_key(identity), identity, record, entry, attempts)


class TestUserStopReachesTheJob:
    @pytest.mark.parametrize("state", ["failed", "success", "skipped", "upstream_failed", "removed"])
    def test_finished_task_instance_cancels_its_job(self, state: str) -> None:
        """Marked failed, success or skipped (or its run failed): job cancelled, entry forgotten."""
        svc, ledger = service(), Ledger({IDENTITY: state})
        job = item(svc)
        report = ledger.run(job)
        assert report.cancelled == [job.record.external_id] == svc.cancels
        assert ledger.forgotten == ledger.marked == [job.key]

    def test_deleted_dag_run_cancels_its_job(self) -> None:
        """The task instance is gone (its DAG run deleted): the job is cancelled."""
        svc, ledger = service(), Ledger({})
        assert ledger.run(item(svc)).cancelled == svc.cancels != []


class TestNothingElseCancels:
    @pytest.mark.parametrize(
        "state", [None, "scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule"]
    )
    def test_a_task_instance_that_will_run_or_runs_keeps_its_job(self, state: str | None) -> None:
        """Cleared, waiting for a retry or a reschedule, or watched by a try or a trigger: left alone."""
        svc, ledger = service(), Ledger({IDENTITY: state})
        report = ledger.run(item(svc))
        assert svc.cancels == [] and ledger.forgotten == [] and len(report.left) == 1

    def test_user_stop_switch_off_is_honoured(self) -> None:
        """cancel_on_user_stop=False: the job keeps running; the entry is dropped, said in the log."""
        svc, ledger = service(), Ledger({IDENTITY: "success"})
        ledger.run(item(svc, cancel_on_user_stop=False))
        assert svc.cancels == [] and len(ledger.forgotten) == 1
        assert any("switch is off" in e["event"] for e in ledger.log.entries)

    def test_failed_task_needs_cancel_on_failure_too(self) -> None:
        """A failed task with cancel_on_failure=False: a failure for good must not cancel it."""
        svc, ledger = service(), Ledger({IDENTITY: "failed"})
        ledger.run(item(svc, cancel_on_failure=False))
        assert svc.cancels == []


class TestWhatCannotBeCancelled:
    def test_intent_without_id_is_reported_by_token(self) -> None:
        """No job id recorded: a warning names the token to look the job up by, the entry goes."""
        svc, ledger = service(), Ledger({IDENTITY: "failed"})
        job = item(svc, with_id=False)
        report = ledger.run(job)
        assert report.unreachable == [job.key] and svc.cancels == []
        assert any(e.get("token") == job.record.token for e in ledger.log.entries)

    def test_failing_cancel_is_retried_then_given_up_loudly(self) -> None:
        """A cancel that fails counts an attempt; at the bound, an error names the job and the entry goes."""
        svc, ledger = service(), Ledger({IDENTITY: "failed"})
        svc.fail_next("cancel", times=100)
        first = item(svc)
        ledger.run(first)
        assert ledger.attempts == [first.key] and ledger.forgotten == []
        assert ledger.cancel_failed == {}, "one failed attempt is not giving up"
        last = item(svc, attempts=MAX_CANCEL_ATTEMPTS - 1)
        ledger.run(last)
        assert last.key in ledger.forgotten
        assert any(e["log_level"] == "error" and "COULD NOT CANCEL" in e["event"] for e in ledger.log.entries)
        failure = ledger.cancel_failed[last.key]
        assert (failure["external_id"], failure["reason"]) == (
            last.record.external_id,
            "custodian: the task was stopped",
        )
        assert set(failure) == {"at", "external_id", "reason", "error"}, (
            "the error's class, never its message"
        )

    def test_unregistered_canceller_never_runs(self) -> None:
        """A recipe names a registered canceller; anything else (a forged Variable) is refused."""
        with pytest.raises(LookupError, match="no canceller registered as 'os:system'"):
            run_canceller(("os:system", {}), "rm -rf /")


class TestCustodianOnTheMetadataDatabase:
    """The Airflow side: ledger Variables, task instance states and records in a real database."""

    def test_stopped_task_in_the_database_has_its_job_cancelled(self) -> None:
        """A finished task instance with a ledger entry: cancelled, entry deleted; a waiting one: kept."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.variable import Variable
        from airflow.sdk import DAG
        from airflow.utils.session import create_session
        from sqlalchemy import delete, update

        from airflow_resumable.custodian import Custodian
        from airflow_resumable.testing.airflow_env import read_ledger, run_dag
        from airflow_resumable.testing.toy import ToyJobOperator

        svc = service()
        svc.complete_after_polls = 1
        with DAG(f"custodian_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            ToyJobOperator(task_id="stopped", service=svc.name, command="a")
            ToyJobOperator(task_id="waiting", service=svc.name, command="b")
        outcome = run_dag(dag)
        identities = {
            task: TaskIdentity(outcome.dag_id, outcome.run_id, task) for task in ("stopped", "waiting")
        }
        jobs = {task: item(svc, identity=identity) for task, identity in identities.items()}
        with create_session() as session:
            for job in jobs.values():
                session.add(Variable(key=job.key, val=json.dumps(job.entry)))
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == outcome.dag_id, TaskInstance.task_id == "waiting")
                .values(state="up_for_reschedule")
            )
        report = Custodian(interval=0).sweep()
        assert svc.cancels == [jobs["stopped"].record.external_id]
        assert jobs["stopped"].record.external_id in report.cancelled
        assert read_ledger(outcome.dag_id, outcome.run_id, "stopped") is None
        assert read_ledger(outcome.dag_id, outcome.run_id, "waiting") is not None
        with create_session() as session:  # clean up: the session's database is shared
            session.execute(delete(Variable).where(Variable.key == jobs["waiting"].key))

    def test_giving_up_on_a_cancel_is_kept_in_the_task_record(self) -> None:
        """After the last failed attempt, the task's record in the database says why, and the entry goes."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.variable import Variable
        from airflow.sdk import DAG
        from airflow.utils.session import create_session
        from sqlalchemy import update

        from airflow_resumable.custodian import Custodian
        from airflow_resumable.testing.airflow_env import read_ledger, read_task_state, run_dag
        from airflow_resumable.testing.toy import ToyJobOperator

        svc = service()
        svc.complete_after_polls = 1
        with DAG(f"custodian_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            ToyJobOperator(task_id="stopped", service=svc.name, command="a")
        outcome = run_dag(dag)
        stored = JobRecord.from_json(read_task_state(outcome.dag_id, outcome.run_id, "stopped", RECORD_KEY))
        identity = TaskIdentity(outcome.dag_id, outcome.run_id, "stopped")
        cancel = ("toy_job", {"service": svc.name})
        entry = json.loads(json.dumps(ledger_entry(identity, stored.evolve(phase="interrupted"), cancel)))
        entry["custodian_attempts"] = MAX_CANCEL_ATTEMPTS - 1
        svc.fail_next("cancel", times=100)
        with create_session() as session:
            session.add(Variable(key=ledger_key(identity), val=json.dumps(entry)))
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == outcome.dag_id, TaskInstance.task_id == "stopped")
                .values(state="failed")
            )
        report = Custodian(interval=0).sweep()
        assert stored.external_id in report.failed  # the shared database may hold other entries
        after = JobRecord.from_json(read_task_state(outcome.dag_id, outcome.run_id, "stopped", RECORD_KEY))
        assert after.cancel_failed is not None
        assert after.cancel_failed["reason"] == "custodian: the task was stopped"
        assert read_ledger(outcome.dag_id, outcome.run_id, "stopped") is None

    def test_a_whole_ledger_sweep_goes_on_where_the_last_one_stopped(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With more jobs in flight than one sweep reads, the next sweep reads the next ones."""
        from airflow.models.variable import Variable
        from airflow.sdk import DAG
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        from airflow_resumable import custodian
        from airflow_resumable.testing.airflow_env import run_dag
        from airflow_resumable.testing.toy import ToyJobOperator

        svc = service()
        svc.complete_after_polls = 1
        with DAG(f"custodian_batches_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            for task in ("a", "b"):
                ToyJobOperator(task_id=task, service=svc.name, command=task)
        outcome = run_dag(dag)  # both succeed: their task instances are finished
        jobs = [item(svc, identity=TaskIdentity(outcome.dag_id, outcome.run_id, task)) for task in "ab"]
        with create_session() as session:  # only these two in the ledger (the database is shared)
            session.execute(delete(Variable).where(Variable.key.like(custodian.LEDGER_KEY_PREFIX + "%")))
            for job in jobs:
                session.add(Variable(key=job.key, val=json.dumps(job.entry)))
        monkeypatch.setattr(custodian, "SWEEP_BATCH", 1)
        sweeper = custodian.Custodian(interval=0)
        first, second = sweeper.sweep(), sweeper.sweep()
        assert len(first.cancelled) == len(second.cancelled) == 1
        assert sorted(svc.cancels) == sorted(job.record.external_id for job in jobs)


class TestPlugin:
    def test_plugin_is_registered_by_installing_the_package(self) -> None:
        """The airflow.plugins entry point names the plugin, whose listener Airflow registers."""
        from importlib.metadata import entry_points

        from airflow.listeners.listener import get_listener_manager

        from airflow_resumable.plugin import CustodianListener, ResumablePlugin

        (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "airflow_resumable"]
        assert entry.load() is ResumablePlugin
        registered = get_listener_manager().pm.get_plugins()
        assert any(isinstance(listener, CustodianListener) for listener in registered)

    def test_a_task_process_event_is_ignored(self) -> None:
        """In a task process the try handles its own end: the listener starts no sweep."""
        from airflow_resumable.plugin import CustodianListener
        from airflow_resumable.testing.state import FakeTaskInstance

        listener = CustodianListener()
        listener.on_task_instance_failed(None, FakeTaskInstance("d", "r", "t"), "boom")
        listener.on_starting(component=object())
        assert listener._custodian is None

    def test_the_periodic_sweep_runs_in_the_scheduler_only(self) -> None:
        """on_starting comes before the job's type is set: the sweep decides at its first tick."""
        import threading

        from airflow.jobs.job import Job

        from airflow_resumable.custodian import Custodian
        from airflow_resumable.plugin import CustodianListener

        swept = {name: threading.Event() for name in ("SchedulerJob", "TriggererJob")}
        for job_type, event in swept.items():
            listener = CustodianListener()
            listener._custodian = Custodian(interval=0.5)
            listener._custodian.sweep_safely = lambda *args, event=event, **kwargs: event.set()  # type: ignore[method-assign]
            job = Job()
            listener.on_starting(component=job)  # as Job.__init__ does: no type yet
            job.job_type = job_type  # the runner sets it a moment later
            thread = listener._custodian._thread
            assert thread is not None
            if job_type == "SchedulerJob":
                assert event.wait(10), "the scheduler's custodian must sweep"
                listener.before_stopping(component=job)
            thread.join(10)
            assert not thread.is_alive()
        assert not swept["TriggererJob"].is_set(), "only the scheduler sweeps periodically"
