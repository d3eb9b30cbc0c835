"""One meaning for a clear, on the mixin's engine: spec changes, the ledger, a wiped task state store."""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs
from tenacity import wait_none

from airflow_resumable.exceptions import StateStoreUnavailableError
from airflow_resumable.ledger import LEDGER_KEY_PREFIX, ledger_entry, ledger_key
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity, seal_record
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.state import InMemoryJobLedger, InMemoryTaskStateStore, make_context
from airflow_resumable.testing.toy import ToyJobOperator, ToyJobService, ToyTaggedJobOperator, toy_service

FAST = RetryPolicy(attempts=2, wait=wait_none())
IDENTITY = TaskIdentity("dag", "manual__1", "task")


def service(*, deduplicates: bool = True) -> ToyJobService:
    return toy_service(f"clear-{uuid.uuid4().hex[:6]}", deduplicates=deduplicates)


def operator(
    svc: ToyJobService, command: str = "v1", cls: type = ToyJobOperator, **kwargs: object
) -> ToyJobOperator:
    op: ToyJobOperator = cls(
        task_id="task",
        service=svc.name,
        command=command,
        poll_interval=0,
        cloud_retry=FAST,
        state_store_retry=FAST,
        **kwargs,
    )
    return op


def running_job(svc: ToyJobService, store: InMemoryTaskStateStore, ledger: InMemoryJobLedger) -> str:
    """A first try that submitted a job and then died while it ran (the record says ``submitted``)."""
    svc.complete_after_polls = None
    op = operator(svc)

    def crash(job_id: str) -> str:
        raise RuntimeError("worker died while polling")

    real_status = svc.status
    svc.status = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="worker died"):
        op.execute(make_context(store, ledger=ledger, max_tries=3))
    svc.status = real_status  # type: ignore[method-assign]
    svc.complete_after_polls = 2  # the next try's decision sees it running; its poll, succeeded
    return svc.submissions[0]


class TestStoppedThenCleared:
    """A user stopped the try that owned the job, then cleared the task before the custodian's cancel."""

    def test_the_new_try_cancels_the_stopped_job_and_runs_a_fresh_one(self) -> None:
        """The record says stop_requested: the old job is cancelled, one new job runs, none is reconnected."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        old = running_job(svc, store, ledger)
        identity = TaskIdentity("dag", "manual__1", "task")
        stopped = JobRecord.from_json(store.get(RECORD_KEY)).evolve(stop_requested={"by": "custodian"})
        store.set(RECORD_KEY, seal_record(identity, stopped))
        result = operator(svc).execute(make_context(store, ledger=ledger, try_number=2, max_tries=3))
        assert svc.cancels == [old] and len(svc.submissions) == 2
        assert result["job_id"] == svc.submissions[1] != old
        record = JobRecord.from_json(store.get(RECORD_KEY))
        assert record.generation == 2 and record.stop_requested is None

    def test_cancel_on_user_stop_off_leaves_the_stopped_job(self) -> None:
        """With cancel_on_user_stop=False the stopped job keeps running; the fresh job runs anyway."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        running_job(svc, store, ledger)
        identity = TaskIdentity("dag", "manual__1", "task")
        stopped = JobRecord.from_json(store.get(RECORD_KEY)).evolve(stop_requested={"by": "custodian"})
        store.set(RECORD_KEY, seal_record(identity, stopped))
        op = operator(svc, cancel_on_user_stop=False)
        op.execute(make_context(store, ledger=ledger, try_number=2, max_tries=3))
        assert svc.cancels == [] and len(svc.submissions) == 2


class TestSpecChangedOnClear:
    def test_running_old_job_is_cancelled_before_the_new_spec_is_submitted(self) -> None:
        """The user fixed the spec and cleared: the old job is cancelled, then one new job runs."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        old = running_job(svc, store, ledger)
        cancelled_before_submit: list[bool] = []
        real_submit = svc.submit

        def spy(command: str, token: str | None) -> str:
            cancelled_before_submit.append(old in svc.cancels)
            return real_submit(command, token)

        svc.submit = spy  # type: ignore[method-assign]
        result = operator(svc, command="v2").execute(make_context(store, ledger=ledger, try_number=2))
        assert svc.cancels == [old] and cancelled_before_submit == [True]
        assert len(svc.submissions) == 2 and result["job_id"] == svc.submissions[1]
        assert JobRecord.from_json(store.get(RECORD_KEY)).generation == 2

    def test_switched_off_leaves_the_old_job_running(self) -> None:
        """cancel_on_spec_change=False submits the new spec and leaves the old job alone."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        running_job(svc, store, ledger)
        operator(svc, command="v2", cancel_on_spec_change=False).execute(
            make_context(store, ledger=ledger, try_number=2)
        )
        assert svc.cancels == [] and len(svc.submissions) == 2

    def test_a_failed_cancel_does_not_block_the_new_spec(self) -> None:
        """The old job's cancel fails: said loudly, naming the job, and the new spec still runs."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        old = running_job(svc, store, ledger)
        svc.fail_next("cancel", times=5)
        with capture_logs() as logs:
            operator(svc, command="v2").execute(make_context(store, ledger=ledger, try_number=2))
        assert svc.cancels == [] and len(svc.submissions) == 2
        loud = [e for e in logs if e["log_level"] == "error" and "COULD NOT CANCEL" in e["event"]]
        assert loud and loud[0]["external_id"] == old
        failed = JobRecord.from_json(store.get(RECORD_KEY)).cancel_failed
        assert failed is not None and failed["external_id"] == old  # the page flags the old job

    def test_unchanged_spec_is_reconnected(self) -> None:
        """The same spec after a clear: the running job is reconnected, nothing cancelled."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        old = running_job(svc, store, ledger)
        result = operator(svc).execute(make_context(store, ledger=ledger, try_number=2))
        assert result["job_id"] == old and svc.cancels == [] and len(svc.submissions) == 1


