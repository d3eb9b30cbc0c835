"""deferrable=True for the four AWS operators: the id recorded first, the real triggers, every way back."""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrContainerOperator,
    EmrServerlessStartJobOperator,
)
from airflow.providers.amazon.aws.triggers.batch import BatchJobTrigger
from airflow.providers.amazon.aws.triggers.emr import (
    EmrAddStepsTrigger,
    EmrContainerTrigger,
    EmrServerlessStartJobTrigger,
)
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import JobFailedError, ResumableError
from airflow_resumable.ledger import LEDGER_KEY_PREFIX, ledger_key
from airflow_resumable.providers.amazon import (
    ResumableBatchOperator,
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
)
from airflow_resumable.providers.amazon.triggers import (
    ResumableBatchJobTrigger,
    ResumableEmrAddStepsTrigger,
    ResumableEmrContainerTrigger,
    ResumableEmrServerlessStartJobTrigger,
)
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing.aws import (
    TEST_ROLE_ARN,
    MotoJobDriver,
    provision_batch,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
)
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from airflow_resumable.triggers import ResumableTriggerMixin
from tests.providers.amazon.helpers import FAST, record, run_task, task_context, xcoms

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
    from pydantic import JsonValue

    from airflow_resumable.testing.aws import MotoServer


def emr_steps(count: int, action: str = "CANCEL_AND_WAIT") -> list[dict[str, Any]]:
    """``count`` Spark steps."""
    return [
        {
            "Name": f"step-{index}",
            "ActionOnFailure": action,
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": ["spark-submit", f"s3://bucket/{index}.py"],
            },
        }
        for index in range(count)
    ]


def _batch(url: str) -> dict[str, Any]:
    resources = provision_batch(url)
    return {
        "job_name": "nightly-etl",
        "job_queue": resources.job_queue,
        "job_definition": resources.job_definition,
        "poll_interval": 0.001,
    }


def _serverless(url: str) -> dict[str, Any]:
    return {
        "application_id": provision_emr_serverless_application(url),
        "execution_role_arn": TEST_ROLE_ARN,
        "job_driver": {"sparkSubmit": {"entryPoint": "s3://bucket/etl.py"}},
        "configuration_overrides": {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://bucket/logs/"}}
        },
        "name": "nightly-etl",
        "waiter_delay": 0.001,
    }


def _containers(url: str) -> dict[str, Any]:
    return {
        "name": "nightly-etl",
        "virtual_cluster_id": provision_emr_virtual_cluster(url),
        "execution_role_arn": TEST_ROLE_ARN,
        "release_label": "emr-6.15.0-latest",
        "job_driver": {"sparkSubmitJobDriver": {"entryPoint": "s3://bucket/etl.py"}},
        "poll_interval": 0.001,
    }


def _steps(url: str) -> dict[str, Any]:
    # wait_for_completion is left at its stock default, False: deferrable waits all the same.
    return {"job_flow_id": provision_emr_cluster(url), "steps": emr_steps(2), "waiter_delay": 0.001}


@dataclass(frozen=True)
class Case:
    """One operator: how to provision it, its triggers, the XComs and timeout of the stock deferral."""

    name: str
    service: str
    operator_class: type
    stock_operator: type
    stock_trigger: type[AwsBaseWaiterTrigger]
    trigger_class: type[AwsBaseWaiterTrigger]
    provision: Callable[[str], dict[str, Any]]
    #: The stock XComs other than the return value and the ``_link_*`` keys.
    xcom_keys: frozenset[str]
    #: The argument that bounds the trigger's waiter attempts.
    attempts_argument: str
    #: The stock deferral's timeout for the arguments above.
    timeout: Callable[[Any], timedelta | None]
    #: The stock deferral waits even with wait_for_completion=False.
    always_waits: bool = True
    #: Extra arguments for a job that ends at once (a single step).
    one_shot: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "batch",
        "batch",
        ResumableBatchOperator,
        BatchOperator,
        BatchJobTrigger,
        ResumableBatchJobTrigger,
        _batch,
        frozenset({"batch_job_details", "batch_job_definition", "batch_job_queue", "cloudwatch_events"}),
        "max_retries",
        lambda op: op.execution_timeout,
    ),
    Case(
        "emr_serverless",
        "emr-serverless",
        ResumableEmrServerlessStartJobOperator,
        EmrServerlessStartJobOperator,
        EmrServerlessStartJobTrigger,
        ResumableEmrServerlessStartJobTrigger,
        _serverless,
        frozenset({"emr_serverless_s3_logs"}),
        "waiter_max_attempts",
        lambda op: timedelta(seconds=op.waiter_max_attempts * op.waiter_delay),
        always_waits=False,
    ),
    Case(
        "emr_containers",
        "emr-containers",
        ResumableEmrContainerOperator,
        EmrContainerOperator,
        EmrContainerTrigger,
        ResumableEmrContainerTrigger,
        _containers,
        frozenset(),
        "max_polling_attempts",
        lambda op: op.execution_timeout,
    ),
    Case(
        "emr_steps",
        "emr",
        ResumableEmrAddStepsOperator,
        EmrAddStepsOperator,
        EmrAddStepsTrigger,
        ResumableEmrAddStepsTrigger,
        _steps,
        frozenset({"job_flow_id", "emr_cluster", "emr_logs"}),
        "waiter_max_attempts",
        lambda op: None,
        one_shot={"steps": emr_steps(1)},
    ),
]


