"""deferrable=True: the run id is recorded before deferring, and every way back from the triggerer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import JobFailedError
from airflow_resumable.ledger import LEDGER_KEY_PREFIX
from airflow_resumable.providers.databricks import (
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)
from airflow_resumable.providers.databricks.triggers import ResumableDatabricksExecutionTrigger
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryTaskStateStore
from tests.providers.databricks.helpers import CLOUD_RETRY, finish_when_the_trigger_waits, task_context

if TYPE_CHECKING:
    from airflow_resumable.testing.databricks import FakeDatabricks

# Trigger arguments cross a serialisation boundary: no tenacity objects in databricks_retry_args.
DEFERRABLE: dict[str, Any] = {
    "deferrable": True,
    "polling_period_seconds": 0,
    "databricks_retry_limit": 1,
    "cloud_retry": CLOUD_RETRY,
    "state_store_retry": CLOUD_RETRY,
}


def submit_run(**kwargs: Any) -> ResumableDatabricksSubmitRunOperator:
    return ResumableDatabricksSubmitRunOperator(
        task_id="job", **{"notebook_task": {"notebook_path": "/Shared/etl"}, **DEFERRABLE, **kwargs}
    )


def run_now(**kwargs: Any) -> ResumableDatabricksRunNowOperator:
    return ResumableDatabricksRunNowOperator(task_id="job", **{"job_name": "nightly", **DEFERRABLE, **kwargs})


def defer(op: Any, context: dict[str, Any]) -> DatabricksExecutionTrigger:
    """Run ``execute`` until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, DatabricksExecutionTrigger)
    return trigger


def trigger_event(trigger: DatabricksExecutionTrigger) -> dict[str, Any]:
    """Run the real trigger (async hook, over HTTP) to its first event."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


class TestDeferring:
    """The first try defers only once the run id is safe in the task state store."""

    def test_run_id_is_recorded_before_deferring(self, fake: FakeDatabricks) -> None:
        """At TaskDeferred the record holds the run (phase submitted) and the stock key mirrors it."""
        context = task_context()
        trigger = defer(submit_run(), context)
        (entry,) = fake.submissions()
        store = context["task_state_store"]
        record = store.get(RECORD_KEY)
        assert record["phase"] == "submitted" and record["external_id"] == entry.run_id
        assert store.get("databricks_run_id") == entry.run_id
        assert trigger.run_id == entry.run_id and trigger.run_page_url == context["ti"].xcoms["run_page_url"]
        assert entry.body["idempotency_token"] == record["token"]
        assert set(context["ti"].xcoms) == {"job_id", "run_id", "run_page_url"}

    def test_finished_run_is_not_deferred(self, fake: FakeDatabricks) -> None:
        """A run that already ended when checked finishes in the worker, as in stock."""
        fake.set_lifecycle("clock", run_duration=0, final_result="SUCCESS")
        context = task_context()
        assert submit_run().execute(context) is None
        assert context["task_state_store"].get(RECORD_KEY)["phase"] == "completed"


class TestResume:
    """Back from the triggerer: the event, a lost trigger, a failure."""

    def test_success_event_completes_the_record(self, fake: FakeDatabricks) -> None:
        """The trigger's success event ends the try through the engine: result None, record completed."""
        context = task_context()
        trigger = defer(submit_run(), context)
        fake.finish_run(trigger.run_id)
        resumed = task_context(context["task_state_store"])  # a fresh process after the deferral
        assert submit_run().execute_complete(resumed, trigger_event(trigger)) is None
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"
        assert resumed["ti"].xcoms["run_id"] == trigger.run_id
        assert len(fake.submissions()) == 1

    def test_retry_after_lost_trigger_defers_to_the_same_run(self, fake: FakeDatabricks) -> None:
        """A new try (the trigger was lost or timed out) reconnects and defers again: no new run."""
        store = InMemoryTaskStateStore()
        first = defer(submit_run(), task_context(store, try_number=1))
        second = defer(submit_run(), task_context(store, try_number=2))
        assert second.run_id == first.run_id
        assert len(fake.submissions()) == 1

    def test_failure_event_fails_and_the_retry_submits_fresh(self, fake: FakeDatabricks) -> None:
        """A failed run fails the try with its errors; the next try submits generation 2."""
        store = InMemoryTaskStateStore()
        trigger = defer(submit_run(), task_context(store, try_number=1))
        fake.finish_run(trigger.run_id, "FAILED", "boom", error="ZeroDivisionError")
        with pytest.raises(JobFailedError, match="ZeroDivisionError"):
            submit_run().execute_complete(task_context(store, try_number=1), trigger_event(trigger))
        retry = defer(submit_run(), task_context(store, try_number=2))
        assert retry.run_id != trigger.run_id
        assert store.get(RECORD_KEY)["generation"] == 2

    def test_event_for_a_run_active_again_defers_again(self, fake: FakeDatabricks) -> None:
        """If the run is active again (repaired) when the event arrives, the try defers once more."""
        store = InMemoryTaskStateStore()
        trigger = defer(submit_run(), task_context(store))
        fake.finish_run(trigger.run_id, "FAILED")
        event = trigger_event(trigger)
        fake.repair_run(trigger.run_id)
        again = defer_complete(submit_run(), task_context(store), event)
        assert again.run_id == trigger.run_id and len(fake.submissions()) == 1

    def test_not_durable_resume_submits_nothing(self, fake: FakeDatabricks) -> None:
        """durable=False: the event still ends the try on its run, without a record."""
        context = task_context()
        trigger = defer(submit_run(durable=False), context)
        fake.finish_run(trigger.run_id)
        assert submit_run(durable=False).execute_complete(task_context(), trigger_event(trigger)) is None
        assert len(fake.submissions()) == 1 and context["task_state_store"].values == {}


