"""The moto lifecycle controller: lifecycles, cancels, idempotency tokens, faults, ledger, servers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from airflow_resumable.testing.aws import (
    TEST_ROLE_ARN,
    MotoControlClient,
    MotoControlError,
    MotoJobDriver,
    MotoProcess,
    MotoServer,
    aws_client,
    provision_batch,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_resumable.testing.aws import BatchResources, MotoControl

NO_RETRIES = {"retries": {"mode": "standard", "total_max_attempts": 1}}
SPARK = {"sparkSubmit": {"entryPoint": "s3://bucket/job.py"}}
EKS_SPARK = {"sparkSubmitJobDriver": {"entryPoint": "s3://bucket/job.py"}}


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    """One in-process controller for the module."""
    with MotoServer() as started:
        yield started


@pytest.fixture
def moto(server: MotoServer) -> MotoServer:
    """The controller, reset, manual lifecycle, one read per state."""
    server.reset()
    server.set_lifecycle("manual", run_duration=1.0, final_result="succeeded", reads_per_state=1)
    return server


@pytest.fixture
def batch(moto: MotoServer) -> Any:
    """A Batch client without botocore retries."""
    return aws_client(moto.url, "batch", **NO_RETRIES)


@pytest.fixture
def queue(moto: MotoServer) -> BatchResources:
    """A Batch queue and job definitions."""
    return provision_batch(moto.url)


def submit(batch: Any, queue: BatchResources, name: str = "job", **extra: Any) -> str:
    """Submit one Batch job; its id."""
    response = batch.submit_job(
        jobName=name, jobQueue=queue.job_queue, jobDefinition=queue.job_definition, **extra
    )
    return str(response["jobId"])


def batch_job(batch: Any, job_id: str) -> dict[str, Any]:
    """DescribeJobs of one job (a status read)."""
    jobs: list[dict[str, Any]] = batch.describe_jobs(jobs=[job_id])["jobs"]
    return jobs[0]


def start_serverless(client: Any, application: str, token: str = "token-1", **extra: Any) -> str:
    """StartJobRun on EMR Serverless; the run id."""
    args = {"name": "run", "executionRoleArn": TEST_ROLE_ARN, "jobDriver": SPARK, **extra}
    return str(client.start_job_run(applicationId=application, clientToken=token, **args)["jobRunId"])


def start_eks(client: Any, cluster: str, token: str = "token-1", **extra: Any) -> str:
    """StartJobRun on EMR on EKS; the run id."""
    args = {"name": "run", "executionRoleArn": TEST_ROLE_ARN, "releaseLabel": "emr-6.15.0-latest", **extra}
    return str(
        client.start_job_run(virtualClusterId=cluster, clientToken=token, jobDriver=EKS_SPARK, **args)["id"]
    )


def add_steps(emr: Any, cluster: str, count: int, action: str = "CANCEL_AND_WAIT") -> list[str]:
    """AddJobFlowSteps of ``count`` steps; their ids."""
    steps = [
        {"Name": f"step-{i}", "ActionOnFailure": action, "HadoopJarStep": {"Jar": "command-runner.jar"}}
        for i in range(count)
    ]
    return [str(i) for i in emr.add_job_flow_steps(JobFlowId=cluster, Steps=steps)["StepIds"]]


def step_states(emr: Any, cluster: str, ids: list[str]) -> list[str]:
    """The steps' states in the order of ``ids`` (one ListSteps: a status read of each)."""
    steps = {s["Id"]: s["Status"]["State"] for s in emr.list_steps(ClusterId=cluster, StepIds=ids)["Steps"]}
    return [steps[i] for i in ids]