class Deferral:
    """A reset moto with the case's resources; builds operators and reads the job of a trigger."""

    def __init__(self, case: Case, moto: MotoServer) -> None:
        self.case = case
        self.moto = moto
        self.driver = MotoJobDriver(moto, case.service)
        self.arguments = case.provision(moto.url)

    def operator(self, **extra: Any) -> Any:
        """The case's operator, deferrable, with fast retries."""
        return self.case.operator_class(
            task_id="job", **{**self.arguments, "deferrable": True, **FAST, **extra}
        )

    def job(self) -> JsonValue:
        """The one job submitted so far."""
        (job,) = self.driver.submitted_ids()
        return job

    @staticmethod
    def watched(trigger: Any) -> JsonValue:
        """The job a trigger waits for (the step ids for EMR steps)."""
        return list(trigger.step_ids) if isinstance(trigger, EmrAddStepsTrigger) else trigger.job_id


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def cloud(request: pytest.FixtureRequest, moto: MotoServer) -> Deferral:
    """A reset controller (manual lifecycle) with what the case's operator needs."""
    return Deferral(request.param, moto)


def defer(op: Any, context: dict[str, Any], method: str = "execute", *args: Any) -> Any:
    """Run ``execute`` (or ``execute_complete``) until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        getattr(op, method)(context, *args)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


def rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def trigger_event(trigger: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Run the real trigger (rebuilt from its serialization; aiobotocore against moto) to its first event."""

    async def first() -> dict[str, Any]:
        async for event in rebuilt(trigger).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(first(), timeout)

    return asyncio.run(bounded())


class TestDeferring:
    """The first try defers only once the job id is safe in the task state store."""

    def test_job_id_is_recorded_before_deferring(self, cloud: Deferral) -> None:
        """At TaskDeferred the record holds the job (phase submitted); the trigger extends the stock one."""
        context = task_context()
        op = cloud.operator()
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        trigger = deferred.value.trigger
        store = context["task_state_store"]
        saved = store.get(RECORD_KEY)
        assert saved["phase"] == "submitted" and saved["external_id"] == cloud.job()
        assert store.get(op.external_id_key) == cloud.job()
        assert type(trigger) is cloud.case.trigger_class and isinstance(trigger, cloud.case.stock_trigger)
        assert type(trigger).__mro__[1] is ResumableTriggerMixin
        assert cloud.watched(trigger) == cloud.job()
        assert deferred.value.timeout == cloud.case.timeout(op)
        assert set(context["ti"].xcoms) <= cloud.case.xcom_keys
        assert cloud.moto.job(cloud.driver._ids(cloud.job())[0])["finished"] is False

    def test_ended_job_is_not_deferred(self, cloud: Deferral) -> None:
        """A job that already ended when checked finishes in the worker, as in stock."""
        cloud.moto.set_lifecycle("clock", run_duration=0.0, final_result="succeeded", reads_per_state=0)
        context = task_context()
        result = cloud.operator(**cloud.case.one_shot).execute(context)
        assert result == cloud.job()
        assert context["task_state_store"].get(RECORD_KEY)["phase"] == "completed"

    def test_wait_for_completion_false(self, cloud: Deferral) -> None:
        """Batch, EMR on EKS and steps defer even so (stock does); EMR Serverless returns at once."""
        context = task_context()
        op = cloud.operator(wait_for_completion=False)
        if cloud.case.always_waits:
            assert cloud.watched(defer(op, context)) == cloud.job()
        else:
            assert op.execute(context) == cloud.job()
            assert cloud.driver.cancelled_ids() == []


