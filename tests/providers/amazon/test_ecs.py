"""ResumableEcsRunTaskOperator against moto with the lifecycle controller."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.amazon.aws.exceptions import EcsOperatorError
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.providers.amazon.aws.utils.identifiers import generate_uuid
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError, ResumableError
from airflow_resumable.ledger import LEDGER_KEY_PREFIX, ledger_key
from airflow_resumable.providers.amazon._cancel import CUSTODIAN_REASON
from airflow_resumable.providers.amazon.ecs import (
    STOP_REASON,
    ResumableEcsRunTaskOperator,
    ResumableTaskDoneTrigger,
    cancel_ecs_task_by_recipe,
    task_verdict,
)
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing._aws_jobs_ecs import provision_ecs
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client
from airflow_resumable.testing.contract import (
    ResumableOperatorContract,
    ScenarioProbe,
    SimulatedWorkerCrash,
    finish_on_first_poll,
)
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from airflow_resumable.triggers import ResumableTriggerMixin
from tests.providers.amazon.helpers import (
    FAST,
    XComParity,
    allow_botocore_retries,
    record,
    run_task,
    submit_requests,
    task_context,
    xcoms,
)

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing._aws_jobs_ecs import EcsResources

#: Controller state → (operator status, active, succeeded).
STATES = {
    "PROVISIONING": ("PROVISIONING", True, False),
    "PENDING": ("PENDING", True, False),
    "ACTIVATING": ("ACTIVATING", True, False),
    "RUNNING": ("RUNNING", True, False),
    "DEACTIVATING": ("DEACTIVATING", True, False),
    "STOPPING": ("STOPPING", True, False),
    "DEPROVISIONING": ("DEPROVISIONING", True, False),
    "SUCCEEDED": ("SUCCEEDED", False, True),
    "FAILED": ("FAILED", False, False),
    "CANCELLED": ("FAILED", False, False),
    "FAILED_TO_START": ("FAILED", False, False),
}
TRIGGER_PATH = "airflow_resumable.providers.amazon.ecs.ResumableTaskDoneTrigger"


class EcsDriver(MotoJobDriver):
    """The kit's driver, plus a provisioned cluster and task definition."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "ecs")
        self.server = server
        self.resources = provision_ecs(server.url)

    def start(self, **extra: Any) -> str:
        """Start a task directly (not through the operator); return its ARN."""
        client = aws_client(self.server.url, "ecs")
        response = client.run_task(
            cluster=self.resources.cluster, taskDefinition=self.resources.task_definition, **extra
        )
        return str(response["tasks"][0]["taskArn"])


@pytest.fixture
def cloud(moto: MotoServer) -> EcsDriver:
    """A reset controller with an ECS cluster and task definition."""
    return EcsDriver(moto)


