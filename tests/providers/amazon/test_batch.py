"""ResumableBatchOperator against moto with the lifecycle controller."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import ClientError, EndpointConnectionError

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError
from airflow_resumable.providers.amazon import ResumableBatchOperator
from airflow_resumable.providers.amazon.batch import TOKEN_TAG
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client, provision_batch
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe, finish_on_first_poll
from tests.providers.amazon.helpers import (
    XComParity,
    allow_botocore_retries,
    context,
    crash_while_polling_on_first_try,
    record,
    run_task,
    submit_requests,
    xcoms,
)

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing.aws import BatchResources

STATES = {
    "SUBMITTED": (True, False),
    "PENDING": (True, False),
    "RUNNABLE": (True, False),
    "STARTING": (True, False),
    "RUNNING": (True, False),
    "SUCCEEDED": (False, True),
    "FAILED": (False, False),
}


class BatchDriver(MotoJobDriver):
    """The kit's driver, plus a provisioned queue and job definitions."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "batch")
        self.server = server
        self.resources = provision_batch(server.url)


@pytest.fixture
def cloud(moto: MotoServer) -> BatchDriver:
    """A reset controller with a Batch queue."""
    return BatchDriver(moto)


def kwargs(resources: BatchResources, name: str = "nightly-etl", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments."""
    return {
        "job_name": name,
        "job_queue": resources.job_queue,
        "job_definition": resources.job_definition,
        "poll_interval": 0.001,
        **extra,
    }


class TestResumableBatchOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is the templated job name."""

    operator_class = ResumableBatchOperator
    deferrable_kwargs = {"deferrable": True, "poll_interval": 0.05, "max_retries": 1000}
    expected_xcom_keys = frozenset(
        {
            "return_value",
            "batch_job_details",
            "batch_job_definition",
            "batch_job_queue",
            "cloudwatch_events",
            "_link_BatchJobDetailsLink",
            "_link_BatchJobDefinitionLink",
            "_link_BatchJobQueueLink",
            "_link_CloudWatchEventsLink",
        }
    )

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud.resources, name=f"contract-{spec_marker}")


class TestStockParity:
    """The same XComs and return value as the stock BatchOperator, for the same job."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: BatchDriver) -> None:
        """Stock and resumable runs push the same keys; values differ only by the job id."""
        from airflow.providers.amazon.aws.hooks.batch_client import BatchClientHook
        from airflow.providers.amazon.aws.operators.batch import BatchOperator

        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        with mock.patch.object(BatchClientHook, "delay", lambda *args, **kw: None):  # its jittered sleeps
            stock = xcoms(run_task(BatchOperator, retries=0, **_stock(kwargs(cloud.resources))))
        ours = xcoms(run_task(ResumableBatchOperator, retries=0, **kwargs(cloud.resources)))
        stock_id, our_id = stock["return_value"], ours["return_value"]
        assert _replace(stock, stock_id, "<job>") == _replace(ours, our_id, "<job>")


class TestStateMapping:
    """Every Batch status, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: BatchDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The status is passed through and classified."""
        client = aws_client(cloud.server.url, "batch")
        job_id = client.submit_job(
            jobName="probe", jobQueue=cloud.resources.job_queue, jobDefinition=cloud.resources.job_definition
        )["jobId"]
        cloud.server.set_state(job_id, state)
        operator = ResumableBatchOperator(task_id="t", **kwargs(cloud.resources))
        status = operator.get_job_status(job_id, context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    def test_unknown_status_is_waited_on(self) -> None:
        """A status AWS may add later counts as active: never a resubmission on a guess."""
        operator = ResumableBatchOperator(task_id="t", job_name="n", job_queue="q", job_definition="d")
        assert operator.is_job_active("SOMETHING_NEW") and not operator.is_job_succeeded("SOMETHING_NEW")

    def test_expired_job_is_not_found(self, cloud: BatchDriver) -> None:
        """A job AWS no longer knows raises JobNotFoundError (the mixin then submits fresh)."""
        operator = ResumableBatchOperator(task_id="t", **kwargs(cloud.resources))
        with pytest.raises(JobNotFoundError):
            operator.get_job_status(str(uuid.uuid4()), context())


class TestTokenTag:
    """The submission token travels as a tag, next to the user's tags."""

    def test_tag_carries_the_record_token(self, cloud: BatchDriver) -> None:
        """SubmitJob's tags are the user's plus airflow-resumable-token = the record's token."""
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableBatchOperator, probe, **kwargs(cloud.resources, tags={"team": "data"}))
        (request,) = submit_requests(cloud.server, "SubmitJob")
        assert request["tags"] == {"team": "data", TOKEN_TAG: record(outcome)["token"]}

    def test_reserved_tag_is_refused(self, cloud: BatchDriver) -> None:
        """A user tag with our key fails before any AWS call."""
        operator = ResumableBatchOperator(task_id="t", **kwargs(cloud.resources, tags={TOKEN_TAG: "mine"}))
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=TOKEN_TAG):
            operator.execute(context())
        assert len(cloud.server.ledger()) == calls


