"""ResumableGlueJobOperator against moto with the lifecycle controller."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.amazon.aws.hooks.glue import GlueJobHook
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.triggers.glue import GlueJobCompleteTrigger
from airflow.sdk import ResumableJobMixin as CoreResumableJobMixin
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.custodian import CANCELLERS, run_canceller
from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError, ResumableError
from airflow_resumable.ledger import ledger_key
from airflow_resumable.providers.amazon.common import AwsJobMixin
from airflow_resumable.providers.amazon.glue import (
    TOKEN_ARGUMENT,
    ResumableGlueJobCompleteTrigger,
    ResumableGlueJobOperator,
    cancel_glue_job_run_by_recipe,
)
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing.aws import TEST_ROLE_ARN, MotoJobDriver, MotoServer, aws_client
from airflow_resumable.testing.contract import (
    ResumableOperatorContract,
    ScenarioProbe,
    check_operator_class,
    finish_on_first_poll,
)
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from airflow_resumable.triggers import ResumableTriggerMixin
from tests.providers.amazon.helpers import (
    FAST,
    XComParity,
    allow_botocore_retries,
    first_event,
    rebuilt_trigger,
    record,
    run_task,
    submit_requests,
    xcoms,
)
from tests.providers.amazon.helpers import task_context as _task_context

# After testing.aws: the kind module is imported by the controller's kind registry first.
from airflow_resumable.testing._aws_jobs_glue import provision_glue  # isort: skip

if TYPE_CHECKING:
    from pydantic import JsonValue

#: Every Glue job run state: (active, succeeded).
STATES = {
    "STARTING": (True, False),
    "RUNNING": (True, False),
    "STOPPING": (True, False),
    "WAITING": (True, False),
    "SUCCEEDED": (False, True),
    "STOPPED": (False, False),
    "FAILED": (False, False),
    "TIMEOUT": (False, False),
    "ERROR": (False, False),
    "EXPIRED": (False, False),
}
#: The stock operator's XComs: the run id (return value and ``glue_job_run_id``) and the run link.
GLUE_XCOMS = frozenset(
    {"return_value", "glue_job_run_id", "glue_job_run_details", "_link_GlueJobRunDetailsLink"}
)


def task_context(store: InMemoryTaskStateStore | None = None, **options: Any) -> Any:
    """The helpers' task context, typed as Airflow's ``Context`` is taken by the operator's methods."""
    return _task_context(store, **options)


class GlueDriver(MotoJobDriver):
    """The kit's driver, plus a provisioned Glue job that may run many times at once."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "glue")
        self.server = server
        self.job_name = provision_glue(server.url)

    def throttle_next_submit(self) -> None:
        """The next StartJobRun answers ThrottlingException (nothing is started)."""
        self.server.throttle("StartJobRun")

    def start_run(self, arguments: dict[str, str] | None = None) -> str:
        """A run of the job started outside the operator (another task, a user)."""
        client = aws_client(self.server.url, "glue")
        return str(client.start_job_run(JobName=self.job_name, Arguments=arguments or {})["JobRunId"])


@pytest.fixture
def cloud(moto: MotoServer) -> GlueDriver:
    """A reset controller with a Glue job."""
    return GlueDriver(moto)


def kwargs(job_name: str, marker: str = "v1", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments; ``marker`` is a templated run argument."""
    return {
        "job_name": job_name,
        "script_args": {"--input": f"s3://bucket/{marker}"},
        "job_poll_interval": 0.001,
        **extra,
    }


class TestResumableGlueJobOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is a templated run argument."""

    operator_class = ResumableGlueJobOperator
    deferrable_kwargs = {"deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
    expected_xcom_keys = GLUE_XCOMS

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud.job_name, marker=spec_marker)


class TestSubclassingAStockCoreMixinOperator:
    """How the class sits on a stock operator that already uses Airflow's core mixin."""

    def test_engine_methods_come_from_the_resumable_classes(self) -> None:
        """execute, execute_complete, the poll loop and on_kill are not the stock ones."""
        check_operator_class(ResumableGlueJobOperator)
        for name in ("execute", "execute_complete", "execute_resumable", "poll_until_complete", "on_kill"):
            owner = next(k for k in ResumableGlueJobOperator.__mro__ if name in vars(k))
            assert owner is not GlueJobOperator and owner is not CoreResumableJobMixin, name

    def test_stock_order_is_refused(self) -> None:
        """With the stock class first, its execute and poll loop would win: the kit refuses the class."""

        class StockFirst(GlueJobOperator, AwsJobMixin):  # type: ignore[misc]  # the wrong order, on purpose
            pass

        with pytest.raises(AssertionError, match="comes from"):
            check_operator_class(StockFirst)

    def test_stock_external_id_key_is_kept(self) -> None:
        """Our mixin's default key would hide the stock one; the class declares the stock key again."""
        assert (
            ResumableGlueJobOperator.external_id_key == GlueJobOperator.external_id_key == "glue_job_run_id"
        )

    def test_stock_not_found_pseudo_state_becomes_an_error(self, cloud: GlueDriver) -> None:
        """For a forgotten run the stock hook answers NOT_FOUND; ours raises JobNotFoundError."""
        run_id = cloud.start_run()
        cloud.server.expire(run_id)
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        assert GlueJobOperator.get_job_status(operator, run_id, task_context()) == "NOT_FOUND"
        with pytest.raises(JobNotFoundError, match=run_id):
            operator.get_job_status(run_id, task_context())


class TestStockParity:
    """The same XComs and return value as the stock GlueJobOperator, for the same job."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: GlueDriver) -> None:
        """Stock and resumable runs push the same keys; values differ only by the run id."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = xcoms(run_task(GlueJobOperator, retries=0, **kwargs(cloud.job_name)))
        ours = xcoms(run_task(ResumableGlueJobOperator, retries=0, **kwargs(cloud.job_name)))
        assert set(ours) == GLUE_XCOMS
        assert _masked(stock, stock["return_value"]) == _masked(ours, ours["return_value"])

    def test_same_start_job_run_request_but_the_token(self, cloud: GlueDriver) -> None:
        """The StartJobRun request is the stock one plus the token argument."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        extra: dict[str, Any] = {
            "run_job_kwargs": {"Timeout": 30, "WorkerType": "G.1X", "NumberOfWorkers": 2}
        }
        run_task(GlueJobOperator, retries=0, **kwargs(cloud.job_name, **extra))
        run_task(ResumableGlueJobOperator, retries=0, **kwargs(cloud.job_name, **extra))
        stock, ours = submit_requests(cloud.server, "StartJobRun")
        assert ours["Arguments"].pop(TOKEN_ARGUMENT).startswith("ar-")
        assert ours == stock and stock["Arguments"] == {"--input": "s3://bucket/v1"}


class TestStateMapping:
    """Every Glue run state, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: GlueDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The state is passed through and classified."""
        run_id = cloud.start_run()
        cloud.server.set_state(run_id, state)
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        status = operator.get_job_status(run_id, task_context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    def test_unknown_state_is_waited_on(self) -> None:
        """A state AWS may add later counts as active: never a resubmission on a guess."""
        operator = ResumableGlueJobOperator(task_id="t", job_name="n")
        assert operator.is_job_active("SOMETHING_NEW") and not operator.is_job_succeeded("SOMETHING_NEW")

    def test_expired_run_is_not_found(self, cloud: GlueDriver) -> None:
        """A run Glue forgot (GetJobRun → EntityNotFoundException) raises JobNotFoundError."""
        run_id = cloud.start_run()
        cloud.server.expire(run_id)
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        with pytest.raises(JobNotFoundError, match="does not exist"):
            operator.get_job_status(run_id, task_context())

    def test_run_of_a_deleted_job_is_not_found(self, cloud: GlueDriver) -> None:
        """A run id of a job that no longer exists raises JobNotFoundError too."""
        operator = ResumableGlueJobOperator(task_id="t", **kwargs("no-such-job"))
        with pytest.raises(JobNotFoundError):
            operator.get_job_status("jr_" + "0" * 64, task_context())


class TestTokenArgument:
    """The submission token travels as a run argument, next to the user's script_args."""

    def test_argument_carries_the_record_token(self, cloud: GlueDriver) -> None:
        """StartJobRun's Arguments are script_args plus --airflow-resumable-token = the record's token."""
        outcome = run_task(
            ResumableGlueJobOperator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud.job_name)
        )
        (request,) = submit_requests(cloud.server, "StartJobRun")
        token = record(outcome)["token"]
        assert request["Arguments"] == {"--input": "s3://bucket/v1", TOKEN_ARGUMENT: token}
        assert [entry.token for entry in cloud.server.submissions("glue")] == [token]

    def test_reserved_argument_is_refused(self, cloud: GlueDriver) -> None:
        """A user argument with our name fails before any AWS call."""
        operator = ResumableGlueJobOperator(
            task_id="t", **kwargs(cloud.job_name, script_args={TOKEN_ARGUMENT: "mine"})
        )
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=TOKEN_ARGUMENT):
            operator.execute(task_context())
        assert len(cloud.server.ledger()) == calls


