"""ResumableDatabricksNotebookOperator against the fake Jobs API: parity, tokens, states, errors, deferral."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.databricks.operators.databricks import (
    DatabricksJobRunLink,
    DatabricksNotebookOperator,
)
from airflow.providers.databricks.operators.databricks_workflow import DatabricksWorkflowTaskGroup
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError
from airflow_resumable.ledger import LEDGER_KEY_PREFIX
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.providers.databricks.notebook import ResumableDatabricksNotebookOperator
from airflow_resumable.providers.databricks.triggers import ResumableDatabricksExecutionTrigger
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity, seal_record
from airflow_resumable.testing.contract import ResumableOperatorContract
from airflow_resumable.testing.databricks import FakeDatabricks, databricks_connection_env
from airflow_resumable.testing.state import InMemoryTaskStateStore
from tests.providers.databricks.helpers import (
    CLOUD_RETRY,
    HOOK_RETRY_ARGS,
    FakeDatabricksDriver,
    finish_on_status_call,
    finish_when_the_trigger_waits,
    task_context,
)
from tests.providers.databricks.test_contract import XComParity

A_DAY_AGO = (datetime.now(tz=timezone.utc) - timedelta(days=1)).isoformat(timespec="seconds")

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger
    from pydantic import JsonValue

    from airflow_resumable.testing.databricks import LedgerEntry

Op = ResumableDatabricksNotebookOperator
#: What the stock operator needs: a notebook and a cluster.
NOTEBOOK: dict[str, Any] = {
    "notebook_path": "/Shared/etl",
    "source": "WORKSPACE",
    "existing_cluster_id": "0101-fake",
    "notebook_params": {"day": "1"},
}
STOCK_FAST: dict[str, Any] = {"polling_period_seconds": 0, "databricks_retry_args": HOOK_RETRY_ARGS}
FAST: dict[str, Any] = {**STOCK_FAST, "cloud_retry": CLOUD_RETRY, "state_store_retry": CLOUD_RETRY}
# Trigger arguments cross a serialisation boundary: no tenacity objects in databricks_retry_args.
DEFERRABLE: dict[str, Any] = {
    "deferrable": True,
    "polling_period_seconds": 0,
    "databricks_retry_limit": 1,
    "cloud_retry": CLOUD_RETRY,
    "state_store_retry": CLOUD_RETRY,
}


def notebook(**kwargs: Any) -> ResumableDatabricksNotebookOperator:
    return Op(task_id="job", **{**NOTEBOOK, **FAST, **kwargs})


def deferred(**kwargs: Any) -> ResumableDatabricksNotebookOperator:
    return Op(task_id="job", **{**NOTEBOOK, **DEFERRABLE, **kwargs})


def stock(**kwargs: Any) -> DatabricksNotebookOperator:
    return DatabricksNotebookOperator(task_id="job", **{**NOTEBOOK, **STOCK_FAST, **kwargs})


def record_of(context: dict[str, Any]) -> dict[str, Any]:
    return dict(context["task_state_store"].get(RECORD_KEY))


def submits(fake: FakeDatabricks) -> list[LedgerEntry]:
    """Every runs/submit call the fake received, replays and lost answers included."""
    return fake.calls("runs/submit")


def submitted_run(fake: FakeDatabricks) -> int:
    """The id of the only run the fake created."""
    (entry,) = fake.submissions()
    assert entry.run_id is not None
    return entry.run_id


def submit_directly(fake: FakeDatabricks, **body: Any) -> int:
    """A notebook run created without any operator (as an earlier try's request would)."""
    request = {"run_name": "etl", "notebook_task": {"notebook_path": "/x"}, **body}
    return int(fake.state.handle_api("POST", "2.2/jobs/runs/submit", request)[1]["run_id"])


class TestDropIn:
    """The class swap: same base class, arguments, template fields and link as the stock operator."""

    def test_class_shape(self) -> None:
        """Our mixin precedes the stock class; stock template fields and link are kept."""
        mro = Op.__mro__
        assert mro.index(ResumableJobMixin) < mro.index(DatabricksNotebookOperator)
        assert Op.external_id_key == "databricks_run_id"
        assert Op.submission_is_idempotent is True and Op.service_name == "Databricks"
        assert Op.template_fields == DatabricksNotebookOperator.template_fields
        assert [type(link) for link in notebook().operator_extra_links] == [DatabricksJobRunLink]
        for name in ("on_kill", "execute", "execute_complete"):
            assert getattr(Op, name) is not getattr(DatabricksNotebookOperator, name)

    def test_takes_every_stock_argument(self) -> None:
        """Every argument of the stock constructor is accepted, plus the resumable ones."""
        stock_args = {
            name: param.default
            for name, param in inspect.signature(DatabricksNotebookOperator.__init__).parameters.items()
            if param.default is not inspect.Parameter.empty
        }
        op = Op(
            task_id="t",
            notebook_path="/x",
            source="WORKSPACE",
            **stock_args,
            max_resumes=1,
            cancel_on_user_stop=False,
        )
        assert op.max_resumes == 1 and op.cancel_on_user_stop is False

    def test_run_id_is_the_stock_attribute(self) -> None:
        """The shared half's run_id and the stock databricks_run_id are one value."""
        op = notebook()
        op.run_id = 42
        assert op.databricks_run_id == 42
        op.databricks_run_id = 7
        assert op.run_id == 7

    def test_polling_period_paces_the_resumable_poll(self) -> None:
        """polling_period_seconds is the mixin's poll interval."""
        assert notebook(polling_period_seconds=7).resumable_poll_interval == 7.0


class TestStockParity:
    """The same request, return value and XComs as the stock operator, on each shape of run."""

    @pytest.mark.parametrize(
        "args",
        [
            {},
            {"max_retries": 2, "retry_on_timeout": "true"},
            {"new_cluster": {"spark_version": "15.4"}, "existing_cluster_id": ""},
        ],
        ids=["single-task", "native-retries", "new-cluster"],
    )
    def test_same_request_as_stock(self, fake: FakeDatabricks, args: dict[str, Any]) -> None:
        """runs/submit gets the stock body, plus only our idempotency_token."""
        fake.set_lifecycle("clock", run_duration=0)
        stock(**args).execute(task_context())
        context = task_context()
        assert notebook(**args).execute(context) is None
        theirs, ours = (entry.body for entry in submits(fake))
        assert ours.pop("idempotency_token") == record_of(context)["token"]
        assert ours == theirs

    @pytest.mark.parametrize("wait", [True, False], ids=["wait", "no-wait"])
    def test_same_xcoms_as_stock(self, fake: FakeDatabricks, wait: bool) -> None:
        """run_id and run_page_url of the submitted run, nothing else, with or without waiting."""
        fake.set_lifecycle("clock", run_duration=0)
        theirs, ours = task_context(), task_context()
        stock(wait_for_termination=wait).execute(theirs)
        notebook(wait_for_termination=wait).execute(ours)
        for context, entry in zip((theirs, ours), fake.submissions(), strict=True):
            url = fake.get_run(int(str(entry.run_id)))["run_page_url"]
            assert context["ti"].xcoms == {"run_id": entry.run_id, "run_page_url": url}

    def test_no_xcoms_without_do_xcom_push(self, fake: FakeDatabricks) -> None:
        """do_xcom_push=False pushes nothing, as in stock."""
        context = task_context()
        with finish_on_status_call(fake, Op):
            notebook(do_xcom_push=False).execute(context)
        assert context["ti"].xcoms == {}


class TestFreshSubmit:
    """A first try: one run, our token, nothing of the spec in the task state store."""

    def test_submit_sends_our_token(self, fake: FakeDatabricks) -> None:
        """runs/submit carries the record's token; the run id is recorded under the stock key too."""
        context = task_context()
        with finish_on_status_call(fake, Op):
            notebook().execute(context)
        record = record_of(context)
        run_id = submitted_run(fake)
        assert [entry.body["idempotency_token"] for entry in submits(fake)] == [record["token"]]
        assert record["external_id"] == run_id and record["phase"] == "completed"
        assert int(context["task_state_store"].get("databricks_run_id")) == run_id

    def test_spec_is_not_stored(self, fake: FakeDatabricks) -> None:
        """Only ids, tokens and hashes reach the task state store, never the notebook or its params."""
        context = task_context()
        with finish_on_status_call(fake, Op):
            notebook(notebook_params={"secret": "s3cr3t-value"}).execute(context)
        stored = str(context["task_state_store"].values)
        assert "s3cr3t-value" not in stored and "/Shared/etl" not in stored

    def test_on_kill_does_not_cancel(self, fake: FakeDatabricks) -> None:
        """on_kill (SIGTERM) only records the stop: no runs/cancel from the signal handler."""
        op = notebook()
        op.databricks_run_id = submit_directly(fake)
        op.on_kill()
        assert fake.calls("runs/cancel") == []


class TestStateMapping:
    """Every life cycle and result state of the submitted run, as active / succeeded."""

    @pytest.mark.parametrize(
        ("life", "result", "active", "succeeded"),
        [
            ("PENDING", None, True, False),
            ("QUEUED", None, True, False),
            ("RUNNING", None, True, False),
            ("TERMINATING", None, True, False),
            ("BLOCKED", None, True, False),
            ("WAITING_FOR_RETRY", None, True, False),
            ("TERMINATED", "SUCCESS", False, True),
            ("TERMINATED", "SUCCESS_WITH_FAILURES", False, False),
            ("TERMINATED", "FAILED", False, False),
            ("TERMINATED", "TIMEDOUT", False, False),
            ("TERMINATED", "CANCELED", False, False),
            ("TERMINATED", "MAXIMUM_CONCURRENT_RUNS_REACHED", False, False),
            ("TERMINATED", "EXCLUDED", False, False),
            ("TERMINATED", "UPSTREAM_FAILED", False, False),
            ("TERMINATED", "UPSTREAM_CANCELED", False, False),
            ("TERMINATED", "DISABLED", False, False),
            ("SKIPPED", None, False, False),
            ("INTERNAL_ERROR", "FAILED", False, False),
        ],
    )
    def test_state(
        self, fake: FakeDatabricks, life: str, result: str | None, active: bool, succeeded: bool
    ) -> None:
        """runs/get's state maps onto the mixin's two questions."""
        run_id = submit_directly(fake)
        fake.set_run_state(run_id, life, result)
        op = notebook()
        status = op.get_job_status(run_id, task_context())
        assert status.startswith(f"{life}:")
        assert op.is_job_active(status) is active and op.is_job_succeeded(status) is succeeded


class TestExpiredRun:
    """A run the service forgot: JobNotFoundError, then a fresh generation."""

    @pytest.fixture(params=[404, 400], ids=["404", "400-does-not-exist"])
    def fake(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[FakeDatabricks]:
        """A fake that answers 404, or 400 INVALID_PARAMETER_VALUE, for a run it does not know."""
        with FakeDatabricks(missing_run_status=request.param) as server:
            for key, value in databricks_connection_env(server.url).items():
                monkeypatch.setenv(key, value)
            yield server

    def test_get_job_status_raises_job_not_found(self, fake: FakeDatabricks) -> None:
        """The status hook turns "does not exist" into JobNotFoundError, never a pseudo-state."""
        run_id = submit_directly(fake)
        fake.expire_run(run_id)
        with pytest.raises(JobNotFoundError, match=f"Databricks run {run_id}"):
            notebook().get_job_status(run_id, task_context())

    def test_expired_run_starts_generation_two(self, fake: FakeDatabricks) -> None:
        """A recorded run that expired is replaced by one new run under the next generation."""
        old = submit_directly(fake)
        fake.expire_run(old)
        store = InMemoryTaskStateStore()
        identity = TaskIdentity("dag", "manual__1", "job")
        intent = JobRecord.new_intent(identity, generation=1, fingerprint=None)
        # A day old: expired, not just not visible yet (a young run would be waited for).
        submitted = intent.evolve(external_id=old, phase="submitted", created_at=A_DAY_AGO)
        store.set(RECORD_KEY, seal_record(identity, submitted))
        context = task_context(store, try_number=2)
        with finish_on_status_call(fake, Op, call=2):
            notebook().execute(context)
        record = record_of(context)
        assert record["generation"] == 2 and record["external_id"] not in (old, None)
        assert len(fake.submissions()) == 2


class TestCrashBeforePersist:
    """A crash after runs/submit was accepted and before the run id was stored: no duplicate."""

    def test_retry_resubmits_the_token_and_databricks_dedups(self, fake: FakeDatabricks) -> None:
        """Two runs/submit calls with one token, one run; the retry records and waits on it."""
        store = InMemoryTaskStateStore()
        real_send = Op._send

        def send_then_die(op: Op, payload: dict[str, Any]) -> int:
            real_send(op, payload)
            raise RuntimeError("worker died after Databricks accepted the run")

        with mock.patch.object(Op, "_send", send_then_die), pytest.raises(RuntimeError):
            notebook().execute(task_context(store, try_number=1, max_tries=2))
        assert JobRecord.from_json(store.get(RECORD_KEY)).phase == "intent"
        retry = task_context(store, try_number=2, max_tries=2)
        with finish_on_status_call(fake, Op):
            notebook().execute(retry)
        calls = submits(fake)
        assert len(calls) == 2 and len({entry.body["idempotency_token"] for entry in calls}) == 1
        assert [entry.created for entry in calls] == [True, False]
        assert record_of(retry)["external_id"] == submitted_run(fake)


class TestTransientErrors:
    """Lost answers and throttling: still one run, and the try does not fail."""

    def test_lost_submit_response_creates_one_run(self, fake: FakeDatabricks) -> None:
        """runs/submit carried out three times but every answer lost: one run, one token."""
        fake.inject_fault("runs/submit", 500, count=3, after_handling=True)
        context = task_context()
        with finish_on_status_call(fake, Op):
            notebook().execute(context)
        assert len(submits(fake)) == 4 and len({e.body["idempotency_token"] for e in submits(fake)}) == 1
        assert record_of(context)["external_id"] == submitted_run(fake)

    def test_throttled_submit_and_status_reads(self, fake: FakeDatabricks) -> None:
        """429 on runs/submit and on runs/get: one run, the same try finishes in generation 1."""
        fake.inject_fault("runs/submit", 429, count=2)
        fake.inject_fault("runs/get", 429, count=2)
        context = task_context()
        with finish_on_status_call(fake, Op, call=2):
            notebook().execute(context)
        assert len(fake.submissions()) == 1 and len(submits(fake)) == 3
        record = record_of(context)
        assert record["generation"] == 1 and record["phase"] == "completed"


class TestFailure:
    """A notebook run that ends without success."""

    def test_failure_message_carries_the_reason(self, fake: FakeDatabricks) -> None:
        """JobFailedError names the run, its state, its message, the notebook's error and its page."""
        run_id = submit_directly(fake)
        fake.finish_run(run_id, "FAILED", "Notebook failed", error="ZeroDivisionError: division by zero")
        with pytest.raises(JobFailedError) as failed:
            notebook().poll_until_complete(run_id, task_context())
        text = str(failed.value)
        assert f"Databricks job {run_id}" in text and "TERMINATED:FAILED" in text
        assert "Notebook failed" in text and "ZeroDivisionError: division by zero" in text
        assert fake.get_run(run_id)["run_page_url"] in text

    def test_failed_run_fails_the_try_and_the_retry_submits_fresh(self, fake: FakeDatabricks) -> None:
        """A failed run fails the try with its error; the next try submits generation 2."""
        store = InMemoryTaskStateStore()
        with (
            finish_on_status_call(fake, Op, result="FAILED", message="boom"),
            pytest.raises(JobFailedError, match="boom"),
        ):
            notebook().execute(task_context(store, try_number=1, max_tries=2))
        retry = task_context(store, try_number=2, max_tries=2)
        with finish_on_status_call(fake, Op, call=2):  # call 1: the decision reads the failed run
            notebook().execute(retry)
        runs = [entry.run_id for entry in fake.submissions()]
        assert len(runs) == 2 and runs[0] != runs[1]
        assert record_of(retry)["generation"] == 2


class TestWaitForTermination:
    """wait_for_termination=False ends the try once the run exists, as in stock."""

    def test_returns_without_waiting_and_never_cancels(self, fake: FakeDatabricks) -> None:
        """The run keeps running, the XComs are pushed, the record is completed."""
        context = task_context()
        assert notebook(wait_for_termination=False).execute(context) is None
        run_id = submitted_run(fake)
        assert fake.get_run(run_id)["state"]["life_cycle_state"] in ("PENDING", "RUNNING")
        assert fake.calls("runs/cancel") == [] and context["ti"].xcoms["run_id"] == run_id
        assert record_of(context)["phase"] == "completed"


class TestInvalidArguments:
    """A spec that cannot run fails before any Databricks call, naming the argument."""

    @pytest.mark.parametrize(
        ("args", "argument"),
        [
            ({"notebook_path": ""}, "notebook_path"),
            ({"source": "workspace"}, "source"),
            ({"notebook_params": "day=1"}, "notebook_params"),
            ({"notebook_params": {"when": object()}}, "notebook_params"),
            ({"notebook_packages": ["numpy"]}, "notebook_packages"),
            ({"new_cluster": {"spark_version": "15.4"}}, "new_cluster/existing_cluster_id"),
            ({"existing_cluster_id": "", "job_cluster_key": "shared"}, "new_cluster/existing_cluster_id"),
            ({"max_retries": "three"}, "max_retries"),
            ({"min_retry_interval_millis": -5}, "min_retry_interval_millis"),
            ({"retry_on_timeout": 3}, "retry_on_timeout"),
            ({"execution_timeout": timedelta(milliseconds=500)}, "execution_timeout"),
            ({"deferrable": True}, "databricks_retry_args"),  # tenacity objects cannot reach a trigger
        ],
    )
    def test_rejected_before_any_call(
        self, fake: FakeDatabricks, args: dict[str, Any], argument: str
    ) -> None:
        """InvalidJobSpecError naming the argument; the fake saw nothing; nothing was recorded."""
        context = task_context()
        with pytest.raises(InvalidJobSpecError, match=f"argument {argument} "):
            notebook(**args).execute(context)
        assert fake.ledger() == []
        assert context["task_state_store"].values == {}

    def test_job_cluster_key_hint(self, fake: FakeDatabricks) -> None:
        """A standalone task with only job_cluster_key is told where that key applies."""
        with pytest.raises(InvalidJobSpecError, match="only applies inside a DatabricksWorkflowTaskGroup"):
            notebook(existing_cluster_id="", job_cluster_key="shared").execute(task_context())


class TestDeferrable:
    """deferrable=True: our trigger, recorded before deferring, and every way back."""

    @staticmethod
    def defer(op: Op, context: dict[str, Any]) -> DatabricksExecutionTrigger:
        """Run ``execute`` until it defers; return the trigger."""
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        assert deferred.value.method_name == "execute_complete"
        trigger = deferred.value.trigger
        assert isinstance(trigger, ResumableDatabricksExecutionTrigger)
        return trigger

    @staticmethod
    def event(trigger: DatabricksExecutionTrigger) -> dict[str, Any]:
        """Run the real trigger (async hook, over HTTP) to its first event."""

        async def first() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("the trigger ended without an event")

        return asyncio.run(first())

    def test_defers_with_our_trigger_after_recording(self, fake: FakeDatabricks) -> None:
        """At TaskDeferred the run is recorded; the trigger watches it; XComs as the stock (no job_id)."""
        context = task_context()
        trigger = self.defer(deferred(), context)
        run_id = submitted_run(fake)
        record = record_of(context)
        assert record["phase"] == "submitted" and record["external_id"] == run_id
        assert trigger.run_id == run_id and trigger.run_page_url == context["ti"].xcoms["run_page_url"]
        assert set(context["ti"].xcoms) == {"run_id", "run_page_url"}

    def test_trigger_serializes_to_our_class(self, fake: FakeDatabricks) -> None:
        """The triggerer rebuilds our trigger class, with the operator's stop switch and ledger key."""
        trigger = self.defer(deferred(cancel_on_user_stop=False), task_context())
        classpath, kwargs = trigger.serialize()
        assert classpath == (
            "airflow_resumable.providers.databricks.triggers.ResumableDatabricksExecutionTrigger"
        )
        assert ResumableDatabricksExecutionTrigger(**kwargs).serialize() == (classpath, kwargs)
        assert kwargs["cancel_on_user_stop"] is False and kwargs["ledger_key"].startswith(LEDGER_KEY_PREFIX)
        assert kwargs["caller"] == "ResumableDatabricksNotebookOperator"

    def test_execute_complete_finishes(self, fake: FakeDatabricks) -> None:
        """The success event ends the try through the engine: None, record completed, XComs pushed."""
        context = task_context()
        trigger = self.defer(deferred(), context)
        fake.finish_run(trigger.run_id)
        resumed = task_context(context["task_state_store"])
        assert deferred().execute_complete(resumed, self.event(trigger)) is None
        assert record_of(resumed)["phase"] == "completed"
        assert resumed["ti"].xcoms["run_id"] == trigger.run_id and len(fake.submissions()) == 1

    def test_failure_event_fails_with_the_reason(self, fake: FakeDatabricks) -> None:
        """A failed run's event fails the try with the notebook's error."""
        context = task_context()
        trigger = self.defer(deferred(), context)
        fake.finish_run(trigger.run_id, "FAILED", "boom", error="ZeroDivisionError")
        with pytest.raises(JobFailedError, match="ZeroDivisionError"):
            deferred().execute_complete(task_context(context["task_state_store"]), self.event(trigger))

    def test_retry_after_lost_trigger_defers_to_the_same_run(self, fake: FakeDatabricks) -> None:
        """A new try (the trigger was lost) reconnects and defers again: no new run."""
        store = InMemoryTaskStateStore()
        first = self.defer(deferred(), task_context(store, try_number=1))
        second = self.defer(deferred(), task_context(store, try_number=2))
        assert second.run_id == first.run_id and len(fake.submissions()) == 1

    def test_deferred_run_in_a_real_dag_run(self, fake: FakeDatabricks) -> None:
        """Through dag.test(): the task defers, the trigger sees the run end, the record completes."""
        from airflow.sdk import DAG

        from airflow_resumable.testing.airflow_env import read_task_state, run_dag

        with DAG(f"deferrable_notebook_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            deferred(polling_period_seconds=0.05, retries=1, retry_delay=timedelta(0))
        resumed = mock.patch.object(Op, "execute_complete", autospec=True, side_effect=Op.execute_complete)
        with resumed as execute_complete, finish_when_the_trigger_waits(fake):
            outcome = run_dag(dag)
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert execute_complete.call_count == 1, "the task must have deferred and resumed"
        record = read_task_state(outcome.dag_id, outcome.run_id, "job", RECORD_KEY)
        assert record["phase"] == "completed" and record["external_id"] == submitted_run(fake)


class TestInWorkflowTaskGroup:
    """Inside a DatabricksWorkflowTaskGroup the class is the stock operator: it submits nothing."""

    @staticmethod
    def member(fake: FakeDatabricks) -> tuple[Op, int]:
        """A notebook task of a workflow group, and the workflow run (run-now) it belongs to."""
        from airflow.sdk import DAG

        with (
            DAG("workflow_dag", schedule=None),
            DatabricksWorkflowTaskGroup(group_id="workflow", databricks_conn_id="databricks_default"),
        ):
            op = Op(task_id="nb", notebook_path="/x", source="WORKSPACE", job_cluster_key="shared", **FAST)
        job_id = fake.create_job("workflow", {"tasks": [{"task_key": op.databricks_task_key}]})
        run_id = int(fake.state.handle_api("POST", "2.2/jobs/run-now", {"job_id": job_id})[1]["run_id"])
        op.workflow_run_metadata = {"conn_id": "databricks_default", "job_id": job_id, "run_id": run_id}
        return op, run_id

    def test_execute_is_the_stock_one(self, fake: FakeDatabricks) -> None:
        """The workflow task run is watched as in stock: no runs/submit, no record, a warning."""
        op, run_id = self.member(fake)
        fake.finish_run(run_id)
        context = task_context()
        with mock.patch.object(op.log, "warning") as warning:
            assert op.execute(context) is None
        assert "DatabricksWorkflowTaskGroup" in warning.call_args.args[0]
        assert fake.calls("runs/submit") == [] and context["task_state_store"].values == {}
        assert "databricks_job_run_link" in context["ti"].xcoms

    def test_on_kill_and_execute_complete_are_the_stock_ones(self, fake: FakeDatabricks) -> None:
        """on_kill cancels this task's run (stock); execute_complete judges the stock event."""
        op, run_id = self.member(fake)
        op.databricks_run_id = run_id
        op.on_kill()
        task_run_id = fake.get_run(run_id)["tasks"][0]["run_id"]
        assert [int(entry.body["run_id"]) for entry in fake.cancels()] == [task_run_id]
        failed = {"run_state": '{"life_cycle_state": "TERMINATED", "result_state": "FAILED"}', "errors": []}
        with pytest.raises(AirflowException, match="Task failed") as error:
            op.execute_complete(task_context(), failed)
        assert not isinstance(error.value, JobFailedError)


class TestResumableDatabricksNotebookOperatorContract(XComParity, ResumableOperatorContract):
    """runs/submit of a notebook with our idempotency token; the spec marker is a templated notebook param."""

    operator_class = ResumableDatabricksNotebookOperator
    deferrable_kwargs = {"deferrable": True, "databricks_retry_args": None, "polling_period_seconds": 0.05}

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """As submit-run's, but the stock notebook operator pushes no job_id when it defers."""
        return XComParity.stock_xcoms(self, cloud, external_id)

    @pytest.fixture
    def cloud(self, fake: FakeDatabricks) -> FakeDatabricksDriver:
        return FakeDatabricksDriver(fake)

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {
            "notebook_path": "/Shared/etl",
            "source": "WORKSPACE",
            "existing_cluster_id": "0101-fake",
            "notebook_params": {"spec": spec_marker},
            "polling_period_seconds": 0.01,
            "databricks_retry_args": HOOK_RETRY_ARGS,
        }
