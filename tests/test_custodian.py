"""The custodian: a user's stop reaches jobs that no worker or trigger polls."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable._custodian_policy import CustodianLimits
from airflow_resumable.custodian import LedgerItem, Plan, Present, SweepReport, _item, run_canceller, sweep
from airflow_resumable.exceptions import RecipeRefusedError
from airflow_resumable.ledger import ledger_entry, ledger_key
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity
from airflow_resumable.testing.toy import ToyJobService, toy_service

if TYPE_CHECKING:
    from collections.abc import Iterator

IDENTITY = TaskIdentity("dag", "manual__1", "job")


@pytest.fixture(autouse=True)
def _leave_the_ledger_empty() -> Iterator[None]:
    """Tests that write ledger Variables share their worker's database with other modules."""
    yield
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from airflow_resumable.ledger import LEDGER_KEY_PREFIX

    with create_session() as session:
        session.execute(delete(Variable).where(Variable.key.like(LEDGER_KEY_PREFIX + "%")))


class Ledger:
    """The I/O the sweep needs, in memory: the present, forgotten entries, notes, marks."""

    def __init__(
        self, states: dict[TaskIdentity, str | None] | None = None, stored: JobRecord | None = None
    ) -> None:
        self.states = states if states is not None else {}
        self.stored = stored
        self.forgotten: list[str] = []
        self.notes: dict[str, dict[str, Any]] = {}
        self.marked: list[str] = []
        self.cancel_failed: dict[str, dict[str, Any]] = {}
        self.log = _Log()
        self.now = 1_000_000.0

    # Effects
    def present(self, item: LedgerItem) -> Present:
        found = item.identity in self.states
        return Present(found, self.states.get(item.identity), "try-1", self.stored)

    def cancel(self, item: LedgerItem, plan: Plan, done: Any) -> bool:
        try:
            run_canceller(plan.recipe, plan.external_id)  # type: ignore[arg-type]
        except Exception as err:
            done(err)
        else:
            done(None)
        return True

    def forget(self, item: LedgerItem) -> None:
        self.forgotten.append(item.key)

    def mark_cancelled(self, item: LedgerItem) -> None:
        self.marked.append(item.key)

    def note_failure(self, item: LedgerItem, notes: dict[str, Any]) -> None:
        self.notes[item.key] = notes

    def mark_cancel_failed(self, item: LedgerItem, failure: dict[str, Any]) -> None:
        self.cancel_failed[item.key] = failure

    def run(self, *items: LedgerItem, give_up_after: float = 3600.0, **kwargs: Any) -> SweepReport:
        limits = CustodianLimits(give_up_after=give_up_after)
        return sweep(items, self, log=self.log, limits=limits, clock=lambda: self.now, **kwargs)


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
    notes: dict[str, Any] | None = None,
    **switches: bool,
) -> LedgerItem:
    """A sealed ledger entry of a running toy job (or of an intent without an id)."""
    record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
    if with_id:
        record = record.evolve(external_id=svc.submit("train", record.token), phase="interrupted")
    cancel = ("toy_job", {"service": svc.name}) if recipe else None
    entry = json.loads(json.dumps(ledger_entry(identity, record, cancel, **switches)))
    if notes is not None:
        entry["custodian"] = notes
    return LedgerItem(ledger_key(identity), identity, record, entry)


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

    def test_failing_cancel_backs_off_then_gives_up_loudly_and_keeps_the_entry(self) -> None:
        """A failed cancel waits (backoff); past the give-up time an error names the job, the entry stays."""
        svc, ledger = service(), Ledger({IDENTITY: "failed"})
        svc.fail_next("cancel", times=100)
        first = item(svc)
        ledger.run(first)
        notes = ledger.notes[first.key]
        assert notes["failures"] == 1 and notes["next_attempt_at"] > ledger.now
        assert ledger.forgotten == [] and ledger.cancel_failed == {}, "one failure is not giving up"
        waiting = item(svc, notes=notes)
        assert ledger.run(waiting).waiting == [waiting.record.external_id], "backing off: no call"
        ledger.now += 7200
        last = item(svc, notes=notes)
        ledger.run(last)
        assert ledger.notes[last.key]["gave_up"] is True and last.key not in ledger.forgotten
        assert any(e["log_level"] == "error" and "COULD NOT CANCEL" in e["event"] for e in ledger.log.entries)
        failure = ledger.cancel_failed[last.key]
        assert (failure["external_id"], failure["reason"]) == (
            last.record.external_id,
            "custodian: the task was stopped",
        )
        assert set(failure) == {"at", "external_id", "reason", "error"}, (
            "the error's class, never its message"
        )
        given_up = item(svc, notes=ledger.notes[last.key])
        calls = len(svc.cancels)
        assert ledger.run(given_up).left and len(svc.cancels) == calls, "a given-up entry is only shown"

    def test_a_failure_time_in_the_future_counts_as_now(self) -> None:
        """An edited first_failure_at far ahead cannot keep the custodian retrying for ever."""
        svc, ledger = service(), Ledger({IDENTITY: "failed"})
        svc.fail_next("cancel", times=100)
        ledger.run(item(svc, notes={"failures": 3, "first_failure_at": ledger.now + 1e9}), give_up_after=0)
        assert any(n.get("gave_up") for n in ledger.notes.values())

    def test_unregistered_canceller_never_runs(self) -> None:
        """A recipe names a registered canceller; anything else (a forged Variable) is refused."""
        with pytest.raises(RecipeRefusedError, match="no canceller registered as 'os:system'"):
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
        for task, job in jobs.items():  # each try left its job running (a checkpoint)
            _write_record(identities[task], job.record)
        with create_session() as session:
            for job in jobs.values():
                session.add(Variable(key=job.key, val=json.dumps(job.entry)))
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == outcome.dag_id, TaskInstance.task_id == "waiting")
                .values(state="up_for_reschedule")
            )
        custodian = Custodian(interval=0)
        report = custodian.sweep_safely()
        assert report is not None and custodian.drain(10)
        assert svc.cancels == [jobs["stopped"].record.external_id]
        assert jobs["stopped"].record.external_id in report.cancelled
        assert read_ledger(outcome.dag_id, outcome.run_id, "stopped") is None
        assert read_ledger(outcome.dag_id, outcome.run_id, "waiting") is not None
        with create_session() as session:  # clean up: the session's database is shared
            session.execute(delete(Variable).where(Variable.key == jobs["waiting"].key))

    def test_giving_up_on_a_cancel_is_kept_in_the_task_record(self) -> None:
        """Past the give-up time, the task's record says why, and the entry stays marked gave_up."""
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
        identity = TaskIdentity(outcome.dag_id, outcome.run_id, "stopped")
        stored = JobRecord.from_json(read_task_state(outcome.dag_id, outcome.run_id, "stopped", RECORD_KEY))
        running = stored.evolve(phase="interrupted")
        _write_record(identity, running)
        cancel = ("toy_job", {"service": svc.name})
        entry = json.loads(json.dumps(ledger_entry(identity, running, cancel)))
        svc.fail_next("cancel", times=100)
        with create_session() as session:
            session.add(Variable(key=ledger_key(identity), val=json.dumps(entry)))
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == outcome.dag_id, TaskInstance.task_id == "stopped")
                .values(state="failed")
            )
        custodian = Custodian(interval=0, limits=CustodianLimits(give_up_after=0))
        custodian.sweep_safely(keys=[ledger_key(identity)])
        assert custodian.drain(10)
        after = JobRecord.from_json(read_task_state(outcome.dag_id, outcome.run_id, "stopped", RECORD_KEY))
        assert after.cancel_failed is not None
        assert after.cancel_failed["reason"] == "custodian: the task was stopped"
        kept = read_ledger(outcome.dag_id, outcome.run_id, "stopped")
        assert kept is not None and kept["custodian"]["gave_up"] is True

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
        for job in jobs:
            _write_record(job.identity, job.record)
        with create_session() as session:  # only these two in the ledger (the database is shared)
            session.execute(delete(Variable).where(Variable.key.like(custodian.LEDGER_KEY_PREFIX + "%")))
            for job in jobs:
                session.add(Variable(key=job.key, val=json.dumps(job.entry)))
        monkeypatch.setattr(custodian, "SWEEP_BATCH", 1)
        sweeper = custodian.Custodian(interval=0)
        first, second = sweeper.sweep_safely(), sweeper.sweep_safely()
        assert first is not None and second is not None and sweeper.drain(10)
        assert len(first.cancelled) == len(second.cancelled) == 1
        assert sorted(svc.cancels) == sorted(job.record.external_id for job in jobs)