def kwargs(resources: EcsResources, marker: str = "v1", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments; ``marker`` lands in the container's command (part of the spec)."""
    return {
        "task_definition": resources.task_definition,
        "cluster": resources.cluster,
        "overrides": {
            "containerOverrides": [{"name": resources.container_name, "command": ["echo", marker]}]
        },
        "waiter_delay": 0.001,
        **extra,
    }


def ctx(store: InMemoryTaskStateStore | None = None, **kwargs: Any) -> Any:
    """:func:`task_context` (task ``job``, in-memory store, XComs kept), typed for the operator's hooks."""
    return task_context(store, **kwargs)


def operator(resources: EcsResources, **extra: Any) -> ResumableEcsRunTaskOperator:
    """Our operator (task id ``job``) with fast retries."""
    return ResumableEcsRunTaskOperator(task_id="job", **{**kwargs(resources), **FAST, **extra})


class TestResumableEcsRunTaskOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is the templated container command."""

    operator_class = ResumableEcsRunTaskOperator
    deferrable_kwargs = {"deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
    expected_xcom_keys = frozenset({"ecs_task_arn"})
    #: How many log lines a failure message quotes: how to report the task, not what it runs.
    fields_outside_the_spec = ResumableOperatorContract.fields_outside_the_spec | {"number_logs_exception"}

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud.resources, marker=spec_marker)

    def test_xcoms_after_a_fresh_run(self, cloud: MotoJobDriver) -> None:
        """The stock ``ecs_task_arn`` XCom and no return value (the stock operator returns None)."""
        outcome = self._run(cloud, ScenarioProbe(cloud, finish_on_first_poll()))
        assert xcoms(outcome) == {"ecs_task_arn": cloud.submitted_ids()[0]}

    def test_xcoms_after_adopting_a_succeeded_job(self, cloud: MotoJobDriver) -> None:
        """The retry that adopts the stopped task pushes the same XCom (a new try clears them)."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=True)
            raise SimulatedWorkerCrash("worker died just as the task stopped")

        outcome = self._run(cloud, ScenarioProbe(cloud, on_poll))
        assert outcome.task("job").try_number == 2
        assert xcoms(outcome) == {"ecs_task_arn": cloud.submitted_ids()[0]}


class TestStockParity:
    """The same XComs and return value as the stock EcsRunTaskOperator, for the same task."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: EcsDriver) -> None:
        """Stock and resumable runs push the same keys; values differ only by the task ARN."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = run_task(EcsRunTaskOperator, retries=0, **kwargs(cloud.resources))
        ours = run_task(ResumableEcsRunTaskOperator, retries=0, **kwargs(cloud.resources))
        assert stock.task("job").state == ours.task("job").state == "success"
        stock_arn, our_arn = cloud.submitted_ids()
        assert xcoms(stock) == {"ecs_task_arn": stock_arn} and xcoms(ours) == {"ecs_task_arn": our_arn}

    def test_same_run_task_request_as_the_stock_operator(self, cloud: EcsDriver) -> None:
        """RunTask gets the stock arguments; only clientToken is ours (stock: botocore's random one)."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        extra: dict[str, Any] = {
            "tags": {"team": "data"},
            "group": "etl",
            "propagate_tags": "TASK_DEFINITION",
        }
        run_task(EcsRunTaskOperator, retries=0, **kwargs(cloud.resources, **extra))
        outcome = run_task(ResumableEcsRunTaskOperator, retries=0, **kwargs(cloud.resources, **extra))
        stock, ours = submit_requests(cloud.server, "RunTask")
        assert ours.pop("clientToken") == record(outcome)["token"]
        stock.pop("clientToken")
        assert stock == ours

    def test_is_a_drop_in_subclass(self) -> None:
        """Same constructor (every stock argument), same template fields."""
        assert issubclass(ResumableEcsRunTaskOperator, EcsRunTaskOperator)
        assert ResumableEcsRunTaskOperator.template_fields == EcsRunTaskOperator.template_fields


class TestStateMapping:
    """Every task state, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: EcsDriver, state: str, expected: tuple[str, bool, bool]) -> None:
        """lastStatus while active; the stock operator's verdict once STOPPED."""
        task_arn = cloud.start(launchType="FARGATE")
        cloud.server.set_state(task_arn, state)
        op = operator(cloud.resources)
        status = op.get_job_status(task_arn, ctx())
        assert (status, op.is_job_active(status), op.is_job_succeeded(status)) == expected

    def test_new_task_walks_the_fargate_path(self, cloud: EcsDriver) -> None:
        """One state per status read: PROVISIONING, PENDING, ACTIVATING, then RUNNING."""
        task_arn = cloud.start(launchType="FARGATE")
        op = operator(cloud.resources)
        seen = [op.get_job_status(task_arn, ctx()) for _ in range(5)]
        assert seen == ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "RUNNING"]

    def test_unknown_status_is_waited_on(self) -> None:
        """A status ECS may add later counts as active: never a resubmission on a guess."""
        op = ResumableEcsRunTaskOperator(task_id="t", task_definition="d", cluster="c", overrides={})
        assert op.is_job_active("SOMETHING_NEW") and not op.is_job_succeeded("SOMETHING_NEW")

    def test_expired_task_is_not_found(self, cloud: EcsDriver) -> None:
        """A task ECS forgot (DescribeTasks failure MISSING) raises JobNotFoundError."""
        task_arn = cloud.start()
        cloud.server.expire(task_arn)
        with pytest.raises(JobNotFoundError, match="does not exist"):
            operator(cloud.resources).get_job_status(task_arn, ctx())

    def test_never_known_task_is_not_found(self, cloud: EcsDriver) -> None:
        """An ARN ECS never had is not found either (the mixin then submits fresh)."""
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/{cloud.resources.cluster}/{uuid.uuid4().hex}"
        with pytest.raises(JobNotFoundError):
            operator(cloud.resources).get_job_status(arn, ctx())

    def test_describe_without_task_or_failure_is_an_error(self, cloud: EcsDriver) -> None:
        """An answer naming neither the task nor a failure is not taken for "not found"."""
        op = operator(cloud.resources)
        with (
            mock.patch.object(type(op), "client", mock.Mock(describe_tasks=lambda **kw: {"tasks": []})),
            pytest.raises(ResumableError, match="neither task") as raised,
        ):
            op.get_job_status("arn:aws:ecs:us-east-1:1:task/c/x", ctx())
        assert not isinstance(raised.value, JobNotFoundError)