class TestCrashBeforePersist:
    """A crash between StartJobRun and storing the id: the retry finds the run by its token argument."""

    def test_retry_finds_the_run_by_token(self, cloud: GlueDriver) -> None:
        """Try 2 pages GetJobRuns, finds the run carrying its token, and never starts another."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(ResumableGlueJobOperator, probe, **kwargs(cloud.job_name))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (run_id,) = cloud.submitted_ids()
        assert probe.polled[2] == [run_id] and probe.submitted[2] == []
        assert len(cloud.server.calls("StartJobRun")) == 1 and cloud.server.calls("GetJobRuns") != []

    def test_find_job_takes_only_the_run_with_this_token(self, cloud: GlueDriver) -> None:
        """Runs of the same job without the token, or with another one (newer ones too), are not taken."""
        cloud.start_run()
        cloud.start_run({TOKEN_ARGUMENT: "ar-other"})
        mine = cloud.start_run({TOKEN_ARGUMENT: "ar-mine", "--input": "s3://bucket/v1"})
        cloud.start_run({TOKEN_ARGUMENT: "ar-newer"})
        cloud.start_run()
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        assert operator.find_job("ar-mine", task_context()) == mine
        assert operator.find_job("ar-absent", task_context()) is None

    def test_find_job_pages_through_the_runs(self, cloud: GlueDriver) -> None:
        """The run of the token is found beyond GetJobRuns' first page (200 runs, newest first)."""
        mine = cloud.start_run({TOKEN_ARGUMENT: "ar-mine"})
        for _ in range(201):
            cloud.server.finish(cloud.start_run())  # ended: the job allows 100 concurrent runs
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        assert operator.find_job("ar-mine", task_context()) == mine
        assert len(cloud.server.calls("GetJobRuns")) == 2

    def test_find_job_of_a_missing_job_is_none(self, cloud: GlueDriver) -> None:
        """A job that does not exist started no run: None, so the mixin submits."""
        operator = ResumableGlueJobOperator(task_id="t", **kwargs("no-such-job"))
        assert operator.find_job("ar-mine", task_context()) is None