class TestBatchLifecycle:
    """Batch jobs walk their states on reads and run until the test ends them."""

    def test_one_state_per_status_read_then_running(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """SUBMITTED, PENDING, RUNNABLE, STARTING, then RUNNING for as long as nobody ends the job."""
        job_id = submit(batch, queue)
        seen = [batch_job(batch, job_id)["status"] for _ in range(7)]
        assert seen == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "RUNNING", "RUNNING"]

    def test_finish_with_failure_and_reason(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """finish(succeeded=False) makes the job FAILED with the reason and an exit code."""
        job_id = submit(batch, queue)
        moto.finish(job_id, succeeded=False, reason="OutOfMemoryError: Container killed")
        job = batch_job(batch, job_id)
        assert job["status"] == "FAILED" and job["statusReason"] == "OutOfMemoryError: Container killed"

    def test_tags_are_kept(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """Tags given at submission come back from DescribeJobs (find_job relies on them)."""
        job_id = submit(batch, queue, tags={"airflow-resumable-token": "ar-1"})
        assert batch_job(batch, job_id)["tags"] == {"airflow-resumable-token": "ar-1"}

    def test_array_job_is_one_job(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """An array job's parent ends with its children; the summary counts them."""
        job_id = submit(batch, queue, arrayProperties={"size": 3})
        moto.finish(job_id)
        job = batch_job(batch, job_id)
        assert job["status"] == "SUCCEEDED" and job["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 3

    def test_terminate_fails_the_job_with_its_reason(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """TerminateJob ends a running job FAILED with the request's reason, and counts as a cancel."""
        job_id = submit(batch, queue)
        moto.set_state(job_id, "RUNNING")
        batch.terminate_job(jobId=job_id, reason="stopped by the test")
        job = batch_job(batch, job_id)
        assert (job["status"], job["statusReason"]) == ("FAILED", "stopped by the test")
        assert [e.job_ids for e in moto.cancels("batch")] == [(job_id,)]

    def test_cancel_job_leaves_a_running_job_alone(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """CancelJob only stops jobs that have not started, as AWS documents."""
        job_id = submit(batch, queue)
        moto.set_state(job_id, "RUNNING")
        batch.cancel_job(jobId=job_id, reason="too late")
        assert batch_job(batch, job_id)["status"] == "RUNNING"

    def test_expired_job_is_not_found(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """An expired job disappears from DescribeJobs, as AWS forgets old jobs."""
        job_id = submit(batch, queue)
        moto.expire(job_id)
        assert batch.describe_jobs(jobs=[job_id])["jobs"] == []
        assert moto.job(job_id)["state"] == "EXPIRED"


class TestLifecycleSettings:
    """Clock mode, zero reads per state, and pinned states."""

    def test_clock_ends_running_jobs(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """With the clock and no duration, a job that runs ends with final_result on the next call."""
        moto.set_lifecycle("clock", run_duration=0.0, final_result="failed", reads_per_state=0)
        job_id = submit(batch, queue)
        assert batch_job(batch, job_id)["status"] == "FAILED"

    def test_zero_reads_per_state_runs_at_once(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """reads_per_state=0: the first read already sees RUNNING."""
        moto.set_lifecycle("manual", reads_per_state=0)
        assert batch_job(batch, submit(batch, queue))["status"] == "RUNNING"

    def test_set_state_pins_the_job(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """A pinned job keeps its state through reads."""
        job_id = submit(batch, queue)
        moto.set_state(job_id, "RUNNABLE")
        assert [batch_job(batch, job_id)["status"] for _ in range(3)] == ["RUNNABLE"] * 3

    def test_unknown_state_is_refused(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """set_state names the valid states of the service."""
        with pytest.raises(ValueError, match="not a batch state"):
            moto.set_state(submit(batch, queue), "COMPLETED")


class TestEmrSteps:
    """Steps run one at a time per cluster; CancelSteps works; a failure stops later steps."""

    @pytest.fixture
    def emr(self, moto: MotoServer) -> Any:
        return aws_client(moto.url, "emr", **NO_RETRIES)

    @pytest.fixture
    def cluster(self, moto: MotoServer) -> str:
        return provision_emr_cluster(moto.url)

    def test_steps_run_in_order(self, moto: MotoServer, emr: Any, cluster: str) -> None:
        """The next step leaves PENDING only once the previous one ended (one read later)."""
        ids = add_steps(emr, cluster, 3)
        assert step_states(emr, cluster, ids) == ["PENDING", "PENDING", "PENDING"]
        assert step_states(emr, cluster, ids) == ["RUNNING", "PENDING", "PENDING"]
        assert step_states(emr, cluster, ids) == ["RUNNING", "PENDING", "PENDING"]
        moto.finish(ids[0])
        assert step_states(emr, cluster, ids) == ["COMPLETED", "PENDING", "PENDING"]
        assert step_states(emr, cluster, ids) == ["COMPLETED", "RUNNING", "PENDING"]

    def test_failure_cancels_later_steps(self, moto: MotoServer, emr: Any, cluster: str) -> None:
        """ActionOnFailure=CANCEL_AND_WAIT: the later steps end CANCELLED; the reason is kept."""
        ids = add_steps(emr, cluster, 3)
        moto.finish(ids[0], succeeded=False, reason="exit code 1")
        assert step_states(emr, cluster, ids) == ["FAILED", "CANCELLED", "CANCELLED"]
        status = emr.describe_step(ClusterId=cluster, StepId=ids[0])["Step"]["Status"]
        assert status["StateChangeReason"]["Message"] == "exit code 1"

    def test_continue_runs_the_next_step(self, moto: MotoServer, emr: Any, cluster: str) -> None:
        """ActionOnFailure=CONTINUE: the next step still runs."""
        ids = add_steps(emr, cluster, 2, action="CONTINUE")
        moto.finish(ids[0], succeeded=False)
        step_states(emr, cluster, ids)
        assert step_states(emr, cluster, ids) == ["FAILED", "RUNNING"]

    def test_cancel_steps(self, moto: MotoServer, emr: Any, cluster: str) -> None:
        """CancelSteps (missing in moto) cancels active steps and reports ended ones as FAILED."""
        ids = add_steps(emr, cluster, 2)
        moto.finish(ids[0])
        answer = emr.cancel_steps(ClusterId=cluster, StepIds=ids)["CancelStepsInfoList"]
        assert [(info["StepId"], info["Status"]) for info in answer] == [
            (ids[0], "FAILED"),
            (ids[1], "SUBMITTED"),
        ]
        assert step_states(emr, cluster, ids) == ["COMPLETED", "CANCELLED"]
        assert [e.job_ids for e in moto.cancels("emr")] == [tuple(ids)]

    def test_expired_step_is_an_error(self, moto: MotoServer, emr: Any, cluster: str) -> None:
        """DescribeStep of a forgotten step answers InvalidRequestException, not an empty step."""
        (step_id,) = add_steps(emr, cluster, 1)
        moto.expire(step_id)
        with pytest.raises(ClientError, match="InvalidRequestException"):
            emr.describe_step(ClusterId=cluster, StepId=step_id)


class TestClientToken:
    """StartJobRun honours clientToken: same token and request, same run."""

    @pytest.fixture
    def serverless(self, moto: MotoServer) -> Any:
        return aws_client(moto.url, "emr-serverless", **NO_RETRIES)

    @pytest.fixture
    def application(self, moto: MotoServer) -> str:
        return provision_emr_serverless_application(moto.url)

    def test_same_token_same_run(self, moto: MotoServer, serverless: Any, application: str) -> None:
        """A repeated request returns the first run and creates nothing; the ledger marks the replay."""
        first, second = start_serverless(serverless, application), start_serverless(serverless, application)
        assert first == second and len(moto.submissions("emr-serverless")) == 1
        replay = moto.calls("StartJobRun")[-1]
        assert replay.replayed and replay.created == () and replay.job_ids == (first,)

    def test_same_token_other_request_conflicts(
        self, moto: MotoServer, serverless: Any, application: str
    ) -> None:
        """The same token with another request answers ConflictException."""
        start_serverless(serverless, application)
        with pytest.raises(ClientError, match="ConflictException"):
            start_serverless(serverless, application, name="another")

    def test_token_is_per_application(self, moto: MotoServer, serverless: Any, application: str) -> None:
        """The same token in another application starts another run."""
        other = provision_emr_serverless_application(moto.url, name="other")
        assert start_serverless(serverless, application) != start_serverless(serverless, other)

    def test_lost_response_then_retry_is_one_run(
        self, moto: MotoServer, serverless: Any, application: str
    ) -> None:
        """The call took effect, the answer was lost; the retry with the same token gets the run."""
        moto.lose_response("StartJobRun", service="emr-serverless")
        with pytest.raises(ClientError, match="InternalServerException"):
            start_serverless(serverless, application)
        run_id = start_serverless(serverless, application)
        assert [e.created for e in moto.submissions()] == [(run_id,)]

    def test_expire_forgets_the_token(self, moto: MotoServer, serverless: Any, application: str) -> None:
        """Once a run expired, its token starts a new run."""
        first = start_serverless(serverless, application)
        moto.expire(first)
        assert start_serverless(serverless, application) != first

    def test_serverless_lifecycle_and_cancel(
        self, moto: MotoServer, serverless: Any, application: str
    ) -> None:
        """SUBMITTED, PENDING, SCHEDULED, RUNNING; CancelJobRun ends it CANCELLED."""
        run_id = start_serverless(serverless, application)
        read = lambda: serverless.get_job_run(applicationId=application, jobRunId=run_id)["jobRun"]  # noqa: E731
        assert [read()["state"] for _ in range(5)] == [
            "SUBMITTED",
            "PENDING",
            "SCHEDULED",
            "RUNNING",
            "RUNNING",
        ]
        serverless.cancel_job_run(applicationId=application, jobRunId=run_id)
        assert read()["state"] == "CANCELLED"

    def test_cancel_leaves_an_ended_run_alone(
        self, moto: MotoServer, serverless: Any, application: str
    ) -> None:
        """CancelJobRun of a run that succeeded does not turn it CANCELLED (moto would)."""
        run_id = start_serverless(serverless, application)
        moto.finish(run_id)
        serverless.cancel_job_run(applicationId=application, jobRunId=run_id)
        assert (
            serverless.get_job_run(applicationId=application, jobRunId=run_id)["jobRun"]["state"] == "SUCCESS"
        )

    def test_eks_token_and_lifecycle(self, moto: MotoServer) -> None:
        """EMR on EKS: same token same run, PENDING, SUBMITTED, RUNNING, and the failure reason."""
        client = aws_client(moto.url, "emr-containers", **NO_RETRIES)
        cluster = provision_emr_virtual_cluster(moto.url)
        run_id = start_eks(client, cluster)
        assert start_eks(client, cluster) == run_id
        with pytest.raises(ClientError, match="ValidationException"):
            start_eks(client, cluster, name="another")
        read = lambda: client.describe_job_run(virtualClusterId=cluster, id=run_id)["jobRun"]  # noqa: E731
        assert [read()["state"] for _ in range(4)] == ["PENDING", "SUBMITTED", "RUNNING", "RUNNING"]
        moto.finish(run_id, succeeded=False, reason="driver OOM")
        assert (read()["state"], read()["failureReason"], read()["stateDetails"]) == (
            "FAILED",
            "USER_ERROR",
            "driver OOM",
        )


class TestFaults:
    """Injected throttling and 5xx, before handling or after it (a lost response)."""

    def test_throttling_400_and_429(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """ThrottlingException with HTTP 400, then 429; then the call goes through."""
        job_id = submit(batch, queue)
        moto.throttle("DescribeJobs")
        moto.throttle("DescribeJobs", status=429)
        for status in (400, 429):
            with pytest.raises(ClientError) as caught:
                batch_job(batch, job_id)
            assert caught.value.response["Error"]["Code"] == "ThrottlingException"
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert batch_job(batch, job_id)["status"] == "SUBMITTED"

    def test_fault_before_handling_has_no_effect(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """A 503 before handling: no job created, the ledger says not handled."""
        moto.inject_fault("SubmitJob", 503)
        with pytest.raises(ClientError, match="ServiceUnavailable"):
            submit(batch, queue)
        assert moto.submissions() == [] and moto.calls("SubmitJob")[0].handled is False

    def test_lost_response_creates_the_job(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """A lost response: the job exists although the client saw a 500."""
        moto.lose_response("SubmitJob")
        with pytest.raises(ClientError):
            submit(batch, queue)
        (entry,) = moto.submissions()
        assert (
            entry.status == 500
            and entry.fault == "after"
            and moto.job(entry.created[0])["state"] == "SUBMITTED"
        )

    def test_botocore_retries_consume_faults(self, moto: MotoServer, queue: Any) -> None:
        """A client with retries sees success after two throttled attempts; the ledger has all three."""
        client = aws_client(moto.url, "batch", retries={"mode": "standard", "total_max_attempts": 3})
        moto.inject_fault("ListJobs", 500, 2)
        client.list_jobs(jobQueue=queue.job_queue)
        assert [e.status for e in moto.calls("ListJobs")] == [500, 500, 200]

    def test_forever_until_cleared_and_per_service(self, moto: MotoServer) -> None:
        """count=-1 fails every call until clear_faults; service= limits the fault to one service."""
        serverless = aws_client(moto.url, "emr-serverless", **NO_RETRIES)
        eks = aws_client(moto.url, "emr-containers", **NO_RETRIES)
        application, cluster = (
            provision_emr_serverless_application(moto.url),
            provision_emr_virtual_cluster(moto.url),
        )
        moto.inject_fault("StartJobRun", 500, -1, service="emr-containers")
        start_serverless(serverless, application)
        for _ in range(2):
            with pytest.raises(ClientError):
                start_eks(eks, cluster)
        moto.clear_faults()
        start_eks(eks, cluster)

    def test_json_protocol_error_shape(self, moto: MotoServer) -> None:
        """EMR (JSON 1.1 protocol) gets its error code parsed too."""
        emr = aws_client(moto.url, "emr", **NO_RETRIES)
        moto.throttle("ListClusters")
        with pytest.raises(ClientError, match="ThrottlingException"):
            emr.list_clusters()

    def test_bad_fault_arguments(self, moto: MotoServer) -> None:
        """A fault needs an error status and a positive (or -1) count."""
        with pytest.raises(ValueError, match="count"):
            moto.inject_fault("SubmitJob", 200)


class TestDriver:
    """MotoJobDriver, the contract kit's CloudDriver."""

    def test_batch_ids_and_finish(self, moto: MotoServer, batch: Any, queue: Any) -> None:
        """Submitted and cancelled ids come from the ledger; finish ends the job; cancels leave it."""
        driver = MotoJobDriver(moto, "batch")
        job_id = submit(batch, queue)
        driver.finish(job_id, succeeded=True)
        batch.terminate_job(jobId=job_id, reason="no-op on an ended job")
        assert driver.submitted_ids() == [job_id] and driver.cancelled_ids() == [job_id]
        assert moto.job(job_id)["state"] == "SUCCEEDED"

    def test_step_lists(self, moto: MotoServer) -> None:
        """For EMR steps an external id is the list of step ids; failing cancels the rest."""
        emr = aws_client(moto.url, "emr", **NO_RETRIES)
        cluster = provision_emr_cluster(moto.url)
        ids = add_steps(emr, cluster, 3, action="CONTINUE")
        driver = MotoJobDriver(moto, "emr")
        driver.finish(ids, succeeded=False)
        assert driver.submitted_ids() == [ids]
        assert [moto.job(i)["state"] for i in ids] == ["FAILED", "CANCELLED", "CANCELLED"]


def _exercise(control: MotoControl, url: str) -> None:
    """The same control calls through any MotoControl."""
    batch = aws_client(url, "batch", **NO_RETRIES)
    queue = provision_batch(url, name="over-http")
    job_id = submit(batch, queue)
    control.set_state(job_id, "RUNNING")
    assert control.job(job_id)["state"] == "RUNNING"
    control.finish(job_id, succeeded=False, reason="boom")
    assert batch_job(batch, job_id)["statusReason"] == "boom"
    control.throttle("DescribeJobs")
    with pytest.raises(ClientError):
        batch_job(batch, job_id)
    control.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
    second = submit(batch, queue)
    assert control.wait_for_state(second, "SUCCEEDED", timeout=2)["service"] == "batch"
    assert [e.operation for e in control.submissions()] == ["SubmitJob", "SubmitJob"]
    assert [j["job_id"] for j in control.jobs("batch")] == [job_id, second]
    with pytest.raises((MotoControlError, KeyError)):
        control.finish("no-such-job")


class TestControlOverHttp:
    """MotoControlClient drives the controller like the in-process object does."""

    def test_client_against_the_in_process_server(self, moto: MotoServer) -> None:
        """Every control call works over HTTP; unknown jobs answer 404."""
        _exercise(moto.client, moto.url)
        with pytest.raises(MotoControlError) as caught:
            moto.client.job("no-such-job")
        assert caught.value.status == 404

    def test_job_ids_with_slashes(self, moto: MotoServer) -> None:
        """An ECS task ARN (``.../task/<cluster>/<id>``) is a job id the control API takes whole."""
        from airflow_resumable.testing.aws import aws_client, provision_ecs

        ecs = provision_ecs(moto.url)
        task = aws_client(moto.url, "ecs").run_task(
            cluster=ecs.cluster, taskDefinition=ecs.task_definition, launchType="FARGATE"
        )["tasks"][0]["taskArn"]
        assert "/" in task
        moto.client.finish(task, succeeded=False)
        assert moto.client.job(task)["state"] == "FAILED"

    def test_bad_control_arguments_answer_400(self, moto: MotoServer) -> None:
        """A bad lifecycle is a 400 with the reason."""
        with pytest.raises(MotoControlError, match="lifecycle must be one of") as caught:
            moto.client.set_lifecycle("sometimes")
        assert caught.value.status == 400

    def test_one_server_per_process(self, server: MotoServer) -> None:
        """A second in-process server is refused: moto's state is process-wide."""
        with pytest.raises(RuntimeError, match="another MotoServer"):
            MotoServer().start()


class TestProcessMode:
    """``python -m airflow_resumable.testing.aws``: READY line, control over HTTP, clean stop."""

    def test_process_serves_and_stops(self) -> None:
        """The process prints READY, serves AWS and control calls, and exits on SIGTERM."""
        with MotoProcess() as process:
            assert process.url.startswith("http://127.0.0.1:")
            _exercise(process.client, process.url)
            proc = process.process
        assert proc is not None and proc.returncode is not None

    def test_process_serves_the_kinds_registered_by_modules(self) -> None:
        """The package's Athena kind is served in process mode; a --kind-module is imported first."""
        with MotoProcess() as process:
            client = aws_client(process.url, "athena")
            query = client.start_query_execution(
                QueryString="SELECT 1", ResultConfiguration={"OutputLocation": "s3://results/"}
            )["QueryExecutionId"]
            assert [job["job_id"] for job in process.client.jobs("athena")] == [query]
        with (
            pytest.raises(Exception, match=r"did not print READY .*\(exit code 1\)"),
            MotoProcess(kind_modules=["no_such_kinds"], startup_timeout=20.0),
        ):
            pass

    def test_client_waits_for_readiness(self) -> None:
        """wait_until_ready gives up after its timeout when nothing listens."""
        with pytest.raises(TimeoutError):
            MotoControlClient("http://127.0.0.1:9", timeout=0.2).wait_until_ready(timeout=0.1)


class TestJobKindRegistry:
    """Kinds are found by service and operation; a maintainer can register one more."""

    def test_two_kinds_of_one_service_are_told_apart_by_operation(self) -> None:
        """SageMaker training and processing calls belong to different kinds of one service."""
        from airflow_resumable.testing._aws_jobs import kind_for

        training = kind_for("sagemaker", "CreateTrainingJob")
        processing = kind_for("sagemaker", "DescribeProcessingJob")
        assert training is not None and processing is not None
        assert (training.kind_name, processing.kind_name) == ("sagemaker-training", "sagemaker-processing")
        assert kind_for("sagemaker", "ListEndpoints") is None

    def test_register_job_kind(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A new kind is served; registering it again is a no-op; a taken name or operation is refused."""
        from airflow_resumable.testing import _aws_jobs
        from airflow_resumable.testing.aws import register_job_kind

        monkeypatch.setattr(_aws_jobs, "KINDS", dict(_aws_jobs.KINDS))

        class MediaConvertJobs(_aws_jobs.JobKind):
            name = service = "mediaconvert"
            submit_operation = "CreateJob"
            read_operations = frozenset({"GetJob"})
            cancel_operations = frozenset({"CancelJob"})

        register_job_kind(MediaConvertJobs())
        found = _aws_jobs.kind_for("mediaconvert", "GetJob")
        assert found is not None and found.kind_name == "mediaconvert"
        register_job_kind(MediaConvertJobs())  # a conftest imported twice: replaced, not refused
        assert _aws_jobs.kind_for("mediaconvert", "GetJob") is not found

        class Impostor(_aws_jobs.JobKind):
            name = service = "mediaconvert"
            submit_operation = "CreateJob"
            read_operations = frozenset({"GetJob"})
            cancel_operations = frozenset({"CancelJob"})

        with pytest.raises(ValueError, match=r"already registered \(.*MediaConvertJobs, not .*Impostor\)"):
            register_job_kind(Impostor())

        class Overlapping(MediaConvertJobs):
            name = "athena-2"

        with pytest.raises(ValueError, match="already belong"):
            register_job_kind(Overlapping())

    def test_unwritten_hooks_name_themselves(self) -> None:
        """A kind that leaves out a required hook, or whose moto model has no state, says which."""
        from airflow_resumable.testing._aws_kind import JobKind, TrackedJob

        class Bare(JobKind):
            name = service = "athena"

        kind = Bare()
        with pytest.raises(
            NotImplementedError, match=r"Bare must implement find_model\(backend, job_id, parent\)"
        ):
            kind.find_model(None, "q-1", None)
        with pytest.raises(NotImplementedError, match=r"Bare must implement read_ids\(call\)"):
            kind.read_ids(None)  # type: ignore[arg-type]

        class StatusOnly(Bare):
            def model(self, job: TrackedJob) -> object:
                return type("QueryExecution", (), {"status": "RUNNING"})()

        job = TrackedJob("q-1", StatusOnly(), "us-east-1", "123456789012", None, None, 1)
        with pytest.raises(TypeError, match="moto's QueryExecution has no 'state' attribute; override"):
            _ = job.state
