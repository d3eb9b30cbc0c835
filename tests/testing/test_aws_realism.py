"""The moto controller's realism: visibility lag, throttling, pagination, expiry; and its module graph."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottlingErrorDetector

from airflow_resumable.providers.amazon.common import is_throttling_aws_error
from airflow_resumable.testing.aws import (
    TEST_ROLE_ARN,
    MotoServer,
    aws_client,
    provision_batch,
    provision_emr_serverless_application,
    provision_glue,
)
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_resumable.testing.aws import BatchResources

NO_RETRIES = {"retries": {"mode": "standard", "total_max_attempts": 1}}
TESTING = Path(__file__).resolve().parents[2] / "airflow_resumable" / "testing"


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with MotoServer() as started:
        yield started


@pytest.fixture
def moto(server: MotoServer) -> Iterator[MotoServer]:
    server.reset()
    server.set_lifecycle("manual", reads_per_state=1)
    yield server
    server.set_realism(Realism.documented())


@pytest.fixture
def batch(moto: MotoServer) -> Any:
    return aws_client(moto.url, "batch", **NO_RETRIES)


@pytest.fixture
def queue(moto: MotoServer) -> BatchResources:
    return provision_batch(moto.url)


def submit(batch: Any, queue: BatchResources, name: str = "job") -> str:
    return str(
        batch.submit_job(jobName=name, jobQueue=queue.job_queue, jobDefinition=queue.job_definition)["jobId"]
    )


def listed(batch: Any, queue: BatchResources, name: str = "job") -> list[str]:
    pages = batch.get_paginator("list_jobs").paginate(
        jobQueue=queue.job_queue, filters=[{"name": "JOB_NAME", "values": [name]}]
    )
    return [job["jobId"] for page in pages for job in page["jobSummaryList"]]


def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class TestVisibilityLag:
    def test_a_new_batch_job_is_missing_from_describe_and_list_then_shows(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        moto.set_realism(Realism(visibility_lag=0.4))
        job_id = submit(batch, queue)
        assert batch.describe_jobs(jobs=[job_id])["jobs"] == []
        assert listed(batch, queue) == []
        until(lambda: batch.describe_jobs(jobs=[job_id])["jobs"] != [])
        assert listed(batch, queue) == [job_id]

    def test_a_read_during_the_lag_does_not_move_the_job(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        moto.set_realism(Realism(visibility_lag=0.4))
        job_id = submit(batch, queue)
        for _ in range(5):
            batch.describe_jobs(jobs=[job_id])
        assert moto.job(job_id)["state"] == "SUBMITTED"

    def test_emr_serverless_answers_not_found(self, moto: MotoServer) -> None:
        client = aws_client(moto.url, "emr-serverless", **NO_RETRIES)
        application = provision_emr_serverless_application(moto.url)
        moto.set_realism(Realism(visibility_lag=0.4))
        run_id = client.start_job_run(
            applicationId=application,
            clientToken="t-1",
            executionRoleArn=TEST_ROLE_ARN,
            jobDriver={"sparkSubmit": {"entryPoint": "s3://bucket/job.py"}},
        )["jobRunId"]
        with pytest.raises(ClientError) as err:
            client.get_job_run(applicationId=application, jobRunId=run_id)
        assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        until(lambda: _visible(client, application, run_id))

    def test_a_token_replay_during_the_lag_returns_the_same_job(self, moto: MotoServer) -> None:
        client = aws_client(moto.url, "emr-serverless", **NO_RETRIES)
        application = provision_emr_serverless_application(moto.url)
        moto.set_realism(Realism(visibility_lag=5))
        args = {
            "applicationId": application,
            "clientToken": "t-2",
            "executionRoleArn": TEST_ROLE_ARN,
            "jobDriver": {"sparkSubmit": {"entryPoint": "s3://bucket/job.py"}},
        }
        assert client.start_job_run(**args)["jobRunId"] == client.start_job_run(**args)["jobRunId"]
        assert len(moto.submissions("emr-serverless")) == 1


def _visible(client: Any, application: str, run_id: str) -> bool:
    try:
        client.get_job_run(applicationId=application, jobRunId=run_id)
    except ClientError:
        return False
    return True


class TestThrottling:
    def test_burst_then_rate_with_the_services_error(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        job_id = submit(batch, queue)
        moto.set_realism(Realism(throttle_rate=5, throttle_burst=3))
        answers = []
        for _ in range(5):
            try:
                batch.describe_jobs(jobs=[job_id])
                answers.append("ok")
            except ClientError as err:
                answers.append(err.response["Error"]["Code"])
                assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 429
                assert is_throttling_aws_error(err)
        assert answers[:3] == ["ok"] * 3 and "TooManyRequestsException" in answers[3:]
        assert len(moto.client.throttled_calls("batch")) >= 1
        until(lambda: _describes(batch, job_id))  # the rate refills the bucket

    def test_botocore_classifies_it_as_throttling(self) -> None:
        """The hooks' clients (botocore's standard retry mode) back off on it like on AWS's."""
        response = {
            "Error": {"Code": "TooManyRequestsException"},
            "ResponseMetadata": {"HTTPStatusCode": 429},
        }
        context = RetryContext(attempt_number=1, parsed_response=response)
        assert ThrottlingErrorDetector(retry_event_adapter=None).is_throttling_error_from_context(context)

    def test_a_throttled_submit_creates_nothing(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        moto.set_realism(Realism(throttle_rate=0.01, throttle_burst=1))
        submit(batch, queue)
        with pytest.raises(ClientError):
            submit(batch, queue)
        assert len(moto.submissions("batch")) == 1


def _describes(batch: Any, job_id: str) -> bool:
    try:
        return bool(batch.describe_jobs(jobs=[job_id])["jobs"])
    except ClientError:
        return False


class TestPagination:
    def test_list_jobs_pages_with_next_token(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        jobs = [submit(batch, queue) for _ in range(5)]
        moto.set_realism(Realism(page_size=2))
        first = batch.list_jobs(jobQueue=queue.job_queue, filters=[{"name": "JOB_NAME", "values": ["job"]}])
        assert len(first["jobSummaryList"]) == 2 and first["nextToken"]
        assert sorted(listed(batch, queue)) == sorted(jobs)

    def test_the_documented_page_applies_by_default(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        jobs = [submit(batch, queue) for _ in range(3)]
        page = batch.list_jobs(
            jobQueue=queue.job_queue, filters=[{"name": "JOB_NAME", "values": ["job"]}], maxResults=1
        )
        assert len(page["jobSummaryList"]) == 1 and "nextToken" in page
        assert sorted(listed(batch, queue)) == sorted(jobs)

    def test_glue_get_job_runs_pages(self, moto: MotoServer) -> None:
        glue = aws_client(moto.url, "glue", **NO_RETRIES)
        provision_glue(moto.url, name="etl")
        runs = [glue.start_job_run(JobName="etl")["JobRunId"] for _ in range(3)]
        moto.set_realism(Realism(page_size=1))
        pages = list(glue.get_paginator("get_job_runs").paginate(JobName="etl"))
        assert len(pages) == 3
        assert sorted(run["Id"] for page in pages for run in page["JobRuns"]) == sorted(runs)


class TestExpiry:
    def test_a_finished_job_disappears_after_the_retention(
        self, moto: MotoServer, batch: Any, queue: BatchResources
    ) -> None:
        moto.set_realism(Realism(retention=0.3))
        job_id = submit(batch, queue)
        moto.finish(job_id)
        assert batch.describe_jobs(jobs=[job_id])["jobs"] != []
        until(lambda: batch.describe_jobs(jobs=[job_id])["jobs"] == [])
        assert listed(batch, queue) == []

    def test_an_active_job_never_expires(self, moto: MotoServer, batch: Any, queue: BatchResources) -> None:
        moto.set_realism(Realism(retention=0.0))
        job_id = submit(batch, queue)
        assert batch.describe_jobs(jobs=[job_id])["jobs"] != []


class TestControl:
    def test_realism_is_switched_over_http(self, moto: MotoServer) -> None:
        wanted = Realism.unkind(visibility_lag=1.5)
        moto.client.set_realism(wanted)
        assert moto.realism == wanted and moto.client.realism == wanted

    def test_unknown_settings_are_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown realism"):
            Realism.from_dict({"lag": 1})


def test_the_aws_fake_modules_import_no_circle() -> None:
    """_aws_control, _aws_jobs*, _aws_resources, ...: every import (lazy ones too) points one way."""
    graph: dict[str, set[str]] = {}
    for path in TESTING.glob("_aws_*.py"):
        tree = ast.parse(path.read_text())
        guarded = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        graph[path.stem] = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and id(node) not in guarded
            and (node.module or "").startswith("airflow_resumable.testing._aws_")
        }
    seen: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if seen.get(module) == "done":
            return
        assert seen.get(module) != "open", f"import circle: {' -> '.join([*trail, module])}"
        seen[module] = "open"
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        seen[module] = "done"

    for module in sorted(graph):
        visit(module, [])