class TestLostSubmitResponse:
    """StartJobRun carried out but its answer lost: exactly one run, no retry burned."""

    def test_one_run_although_botocore_would_retry(
        self, cloud: GlueDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With botocore retries on, StartJobRun is sent once; the mixin finds the run by its token."""
        allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response("StartJobRun")
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableGlueJobOperator, probe, **kwargs(cloud.job_name))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.server.calls("StartJobRun")) == 1 and len(cloud.submitted_ids()) == 1
        assert record(outcome)["external_id"] == cloud.submitted_ids()[0]


class TestThrottling:
    """Throttled and failing AWS calls are retried by the mixin without consuming a try."""

    def test_throttled_status_reads_and_submit(self, cloud: GlueDriver) -> None:
        """ThrottlingException on StartJobRun and GetJobRun (400 and 429), a 503: one run, first try."""
        cloud.server.throttle("StartJobRun")
        cloud.server.throttle("GetJobRun", status=429)
        cloud.server.inject_fault("GetJobRun", 503)
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableGlueJobOperator, probe, **kwargs(cloud.job_name))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert [e.status for e in cloud.server.calls("StartJobRun")] == [400, 200]


class TestFailureAndModes:
    """A failed run fails the try with Glue's message; STOPPED, not waiting, verbose, sleep_before_return."""

    def test_failure_reason_in_the_error(self, cloud: GlueDriver) -> None:
        """describe_failure reports the run's ErrorMessage."""
        run_id = cloud.start_run()
        cloud.server.finish(run_id, succeeded=False, reason="Py4JJavaError: An error occurred in o84")
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        with pytest.raises(JobFailedError, match="Py4JJavaError") as failure:
            operator.poll_until_complete(run_id, task_context())
        assert failure.value.status == "FAILED"

    def test_stopped_is_a_failure(self, cloud: GlueDriver) -> None:
        """A run stopped from the console fails the try, as in the stock operator."""
        run_id = cloud.start_run()
        cloud.server.set_state(run_id, "STOPPED")
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        with pytest.raises(JobFailedError, match="STOPPED"):
            operator.poll_until_complete(run_id, task_context())

    def test_not_waiting_returns_the_running_run(self, cloud: GlueDriver) -> None:
        """wait_for_completion=False: the task ends once the run exists; the run keeps running."""
        outcome = run_task(
            ResumableGlueJobOperator, retries=0, **kwargs(cloud.job_name, wait_for_completion=False)
        )
        (run_id,) = cloud.submitted_ids()
        assert outcome.task("job").state == "success" and xcoms(outcome)["return_value"] == run_id
        assert cloud.server.job(str(run_id))["finished"] is False and cloud.cancelled_ids() == []

    def test_verbose_prints_the_logs_at_every_poll(self, cloud: GlueDriver) -> None:
        """verbose=True: the stock print_job_logs at each status read of the poll loop, one token set."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=1)
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name, verbose=True, **FAST))
        with mock.patch.object(GlueJobHook, "print_job_logs", autospec=True) as printed:
            run_id = operator.execute(task_context())
        assert printed.call_count >= 2
        assert {call.kwargs["run_id"] for call in printed.call_args_list} == {run_id}
        assert len({id(call.kwargs["continuation_tokens"]) for call in printed.call_args_list}) == 1

    def test_verbose_log_failure_only_warns(self, cloud: GlueDriver) -> None:
        """A CloudWatch error while printing the logs does not fail the wait."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=1)
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name, verbose=True, **FAST))
        with mock.patch.object(GlueJobHook, "print_job_logs", side_effect=RuntimeError("logs down")):
            assert operator.execute(task_context()) == cloud.submitted_ids()[0]

    def test_sleep_before_return_after_success(self, cloud: GlueDriver) -> None:
        """sleep_before_return waits (interruptibly) after the run succeeded, as the stock wait does."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        operator = ResumableGlueJobOperator(
            task_id="t", **kwargs(cloud.job_name, sleep_before_return=7, **FAST)
        )
        with mock.patch.object(ResumableGlueJobOperator, "_sleep_between_polls") as slept:
            operator.execute(task_context())
        assert mock.call(7) in slept.call_args_list


class TestJobDefinition:
    """The job is created (or updated) before the run, as the stock operator does it."""

    def test_missing_job_is_created_with_the_stock_config(self, cloud: GlueDriver) -> None:
        """No such job: CreateJob with the stock configuration (role, script, concurrency), then one run."""
        arguments = kwargs(
            "created-by-the-task",
            script_location="s3://bucket/etl.py",
            iam_role_arn=TEST_ROLE_ARN,
            concurrent_run_limit=10,
        )
        outcome = run_task(
            ResumableGlueJobOperator, ScenarioProbe(cloud, finish_on_first_poll()), **arguments
        )
        assert outcome.task("job").state == "success"
        (created,) = [
            r for r in submit_requests(cloud.server, "CreateJob") if r["Name"] == "created-by-the-task"
        ]
        assert created["Role"] == TEST_ROLE_ARN
        assert created["Command"]["ScriptLocation"] == "s3://bucket/etl.py"
        assert created["ExecutionProperty"] == {"MaxConcurrentRuns": 10}
        (started,) = submit_requests(cloud.server, "StartJobRun")
        assert started["JobName"] == "created-by-the-task"

    def test_update_config_is_part_of_the_spec(self, cloud: GlueDriver) -> None:
        """With update_config the job definition's inputs change the fingerprint; without, they do not."""

        def fingerprint(**extra: Any) -> str | None:
            operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name, **extra))
            return operator.job_fingerprint(task_context())

        assert fingerprint(script_location="s3://a.py") == fingerprint(script_location="s3://b.py")
        assert fingerprint(script_location="s3://a.py", update_config=True) != fingerprint(
            script_location="s3://b.py", update_config=True
        )