#: What the lanes test's cancellers saw (they live in this module so the custodian can import them).
HUNG_CLOUD_RELEASE = threading.Event()
HEALTHY_CANCELLED = threading.Event()


def hanging_cancel(external_id: Any, *, conn_id: str) -> None:
    """A canceller whose cloud never answers (until the test ends)."""
    HUNG_CLOUD_RELEASE.wait(60)


def healthy_cancel(external_id: Any, *, conn_id: str) -> None:
    """A canceller whose cloud answers at once."""
    HEALTHY_CANCELLED.set()


def _task_with_a_running_job(svc: ToyJobService) -> tuple[TaskIdentity, LedgerItem, Any]:
    """A task instance in the database whose record and ledger entry name a running toy job."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.variable import Variable
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_resumable.testing.airflow_env import run_dag
    from airflow_resumable.testing.toy import ToyJobOperator

    svc.complete_after_polls = 1
    with DAG(f"custodian_race_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        ToyJobOperator(task_id="job", service=svc.name, command="a")
    outcome = run_dag(dag)
    identity = TaskIdentity(outcome.dag_id, outcome.run_id, "job")

    def task_instance(session: Any) -> Any:
        return session.scalar(select(TaskInstance).where(TaskInstance.dag_id == outcome.dag_id))

    with create_session() as session:
        try_id = str(task_instance(session).id)
    job = item(svc, identity=identity, try_id=try_id)  # written by that try
    _write_record(identity, job.record)
    with create_session() as session:
        session.add(Variable(key=job.key, val=json.dumps(job.entry)))
    return identity, job, task_instance


class TestMarkFailedThenCleared:
    def test_the_stopped_tries_job_is_cancelled_and_its_record_says_so(self) -> None:
        """The hook heard try 1 marked failed; a clear replaced it before the sweep: still cancelled."""
        from airflow.utils.session import create_session

        from airflow_resumable.custodian import Custodian
        from airflow_resumable.testing.airflow_env import read_ledger, read_task_state

        svc = service()
        identity, job, task_instance = _task_with_a_running_job(svc)
        with create_session() as session:
            ti = task_instance(session)
            ti.state = "failed"  # the user's mark failed ...
            stopped_try = str(ti.id)
            ti.prepare_db_for_next_try(session)  # ... and the clear, before the custodian acted
            ti.state = None
        custodian = Custodian(interval=0)
        custodian._after_hook({identity: stopped_try})
        assert custodian.drain(10)
        assert svc.cancels == [job.record.external_id]
        after = JobRecord.from_json(read_task_state(identity.dag_id, identity.run_id, "job", RECORD_KEY))
        assert after.phase == "cancelled" and after.stop_requested is not None
        assert read_ledger(identity.dag_id, identity.run_id, "job") is None

    def test_a_newer_tries_entry_is_not_the_stopped_tries_job(self) -> None:
        """The hook's thread was slow: the new try's entry is already there; its job is left alone."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        from airflow_resumable.custodian import Custodian

        svc = service()
        identity, job, task_instance = _task_with_a_running_job(svc)
        with create_session() as session:
            ti = task_instance(session)
            ti.state = "failed"  # the user's mark failed ...
            stopped_try = str(ti.id)
            ti.prepare_db_for_next_try(session)  # ... the clear ...
            ti.state = "running"  # ... and the new try runs
            new_try = str(ti.id)
        newer = item(svc, identity=identity, try_id=new_try)  # the new try's intent and job
        _write_record(identity, newer.record)
        with create_session() as session:
            variable = session.scalar(select(Variable).where(Variable.key == job.key))
            variable.set_val(json.dumps(newer.entry))  # the new try rewrote the entry
        custodian = Custodian(interval=0)
        custodian._after_hook({identity: stopped_try})
        assert custodian.drain(10)
        assert svc.cancels == [], "the new try's job is not the stopped try's"

    def test_a_try_still_running_is_not_confirmed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A hook whose transaction rolled back (the try still runs, same id): nothing is cancelled."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        from airflow_resumable import custodian as module

        svc = service()
        identity, job, task_instance = _task_with_a_running_job(svc)
        with create_session() as session:
            ti = task_instance(session)
            ti.state = "running"
            running_try = str(ti.id)
        monkeypatch.setattr(module, "HOOK_SETTLE_SECONDS", 0.3)
        custodian = module.Custodian(interval=0)
        custodian._after_hook({identity: running_try})
        assert custodian.drain(10)
        assert svc.cancels == []
        with create_session() as session:
            session.execute(delete(Variable).where(Variable.key == job.key))