def _now_ms() -> int:
    """Now in CloudWatch's milliseconds (older events are rejected)."""
    return int(time.time() * 1000)


def _stopped(*containers: dict[str, Any], **task: Any) -> dict[str, Any]:
    return {"lastStatus": "STOPPED", "containers": list(containers), **task}


class TestVerdict:
    """task_verdict decides a stopped task as the stock _check_success_task does."""

    @pytest.mark.parametrize(
        ("task", "verdict", "why"),
        [
            (_stopped({"name": "a", "lastStatus": "STOPPED", "exitCode": 0}), "SUCCEEDED", ""),
            (_stopped({"name": "a", "lastStatus": "STOPPED", "exitCode": 2}), "FAILED", "exited with code 2"),
            (_stopped({"name": "a", "lastStatus": "STOPPED"}), "FAILED", "exited with code 1"),
            (_stopped({"name": "a", "lastStatus": "STOPPED", "exitCode": 3}), "SKIPPED", "code 3"),
            (_stopped({"name": "a", "lastStatus": "PENDING"}), "FAILED", "still pending"),
            (
                _stopped({"name": "a", "lastStatus": "STOPPED", "exitCode": 0, "reason": "OutOfMemoryError"}),
                "FAILED",
                "error during launching",
            ),
            (
                _stopped(stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError"),
                "FAILED",
                "failed to start: CannotPullContainerError",
            ),
            (
                _stopped(
                    {"name": "a", "lastStatus": "STOPPED", "exitCode": 0},
                    stoppedReason="Host EC2 (instance i-1234) terminated.",
                ),
                "FAILED",
                "host instance terminated",
            ),
            (
                _stopped(
                    {"name": "a", "lastStatus": "STOPPED", "exitCode": 0},
                    {"name": "b", "lastStatus": "STOPPED", "exitCode": 137},
                ),
                "FAILED",
                "'b' exited with code 137",
            ),
        ],
    )
    def test_rule(self, task: dict[str, Any], verdict: str, why: str) -> None:
        """The first matching stock rule decides; skip_on_exit_code turns a failure into a skip."""
        decided, reason = task_verdict(task, [3])
        assert decided == verdict and why in reason


class TestClientToken:
    """The submission token is RunTask's clientToken: ECS hands back the same task for it."""

    def test_client_token_is_the_record_token(self, cloud: EcsDriver) -> None:
        """RunTask carries clientToken = the record's token (43 ASCII characters, within ECS's 64)."""
        outcome = run_task(
            ResumableEcsRunTaskOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud.resources),
        )
        (request,) = submit_requests(cloud.server, "RunTask")
        token = record(outcome)["token"]
        assert request["clientToken"] == token and len(token) <= 64 and token.isascii()
        assert request["startedBy"] == "airflow"  # the stock default: the task's owner

    def test_crash_before_persist_replays_the_token(self, cloud: EcsDriver) -> None:
        """A crash after RunTask: try 2 sends RunTask again with the same token; ECS starts nothing new."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(ResumableEcsRunTaskOperator, probe, **kwargs(cloud.resources))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        first, second = cloud.server.calls("RunTask")
        assert first.token == second.token == record(outcome)["token"]
        assert first.created and not second.created and second.replayed
        assert second.job_ids == first.created and cloud.submitted_ids() == list(first.created)

    def test_another_request_with_the_same_token_conflicts(self, cloud: EcsDriver) -> None:
        """The fake answers ConflictException, as ECS does, for a reused token with another request."""
        client = aws_client(cloud.server.url, "ecs")
        token = "ar-" + "0" * 40
        cloud.start(clientToken=token)
        with pytest.raises(client.exceptions.ConflictException):
            cloud.start(clientToken=token, group="another")
        assert len(cloud.submitted_ids()) == 1


class TestLostSubmitResponse:
    """RunTask carried out but its answer lost: exactly one task, no retry burned."""

    def test_one_task_although_botocore_retries(
        self, cloud: EcsDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """botocore re-sends RunTask with the same clientToken; ECS answers with the same task."""
        allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response("RunTask")
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableEcsRunTaskOperator, probe, **kwargs(cloud.resources))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.server.calls("RunTask")) == 2 and len(cloud.submitted_ids()) == 1
        assert record(outcome)["external_id"] == cloud.submitted_ids()[0]

    def test_one_task_with_our_retry(self, cloud: EcsDriver) -> None:
        """Without botocore retries, cloud_retry resubmits the same token: one task."""
        cloud.server.lose_response("RunTask")
        outcome = run_task(
            ResumableEcsRunTaskOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud.resources),
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert [call.replayed for call in cloud.server.calls("RunTask")] == [False, True]
        assert len(cloud.submitted_ids()) == 1


class TestThrottling:
    """Throttled and failing ECS calls are retried by the mixin without consuming a try."""

    def test_throttled_submit_and_status_reads(self, cloud: EcsDriver) -> None:
        """ThrottlingException on RunTask and DescribeTasks (400 and 429), a 503: one task, try 1."""
        cloud.server.throttle("RunTask")
        cloud.server.throttle("DescribeTasks", status=429)
        cloud.server.inject_fault("DescribeTasks", 503)
        outcome = run_task(
            ResumableEcsRunTaskOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud.resources),
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert [call.status for call in cloud.server.calls("RunTask")] == [400, 200]


class TestFailure:
    """A failed task fails the try with ECS's reason; skip exit codes skip it, as in stock."""

    def test_failure_reason_in_the_error(self, cloud: EcsDriver) -> None:
        """describe_failure names the exit code, stopCode and stoppedReason."""
        task_arn = cloud.start()
        cloud.server.finish(task_arn, succeeded=False, reason="OutOfMemoryError: Container killed")
        with pytest.raises(JobFailedError, match="exited with code 1") as raised:
            operator(cloud.resources).poll_until_complete(task_arn, ctx())
        assert "EssentialContainerExited: OutOfMemoryError: Container killed" in str(raised.value)

    def test_failed_to_start(self, cloud: EcsDriver) -> None:
        """stopCode TaskFailedToStart fails, with the reason (stock: EcsTaskFailToStart)."""
        task_arn = cloud.start()
        cloud.server.set_state(task_arn, "FAILED_TO_START", "CannotPullContainerError: no such image")
        with pytest.raises(JobFailedError, match="failed to start: CannotPullContainerError"):
            operator(cloud.resources).poll_until_complete(task_arn, ctx())

    def test_run_task_without_a_task_raises_the_stock_error(self, cloud: EcsDriver) -> None:
        """RunTask that places no task (too much memory for the instance) raises EcsOperatorError."""
        client = aws_client(cloud.server.url, "ecs")
        client.register_task_definition(
            family="huge", containerDefinitions=[{"name": "main", "image": "busybox", "memory": 10**6}]
        )
        op = operator(cloud.resources, task_definition="huge", retries=0)
        with pytest.raises(EcsOperatorError, match="RunTask started no task"):
            op.execute(ctx())

    def test_skip_exit_code_skips_the_task(self, cloud: EcsDriver) -> None:
        """An exit code in skip_on_exit_code ends the try skipped; the record is completed."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(succeeded=False))
        outcome = run_task(ResumableEcsRunTaskOperator, probe, **kwargs(cloud.resources, skip_on_exit_code=1))
        assert outcome.task("job").state == "skipped" and outcome.task("job").try_number == 1
        assert record(outcome)["phase"] == "completed" and len(cloud.submitted_ids()) == 1

    def test_skip_exit_code_on_a_retry_that_finds_the_task_stopped(self, cloud: EcsDriver) -> None:
        """A retry that finds the task stopped with a skip code skips without starting another."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=False)
            raise SimulatedWorkerCrash("worker died just as the task stopped")

        probe = ScenarioProbe(cloud, on_poll)
        outcome = run_task(
            ResumableEcsRunTaskOperator, probe, **kwargs(cloud.resources, skip_on_exit_code=[1])
        )
        assert outcome.task("job").state == "skipped" and outcome.task("job").try_number == 2
        assert len(cloud.submitted_ids()) == 1 and 2 not in probe.polled