class TestResume:
    """Back from the triggerer: the event, a lost trigger, a failure, a trigger error."""

    def test_success_event_completes_the_record(self, cloud: Deferral) -> None:
        """The trigger fires once the job ended; execute_complete returns the stock result and XComs."""
        context = task_context()
        trigger = defer(cloud.operator(), context)
        cloud.driver.finish(cloud.job(), succeeded=True)
        event = trigger_event(trigger)
        assert event["status"] == "success"
        # A fresh operator, as after the deferral; XComs of the try are kept by Airflow.
        resumed = task_context(context["task_state_store"], xcoms=context["ti"].xcoms)
        assert cloud.operator().execute_complete(resumed, event) == cloud.job()
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"
        assert set(resumed["ti"].xcoms) == cloud.case.xcom_keys
        assert len(cloud.driver.submitted_ids()) == 1

    def test_event_for_an_active_job_defers_again(self, cloud: Deferral) -> None:
        """The job is active when the event is read: the engine reconnects and defers again (one job)."""
        store = InMemoryTaskStateStore()
        trigger = defer(cloud.operator(), task_context(store))
        event = {"status": "success", trigger.return_key: trigger.return_value}  # the stock success event
        again = defer(cloud.operator(), task_context(store), "execute_complete", event)
        assert cloud.watched(again) == cloud.job() and store.get(RECORD_KEY)["phase"] == "submitted"

    def test_retry_after_lost_trigger_defers_to_the_same_job(self, cloud: Deferral) -> None:
        """A new try (the trigger was lost or timed out) reconnects and defers again: one job."""
        store = InMemoryTaskStateStore()
        first = defer(cloud.operator(), task_context(store, try_number=1))
        second = defer(cloud.operator(), task_context(store, try_number=2))
        assert cloud.watched(second) == cloud.watched(first) == cloud.job()
        assert store.get(RECORD_KEY)["generation"] == 1

    def test_failure_event_fails_and_the_retry_submits_generation_2(self, cloud: Deferral) -> None:
        """A failed job fails the try with JobFailedError; the next try submits generation 2."""
        store = InMemoryTaskStateStore()
        trigger = defer(cloud.operator(), task_context(store, try_number=1))
        cloud.driver.finish(cloud.job(), succeeded=False)
        event = trigger_event(trigger)
        assert event["status"] != "success"
        failed = task_context(store, try_number=1)
        with pytest.raises(JobFailedError):
            cloud.operator().execute_complete(failed, event)
        if cloud.case.name == "batch":  # stock execute_complete links the logs of a failed job too
            assert "cloudwatch_events" in failed["ti"].xcoms
        retry = defer(cloud.operator(), task_context(store, try_number=2))
        first_job, second_job = cloud.driver.submitted_ids()
        assert cloud.watched(trigger) == first_job and cloud.watched(retry) == second_job != first_job
        assert store.get(RECORD_KEY)["generation"] == 2

    def test_trigger_error_while_active_fails_the_try_the_retry_reconnects(self, cloud: Deferral) -> None:
        """The waiter's attempts ran out, the job runs on: the try fails, the next one defers to it again."""
        store = InMemoryTaskStateStore()
        bounded = {cloud.case.attempts_argument: 1}
        trigger = defer(cloud.operator(**bounded), task_context(store, try_number=1))
        event = trigger_event(trigger)
        assert event["status"] != "success"
        with pytest.raises(ResumableError, match="still active") as failure:
            cloud.operator(**bounded).execute_complete(task_context(store, try_number=1), event)
        assert not isinstance(failure.value, JobFailedError)
        assert cloud.driver.cancelled_ids() == []  # retries left: the job is the next try's
        again = defer(cloud.operator(), task_context(store, try_number=2))
        assert cloud.watched(again) == cloud.job() and store.get(RECORD_KEY)["generation"] == 1

    def test_trigger_error_on_the_last_try_cancels(self, cloud: Deferral) -> None:
        """No retry left: the try fails for good and the job is cancelled (cancel_on_failure)."""
        store = InMemoryTaskStateStore()
        bounded = {cloud.case.attempts_argument: 1}
        trigger = defer(cloud.operator(**bounded), task_context(store, max_tries=0))
        event = trigger_event(trigger)
        with pytest.raises(ResumableError, match="still active"):
            cloud.operator(**bounded).execute_complete(task_context(store, max_tries=0), event)
        assert cloud.driver.cancelled_ids() == [cloud.job()]
        assert store.get(RECORD_KEY)["phase"] == "cancelled"

    def test_not_durable_resume(self, cloud: Deferral) -> None:
        """durable=False: the event still ends the try on its job, without a record."""
        context = task_context()
        trigger = defer(cloud.operator(durable=False), context)
        cloud.driver.finish(cloud.job(), succeeded=True)
        assert (
            cloud.operator(durable=False).execute_complete(task_context(), trigger_event(trigger))
            == cloud.job()
        )
        assert context["task_state_store"].values == {} and len(cloud.driver.submitted_ids()) == 1


