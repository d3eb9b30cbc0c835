"""ResumableEmrContainerOperator against moto with the lifecycle controller."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError
from airflow_resumable.providers.amazon import ResumableEmrContainerOperator
from airflow_resumable.testing.aws import (
    TEST_ROLE_ARN,
    MotoJobDriver,
    MotoServer,
    aws_client,
    provision_emr_virtual_cluster,
)
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe, finish_on_first_poll
from tests.providers.amazon.helpers import XComParity, context, record, run_task, submit_requests, xcoms

SPARK = {"sparkSubmitJobDriver": {"entryPoint": "s3://bucket/etl.py", "sparkSubmitParameters": "--conf a=b"}}
STATES = {
    "PENDING": (True, False),
    "SUBMITTED": (True, False),
    "RUNNING": (True, False),
    "CANCEL_PENDING": (True, False),
    "COMPLETED": (False, True),
    "FAILED": (False, False),
    "CANCELLED": (False, False),
}


class EksDriver(MotoJobDriver):
    """The kit's driver, plus a virtual cluster."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "emr-containers")
        self.server = server
        self.virtual_cluster_id = provision_emr_virtual_cluster(server.url)

    def start(self, token: str = "t") -> str:
        """A run started directly (not through the operator)."""
        client = aws_client(self.server.url, "emr-containers")
        response = client.start_job_run(
            name="probe",
            virtualClusterId=self.virtual_cluster_id,
            clientToken=token,
            executionRoleArn=TEST_ROLE_ARN,
            releaseLabel="emr-6.15.0-latest",
            jobDriver=SPARK,
        )
        return str(response["id"])


@pytest.fixture
def cloud(moto: MotoServer) -> EksDriver:
    """A reset controller with a virtual cluster."""
    return EksDriver(moto)


def kwargs(cloud: EksDriver, **extra: Any) -> dict[str, Any]:
    """The operator's own arguments."""
    return {
        "name": "nightly-etl",
        "virtual_cluster_id": cloud.virtual_cluster_id,
        "execution_role_arn": TEST_ROLE_ARN,
        "release_label": "emr-6.15.0-latest",
        "job_driver": SPARK,
        "poll_interval": 0.001,
        **extra,
    }


class TestResumableEmrContainerOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is the templated run name."""

    operator_class = ResumableEmrContainerOperator
    deferrable_kwargs = {"deferrable": True, "poll_interval": 0.05, "max_polling_attempts": 1000}
    expected_xcom_keys = frozenset({"return_value"})

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud, name=f"contract-{spec_marker}")


class TestStockParity:
    """The same XComs as the stock operator (only the return value)."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: EksDriver) -> None:
        """Both push the run id as return value and nothing else."""
        from airflow.providers.amazon.aws.operators.emr import EmrContainerOperator

        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = xcoms(run_task(EmrContainerOperator, retries=0, **kwargs(cloud, poll_interval=0)))
        ours = xcoms(run_task(ResumableEmrContainerOperator, retries=0, **kwargs(cloud)))
        assert set(stock) == set(ours) == {"return_value"}


class TestStateMapping:
    """Every job run state, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: EksDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The state is passed through and classified (CANCEL_PENDING is still active)."""
        run_id = cloud.start()
        cloud.server.set_state(run_id, state)
        operator = ResumableEmrContainerOperator(task_id="t", **kwargs(cloud))
        status = operator.get_job_status(run_id, context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    def test_unknown_run_is_not_found(self, cloud: EksDriver) -> None:
        """ResourceNotFoundException becomes JobNotFoundError."""
        operator = ResumableEmrContainerOperator(task_id="t", **kwargs(cloud))
        with pytest.raises(JobNotFoundError):
            operator.get_job_status("0000000000000000000", context())


class TestClientToken:
    """The submission token is the clientToken: a fixed user token no longer returns an old run."""

    def test_client_token_is_the_record_token(self, cloud: EksDriver) -> None:
        """StartJobRun carries clientToken = the record's token instead of the user's fixed one."""
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(
            ResumableEmrContainerOperator, probe, **kwargs(cloud, client_request_token="fixed")
        )
        (request,) = submit_requests(cloud.server, "StartJobRun")
        assert request["clientToken"] == record(outcome)["token"] != "fixed"

    def test_retry_after_failure_is_a_new_run(self, cloud: EksDriver) -> None:
        """After a failed run the retry starts a new run (apache/airflow#69625 returned the old one)."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: Any, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=try_number > 1)

        outcome = run_task(
            ResumableEmrContainerOperator,
            ScenarioProbe(cloud, on_poll),
            **kwargs(cloud, client_request_token="fixed"),
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        first, second = cloud.submitted_ids()
        assert first != second and record(outcome)["external_id"] == second

    def test_lost_answer_makes_one_run(self, cloud: EksDriver) -> None:
        """A lost StartJobRun answer: the retry with the same token gets the same run."""
        cloud.server.lose_response("StartJobRun", service="emr-containers")
        outcome = run_task(
            ResumableEmrContainerOperator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud)
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1


class TestFailureAndCancel:
    """Failure reasons reach the error; cancelling an ended run is not an error."""

    def test_failure_reason_in_the_error(self, cloud: EksDriver) -> None:
        """describe_failure reports failureReason and stateDetails, as the stock operator does."""
        run_id = cloud.start()
        cloud.server.finish(run_id, succeeded=False, reason="driver ran out of memory")
        operator = ResumableEmrContainerOperator(task_id="t", **kwargs(cloud))
        with pytest.raises(JobFailedError, match="USER_ERROR - driver ran out of memory"):
            operator.poll_until_complete(run_id, context())

    def test_cancel_of_an_ended_run_is_quiet(self, cloud: EksDriver) -> None:
        """The run ended just before the cancel: ValidationException is absorbed."""
        run_id = cloud.start()
        cloud.server.finish(run_id)
        ResumableEmrContainerOperator(task_id="t", **kwargs(cloud)).cancel_job(run_id, context())
        assert cloud.server.job(run_id)["state"] == "COMPLETED"


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"virtual_cluster_id": ""}, "virtual_cluster_id"),
            ({"release_label": None}, "release_label"),
            ({"job_driver": {}}, "job_driver"),
            ({"execution_role_arn": " "}, "execution_role_arn"),
            ({"name": ""}, "name"),
        ],
    )
    def test_invalid_argument(self, cloud: EksDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; no AWS call was made."""
        operator = ResumableEmrContainerOperator(task_id="t", **{**kwargs(cloud), **override})
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(context())
        assert len(cloud.server.ledger()) == calls