class TestOneHungCloud:
    """A cloud that hangs delays neither the other clouds' cancels nor the custodian's stop."""

    def test_the_healthy_clouds_cancel_lands_while_the_other_hangs(self) -> None:
        """Two stopped tasks on two connections: one cancel hangs, the other lands; the hung one backs off."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.variable import Variable
        from airflow.sdk import DAG
        from airflow.utils.session import create_session
        from sqlalchemy import update

        from airflow_resumable.custodian import Custodian, register_canceller
        from airflow_resumable.testing.airflow_env import read_ledger, run_dag
        from airflow_resumable.testing.toy import ToyJobOperator

        register_canceller("hung_cloud_job", f"{__name__}:hanging_cancel")
        register_canceller("healthy_cloud_job", f"{__name__}:healthy_cancel")
        svc = service()
        svc.complete_after_polls = 1
        with DAG(f"custodian_lanes_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            for task in ("hung", "healthy"):
                ToyJobOperator(task_id=task, service=svc.name, command=task)
        outcome = run_dag(dag)
        keys = {}
        for task in ("hung", "healthy"):
            identity = TaskIdentity(outcome.dag_id, outcome.run_id, task)
            record = JobRecord.new_intent(identity, generation=1, fingerprint=None).evolve(
                external_id=f"{task}-job", phase="interrupted"
            )
            _write_record(identity, record)
            recipe = (f"{task}_cloud_job", {"conn_id": f"{task}_conn"})
            keys[task] = ledger_key(identity)
            with create_session() as session:
                session.add(Variable(key=keys[task], val=json.dumps(ledger_entry(identity, record, recipe))))
        with create_session() as session:
            session.execute(
                update(TaskInstance).where(TaskInstance.dag_id == outcome.dag_id).values(state="failed")
            )
        custodian = Custodian(interval=0, limits=CustodianLimits(call_timeout=1.0))
        started = time.monotonic()
        try:
            custodian.sweep_safely(keys=list(keys.values()))
            assert HEALTHY_CANCELLED.wait(5), "the healthy cloud's cancel must not wait for the hung one"
            landed = time.monotonic() - started
            assert not HUNG_CLOUD_RELEASE.is_set() and landed < 1.0, "it landed while the other still hung"
            assert custodian.drain(10), "the hung call ends at its deadline"
            notes = read_ledger(outcome.dag_id, outcome.run_id, "hung")["custodian"]
            assert notes["failures"] == 1 and notes["next_attempt_at"] > time.time()
            assert read_ledger(outcome.dag_id, outcome.run_id, "healthy") is None
            stop_started = time.monotonic()
            custodian.stop(timeout=2.0)
            stopped = time.monotonic() - stop_started
            print(f"healthy cancel landed after {landed:.3f} s; stop with a hung call took {stopped:.3f} s")
            assert stopped < 3.0
        finally:
            HUNG_CLOUD_RELEASE.set()


def _write_record(identity: TaskIdentity, record: JobRecord) -> None:
    """Put a sealed record in the task state store, as the task's own try would."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_resumable.record import seal_record

    with create_session() as session:
        row = session.scalar(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == identity.dag_id,
                TaskStateStoreModel.run_id == identity.run_id,
                TaskStateStoreModel.task_id == identity.task_id,
                TaskStateStoreModel.map_index == identity.map_index,
                TaskStateStoreModel.key == RECORD_KEY,
            )
        )
        assert row is not None, "the try wrote a record"
        row.value = json.dumps(seal_record(identity, record))


