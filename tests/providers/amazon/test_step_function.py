"""ResumableStepFunctionStartExecutionOperator against moto with the lifecycle controller."""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.step_function import StepFunctionStartExecutionOperator
from airflow.providers.amazon.aws.triggers.step_function import StepFunctionsExecutionCompleteTrigger
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import (
    InvalidJobSpecError,
    JobFailedError,
    JobNotFoundError,
    ResumableError,
)
from airflow_resumable.ledger import LEDGER_KEY_PREFIX, ledger_key
from airflow_resumable.providers.amazon.common import token_key
from airflow_resumable.providers.amazon.step_function import (
    STOP_CAUSE,
    ResumableStepFunctionsExecutionCompleteTrigger,
    ResumableStepFunctionStartExecutionOperator,
    cancel_execution_by_recipe,
    execution_arn_for,
)
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing._aws_jobs_sfn import provision_state_machine
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe, finish_on_first_poll
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from airflow_resumable.triggers import ResumableTriggerMixin
from tests.providers.amazon import helpers
from tests.providers.amazon.helpers import (
    FAST,
    XComParity,
    allow_botocore_retries,
    record,
    run_task,
    submit_requests,
    xcoms,
)

if TYPE_CHECKING:
    from pydantic import JsonValue

Operator = ResumableStepFunctionStartExecutionOperator

STATES = {
    "RUNNING": (True, False),
    "PENDING_REDRIVE": (True, False),
    "SUCCEEDED": (False, True),
    "FAILED": (False, False),
    "TIMED_OUT": (False, False),
    "ABORTED": (False, False),
}


