"""ResumableEmrServerlessStartJobOperator against moto with the lifecycle controller."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon import ResumableEmrServerlessStartJobOperator
from airflow_resumable.testing.aws import (
    TEST_ROLE_ARN,
    MotoJobDriver,
    MotoServer,
    aws_client,
    provision_emr_serverless_application,
)
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe, finish_on_first_poll
from tests.providers.amazon.helpers import XComParity, context, record, run_task, submit_requests, xcoms

SPARK = {"sparkSubmit": {"entryPoint": "s3://bucket/etl.py", "entryPointArguments": ["--day", "2026-11-25"]}}
MONITORING = {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://bucket/logs/"}}}
STATES = {
    "SUBMITTED": (True, False),
    "PENDING": (True, False),
    "SCHEDULED": (True, False),
    "RUNNING": (True, False),
    "QUEUED": (True, False),
    "CANCELLING": (True, False),
    "SUCCESS": (False, True),
    "FAILED": (False, False),
    "CANCELLED": (False, False),
}


class ServerlessDriver(MotoJobDriver):
    """The kit's driver, plus a started application."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "emr-serverless")
        self.server = server
        self.application_id = provision_emr_serverless_application(server.url)


@pytest.fixture
def cloud(moto: MotoServer) -> ServerlessDriver:
    """A reset controller with an application."""
    return ServerlessDriver(moto)


def kwargs(cloud: ServerlessDriver, **extra: Any) -> dict[str, Any]:
    """The operator's own arguments."""
    return {
        "application_id": cloud.application_id,
        "execution_role_arn": TEST_ROLE_ARN,
        "job_driver": SPARK,
        "configuration_overrides": MONITORING,
        "name": "nightly-etl",
        "waiter_delay": 0.001,
        **extra,
    }


class TestResumableEmrServerlessStartJobOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is the templated run name."""

    operator_class = ResumableEmrServerlessStartJobOperator
    deferrable_kwargs = {"deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
    expected_xcom_keys = frozenset(
        {
            "return_value",
            "emr_serverless_s3_logs",
            "_link_EmrServerlessS3LogsLink",
            "_link_EmrServerlessCloudWatchLogsLink",
            "_link_EmrServerlessDashboardLink",
            "_link_EmrServerlessLogsLink",
        }
    )

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud, name=f"contract-{spec_marker}")


class TestStockParity:
    """The same XComs as the stock operator, UI links included."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: ServerlessDriver) -> None:
        """Stock and resumable runs push the same keys; values differ only by the run id."""
        from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator

        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        arguments = kwargs(cloud, enable_application_ui_links=True, waiter_delay=0)
        stock = xcoms(run_task(EmrServerlessStartJobOperator, retries=0, **arguments))
        ours = xcoms(run_task(ResumableEmrServerlessStartJobOperator, retries=0, **arguments))
        assert set(stock) == set(ours) and len(stock) > 4
        assert _without(stock, stock["return_value"]) == _without(ours, ours["return_value"])