class TestLedger:
    def test_entry_lives_exactly_while_the_job_may_run(self) -> None:
        """Written with the intent, updated with the id, deleted once the task has the result."""
        svc, ledger = service(), InMemoryJobLedger()
        svc.complete_after_polls = 1
        seen: list[object] = []
        real_submit = svc.submit

        def spy(command: str, token: str | None) -> str:
            seen.append(ledger.get(ledger_key(IDENTITY)))
            return real_submit(command, token)

        svc.submit = spy  # type: ignore[method-assign]
        operator(svc).execute(make_context(ledger=ledger))
        intent = seen[0]
        assert isinstance(intent, dict) and intent["phase"] == "intent"
        assert intent["task"] == {"dag_id": "dag", "run_id": "manual__1", "task_id": "task", "map_index": -1}
        assert ledger.values == {}

    def test_entry_holds_ids_tokens_and_hashes_only(self) -> None:
        """The ledger copy carries the record's fields and the task's identity, never the spec."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        job = running_job(svc, store, ledger)
        (key, raw), *rest = ledger.values.items()
        assert rest == [] and key.startswith(LEDGER_KEY_PREFIX)
        assert job in raw and "echo" not in raw and "v1" not in raw

    def test_entry_is_deleted_when_the_job_fails(self) -> None:
        """A job that failed leaves nothing in flight: the entry goes."""
        svc, ledger = service(), InMemoryJobLedger()
        svc.complete_after_polls = None
        op = operator(svc)
        real_status = svc.status

        def fail_it(job_id: str) -> str:
            svc.finish(job_id, succeeded=False)
            return real_status(job_id)

        svc.status = fail_it  # type: ignore[method-assign]
        with pytest.raises(Exception, match="FAILED"):
            op.execute(make_context(ledger=ledger))
        assert ledger.values == {}

    def test_an_ending_try_leaves_a_newer_tries_entry_alone(self) -> None:
        """Mark failed then clear: the marked try, ending, must not delete the new try's entry."""
        svc, ledger = service(), InMemoryJobLedger()
        svc.complete_after_polls = None
        op = operator(svc)
        real_status = svc.status
        identity = TaskIdentity("dag", "manual__1", "task")
        newer = JobRecord.new_intent(identity, generation=2, fingerprint=None)

        def cancelled_and_replaced(job_id: str) -> str:
            svc.finish(job_id, succeeded=False)  # the custodian cancelled the marked try's job
            ledger.set(ledger_key(identity), ledger_entry(identity, newer))  # the new try's intent
            return real_status(job_id)

        svc.status = cancelled_and_replaced  # type: ignore[method-assign]
        with pytest.raises(Exception, match="FAILED"):
            op.execute(make_context(ledger=ledger))
        assert JobRecord.from_json(ledger.get(ledger_key(identity))).token == newer.token

    def test_keep_ledger_off_writes_nothing(self) -> None:
        """keep_ledger=False: no Variable is ever written or read."""
        svc, ledger = service(), InMemoryJobLedger()
        svc.complete_after_polls = 1
        ledger.fail_reads = 100  # a read would fail the try
        operator(svc, keep_ledger=False).execute(make_context(ledger=ledger))
        assert ledger.values == {} and ledger.fail_reads == 100


class TestWipedStateStore:
    def test_running_job_is_reconnected_after_the_store_was_wiped(self) -> None:
        """A clear deleted every state row (apache/airflow#72100): the ledger finds the job."""
        svc, store, ledger = service(), InMemoryTaskStateStore(), InMemoryJobLedger()
        old = running_job(svc, store, ledger)
        store.clear()
        result = operator(svc).execute(make_context(store, ledger=ledger, try_number=2))
        assert result["job_id"] == old and len(svc.submissions) == 1 and svc.cancels == []

    def test_intent_without_id_is_found_by_its_token(self) -> None:
        """Wiped between submit and persist, on a service without tokens: find_job adopts the job."""
        svc, store, ledger = service(deduplicates=False), InMemoryTaskStateStore(), InMemoryJobLedger()
        svc.complete_after_polls = 1
        record = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None)
        from airflow_resumable.ledger import ledger_entry

        ledger.set(ledger_key(IDENTITY), ledger_entry(IDENTITY, record))
        job = svc.submit("v1", record.token)
        result = operator(svc, cls=ToyTaggedJobOperator).execute(make_context(store, ledger=ledger))
        assert result["job_id"] == job and svc.submissions == [job]

    def test_unreadable_ledger_submits_nothing(self) -> None:
        """The store is empty and the ledger cannot be read: fail the try rather than risk a duplicate."""
        svc, ledger = service(), InMemoryJobLedger()
        ledger.fail_reads = 10
        with pytest.raises(StateStoreUnavailableError, match="could not be read"):
            operator(svc).execute(make_context(ledger=ledger))
        assert svc.submissions == []

    def test_entry_of_another_task_instance_is_ignored(self) -> None:
        """An entry whose identity is not this task instance's is not adopted."""
        svc, ledger = service(), InMemoryJobLedger()
        svc.complete_after_polls = 1
        other = TaskIdentity("dag", "manual__2", "task")
        from airflow_resumable.ledger import ledger_entry

        stranger = JobRecord.new_intent(other, generation=1, fingerprint=None).evolve(
            external_id="someone-else", phase="submitted"
        )
        ledger.set(ledger_key(IDENTITY), ledger_entry(other, stranger))
        result = operator(svc).execute(make_context(ledger=ledger))
        assert result["job_id"] == svc.submissions[0] != "someone-else"