class TestModes:
    """wait_for_completion=False, CloudWatch logs and reattach, as in stock."""

    def test_not_waiting_returns_the_running_task(self, cloud: EcsDriver) -> None:
        """wait_for_completion=False: the task ends once ECS started it; the task keeps running."""
        outcome = run_task(
            ResumableEcsRunTaskOperator, retries=0, **kwargs(cloud.resources, wait_for_completion=False)
        )
        (task_arn,) = cloud.submitted_ids()
        assert outcome.task("job").state == "success" and xcoms(outcome) == {"ecs_task_arn": task_arn}
        assert cloud.server.job(str(task_arn))["finished"] is False and cloud.cancelled_ids() == []

    def test_last_log_line_is_the_return_value(self, cloud: EcsDriver) -> None:
        """With awslogs_*, the logs are forwarded while waiting and the last line is returned."""
        logs = aws_client(cloud.server.url, "logs")
        logs.create_log_group(logGroupName="/ecs/etl")

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            stream = f"ecs/main/{str(external_id).rsplit('/', 1)[-1]}"
            logs.create_log_stream(logGroupName="/ecs/etl", logStreamName=stream)
            events = [{"timestamp": _now_ms() + i, "message": f"line {i}"} for i in range(3)]
            logs.put_log_events(logGroupName="/ecs/etl", logStreamName=stream, logEvents=events)
            probe.cloud.finish(external_id, succeeded=True)

        arguments = kwargs(
            cloud.resources,
            awslogs_group="/ecs/etl",
            awslogs_stream_prefix="ecs",
            awslogs_fetch_interval=timedelta(milliseconds=10),
        )
        outcome = run_task(ResumableEcsRunTaskOperator, ScenarioProbe(cloud, on_poll), **arguments)
        assert outcome.task("job").state == "success"
        assert xcoms(outcome) == {"ecs_task_arn": cloud.submitted_ids()[0], "return_value": "line 2"}

    def test_failure_message_ends_with_the_last_log_lines(self, cloud: EcsDriver) -> None:
        """number_logs_exception lines of the stream end the JobFailedError message, as in stock."""
        logs = aws_client(cloud.server.url, "logs")
        logs.create_log_group(logGroupName="/ecs/etl")
        task_arn = cloud.start()
        stream = f"ecs/main/{task_arn.rsplit('/', 1)[-1]}"
        logs.create_log_stream(logGroupName="/ecs/etl", logStreamName=stream)
        events = [{"timestamp": _now_ms() + i, "message": f"trace {i}"} for i in range(5)]
        logs.put_log_events(logGroupName="/ecs/etl", logStreamName=stream, logEvents=events)
        cloud.server.finish(task_arn, succeeded=False)
        op = operator(cloud.resources, awslogs_group="/ecs/etl", awslogs_stream_prefix="ecs")
        op.number_logs_exception = 2
        with pytest.raises(JobFailedError, match="last 2 logs from Cloudwatch:\ntrace 3\ntrace 4"):
            op.poll_until_complete(task_arn, ctx())

    def test_reattach_sets_the_stock_started_by(self, cloud: EcsDriver) -> None:
        """reattach=True: startedBy is the stock UUID of the task instance (the stock operator finds it)."""
        outcome = run_task(
            ResumableEcsRunTaskOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud.resources, reattach=True),
        )
        (request,) = submit_requests(cloud.server, "RunTask")
        assert request["startedBy"] == generate_uuid(outcome.dag_id, "job", outcome.run_id, "-1")
        assert len(cloud.server.calls("ListTasks")) == 1  # the stock lookup, once: nothing was recorded

    def test_reattach_adopts_a_task_the_stock_operator_started(self, cloud: EcsDriver) -> None:
        """Nothing recorded, a running task of the same startedBy: adopted, no RunTask."""
        started_by = generate_uuid("dag", "job", "manual__1", "-1")  # the task instance of ctx()
        stock_arn = cloud.start(startedBy=started_by)
        context = ctx()
        operator(cloud.resources, reattach=True, wait_for_completion=False).execute(context)
        assert len(cloud.server.calls("RunTask")) == 1 and cloud.submitted_ids() == [stock_arn]
        assert context["task_state_store"].get(RECORD_KEY)["external_id"] == stock_arn

    def test_reattach_does_not_look_up_a_recorded_task(self, cloud: EcsDriver) -> None:
        """A try whose task instance has a record reconnects through it: no second ListTasks."""
        store = InMemoryTaskStateStore()
        first = defer(operator(cloud.resources, reattach=True, deferrable=True), ctx(store))
        second = defer(operator(cloud.resources, reattach=True, deferrable=True), ctx(store, try_number=2))
        assert first.trigger.task_arn == second.trigger.task_arn == cloud.submitted_ids()[0]
        assert len(cloud.server.calls("ListTasks")) == 1