class TestTheLedgerIsAHint:
    """Nothing a Variable editor writes makes the custodian cancel (docs/security.md)."""

    def test_a_hand_written_entry_is_ignored(self) -> None:
        """An entry without a seal (0.2.0's shape, or typed by hand) is never acted on."""
        svc = service()
        job = item(svc)
        forged = {k: v for k, v in job.entry.items() if k != "seal"}
        assert _item(job.key, json.dumps(forged), _Log()) is None

    @pytest.mark.parametrize(
        "edit",
        [
            pytest.param(lambda e: e.update(external_id="victim-run"), id="another job id"),
            pytest.param(lambda e: e["cancel"]["args"].update(service="victim"), id="another connection"),
            pytest.param(lambda e: e["cancel"]["args"].update(retry_limit=10**9), id="huge retry arguments"),
            pytest.param(lambda e: e["task"].update(dag_id="forged_dag"), id="another task instance"),
            pytest.param(lambda e: e.update(seal=e["seal"][:-4] + "0000"), id="a changed seal"),
        ],
    )
    def test_an_edited_entry_is_ignored(self, edit: Any) -> None:
        """Any edit of a sealed entry's job, recipe, task or seal breaks the seal: ignored."""
        svc = service()
        job = item(svc)
        edited = json.loads(json.dumps(job.entry))
        edit(edited)
        assert _item(job.key, json.dumps(edited), _Log()) is None

    def test_a_sealed_entry_moved_to_another_key_is_ignored(self) -> None:
        """A genuine entry copied under another task instance's key does not verify there."""
        svc = service()
        job = item(svc)
        other = ledger_key(TaskIdentity("forged_dag", "forged_run", "job"))
        assert _item(other, json.dumps(job.entry), _Log()) is None
        assert _item(job.key, json.dumps(job.entry), _Log()) is not None

    def test_an_entry_sealed_with_another_key_is_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An entry sealed by another deployment (another [api] secret_key) is not believed here."""
        svc = service()
        job = item(svc)
        monkeypatch.setenv("AIRFLOW__RESUMABLE__SIGNING_KEY", "another-deployment-entirely")
        assert _item(job.key, json.dumps(job.entry), _Log()) is None

    def test_a_recipe_without_a_connection_is_refused_not_run_with_ambient_credentials(self) -> None:
        """aws_conn_id None in a (sealed) recipe: refused at once, gave up, nothing called."""
        from airflow_resumable.providers.amazon._cancel import cancel_batch_job

        with pytest.raises(RecipeRefusedError):
            cancel_batch_job("job-1", aws_conn_id=None, region_name="us-east-1")


class TestActOnThePresent:
    """The custodian acts on what the database says now, never on a stale view."""

    def test_a_newer_generation_in_the_store_wins_over_the_entry(self) -> None:
        """The task's record names another generation: the entry is stale, nothing is cancelled."""
        svc = service()
        newer = JobRecord.new_intent(IDENTITY, generation=2, fingerprint=None)
        ledger = Ledger({IDENTITY: "failed"}, stored=newer)
        ledger.run(item(svc))
        assert svc.cancels == [] and len(ledger.forgotten) == 1

    def test_a_finished_record_is_never_cancelled_or_rewritten(self) -> None:
        """A successful task whose ledger delete failed: its ended job is not 'cancelled'."""
        svc = service()
        job = item(svc)
        ledger = Ledger({IDENTITY: "success"}, stored=job.record.evolve(phase="completed"))
        ledger.run(job)
        assert svc.cancels == [] and ledger.marked == [] and ledger.forgotten == [job.key]

    def test_a_confirmed_stop_cancels_although_the_task_was_cleared(self) -> None:
        """Mark failed then clear: the stopped try's job is cancelled, even with the task queued again."""
        svc = service()
        job = item(svc)
        ledger = Ledger({IDENTITY: "queued"}, stored=job.record)
        assert ledger.run(job).left, "without the hook's confirmation a cleared task keeps its job"
        ledger.run(job, confirmed=frozenset({job.key}))
        assert svc.cancels == [job.record.external_id]