class TestTriggerOnKill:
    """A user's action while deferred: a clear leaves the job to the next try, a stop cancels it."""

    #: The task instance of :func:`task_context`, whose ledger key the trigger carries.
    KEY = ledger_key(TaskIdentity("dag", "manual__1", "job", -1))

    @classmethod
    def kill(cls, trigger: Any, server_state: str | None, *, knows: bool = True) -> InMemoryJobLedger:
        """
        Call ``on_kill`` as the triggerer does after a user action, the server holding ``server_state``.

        The ledger of jobs in flight (an Airflow Variable in the triggerer) is an in-memory one
        holding the task's entry; it is returned.
        """
        trigger = rebuilt(trigger)
        assert trigger.ledger_key == cls.KEY
        trigger.task_instance = FakeTaskInstance(
            "dag", "manual__1", "job", server_state=server_state, server_knows=knows
        )
        ledger = InMemoryJobLedger()
        ledger.set(cls.KEY, {"record": "in flight"})
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=ledger):
            asyncio.run(trigger.on_kill())
        return ledger

    @pytest.mark.parametrize("state", [None, "scheduled", "queued", "running", "restarting"])
    def test_clear_leaves_the_job_to_the_next_try(self, cloud: Deferral, state: str | None) -> None:
        """Cleared (or already picked up again): the job is not cancelled, its ledger entry stays."""
        ledger = self.kill(defer(cloud.operator(), task_context()), state)
        assert cloud.driver.cancelled_ids() == []
        assert ledger.get(self.KEY) is not None

    @pytest.mark.parametrize("state", ["failed", "success"])
    def test_user_stop_cancels_the_job(self, cloud: Deferral, state: str) -> None:
        """Marked failed or success: the job is cancelled and its ledger entry deleted."""
        ledger = self.kill(defer(cloud.operator(), task_context()), state)
        assert cloud.driver.cancelled_ids() == [cloud.job()]
        assert ledger.get(self.KEY) is None

    def test_deleted_dag_run_cancels_the_job(self, cloud: Deferral) -> None:
        """The server no longer knows the task instance: the job is cancelled."""
        self.kill(defer(cloud.operator(), task_context()), None, knows=False)
        assert cloud.driver.cancelled_ids() == [cloud.job()]

    def test_switched_off_leaves_the_job(self, cloud: Deferral) -> None:
        """cancel_on_user_stop=False travels with the trigger."""
        self.kill(defer(cloud.operator(cancel_on_user_stop=False), task_context()), "failed")
        assert cloud.driver.cancelled_ids() == []

    def test_trigger_round_trips_through_serialisation(self, cloud: Deferral) -> None:
        """serialize() names our class, carries the stock arguments and ours, and rebuilds the same."""
        trigger = defer(cloud.operator(cancel_on_user_stop=False), task_context())
        classpath, kwargs = trigger.serialize()
        ours = cloud.case.trigger_class
        assert classpath == f"{ours.__module__}.{ours.__qualname__}"
        assert classpath.startswith("airflow_resumable.providers.amazon.triggers.")
        _, stock_kwargs = cloud.case.stock_trigger.serialize(trigger)
        assert {key: kwargs[key] for key in stock_kwargs} == stock_kwargs
        assert rebuilt(trigger).serialize() == (classpath, kwargs)
        assert kwargs["cancel_on_user_stop"] is False
        assert kwargs["ledger_key"].startswith(LEDGER_KEY_PREFIX)
        assert kwargs["stop_classification_timeout"] == trigger.stop_classification_timeout
        if "cancel_on_kill" in kwargs:  # the stock switch is off: only on_kill decides
            assert kwargs["cancel_on_kill"] is False