class TestCancel:
    """StopTask from the operator and from the custodian's canceller."""

    def test_cancel_job_stops_the_task(self, cloud: EcsDriver) -> None:
        """cancel_job is StopTask with our reason."""
        task_arn = cloud.start()
        operator(cloud.resources).cancel_job(task_arn, ctx())
        assert cloud.server.job(task_arn)["state"] == "CANCELLED" and cloud.cancelled_ids() == [task_arn]
        (request,) = submit_requests(cloud.server, "StopTask")
        assert request["reason"] == STOP_REASON

    def test_custodian_canceller(self, cloud: EcsDriver) -> None:
        """The recipe names the registered canceller; calling it stops the task."""
        from airflow_resumable.custodian import run_canceller

        task_arn = cloud.start()
        recipe = operator(cloud.resources).cancel_recipe(ctx())
        assert recipe is not None and recipe[0] == "aws_ecs_task"
        assert json.loads(json.dumps(recipe[1])) == recipe[1]
        run_canceller(recipe, task_arn)
        assert cloud.server.job(task_arn)["state"] == "CANCELLED"
        (request,) = submit_requests(cloud.server, "StopTask")
        assert request["reason"] == CUSTODIAN_REASON

    def test_canceller_of_a_stopped_task_leaves_it(self, cloud: EcsDriver) -> None:
        """StopTask of a task that already stopped succeeds and changes nothing (as ECS)."""
        task_arn = cloud.start()
        cloud.server.finish(task_arn, succeeded=True)
        cancel_ecs_task_by_recipe(task_arn, cluster=cloud.resources.cluster, aws_conn_id="aws_default")
        assert cloud.server.job(task_arn)["state"] == "SUCCEEDED"


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"task_definition": ""}, "task_definition"),
            ({"cluster": None}, "cluster"),
            ({"overrides": None}, "overrides"),
            ({"overrides": ["not", "a", "dict"]}, "overrides"),
            ({"network_configuration": "awsvpc"}, "network_configuration"),
            ({"tags": [{"key": "a"}]}, "tags"),
            ({"placement_strategy": {"type": "spread"}}, "placement_strategy"),
            ({"launch_type": 2}, "launch_type"),
        ],
    )
    def test_invalid_argument(self, cloud: EcsDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; the controller saw no call."""
        op = operator(cloud.resources, **override)
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            op.execute(ctx())
        assert len(cloud.server.ledger()) == calls


# ---------------------------------------------------------------------------------------- deferral
def defer(op: Any, context: dict[str, Any], method: str = "execute", *args: Any) -> Any:
    """Run ``execute`` (or ``execute_complete``) until it defers; return the deferral."""
    with pytest.raises(TaskDeferred) as deferred:
        getattr(op, method)(context, *args)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value


def rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``."""
    classpath, arguments = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**arguments)