class TestCancel:
    """BatchStopJobRun from the operator and from the custodian's recipe."""

    def test_cancel_stops_an_active_run(self, cloud: GlueDriver) -> None:
        """cancel_job stops the run; a second call on the stopped run is fine."""
        run_id = cloud.start_run()
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name))
        operator.cancel_job(run_id, task_context())
        assert cloud.server.job(run_id)["state"] == "STOPPED"
        operator.cancel_job(run_id, task_context())
        assert cloud.cancelled_ids() == [run_id, run_id]

    def test_recipe_cancels_through_the_registered_canceller(self, cloud: GlueDriver) -> None:
        """The recipe names aws_glue_job_run, registered to this module's function, with JSON arguments."""
        operator = ResumableGlueJobOperator(task_id="t", **kwargs(cloud.job_name, region_name="us-east-1"))
        recipe = operator.cancel_recipe(task_context())
        assert recipe is not None and json.loads(json.dumps(recipe[1])) == recipe[1]
        assert CANCELLERS[recipe[0]] == (
            f"{cancel_glue_job_run_by_recipe.__module__}:{cancel_glue_job_run_by_recipe.__name__}"
        )
        run_id = cloud.start_run()
        run_canceller(recipe, run_id)
        assert cloud.server.job(run_id)["state"] == "STOPPED"

    def test_canceller_of_a_forgotten_run_is_quiet(self, cloud: GlueDriver) -> None:
        """A run Glue no longer knows needs no stop: no error."""
        run_id = cloud.start_run()
        cloud.server.expire(run_id)
        cancel_glue_job_run_by_recipe(run_id, job_name=cloud.job_name, aws_conn_id="aws_default")


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"job_name": ""}, "job_name"),
            ({"job_name": "two\nlines"}, "job_name"),
            ({"job_name": "x" * 256}, "job_name"),
            ({"script_args": ["--input", "s3://x"]}, "script_args"),
            ({"script_args": {"--workers": 3}}, "script_args"),
            ({"run_job_kwargs": "Timeout=5"}, "run_job_kwargs"),
            ({"run_job_kwargs": {"Arguments": {"--a": "b"}}}, "run_job_kwargs"),
            ({"run_job_kwargs": {"JobName": "other"}}, "run_job_kwargs"),
            ({"create_job_kwargs": ["GlueVersion"]}, "create_job_kwargs"),
        ],
    )
    def test_invalid_argument(self, cloud: GlueDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; no AWS call was made."""
        operator = ResumableGlueJobOperator(task_id="t", **{**kwargs(cloud.job_name), **override})
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(task_context())
        assert len(cloud.server.ledger()) == calls


# --------------------------------------------------------------------------- deferrable
def _deferrable(cloud: GlueDriver, **extra: Any) -> ResumableGlueJobOperator:
    """A deferrable operator with fast retries and a fast trigger."""
    arguments = {"waiter_delay": 0.01, "waiter_max_attempts": 1000, **extra}
    return ResumableGlueJobOperator(
        task_id="job", deferrable=True, **{**kwargs(cloud.job_name), **FAST, **arguments}
    )


def _defer(op: Any, context: dict[str, Any], method: str = "execute", *args: Any) -> Any:
    """Run ``execute`` (or ``execute_complete``) until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        getattr(op, method)(context, *args)
    assert deferred.value.method_name == "execute_complete" and deferred.value.timeout is None
    return deferred.value.trigger


class TestDeferrable:
    """deferrable=True: the run id recorded first, our trigger, every way back."""

    def test_run_id_is_recorded_before_deferring(self, cloud: GlueDriver) -> None:
        """At TaskDeferred the record holds the run; the trigger is ours, extending the stock one."""
        context = task_context()
        trigger = _defer(_deferrable(cloud), context)
        (run_id,) = cloud.submitted_ids()
        store = context["task_state_store"]
        assert store.get(RECORD_KEY)["phase"] == "submitted" and store.get("glue_job_run_id") == run_id
        assert type(trigger) is ResumableGlueJobCompleteTrigger and isinstance(
            trigger, GlueJobCompleteTrigger
        )
        assert type(trigger).__mro__[1] is ResumableTriggerMixin
        assert (trigger.run_id, trigger.job_name) == (run_id, cloud.job_name)
        assert context["ti"].xcoms["glue_job_run_id"] == run_id

    def test_trigger_serializes_to_our_classpath(self, cloud: GlueDriver) -> None:
        """serialize() names our class, carries the stock arguments and ours, and rebuilds the same."""
        trigger = _defer(_deferrable(cloud, cancel_on_user_stop=False, verbose=True), task_context())
        classpath, arguments = trigger.serialize()
        assert classpath == "airflow_resumable.providers.amazon.glue.ResumableGlueJobCompleteTrigger"
        _, stock = GlueJobCompleteTrigger.serialize(trigger)
        assert {key: arguments[key] for key in stock} == stock and stock["verbose"] is True
        assert arguments["cancel_on_user_stop"] is False and arguments["ledger_key"]
        assert rebuilt_trigger(trigger).serialize() == (classpath, arguments)

    def test_waits_even_without_wait_for_completion(self, cloud: GlueDriver) -> None:
        """The stock deferral waits whatever wait_for_completion says; so does ours."""
        trigger = _defer(_deferrable(cloud, wait_for_completion=False), task_context())
        assert trigger.run_id == cloud.submitted_ids()[0]

    def test_execute_complete_finishes(self, cloud: GlueDriver) -> None:
        """The trigger fires once the run succeeded; execute_complete returns the run id, record completed."""
        context = task_context()
        trigger = _defer(_deferrable(cloud), context)
        (run_id,) = cloud.submitted_ids()
        cloud.finish(run_id, succeeded=True)
        event = first_event(trigger)
        assert event == {"status": "success", "run_id": run_id}
        resumed = task_context(context["task_state_store"], xcoms=context["ti"].xcoms)
        assert _deferrable(cloud).execute_complete(resumed, event) == run_id
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"
        assert set(resumed["ti"].xcoms) == {"glue_job_run_id", "glue_job_run_details"}

    def test_failure_event_fails_with_the_reason(self, cloud: GlueDriver) -> None:
        """A failed run: the event is an error, execute_complete raises JobFailedError with Glue's message."""
        store = InMemoryTaskStateStore()
        trigger = _defer(_deferrable(cloud), task_context(store))
        cloud.server.finish(str(cloud.submitted_ids()[0]), succeeded=False, reason="OutOfMemoryError")
        event = first_event(trigger)
        assert event["status"] == "error"
        with pytest.raises(JobFailedError, match="OutOfMemoryError"):
            _deferrable(cloud).execute_complete(task_context(store), event)

    def test_trigger_error_while_active_fails_the_try(self, cloud: GlueDriver) -> None:
        """The waiter's attempts ran out, the run goes on: the try fails, the run is left to the next try."""
        store = InMemoryTaskStateStore()
        trigger = _defer(_deferrable(cloud, waiter_max_attempts=1), task_context(store))
        event = first_event(trigger)
        with pytest.raises(ResumableError, match="still active"):
            _deferrable(cloud).execute_complete(task_context(store), event)
        assert cloud.cancelled_ids() == []
        again = _defer(_deferrable(cloud), task_context(store, try_number=2))
        assert again.run_id == cloud.submitted_ids()[0] and len(cloud.submitted_ids()) == 1

    @pytest.mark.parametrize(
        ("server_state", "stopped"), [("failed", True), ("success", True), (None, False)]
    )
    def test_on_kill_stops_only_after_a_user_stop(
        self, cloud: GlueDriver, server_state: str | None, stopped: bool
    ) -> None:
        """Marked failed or success: BatchStopJobRun; cleared (no state yet): the run is left running."""
        trigger = rebuilt_trigger(_defer(_deferrable(cloud), task_context()))
        key = ledger_key(TaskIdentity("dag", "manual__1", "job", -1))
        assert trigger.ledger_key == key
        trigger.task_instance = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state)
        ledger = InMemoryJobLedger()
        ledger.set(key, {"record": "in flight"})
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=ledger):
            asyncio.run(trigger.on_kill())
        run_id = str(cloud.submitted_ids()[0])
        assert cloud.cancelled_ids() == ([run_id] if stopped else [])
        assert (cloud.server.job(run_id)["state"] == "STOPPED") is stopped
        assert (ledger.get(key) is None) is stopped

    def test_real_deferred_run(self, cloud: GlueDriver) -> None:
        """Through dag.test(): the task defers, the trigger sees the run end, one run, stock XComs."""
        cloud.server.set_lifecycle("clock", run_duration=0.2, reads_per_state=1)
        arguments = {
            **kwargs(cloud.job_name),
            "deferrable": True,
            "waiter_delay": 0.05,
            "waiter_max_attempts": 1000,
        }
        stock = run_task(GlueJobOperator, retries=0, **arguments)
        ours = run_task(ResumableGlueJobOperator, retries=0, **arguments)
        assert stock.task("job").state == ours.task("job").state == "success"
        stock_run, our_run = cloud.submitted_ids()
        assert record(ours)["phase"] == "completed" and record(ours)["external_id"] == our_run
        assert _masked(xcoms(stock), stock_run) == _masked(xcoms(ours), our_run)
        assert cloud.cancelled_ids() == []


def _masked(pushed: dict[str, Any], run_id: JsonValue) -> Any:
    """The XComs as JSON with the run id replaced by ``<run>``."""
    return json.loads(json.dumps(pushed, sort_keys=True, default=str).replace(str(run_id), "<run>"))