class SfnDriver(MotoJobDriver):
    """The kit's driver for executions, plus a provisioned STANDARD state machine."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "states")
        self.server = server
        self.state_machine_arn = provision_state_machine(server.url)

    def throttle_next_submit(self) -> None:
        """Answer the next StartExecution with ThrottlingException."""
        self.server.throttle("StartExecution")

    def start(self, name: str, execution_input: str = "{}") -> str:
        """An execution started with boto3 (not by an operator); its ARN."""
        client = aws_client(self.server.url, "stepfunctions")
        response = client.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=execution_input
        )
        return str(response["executionArn"])


@pytest.fixture
def cloud(moto: MotoServer) -> SfnDriver:
    """A reset controller with a state machine."""
    return SfnDriver(moto)


def context() -> Any:
    """A minimal task context (``Any``: the hooks are typed for Airflow's ``Context``)."""
    return helpers.context()


def task_context(*args: Any, **kw: Any) -> Any:
    """:func:`helpers.task_context`, typed ``Any`` like :func:`context`."""
    return helpers.task_context(*args, **kw)


def kwargs(cloud: SfnDriver, spec: str = "v1", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments; ``spec`` lands in the input, not in the name."""
    return {
        "state_machine_arn": cloud.state_machine_arn,
        "name": "nightly-etl",
        "state_machine_input": {"spec": spec},
        "waiter_delay": 0.001,
        **extra,
    }


def operator(cloud: SfnDriver, **extra: Any) -> Operator:
    """An operator with fast retries (for calling its hooks directly)."""
    return Operator(**{"task_id": "job", **kwargs(cloud), **FAST, **extra})


class TestResumableStepFunctionStartExecutionOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is in the templated input."""

    operator_class = Operator
    deferrable_kwargs = {"deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
    expected_xcom_keys = frozenset(
        {
            "return_value",
            "_state_machine_details",
            "_state_machine_executions_details",
            "_link_StateMachineDetailsLink",
            "_link_StateMachineExecutionsDetailsLink",
        }
    )

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud, spec=spec_marker, name="contract")


class TestStockParity:
    """The same XComs and return value as the stock operator, for the same state machine."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: SfnDriver) -> None:
        """Stock and resumable runs push the same keys; values differ only by the execution ARN."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = xcoms(run_task(StepFunctionStartExecutionOperator, retries=0, **_stock(kwargs(cloud))))
        ours = xcoms(run_task(Operator, retries=0, **kwargs(cloud)))
        assert _replace(stock, stock["return_value"], "<arn>") == _replace(
            ours, ours["return_value"], "<arn>"
        )
        assert ours["return_value"] in cloud.submitted_ids()


class TestStateMapping:
    """Every execution status, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: SfnDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The status is passed through and classified."""
        arn = cloud.start("probe")
        cloud.server.set_state(arn, state)
        op = operator(cloud)
        status = op.get_job_status(arn, context())
        assert status == state
        assert (op.is_job_active(status), op.is_job_succeeded(status)) == expected

    def test_unknown_status_is_waited_on(self) -> None:
        """A status AWS may add later counts as active: never a resubmission on a guess."""
        op = Operator(task_id="t", state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:m")
        assert op.is_job_active("SOMETHING_NEW") and not op.is_job_succeeded("SOMETHING_NEW")

    def test_expired_execution_is_not_found(self, cloud: SfnDriver) -> None:
        """An execution AWS forgot raises JobNotFoundError (the mixin then submits fresh)."""
        arn = cloud.start("probe")
        cloud.server.expire(arn)
        with pytest.raises(JobNotFoundError, match="does not exist"):
            operator(cloud).get_job_status(arn, context())

    def test_never_seen_execution_is_not_found(self, cloud: SfnDriver) -> None:
        """A well-formed ARN of no execution raises JobNotFoundError too."""
        with pytest.raises(JobNotFoundError):
            operator(cloud).get_job_status(execution_arn_for(cloud.state_machine_arn, "nope"), context())

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            ("arn:aws:states:us-east-1:123456789012:execution:machine:run-1", True),
            ("arn:aws:states:us-east-1:123456789012:stateMachine:machine", False),
            ("b5b8cbdd-61b6-4d0c-9c17-3b2a8f6b7c1e", False),
            (42, False),
        ],
    )
    def test_valid_external_id(self, value: JsonValue, valid: bool) -> None:
        """Only an execution ARN is adopted from the task state store."""
        op = Operator(task_id="t", state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:m")
        assert op.is_valid_external_id(value) is valid


class TestExecutionName:
    """The execution name carries the token key; the user's name, or the task's, comes first."""

    def test_user_name_plus_token_key(self, cloud: SfnDriver) -> None:
        """StartExecution's name is <name>-<12 hex of the record's token>; the input is the stock JSON."""
        outcome = run_task(Operator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud))
        (request,) = submit_requests(cloud.server, "StartExecution")
        assert request["name"] == f"nightly-etl-{token_key(record(outcome)['token'])}"
        assert json.loads(request["input"]) == {"spec": "v1"}
        assert cloud.submitted_ids() == [execution_arn_for(cloud.state_machine_arn, request["name"])]

    def test_long_name_is_cut_to_80(self, cloud: SfnDriver) -> None:
        """An 80-character name keeps its first 67 characters, then the key."""
        op = operator(cloud, name="x" * 80)
        op.submission_token = "ar-" + "ab" * 20
        arn = op.submit_job(context())
        assert arn.rsplit(":", 1)[1] == "x" * 67 + "-" + "ab" * 6

    def test_without_a_name_the_task_names_it(self, cloud: SfnDriver) -> None:
        """No name: <dag_id>-<task_id> in the allowed characters, plus the key."""
        op = operator(cloud, name=None, task_id="group.job")
        op.submission_token = "ar-" + "cd" * 20
        arn = op.submit_job(context())
        assert arn.rsplit(":", 1)[1] == f"{op.dag_id}-group-job-{'cd' * 6}"


class TestCrashBeforePersist:
    """A crash between StartExecution and storing the ARN: the name hands the same execution back."""

    def test_retry_gets_the_same_execution(self, cloud: SfnDriver) -> None:
        """Two StartExecution calls with one name, the second replayed: one execution, polled by try 2."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(Operator, probe, **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (arn,) = cloud.submitted_ids()
        first, second = cloud.server.calls("StartExecution")
        assert first.created == (arn,) and second.replayed and second.created == ()
        assert first.request == second.request
        assert probe.polled[2] == [arn] and probe.submitted[2] == [arn]

    def test_execution_ended_before_the_retry_is_adopted(self, cloud: SfnDriver) -> None:
        """The execution succeeded meanwhile: ExecutionAlreadyExists names it; no second execution."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(Operator, probe, **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (arn,) = cloud.submitted_ids()
        assert [call.status for call in cloud.server.calls("StartExecution")] == [200, 400]
        assert xcoms(outcome)["return_value"] == arn and record(outcome)["external_id"] == arn

    def test_same_name_with_another_input_is_not_adopted(self, cloud: SfnDriver) -> None:
        """ExecutionAlreadyExists for an execution of another input is an error, not an adoption."""
        token = "ar-" + uuid.uuid4().hex + "0" * 8
        first = operator(cloud)
        first.submission_token = token
        first.submit_job(context())
        other = operator(cloud, state_machine_input={"spec": "v2"})
        other.submission_token = token
        with pytest.raises(ResumableError, match="another input"):
            other.submit_job(context())
        assert len(cloud.submitted_ids()) == 1


class TestLostSubmitResponse:
    """StartExecution carried out but its answer lost: one execution, no Airflow retry used."""

    @pytest.mark.parametrize("botocore_retries", [False, True])
    def test_one_execution(
        self, cloud: SfnDriver, monkeypatch: pytest.MonkeyPatch, botocore_retries: bool
    ) -> None:
        """The re-sent request (by botocore or by cloud_retry) is replayed on the name."""
        if botocore_retries:
            allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response("StartExecution")
        outcome = run_task(Operator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        calls = cloud.server.calls("StartExecution")
        assert len(calls) == 2 and calls[0].fault == "after" and calls[1].replayed
        assert len(cloud.submitted_ids()) == 1 and record(outcome)["external_id"] == cloud.submitted_ids()[0]


class TestThrottling:
    """Throttled and failing AWS calls are retried by the mixin without consuming a try."""

    def test_throttled_submit_and_status_reads(self, cloud: SfnDriver) -> None:
        """ThrottlingException on StartExecution and DescribeExecution (400, 429, 503): one execution."""
        cloud.server.throttle("StartExecution")
        cloud.server.throttle("DescribeExecution", status=429)
        cloud.server.inject_fault("DescribeExecution", 503)
        outcome = run_task(Operator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert [call.status for call in cloud.server.calls("StartExecution")] == [400, 200]

    def test_kms_throttling_is_transient(self) -> None:
        """KmsThrottlingException (Step Functions' own) is retried like any throttling."""
        from botocore.exceptions import ClientError

        error = ClientError(
            {"Error": {"Code": "KmsThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "X"
        )
        op = Operator(task_id="t", state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:m")
        assert op.is_transient_error(error)


class TestFailureAndModes:
    """A failed execution fails the try with its error and cause; not waiting; EXPRESS."""

    @pytest.mark.parametrize(
        ("state", "reason", "expected"),
        [
            ("FAILED", "boom in Transform", "States.TaskFailed: boom in Transform"),
            ("TIMED_OUT", "", "States.Timeout: The execution exceeded its TimeoutSeconds"),
        ],
    )
    def test_failure_reason_in_the_error(
        self, cloud: SfnDriver, state: str, reason: str, expected: str
    ) -> None:
        """describe_failure reports the execution's error and cause."""
        arn = cloud.start("failing")
        cloud.server.set_state(arn, state, reason)
        with pytest.raises(JobFailedError, match=expected):
            operator(cloud).poll_until_complete(arn, context())

    def test_task_fails_then_retry_starts_generation_2(self, cloud: SfnDriver) -> None:
        """A failed execution: the retry starts a new execution under a new name."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=try_number > 1)

        outcome = run_task(Operator, ScenarioProbe(cloud, on_poll), **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        first, second = (request["name"] for request in submit_requests(cloud.server, "StartExecution"))
        assert first != second and first.startswith("nightly-etl-") and second.startswith("nightly-etl-")

    def test_not_waiting_returns_the_running_execution(self, cloud: SfnDriver) -> None:
        """wait_for_completion=False: the task ends once the execution exists; it keeps running."""
        outcome = run_task(Operator, retries=0, **kwargs(cloud, wait_for_completion=False))
        (arn,) = cloud.submitted_ids()
        assert outcome.task("job").state == "success" and xcoms(outcome)["return_value"] == arn
        assert cloud.server.job(str(arn))["finished"] is False and cloud.cancelled_ids() == []

    def test_express_state_machine_is_refused(self, cloud: SfnDriver) -> None:
        """EXPRESS: InvalidJobSpecError after DescribeStateMachine, no StartExecution, no record."""
        express = provision_state_machine(cloud.server.url, name="express", workflow_type="EXPRESS")
        store = InMemoryTaskStateStore()
        with pytest.raises(InvalidJobSpecError, match="EXPRESS"):
            operator(cloud, state_machine_arn=express).execute(task_context(store))
        assert [call.operation for call in cloud.server.ledger()][-1] == "DescribeStateMachine"
        assert cloud.server.calls("StartExecution") == [] and store.values == {}

    def test_unreadable_type_is_assumed_standard(self, cloud: SfnDriver) -> None:
        """Without DescribeStateMachine permission the execution is started all the same."""
        cloud.server.inject_fault("DescribeStateMachine", 400, code="AccessDeniedException")
        result = operator(cloud, wait_for_completion=False).execute(task_context())
        assert [result] == cloud.submitted_ids()

    def test_user_stop_stops_the_execution_with_a_cause(self, cloud: SfnDriver) -> None:
        """cancel_job is StopExecution with our error and cause; the execution ends ABORTED."""
        arn = cloud.start("stopped")
        operator(cloud).cancel_job(arn, context())
        assert cloud.server.job(arn)["state"] == "ABORTED" and cloud.cancelled_ids() == [arn]
        (stop,) = cloud.server.calls("StopExecution")
        assert stop.request["cause"] == STOP_CAUSE

    def test_custodian_canceller(self, cloud: SfnDriver) -> None:
        """cancel_execution_by_recipe stops the execution through the recipe's connection."""
        arn = cloud.start("orphan")
        recipe = operator(cloud).cancel_recipe(context())
        assert recipe == ("aws_sfn_execution", {"aws_conn_id": "aws_default", "region_name": None})
        cancel_execution_by_recipe(arn, **recipe[1])
        assert cloud.server.job(arn)["state"] == "ABORTED"


class TestRedrive:
    """is_redrive_execution: RedriveExecution of the named execution, its clientToken the token."""

    def test_redrive_runs_the_failed_execution_again(self, cloud: SfnDriver) -> None:
        """One RedriveExecution with the record's token; the task waits and returns the same ARN."""
        arn = cloud.start("nightly-etl")
        cloud.server.finish(arn, succeeded=False)
        outcome = run_task(
            Operator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud, is_redrive_execution=True),
        )
        assert outcome.task("job").state == "success" and xcoms(outcome)["return_value"] == arn
        (redrive,) = cloud.server.calls("RedriveExecution")
        assert redrive.request == {"executionArn": arn, "clientToken": record(outcome)["token"]}
        assert cloud.server.job(arn)["state"] == "SUCCEEDED" and len(cloud.submitted_ids()) == 1

    def test_lost_redrive_response_is_replayed(self, cloud: SfnDriver) -> None:
        """A lost answer: the re-sent RedriveExecution (same clientToken) is answered as the first."""
        arn = cloud.start("nightly-etl")
        cloud.server.finish(arn, succeeded=False)
        cloud.server.lose_response("RedriveExecution")
        outcome = run_task(
            Operator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud, is_redrive_execution=True),
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert [call.status for call in cloud.server.calls("RedriveExecution")] == [500, 200]

    @pytest.mark.parametrize("state", ["RUNNING", "PENDING_REDRIVE", "SUCCEEDED"])
    def test_not_redrivable_but_running_or_succeeded_is_adopted(self, cloud: SfnDriver, state: str) -> None:
        """ExecutionNotRedrivable (a redrive whose token AWS forgot already ran it): adopted, no error."""
        arn = cloud.start("nightly-etl")
        cloud.server.set_state(arn, state)
        op = operator(cloud, is_redrive_execution=True)
        op.submission_token = "ar-" + "ef" * 20
        assert op.submit_job(context()) == arn
        assert [call.status for call in cloud.server.calls("RedriveExecution")] == [400]

    def test_not_redrivable_and_failed_is_raised(self, cloud: SfnDriver) -> None:
        """ExecutionNotRedrivable for an execution that failed (e.g. redriven too often) is raised."""
        from botocore.exceptions import ClientError

        arn = cloud.start("nightly-etl")
        op = operator(cloud, is_redrive_execution=True)
        op.submission_token = "ar-" + "ef" * 20
        with (
            mock.patch.object(Operator, "get_job_status", return_value="FAILED"),
            pytest.raises(ClientError, match="ExecutionNotRedrivable"),
        ):
            op.submit_job(context())
        assert cloud.server.job(arn)["state"] == "RUNNING"


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"state_machine_arn": ""}, "state_machine_arn"),
            ({"state_machine_arn": "machine"}, "state_machine_arn"),
            ({"state_machine_arn": "arn:aws:states:us-east-1:123456789012:activity:a"}, "state_machine_arn"),
            ({"name": ""}, "name"),
            ({"name": "has spaces"}, "name"),
            ({"name": "a/b"}, "name"),
            ({"name": "x" * 81}, "name"),
            ({"name": None, "is_redrive_execution": True}, "name"),
            ({"is_redrive_execution": "maybe"}, "is_redrive_execution"),
            ({"state_machine_input": "not json"}, "state_machine_input"),
            ({"state_machine_input": ["a", "list"]}, "state_machine_input"),
            ({"state_machine_input": {"when": object()}}, "state_machine_input"),
        ],
    )
    def test_invalid_argument(self, cloud: SfnDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; the controller's ledger saw no call."""
        op = operator(cloud, **override)
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            op.execute(task_context())
        assert len(cloud.server.ledger()) == calls

    def test_rendered_boolean_string(self, cloud: SfnDriver) -> None:
        """A templated is_redrive_execution rendered to "False" means False (stock would redrive)."""
        op = operator(cloud, is_redrive_execution="False", wait_for_completion=False)
        assert op.execute(task_context()) == cloud.submitted_ids()[0]
        assert cloud.server.calls("RedriveExecution") == []


def defer(op: Any, ctx: dict[str, Any], method: str = "execute", *args: Any) -> Any:
    """Run ``execute`` (or ``execute_complete``) until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        getattr(op, method)(ctx, *args)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


def rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``."""
    classpath, arguments = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**arguments)


def trigger_event(trigger: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Run the real trigger (rebuilt; aiobotocore against moto) to its first event."""

    async def first() -> dict[str, Any]:
        async for event in rebuilt(trigger).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


class TestDeferrable:
    """deferrable=True: the ARN recorded first, our trigger, every way back."""

    def test_defers_with_our_trigger_after_recording(self, cloud: SfnDriver) -> None:
        """At TaskDeferred the record holds the execution; the trigger extends the stock one."""
        ctx = task_context()
        op = operator(cloud, deferrable=True, wait_for_completion=False)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        (arn,) = cloud.submitted_ids()
        saved = ctx["task_state_store"].get(RECORD_KEY)
        assert saved["phase"] == "submitted" and saved["external_id"] == arn
        assert ctx["task_state_store"].get("sfn_execution_arn") == arn
        trigger = deferred.value.trigger
        assert type(trigger) is ResumableStepFunctionsExecutionCompleteTrigger
        assert isinstance(trigger, StepFunctionsExecutionCompleteTrigger)
        assert type(trigger).__mro__[1] is ResumableTriggerMixin
        assert trigger.execution_arn == arn
        assert deferred.value.timeout == timedelta(seconds=op.waiter_max_attempts * op.waiter_delay)
        assert set(ctx["ti"].xcoms) == {"_state_machine_details", "_state_machine_executions_details"}

    def test_trigger_serializes_to_our_class(self, cloud: SfnDriver) -> None:
        """serialize() names our class, carries the stock arguments and ours, and rebuilds the same."""
        trigger = defer(operator(cloud, deferrable=True, cancel_on_user_stop=False), task_context())
        classpath, arguments = trigger.serialize()
        ours = ResumableStepFunctionsExecutionCompleteTrigger
        assert classpath == f"{ours.__module__}.{ours.__qualname__}"
        assert classpath.startswith("airflow_resumable.providers.amazon.step_function.")
        _, stock_arguments = StepFunctionsExecutionCompleteTrigger.serialize(trigger)
        assert {key: arguments[key] for key in stock_arguments} == stock_arguments
        assert rebuilt(trigger).serialize() == (classpath, arguments)
        assert arguments["cancel_on_user_stop"] is False
        assert arguments["ledger_key"].startswith(LEDGER_KEY_PREFIX)

    def test_execute_complete_finishes(self, cloud: SfnDriver) -> None:
        """The real trigger fires once the execution ended; execute_complete returns the ARN."""
        ctx = task_context()
        trigger = defer(operator(cloud, deferrable=True), ctx)
        (arn,) = cloud.submitted_ids()
        cloud.finish(arn, succeeded=True)
        event = trigger_event(trigger)
        assert event == {"status": "success", "execution_arn": arn}
        resumed = task_context(ctx["task_state_store"], xcoms=ctx["ti"].xcoms)
        assert operator(cloud, deferrable=True).execute_complete(resumed, event) == arn
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"
        assert len(cloud.submitted_ids()) == 1

    @pytest.mark.parametrize("state", ["FAILED", "TIMED_OUT", "ABORTED"])
    def test_failed_execution_fires_at_once(self, cloud: SfnDriver, state: str) -> None:
        """FAILED, TIMED_OUT (unknown to the stock waiter) and ABORTED end the wait; the try fails."""
        store = InMemoryTaskStateStore()
        trigger = defer(operator(cloud, deferrable=True, waiter_max_attempts=10**6), task_context(store))
        (arn,) = cloud.submitted_ids()
        cloud.server.set_state(str(arn), state, "boom")
        event = trigger_event(trigger, timeout=10.0)
        assert event["status"] == "error" and event["execution_arn"] == arn
        with pytest.raises(JobFailedError, match=state):
            operator(cloud, deferrable=True).execute_complete(task_context(store), event)

    @pytest.mark.parametrize(("server_state", "stopped"), [("failed", True), ("queued", False)])
    def test_on_kill_stops_only_after_a_user_stop(
        self, cloud: SfnDriver, server_state: str, stopped: bool
    ) -> None:
        """Marked failed: StopExecution; cleared (queued again): the execution is left to the next try."""
        trigger = rebuilt(defer(operator(cloud, deferrable=True), task_context()))
        key = ledger_key(TaskIdentity("dag", "manual__1", "job", -1))
        trigger.task_instance = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state)
        ledger = InMemoryJobLedger()
        ledger.set(key, {"record": "in flight"})
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=ledger):
            asyncio.run(trigger.on_kill())
        (arn,) = cloud.submitted_ids()
        assert cloud.cancelled_ids() == ([arn] if stopped else [])
        assert (ledger.get(key) is None) is stopped

    def test_deferred_dag_run(self, cloud: SfnDriver) -> None:
        """Through dag.test(): defer, in-process trigger, execute_complete, record completed, stock XComs."""
        cloud.server.set_lifecycle("clock", run_duration=0.3, reads_per_state=1)
        arguments = {**kwargs(cloud), "deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
        resumed = mock.patch.object(
            Operator, "execute_complete", autospec=True, side_effect=Operator.execute_complete
        )
        with resumed as execute_complete:
            outcome = run_task(Operator, **arguments)
        assert outcome.task("job").state == "success" and execute_complete.call_count == 1
        (arn,) = cloud.submitted_ids()
        assert record(outcome)["phase"] == "completed" and xcoms(outcome)["return_value"] == arn

    def test_same_xcoms_as_the_stock_deferral(self, cloud: SfnDriver) -> None:
        """The stock deferrable run and ours push the same XComs and links, ARNs aside."""
        cloud.server.set_lifecycle("clock", run_duration=0.1, reads_per_state=1)
        arguments = {**kwargs(cloud), "deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
        stock = xcoms(run_task(StepFunctionStartExecutionOperator, retries=0, **_stock(arguments)))
        ours = xcoms(run_task(Operator, retries=0, **arguments))
        assert _replace(stock, stock["return_value"], "<arn>") == _replace(
            ours, ours["return_value"], "<arn>"
        )


def _stock(arguments: dict[str, Any]) -> dict[str, Any]:
    """The stock operator's arguments: no resumable ones."""
    return {k: v for k, v in arguments.items() if k != "wait_for_completion"}


def _replace(value: Any, old: Any, new: str) -> Any:
    """``value`` with every occurrence of ``old`` (and its URL-quoted form) replaced by ``new``."""
    from urllib.parse import quote_plus

    text = json.dumps(value, sort_keys=True, default=str)
    return json.loads(text.replace(str(old), new).replace(quote_plus(str(old)), new))