def trigger_event(trigger: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Run the real trigger (rebuilt from its serialization; aiobotocore against moto) to its first event."""

    async def first() -> dict[str, Any]:
        async for event in rebuilt(trigger).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


class TestDeferrable:
    """deferrable=True: the ARN recorded first, our trigger, every way back."""

    def test_defers_with_our_trigger_once_the_arn_is_recorded(self, cloud: EcsDriver) -> None:
        """At TaskDeferred the record holds the task; the trigger is ours, built like the stock one."""
        context = ctx()
        deferred = defer(operator(cloud.resources, deferrable=True), context)
        (task_arn,) = cloud.submitted_ids()
        trigger = deferred.trigger
        assert type(trigger) is ResumableTaskDoneTrigger and isinstance(trigger, TaskDoneTrigger)
        assert type(trigger).__mro__[1] is ResumableTriggerMixin
        assert trigger.task_arn == task_arn and trigger.cluster == cloud.resources.cluster
        saved = context["task_state_store"].get(RECORD_KEY)
        assert saved["phase"] == "submitted" and saved["external_id"] == task_arn
        assert context["ti"].xcoms == {"ecs_task_arn": task_arn}
        assert deferred.timeout == timedelta(seconds=1_000_000 * 0.001 + 60)

    def test_trigger_serializes_to_our_classpath(self, cloud: EcsDriver) -> None:
        """serialize() names our class, carries the stock arguments and ours, and rebuilds the same."""
        trigger = defer(operator(cloud.resources, deferrable=True, cancel_on_user_stop=False), ctx()).trigger
        classpath, arguments = trigger.serialize()
        assert classpath == TRIGGER_PATH
        _, stock_arguments = TaskDoneTrigger.serialize(trigger)
        assert {key: arguments[key] for key in stock_arguments} == stock_arguments
        assert rebuilt(trigger).serialize() == (classpath, arguments)
        assert arguments["cancel_on_user_stop"] is False and arguments["ledger_key"].startswith(
            LEDGER_KEY_PREFIX
        )

    def test_wait_for_completion_false_still_defers(self, cloud: EcsDriver) -> None:
        """As in stock, deferrable waits for the task even with wait_for_completion=False."""
        deferred = defer(operator(cloud.resources, deferrable=True, wait_for_completion=False), ctx())
        assert deferred.trigger.task_arn == cloud.submitted_ids()[0]

    def test_execute_complete_finishes_the_record(self, cloud: EcsDriver) -> None:
        """The trigger fires once the task stopped; execute_complete returns the stock value (None)."""
        context = ctx()
        trigger = defer(operator(cloud.resources, deferrable=True), context).trigger
        cloud.finish(cloud.submitted_ids()[0], succeeded=True)
        event = trigger_event(trigger)
        assert event == {"status": "success", "task_arn": trigger.task_arn, "cluster": trigger.cluster}
        resumed = ctx(context["task_state_store"], xcoms=context["ti"].xcoms)
        assert operator(cloud.resources, deferrable=True).execute_complete(resumed, event) is None
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"
        assert set(resumed["ti"].xcoms) == {"ecs_task_arn"} and len(cloud.submitted_ids()) == 1

    def test_failed_task_fails_and_the_retry_starts_generation_2(self, cloud: EcsDriver) -> None:
        """The stock success event for a failed task: JobFailedError; the next try starts a new task."""
        store = InMemoryTaskStateStore()
        trigger = defer(operator(cloud.resources, deferrable=True), ctx(store)).trigger
        cloud.finish(cloud.submitted_ids()[0], succeeded=False)
        event = trigger_event(trigger)
        with pytest.raises(JobFailedError, match="exited with code 1"):
            operator(cloud.resources, deferrable=True).execute_complete(ctx(store), event)
        retry = defer(operator(cloud.resources, deferrable=True), ctx(store, try_number=2)).trigger
        first, second = cloud.submitted_ids()
        assert trigger.task_arn == first and retry.task_arn == second
        assert store.get(RECORD_KEY)["generation"] == 2

    def test_attempts_run_out_while_running(self, cloud: EcsDriver) -> None:
        """The stock trigger raises; ours sends an error event: the try fails, the retry reconnects."""
        store = InMemoryTaskStateStore()
        trigger = defer(operator(cloud.resources, deferrable=True, waiter_max_attempts=1), ctx(store)).trigger
        event = trigger_event(trigger)
        assert event["status"] == "error" and event["task_arn"] == trigger.task_arn
        with pytest.raises(ResumableError, match="still active"):
            operator(cloud.resources, deferrable=True).execute_complete(ctx(store), event)
        assert cloud.cancelled_ids() == []
        again = defer(operator(cloud.resources, deferrable=True), ctx(store, try_number=2)).trigger
        assert again.task_arn == trigger.task_arn and len(cloud.submitted_ids()) == 1

    def test_expired_task_is_an_error_event(self, cloud: EcsDriver) -> None:
        """A task ECS forgot (the stock trigger: IndexError) ends the trigger with an error event."""
        trigger = defer(operator(cloud.resources, deferrable=True), ctx()).trigger
        cloud.expire(trigger.task_arn)
        event = trigger_event(trigger)
        assert event["status"] == "error"
        with pytest.raises(JobNotFoundError):
            operator(cloud.resources, deferrable=True).execute_complete(ctx(), event)

    def test_real_dag_run_with_the_same_xcoms_as_the_stock_deferral(self, cloud: EcsDriver) -> None:
        """Through dag.test(): both defer, the triggers see the task stop, both push the same XComs."""
        cloud.server.set_lifecycle("clock", run_duration=0.1, final_result="succeeded", reads_per_state=1)
        arguments = {**kwargs(cloud.resources), "deferrable": True, "waiter_delay": 0.05}
        stock = run_task(EcsRunTaskOperator, retries=0, **arguments)
        resumed = mock.patch.object(
            ResumableEcsRunTaskOperator,
            "execute_complete",
            autospec=True,
            side_effect=ResumableEcsRunTaskOperator.execute_complete,
        )
        with resumed as execute_complete:
            ours = run_task(ResumableEcsRunTaskOperator, retries=0, **arguments)
        assert stock.task("job").state == ours.task("job").state == "success"
        assert execute_complete.call_count == 1, "the task must have deferred and resumed"
        stock_arn, our_arn = cloud.submitted_ids()
        assert xcoms(stock) == {"ecs_task_arn": stock_arn} and xcoms(ours) == {"ecs_task_arn": our_arn}
        assert record(ours)["phase"] == "completed" and cloud.cancelled_ids() == []


class TestTriggerOnKill:
    """A user's action while deferred: a clear leaves the task to the next try, a stop stops it."""

    KEY = ledger_key(TaskIdentity("dag", "manual__1", "job", -1))

    @classmethod
    def kill(cls, trigger: Any, server_state: str | None, *, knows: bool = True) -> InMemoryJobLedger:
        """Call ``on_kill`` as the triggerer does, the server holding ``server_state``; return the ledger."""
        trigger = rebuilt(trigger)
        trigger.task_instance = FakeTaskInstance(
            "dag", "manual__1", "job", server_state=server_state, server_knows=knows
        )
        ledger = InMemoryJobLedger()
        ledger.set(cls.KEY, {"record": "in flight"})
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=ledger):
            asyncio.run(trigger.on_kill())
        return ledger

    @pytest.mark.parametrize("state", [None, "queued", "running"])
    def test_clear_leaves_the_task(self, cloud: EcsDriver, state: str | None) -> None:
        """Cleared (or already picked up again): no StopTask, the ledger entry stays."""
        ledger = self.kill(defer(operator(cloud.resources, deferrable=True), ctx()).trigger, state)
        assert cloud.cancelled_ids() == [] and ledger.get(self.KEY) is not None

    @pytest.mark.parametrize("state", ["failed", "success"])
    def test_user_stop_stops_the_task(self, cloud: EcsDriver, state: str) -> None:
        """Marked failed or success: StopTask with our reason, the ledger entry deleted."""
        trigger = defer(operator(cloud.resources, deferrable=True), ctx()).trigger
        ledger = self.kill(trigger, state)
        assert cloud.cancelled_ids() == [trigger.task_arn] and ledger.get(self.KEY) is None
        assert cloud.server.job(trigger.task_arn)["state"] == "CANCELLED"