class TestCrashBeforePersist:
    """A crash between SubmitJob and storing the id: the retry finds the job by its tag."""

    def test_retry_finds_the_job_by_tag(self, cloud: BatchDriver) -> None:
        """Try 2 lists and describes jobs, finds the tagged one, and never submits again."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(ResumableBatchOperator, probe, **kwargs(cloud.resources))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (job_id,) = cloud.submitted_ids()
        assert probe.polled[2] == [job_id] and probe.submitted[2] == []
        assert len(cloud.server.calls("SubmitJob")) == 1

    def test_find_job_picks_the_tagged_job_among_namesakes(self, cloud: BatchDriver) -> None:
        """Jobs of the same name without the tag (or with another token) are not taken."""
        client = aws_client(cloud.server.url, "batch")
        common = {"jobName": "nightly-etl", "jobQueue": cloud.resources.job_queue}
        client.submit_job(**common, jobDefinition=cloud.resources.job_definition)
        client.submit_job(
            **common, jobDefinition=cloud.resources.job_definition, tags={TOKEN_TAG: "ar-other"}
        )
        mine = client.submit_job(
            **common, jobDefinition=cloud.resources.job_definition, tags={TOKEN_TAG: "ar-mine"}
        )
        operator = ResumableBatchOperator(task_id="t", **kwargs(cloud.resources))
        assert operator.find_job("ar-mine", context()) == mine["jobId"]
        assert operator.find_job("ar-absent", context()) is None


class TestLostSubmitResponse:
    """SubmitJob carried out but its answer lost: exactly one job, no retry burned."""

    def test_one_job_although_botocore_would_retry(
        self, cloud: BatchDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With botocore retries on, SubmitJob is sent once; the mixin finds the job by its tag."""
        allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response("SubmitJob")
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableBatchOperator, probe, **kwargs(cloud.resources))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.server.calls("SubmitJob")) == 1 and len(cloud.submitted_ids()) == 1
        assert record(outcome)["external_id"] == cloud.submitted_ids()[0]