class TestStateMapping:
    """Every job run state, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: ServerlessDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The state is passed through and classified (CANCELLING and QUEUED are still active)."""
        client = aws_client(cloud.server.url, "emr-serverless")
        run_id = client.start_job_run(
            applicationId=cloud.application_id,
            clientToken="t",
            executionRoleArn=TEST_ROLE_ARN,
            jobDriver=SPARK,
        )["jobRunId"]
        cloud.server.set_state(run_id, state)
        operator = ResumableEmrServerlessStartJobOperator(task_id="t", **kwargs(cloud))
        status = operator.get_job_status(run_id, context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    def test_unknown_run_is_not_found(self, cloud: ServerlessDriver) -> None:
        """ResourceNotFoundException becomes JobNotFoundError."""
        operator = ResumableEmrServerlessStartJobOperator(task_id="t", **kwargs(cloud))
        with pytest.raises(JobNotFoundError):
            operator.get_job_status("0000000000000000", context())


class TestClientToken:
    """The submission token is the clientToken; a lost answer is resolved by the token."""

    def test_client_token_is_the_record_token(self, cloud: ServerlessDriver) -> None:
        """StartJobRun carries clientToken = the record's token; the user's token is not used."""
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(
            ResumableEmrServerlessStartJobOperator, probe, **kwargs(cloud, client_request_token="fixed")
        )
        (request,) = submit_requests(cloud.server, "StartJobRun")
        assert request["clientToken"] == record(outcome)["token"] != "fixed"

    def test_default_name_is_stable_per_intent(self, cloud: ServerlessDriver) -> None:
        """Without a name, the run is named after the token (the stock name is random per try)."""
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableEmrServerlessStartJobOperator, probe, **kwargs(cloud, name=None))
        (request,) = submit_requests(cloud.server, "StartJobRun")
        assert request["name"] == f"emr_serverless_job_airflow_{record(outcome)['token']}"

    def test_lost_answer_and_throttling_make_one_run(self, cloud: ServerlessDriver) -> None:
        """A lost StartJobRun answer, then throttled GetJobRun: one run, first try succeeds."""
        cloud.server.lose_response("StartJobRun", service="emr-serverless")
        cloud.server.throttle("GetJobRun", 2)
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(ResumableEmrServerlessStartJobOperator, probe, **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert [e.replayed for e in cloud.server.calls("StartJobRun")] == [False, True]


class TestFailure:
    """A failed run fails the try with the run's stateDetails."""

    def test_state_details_in_the_error(self, cloud: ServerlessDriver) -> None:
        """describe_failure reports stateDetails."""
        client = aws_client(cloud.server.url, "emr-serverless")
        run_id = client.start_job_run(
            applicationId=cloud.application_id,
            clientToken="t",
            executionRoleArn=TEST_ROLE_ARN,
            jobDriver=SPARK,
        )["jobRunId"]
        cloud.server.finish(run_id, succeeded=False, reason="Job failed: exit code 1")
        operator = ResumableEmrServerlessStartJobOperator(task_id="t", **kwargs(cloud))
        with pytest.raises(JobFailedError, match="Job failed: exit code 1"):
            operator.poll_until_complete(run_id, context())

    def test_stopped_application_is_started(self, cloud: ServerlessDriver) -> None:
        """A stopped application is started before the run, as the stock operator does."""
        aws_client(cloud.server.url, "emr-serverless").stop_application(applicationId=cloud.application_id)
        outcome = run_task(
            ResumableEmrServerlessStartJobOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud),
        )
        assert outcome.task("job").state == "success"
        operations = [e.operation for e in cloud.server.ledger()]
        assert operations.index("StartApplication") < operations.index("StartJobRun")


class TestWaitBound:
    """``waiter_max_attempts`` bounds a try's wait, as the stock waiter does."""

    def test_still_running_after_the_attempts(self, cloud: ServerlessDriver) -> None:
        """Two status reads of a running job, then a ResumableError; the run keeps going."""
        operator = ResumableEmrServerlessStartJobOperator(
            task_id="t", **kwargs(cloud, waiter_max_attempts=2), cancel_on_failure=False
        )
        with pytest.raises(ResumableError, match=r"waiter_max_attempts=2"):
            operator.execute(context())
        (run_id,) = cloud.submitted_ids()
        assert cloud.server.job(run_id)["finished"] is False


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"application_id": ""}, "application_id"),
            ({"execution_role_arn": None}, "execution_role_arn"),
            ({"job_driver": {}}, "job_driver"),
            ({"job_driver": "spark-submit etl.py"}, "job_driver"),
            ({"configuration_overrides": ["x"]}, "configuration_overrides"),
        ],
    )
    def test_invalid_argument(self, cloud: ServerlessDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; no AWS call was made."""
        operator = ResumableEmrServerlessStartJobOperator(task_id="t", **{**kwargs(cloud), **override})
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(context())
        assert len(cloud.server.ledger()) == calls


def _without(value: dict[str, Any], run_id: str) -> dict[str, Any]:
    return {k: str(v).replace(run_id, "<run>") for k, v in value.items()}