class TestRegistration:
    def test_a_third_party_canceller_is_found_through_its_entry_point(self, tmp_path: Any) -> None:
        """A process that never imported the operator (the scheduler) finds its canceller by entry point."""
        import os
        import subprocess
        import sys

        (tmp_path / "athena_provider.py").write_text(
            "import pathlib\n"
            "def cancel_query(external_id, *, conn_id, out):\n"
            "    pathlib.Path(out).write_text(f'{external_id} via {conn_id}')\n"
        )
        dist = tmp_path / "athena_provider-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: athena-provider\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            "[airflow_resumable.cancellers]\nathena_query = athena_provider:cancel_query\n"
        )
        out = tmp_path / "cancelled.txt"
        script = (
            "from airflow_resumable.custodian import run_canceller\n"
            f"run_canceller(('athena_query', {{'conn_id': 'aws_athena', 'out': {str(out)!r}}}), 'q-1')\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120, capture_output=True)
        assert out.read_text() == "q-1 via aws_athena"

    def test_the_toy_canceller_is_not_built_in(self) -> None:
        """The toy service's canceller is registered by the tests, never in production."""
        from airflow_resumable.custodian import CANCELLERS

        assert all("testing" not in path for path in CANCELLERS.values() if path != CANCELLERS.get("toy_job"))
        import importlib

        import airflow_resumable.custodian as module

        fresh = importlib.reload(module)
        try:
            assert "toy_job" not in fresh.CANCELLERS
        finally:
            fresh.register_canceller("toy_job", "airflow_resumable.testing.toy:cancel_toy_job_by_recipe")


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

    @pytest.mark.parametrize(
        ("state", "acts"), [("up_for_retry", False), ("failed", True), ("success", True)]
    )
    def test_only_a_stop_reaches_the_custodian(
        self, state: str, acts: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed try that will be retried is not a stop: no thread, no database polling for it."""
        from types import SimpleNamespace

        from airflow_resumable import plugin

        class Recorder:
            def __init__(self) -> None:
                self.calls: list[dict[TaskIdentity, str | None]] = []

            def soon(self, tries: dict[TaskIdentity, str | None]) -> None:
                self.calls.append(tries)

        monkeypatch.setattr(plugin, "_in_server", lambda *args: True)  # as in the API server
        listener, recorder = plugin.CustodianListener(), Recorder()
        listener._custodian = recorder
        ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, state=state, id="0192")
        listener.on_task_instance_failed(None, ti, "boom")
        assert bool(recorder.calls) is acts

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