class TestTriggerOnKill:
    """A user's action while deferred: a clear leaves the run to the next try, a stop cancels it."""

    @staticmethod
    def kill(trigger: DatabricksExecutionTrigger, server_state: str | None, *, knows: bool = True) -> None:
        """Call ``on_kill`` as the triggerer does after a user action, the server holding ``server_state``."""
        ti = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state, server_knows=knows)
        trigger.task_instance = ti  # type: ignore[assignment]  # what the triggerer sets
        asyncio.run(trigger.on_kill())

    @pytest.mark.parametrize("state", [None, "scheduled", "queued", "running", "restarting"])
    def test_clear_leaves_the_run_to_the_next_try(self, fake: FakeDatabricks, state: str | None) -> None:
        """Cleared (or already picked up again): the run is not cancelled."""
        trigger = defer(submit_run(), task_context())
        self.kill(trigger, state)
        assert fake.cancels() == []

    @pytest.mark.parametrize("state", ["failed", "success", "skipped"])
    def test_user_stop_cancels_the_run(self, fake: FakeDatabricks, state: str) -> None:
        """Marked failed or success, or its DAG run failed: the run is cancelled."""
        trigger = defer(submit_run(), task_context())
        self.kill(trigger, state)
        assert [entry.run_id for entry in fake.cancels()] == [trigger.run_id]

    def test_deleted_dag_run_cancels_the_run(self, fake: FakeDatabricks) -> None:
        """The server no longer knows the task instance: the run is cancelled."""
        trigger = defer(submit_run(), task_context())
        self.kill(trigger, None, knows=False)
        assert len(fake.cancels()) == 1

    def test_switched_off_leaves_the_run(self, fake: FakeDatabricks) -> None:
        """cancel_on_user_stop=False travels with the trigger."""
        trigger = defer(submit_run(cancel_on_user_stop=False), task_context())
        self.kill(trigger, "failed")
        assert fake.cancels() == []

    def test_trigger_round_trips_through_serialisation(self, fake: FakeDatabricks) -> None:
        """The triggerer rebuilds the trigger from serialize(): our class and our arguments."""
        trigger = defer(submit_run(cancel_on_user_stop=False), task_context())
        classpath, kwargs = trigger.serialize()
        assert (
            classpath == "airflow_resumable.providers.databricks.triggers.ResumableDatabricksExecutionTrigger"
        )
        rebuilt = ResumableDatabricksExecutionTrigger(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs["cancel_on_user_stop"] is False and kwargs["ledger_key"].startswith(LEDGER_KEY_PREFIX)


class TestRunNowRepair:
    """repair_run while deferred: repair once, then defer with repair_run=False."""

    def test_failure_event_repairs_and_defers_again(self, fake: FakeDatabricks) -> None:
        """The trigger carries repair_run; on failure the run is repaired and the new trigger does not."""
        fake.create_job("nightly", {"tasks": [{"task_key": "etl", "notebook_task": {"notebook_path": "/x"}}]})
        store = InMemoryTaskStateStore()
        trigger = defer(run_now(repair_run=True), task_context(store))
        assert trigger.repair_run is True
        fake.finish_run(trigger.run_id, "FAILED", "flaky")
        again = defer_complete(run_now(repair_run=True), task_context(store), trigger_event(trigger))
        assert again.run_id == trigger.run_id and again.repair_run is False
        assert len(fake.calls("runs/repair")) == 1 and len(fake.submissions()) == 1


def defer_complete(op: Any, context: dict[str, Any], event: dict[str, Any]) -> DatabricksExecutionTrigger:
    """Run ``execute_complete`` until it defers again; return the new trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(context, event)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DatabricksExecutionTrigger)
    return trigger


class TestRealDagRun:
    """The whole deferral through dag.test(): task runner, triggerer loop, resume, task state store."""

    def test_deferred_run_succeeds_with_one_run(self, fake: FakeDatabricks) -> None:
        """The task defers, the trigger sees the run end, execute_complete finishes the record."""
        from airflow.sdk import DAG

        from airflow_resumable.testing.airflow_env import read_task_state, run_dag

        with DAG(f"deferrable_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            submit_run(polling_period_seconds=0.05, retries=1, retry_delay=timedelta(0))
        resumed = mock.patch.object(
            ResumableDatabricksSubmitRunOperator,
            "execute_complete",
            autospec=True,
            side_effect=ResumableDatabricksSubmitRunOperator.execute_complete,
        )
        with resumed as execute_complete, finish_when_the_trigger_waits(fake):
            outcome = run_dag(dag)
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert execute_complete.call_count == 1, "the task must have deferred and resumed"
        assert len(fake.submissions()) == 1
        record = read_task_state(outcome.dag_id, outcome.run_id, "job", RECORD_KEY)
        assert record["phase"] == "completed" and record["external_id"] == fake.submissions()[0].run_id