class TestStepsTrigger:
    """The steps trigger fires once no step runs, not at the first failed one (ActionOnFailure=CONTINUE)."""

    @pytest.fixture
    def steps_cloud(self, moto: MotoServer) -> Deferral:
        return Deferral(CASES[3], moto)

    def test_waits_for_the_later_steps_after_a_failure(self, steps_cloud: Deferral) -> None:
        """Step 1 failed, step 2 pending: no event; once step 2 ended, a failure naming step 1."""
        store = InMemoryTaskStateStore()
        op = steps_cloud.operator(steps=emr_steps(2, action="CONTINUE"), waiter_max_attempts=10**6)
        trigger = defer(op, task_context(store))
        first, second = steps_cloud.job()  # type: ignore[misc]
        steps_cloud.moto.set_state(first, "FAILED", "boom")
        with pytest.raises(TimeoutError):
            trigger_event(trigger, timeout=0.5)
        steps_cloud.moto.finish(second, succeeded=True)
        event = trigger_event(trigger)
        assert event["status"] != "success" and event["job_flow_id"] == trigger.job_flow_id
        resumed = steps_cloud.operator(steps=emr_steps(2, action="CONTINUE"))
        with pytest.raises(JobFailedError, match=f"step {first}"):
            resumed.execute_complete(task_context(store), event)


class TestRealDagRun:
    """The whole deferral through dag.test(): task runner, in-process trigger, resume, task state store."""

    def test_deferred_run_succeeds_with_one_job(self, cloud: Deferral) -> None:
        """The task defers, the trigger sees the job end, execute_complete finishes the record."""
        cloud.moto.set_lifecycle("clock", run_duration=0.3, final_result="succeeded", reads_per_state=1)
        slow = _slow(cloud)
        operator_class = cloud.case.operator_class
        resumed = mock.patch.object(
            operator_class,
            "execute_complete",
            autospec=True,
            side_effect=operator_class.execute_complete,
        )
        with resumed as execute_complete:
            outcome = run_task(operator_class, **{**cloud.arguments, **slow, "deferrable": True})
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert execute_complete.call_count == 1, "the task must have deferred and resumed"
        job = cloud.job()
        saved = record(outcome)
        assert saved["phase"] == "completed" and saved["external_id"] == job
        pushed = xcoms(outcome)
        assert pushed["return_value"] == job
        assert {key for key in pushed if key != "return_value" and not key.startswith("_link_")} == (
            cloud.case.xcom_keys
        )
        assert cloud.driver.cancelled_ids() == []

    def test_same_xcoms_as_the_stock_deferral(self, cloud: Deferral) -> None:
        """The stock operator's deferrable run and ours push the same XComs and links, ids aside."""
        cloud.moto.set_lifecycle("clock", run_duration=0.1, final_result="succeeded", reads_per_state=1)
        arguments = {**cloud.arguments, **_slow(cloud), "deferrable": True}
        assert issubclass(cloud.case.operator_class, cloud.case.stock_operator)
        stock_outcome = run_task(cloud.case.stock_operator, retries=0, **arguments)
        our_outcome = run_task(cloud.case.operator_class, retries=0, **arguments)
        assert stock_outcome.task("job").state == our_outcome.task("job").state == "success"
        stock_job, our_job = cloud.driver.submitted_ids()
        assert _masked(xcoms(stock_outcome), stock_job) == _masked(xcoms(our_outcome), our_job)


def _slow(cloud: Deferral) -> dict[str, Any]:
    """Poll every 50 ms, with enough waiter attempts for a job of a few tenths of a second."""
    slow: dict[str, Any] = (
        {"poll_interval": 0.05} if "poll_interval" in cloud.arguments else {"waiter_delay": 0.05}
    )
    if cloud.case.attempts_argument == "waiter_max_attempts":
        slow["waiter_max_attempts"] = 1000
    return slow


def _masked(pushed: dict[str, Any], job: JsonValue) -> Any:
    """The XComs as JSON with the job's ids replaced by ``<job>``."""
    text = json.dumps(pushed, sort_keys=True, default=str)
    for job_id in job if isinstance(job, list) else [job]:
        text = text.replace(str(job_id), "<job>")
    return json.loads(text)