class TestThrottling:
    """Throttled and failing AWS calls are retried by the mixin without consuming a try."""

    def test_throttled_status_reads_and_submit(self, cloud: BatchDriver) -> None:
        """ThrottlingException on SubmitJob and DescribeJobs (400 and 429): one job, first try succeeds."""
        cloud.server.throttle("SubmitJob")
        cloud.server.throttle("DescribeJobs", status=429)
        cloud.server.inject_fault("DescribeJobs", 503)
        outcome = run_task(
            ResumableBatchOperator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud.resources)
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1

    @pytest.mark.parametrize(
        ("error", "transient"),
        [
            (
                ClientError(
                    {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                    "X",
                ),
                True,
            ),
            (
                ClientError(
                    {
                        "Error": {"Code": "TooManyRequestsException"},
                        "ResponseMetadata": {"HTTPStatusCode": 429},
                    },
                    "X",
                ),
                True,
            ),
            (
                ClientError(
                    {"Error": {"Code": "ServerException"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "X"
                ),
                True,
            ),
            (
                ClientError(
                    {"Error": {"Code": "ClientException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "X"
                ),
                False,
            ),
            (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
            (ValueError("bug"), False),
        ],
    )
    def test_is_transient_error(self, error: BaseException, transient: bool) -> None:
        """Throttling, 429, 5xx and connection errors are transient; client errors are not."""
        operator = ResumableBatchOperator(task_id="t", job_name="n", job_queue="q", job_definition="d")
        assert operator.is_transient_error(error) is transient


class TestSubmitRefused:
    """A SubmitJob the service refuses for good raises an AirflowException, as the stock operator does."""

    def test_client_error_becomes_airflow_exception(self, cloud: BatchDriver) -> None:
        """A ClientException (an unknown queue) is not retried; its botocore error is the cause."""
        operator = ResumableBatchOperator(
            task_id="t", **kwargs(cloud.resources, job_queue="no-such-queue"), retries=0
        )
        with pytest.raises(AirflowException, match="refused SubmitJob") as caught:
            operator.execute(context())
        assert isinstance(caught.value.__cause__, ClientError)
        assert cloud.submitted_ids() == []

    def test_transient_error_is_left_to_the_retry(self, cloud: BatchDriver) -> None:
        """
        A 5xx answer is not wrapped: the mixin's cloud retry sees it, looks for the job the answer
        may hide for the visibility window (2 s here, 60 s by default), then submits once more.
        """
        cloud.server.inject_fault("SubmitJob", 503)
        outcome = run_task(
            ResumableBatchOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud.resources, visibility_window=2),
        )
        job = outcome.task("job")
        assert job.state == "success" and job.try_number == 1 and len(cloud.submitted_ids()) == 1


class TestArrayAndMultiNode:
    """Array and multi-node jobs reconnect as a whole: the parent's status decides."""

    @pytest.mark.parametrize("shape", ["array", "multinode"])
    def test_reconnect_to_the_parent(self, cloud: BatchDriver, shape: str) -> None:
        """A crash while polling; try 2 polls the same parent job, which then succeeds."""
        extra: dict[str, Any] = {"array_properties": {"size": 3}} if shape == "array" else {}
        if shape == "multinode":
            extra["job_definition"] = cloud.resources.multinode_job_definition
        probe = ScenarioProbe(cloud, crash_while_polling_on_first_try())
        outcome = run_task(ResumableBatchOperator, probe, **{**kwargs(cloud.resources), **extra})
        assert outcome.task("job").state == "success"
        (job_id,) = cloud.submitted_ids()
        assert probe.polled[1] == probe.polled[2] == [job_id]


class TestFailureAndModes:
    """A failed job fails the try with AWS's reason; not waiting and deferrable modes."""

    def test_failure_reason_in_the_error(self, cloud: BatchDriver) -> None:
        """describe_failure reports statusReason."""
        client = aws_client(cloud.server.url, "batch")
        job_id = client.submit_job(
            jobName="x", jobQueue=cloud.resources.job_queue, jobDefinition=cloud.resources.job_definition
        )["jobId"]
        cloud.server.finish(job_id, succeeded=False, reason="Essential container in task exited")
        operator = ResumableBatchOperator(task_id="t", **kwargs(cloud.resources))
        with pytest.raises(JobFailedError, match="Essential container in task exited"):
            operator.poll_until_complete(job_id, context())

    def test_not_waiting_returns_the_running_job(self, cloud: BatchDriver) -> None:
        """wait_for_completion=False: the task ends once the job exists; the job keeps running."""
        outcome = run_task(
            ResumableBatchOperator, retries=0, **kwargs(cloud.resources, wait_for_completion=False)
        )
        (job_id,) = cloud.submitted_ids()
        assert outcome.task("job").state == "success" and xcoms(outcome)["return_value"] == job_id
        assert cloud.server.job(job_id)["finished"] is False and cloud.cancelled_ids() == []

    def test_deferrable_waits_without_wait_for_completion(self, cloud: BatchDriver) -> None:
        """deferrable=True, even without waiting, waits for the job through the trigger (as in stock)."""
        cloud.server.set_lifecycle("clock", run_duration=0.1, reads_per_state=1)
        arguments = kwargs(cloud.resources, deferrable=True, wait_for_completion=False, poll_interval=0.05)
        outcome = run_task(ResumableBatchOperator, **arguments)
        assert outcome.task("job").state == "success" and record(outcome)["phase"] == "completed"
        assert cloud.server.job(cloud.submitted_ids()[0])["state"] == "SUCCEEDED"


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"job_name": ""}, "job_name"),
            ({"job_name": "has spaces"}, "job_name"),
            ({"job_queue": "  "}, "job_queue"),
            ({"job_definition": None}, "job_definition"),
            ({"container_overrides": ["not", "a", "dict"]}, "container_overrides"),
            ({"array_properties": "size=3"}, "array_properties"),
        ],
    )
    def test_invalid_argument(self, cloud: BatchDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; no AWS call was made."""
        operator = ResumableBatchOperator(task_id="t", **{**kwargs(cloud.resources), **override})
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(context())
        assert len(cloud.server.ledger()) == calls


def _stock(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k != "poll_interval"}


def _replace(value: Any, old: JsonValue, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value.replace(str(old), new) if isinstance(value, str) else value
