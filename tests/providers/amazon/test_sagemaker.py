"""ResumableSageMakerTrainingOperator and ResumableSageMakerProcessingOperator against moto."""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError, ResumableError
from airflow_resumable.ledger import ledger_key
from airflow_resumable.providers.amazon.common import name_with_token
from airflow_resumable.providers.amazon.sagemaker import (
    TOKEN_TAG,
    JobNameTakenError,
    ResumableSageMakerProcessingOperator,
    ResumableSageMakerTrainingOperator,
    ResumableSageMakerTrigger,
    cancel_processing_job_by_recipe,
    cancel_training_job_by_recipe,
)
from airflow_resumable.record import RECORD_KEY, TaskIdentity
from airflow_resumable.testing._aws_jobs_sagemaker import SageMakerResources, provision_sagemaker
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client
from airflow_resumable.testing.contract import (
    ResumableOperatorContract,
    ScenarioProbe,
    SimulatedWorkerCrash,
    finish_on_first_poll,
)
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from tests.providers.amazon.helpers import (
    FAST,
    XComParity,
    allow_botocore_retries,
    context,
    record,
    run_task,
    submit_requests,
    task_context,
    xcoms,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import JsonValue

#: Status → (active, succeeded).
STATES = {
    "InProgress": (True, False),
    "Stopping": (True, False),
    "Completed": (False, True),
    "Failed": (False, False),
    "Stopped": (False, False),
}
#: Fields of a Describe*Job answer that differ between two runs of the same job spec.
VOLATILE = frozenset(
    (
        "ResponseMetadata",
        "CreationTime",
        "LastModifiedTime",
        "TrainingStartTime",
        "TrainingEndTime",
        "ProcessingEndTime",
        "SecondaryStatusTransitions",
        "FinalMetricDataList",
    )
)


def training_config(res: SageMakerResources, name: str = "nightly-train", spec: str = "v1") -> dict[str, Any]:
    """A ``CreateTrainingJob`` config, with ``spec`` in a hyperparameter (not in the name)."""
    source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": res.input_uri}}
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": res.image_uri, "TrainingInputMode": "File"},
        "RoleArn": res.role_arn,
        "HyperParameters": {"spec": spec},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": source}],
        "OutputDataConfig": {"S3OutputPath": res.output_uri},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": "1", "VolumeSizeInGB": "10"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def processing_config(
    res: SageMakerResources, name: str = "nightly-eval", spec: str = "v1"
) -> dict[str, Any]:
    """A ``CreateProcessingJob`` config, with ``spec`` in the environment (not in the name)."""
    output = {"S3Uri": f"{res.output_uri}evaluation", "LocalPath": "/opt/ml/processing/out"}
    return {
        "ProcessingJobName": name,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": "1", "InstanceType": "ml.m5.large", "VolumeSizeInGB": 10}
        },
        "AppSpecification": {"ImageUri": res.image_uri},
        "Environment": {"SPEC": spec},
        "RoleArn": res.role_arn,
        "ProcessingOutputConfig": {
            "Outputs": [{"OutputName": "evaluation", "S3Output": {**output, "S3UploadMode": "EndOfJob"}}]
        },
    }


@dataclass(frozen=True)
class Kind:
    """One of the two operators, with its stock twin and its API names."""

    name: str
    operator: type
    stock: type
    job_type: str
    config: Callable[..., dict[str, Any]]

    @property
    def kind(self) -> str:
        """The controller's job kind."""
        return f"sagemaker-{self.name}"

    @property
    def create(self) -> str:
        """The submit operation."""
        return f"Create{self.job_type}Job"

    @property
    def describe(self) -> str:
        """The status-read operation."""
        return f"Describe{self.job_type}Job"


TRAINING = Kind(
    "training", ResumableSageMakerTrainingOperator, SageMakerTrainingOperator, "Training", training_config
)
PROCESSING = Kind(
    "processing",
    ResumableSageMakerProcessingOperator,
    SageMakerProcessingOperator,
    "Processing",
    processing_config,
)
KINDS = [TRAINING, PROCESSING]
CANCELLERS = {"training": cancel_training_job_by_recipe, "processing": cancel_processing_job_by_recipe}


class SageMakerDriver(MotoJobDriver):
    """The kit's driver, plus a provisioned bucket, for one of the two kinds."""

    def __init__(self, server: MotoServer, kind: Kind) -> None:
        super().__init__(server, kind.kind)
        self.server = server
        self.case = kind
        self.resources = provision_sagemaker(server.url)

    def kwargs(self, **extra: Any) -> dict[str, Any]:
        """The operator's own arguments (a config with the given name and spec value)."""
        name = extra.pop("name", None)
        spec = extra.pop("spec", "v1")
        config = self.case.config(self.resources, spec=spec, **({"name": name} if name else {}))
        return {"config": config, "check_interval": 0.001, **extra}

    def operator(self, **extra: Any) -> Any:
        """The resumable operator, task ``job``, with fast retries."""
        return self.case.operator(task_id="job", **{**FAST, **self.kwargs(**extra)})

    def create(self, name: str, tags: list[dict[str, str]] | None = None) -> str:
        """A job created directly (not through the operator); returns its name."""
        config = self.operator(name=name).job_request()  # the config with its integer fields converted
        client = aws_client(self.server.url, "sagemaker")
        getattr(client, f"create_{self.case.name}_job")(**config, **({"Tags": tags} if tags else {}))
        return name

    def names(self) -> list[str]:
        """The names of the jobs created so far, oldest first."""
        return [str(name) for name in self.submitted_ids()]

    def throttle_next_submit(self) -> None:
        """Answer the next Create*Job with ThrottlingException (the kit's optional scenario)."""
        self.server.throttle(self.case.create)

    def state(self, name: str) -> str:
        """The job's status as the controller sees it."""
        return str(self.server.job(name)["state"])


@pytest.fixture(params=KINDS, ids=[kind.name for kind in KINDS])
def cloud(request: pytest.FixtureRequest, moto: MotoServer) -> SageMakerDriver:
    """A reset controller with a bucket, for training and for processing."""
    return SageMakerDriver(moto, request.param)


class _SageMakerContract(XComParity, ResumableOperatorContract):
    """
    The resumable contract; the spec marker is a templated value of the config (never the name).

    XComParity's two tests are specialised: the return value is ``{"<Type>": <Describe*Job>}``,
    not the job id.
    """

    case: Kind
    expected_xcom_keys = frozenset({"return_value"})
    deferrable_kwargs = {"deferrable": True, "check_interval": 0.05, "max_attempts": 1000}

    @pytest.fixture
    def cloud(self, moto: MotoServer) -> SageMakerDriver:
        return SageMakerDriver(moto, self.case)

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return cloud.kwargs(name="contract-job", spec=spec_marker)

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """The kit's declaration: the stock return value, ``{"<Type>": <Describe*Job of this job>}``."""
        from unittest import mock

        described = mock.ANY  # times and request ids; the name and status are checked below
        return {"return_value": {self.case.job_type: described}}

    def _returned_job(self, outcome: Any) -> Any:
        pushed = xcoms(outcome)
        assert set(pushed) == self.expected_xcom_keys
        described = pushed["return_value"][self.case.job_type]
        return described[f"{self.case.job_type}JobName"], described[f"{self.case.job_type}JobStatus"]

    def test_xcoms_after_a_fresh_run(self, cloud: MotoJobDriver) -> None:
        """The stock return value, ``{"<Type>": <the completed job>}``, after one try."""
        outcome = self._run(cloud, ScenarioProbe(cloud, finish_on_first_poll()))
        assert self._returned_job(outcome) == (cloud.submitted_ids()[0], "Completed")

    def test_xcoms_after_adopting_a_succeeded_job(self, cloud: MotoJobDriver) -> None:
        """The retry that adopts the succeeded job returns the same value."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=True)
            raise SimulatedWorkerCrash("worker died just as the job finished")

        outcome = self._run(cloud, ScenarioProbe(cloud, on_poll))
        assert outcome.task("job").try_number == 2
        assert self._returned_job(outcome) == (cloud.submitted_ids()[0], "Completed")


class TestResumableSageMakerTrainingOperatorContract(_SageMakerContract):
    """The resumable contract for training jobs."""

    operator_class = ResumableSageMakerTrainingOperator
    case = TRAINING


class TestResumableSageMakerProcessingOperatorContract(_SageMakerContract):
    """The resumable contract for processing jobs."""

    operator_class = ResumableSageMakerProcessingOperator
    case = PROCESSING


class TestStockParity:
    """The same XComs and return value as the stock operator, for the same config."""

    def test_same_return_value_as_the_stock_operator(self, cloud: SageMakerDriver) -> None:
        """Stock and resumable runs push the same XComs; the descriptions differ only by name and time."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        arguments = {**cloud.kwargs(), "check_interval": 0}
        stock = xcoms(run_task(cloud.case.stock, retries=0, **arguments))
        ours = xcoms(run_task(cloud.case.operator, retries=0, **arguments))
        assert set(stock) == set(ours) == {"return_value"}
        stock_name, our_name = (job["job_id"] for job in cloud.server.jobs("sagemaker"))
        assert stock_name == cloud.case.config(cloud.resources)[f"{cloud.case.job_type}JobName"]
        assert _masked(stock["return_value"], stock_name) == _masked(ours["return_value"], our_name)


class TestStateMapping:
    """Every SageMaker status, read through moto and botocore, maps to active / succeeded / failed."""

    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, cloud: SageMakerDriver, state: str, expected: tuple[bool, bool]) -> None:
        """The status is passed through and classified."""
        name = cloud.create("probe")
        cloud.server.set_state(name, state)
        operator = cloud.operator()
        status = operator.get_job_status(name, context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    def test_secondary_status_is_a_training_state(self, moto: MotoServer) -> None:
        """A training job walks Starting → Downloading → Training, all InProgress."""
        cloud = SageMakerDriver(moto, TRAINING)
        name = cloud.create("probe")
        client = aws_client(moto.url, "sagemaker")
        seen = [client.describe_training_job(TrainingJobName=name) for _ in range(3)]
        assert [d["SecondaryStatus"] for d in seen] == ["Starting", "Downloading", "Training"]
        assert {d["TrainingJobStatus"] for d in seen} == {"InProgress"}

    def test_unknown_status_is_waited_on(self, cloud: SageMakerDriver) -> None:
        """A status AWS may add later counts as active: never a resubmission on a guess."""
        operator = cloud.operator()
        assert operator.is_job_active("Pausing") and not operator.is_job_succeeded("Pausing")

    def test_unknown_name_is_not_found(self, cloud: SageMakerDriver) -> None:
        """A name SageMaker does not know raises JobNotFoundError, never a pseudo-state."""
        with pytest.raises(JobNotFoundError, match="never-created"):
            cloud.operator().get_job_status("never-created", context())

    def test_expired_job_is_not_found(self, cloud: SageMakerDriver) -> None:
        """A job the service forgot raises JobNotFoundError."""
        name = cloud.create("probe")
        cloud.expire(name)
        with pytest.raises(JobNotFoundError):
            cloud.operator().get_job_status(name, context())


class TestNameAndTag:
    """The job name carries the token key, the tag the whole token; no timestamped twin ever."""

    def test_name_and_tag_carry_the_record_token(self, cloud: SageMakerDriver) -> None:
        """Create*Job gets ``<name>-<token key>`` and the user's tags plus our tag."""
        tags = [{"Key": "team", "Value": "ml"}]
        arguments = cloud.kwargs()
        arguments["config"]["Tags"] = tags
        outcome = run_task(cloud.case.operator, ScenarioProbe(cloud, finish_on_first_poll()), **arguments)
        token = record(outcome)["token"]
        (request,) = submit_requests(cloud.server, cloud.case.create)
        configured = arguments["config"][f"{cloud.case.job_type}JobName"]
        assert request[f"{cloud.case.job_type}JobName"] == name_with_token(configured, token, max_length=63)
        assert request["Tags"] == [*tags, {"Key": TOKEN_TAG, "Value": token}]
        assert record(outcome)["external_id"] == request[f"{cloud.case.job_type}JobName"]

    def test_long_name_is_cut_to_63_characters(self, cloud: SageMakerDriver) -> None:
        """A 63-character configured name is cut so that the name with its key still fits."""
        op = cloud.operator(name="n" * 63)
        op.submission_token = "ar-" + "ab" * 20
        name = op.submit_job(context())
        assert name == "n" * 50 + "-abababababab" and len(name) == 63

    def test_timestamp_is_never_appended(self, cloud: SageMakerDriver) -> None:
        """A job with the configured name exists: action_if_job_exists="timestamp" submits <name>-<key>."""
        cloud.create("nightly")
        op = cloud.operator(name="nightly", action_if_job_exists="timestamp")
        op.submission_token = "ar-" + "cd" * 20
        assert op.submit_job(context()) == "nightly-cdcdcdcdcdcd"

    def test_fail_refuses_a_job_of_the_configured_name(self, cloud: SageMakerDriver) -> None:
        """action_if_job_exists="fail" keeps the stock check: nothing is created."""
        cloud.create("nightly")
        op = cloud.operator(name="nightly", action_if_job_exists="fail")
        with pytest.raises(JobNameTakenError, match="nightly"):
            op.execute(context())
        assert cloud.submitted_ids() == ["nightly"]

    def test_fail_still_adopts_the_job_of_its_own_intent(self, cloud: SageMakerDriver) -> None:
        """A resubmission under "fail" finds its own job before refusing: nothing new is created."""
        token = "ar-" + "12" * 20
        cloud.create("nightly")
        mine = cloud.create(
            name_with_token("nightly", token, max_length=63), [{"Key": TOKEN_TAG, "Value": token}]
        )
        op = cloud.operator(name="nightly", action_if_job_exists="fail")
        op.submission_token = token
        assert op.submit_job(context()) == mine
        assert cloud.server.calls(cloud.case.create)[-1].request[f"{cloud.case.job_type}JobName"] == mine

    def test_foreign_job_of_our_name_is_not_adopted(self, cloud: SageMakerDriver) -> None:
        """A job with our derived name but another token (or none) fails the task: never adopted."""
        token = "ar-" + "ef" * 20
        cloud.create(
            name_with_token("nightly", token, max_length=63), tags=[{"Key": TOKEN_TAG, "Value": "ar-x"}]
        )
        op = cloud.operator(name="nightly")
        op.submission_token = token
        with pytest.raises(JobNameTakenError, match="did not create"):
            op.submit_job(context())
        assert len(cloud.submitted_ids()) == 1


class TestCrashBeforePersist:
    """A crash between Create*Job and storing the name: the name is taken by our job, which is adopted."""

    def test_resubmission_adopts_the_job_of_its_name(self, cloud: SageMakerDriver) -> None:
        """Try 2 creates again with the same token: ResourceInUse, tag checked, that job polled. One job."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(cloud.case.operator, probe, **cloud.kwargs())
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (job,) = cloud.submitted_ids()
        first, second = cloud.server.calls(cloud.case.create)
        assert first.created == (job,) and first.token == second.token == record(outcome)["token"]
        assert second.created == () and second.status == 400
        assert probe.polled[2] == [job] and probe.submitted[2] == [job]
        assert len(cloud.server.calls("ListTags")) == 1

    def test_namesake_of_another_intent_is_not_taken(self, cloud: SageMakerDriver) -> None:
        """A newer job of the same configured name (another token) is not the one try 2 reconnects to."""
        probe = ScenarioProbe(
            cloud, finish_on_first_poll(), crash_after_submit={1}, namesake_after_submit={1}
        )
        outcome = run_task(cloud.case.operator, probe, **cloud.kwargs())
        assert outcome.task("job").state == "success"
        mine, namesake = cloud.submitted_ids()
        assert probe.namesakes == [namesake] and mine != namesake
        assert probe.polled[2] == [mine] and record(outcome)["external_id"] == mine


class TestLostSubmitResponse:
    """Create*Job carried out but its answer lost: exactly one job, no retry burned."""

    def test_one_job_although_botocore_would_retry(
        self, cloud: SageMakerDriver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Create*Job is sent without botocore retries; the mixin's retry finds the name taken by our job."""
        allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response(cloud.case.create)
        outcome = run_task(
            cloud.case.operator, ScenarioProbe(cloud, finish_on_first_poll()), **cloud.kwargs()
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.server.calls(cloud.case.create)) == 2 and len(cloud.submitted_ids()) == 1
        assert record(outcome)["external_id"] == cloud.submitted_ids()[0]


class TestThrottling:
    """Throttled and failing AWS calls are retried by the mixin without consuming a try."""

    def test_throttled_submit_and_status_reads(self, cloud: SageMakerDriver) -> None:
        """ThrottlingException on Create*Job and Describe*Job (400 and 429), a 503: one job, first try."""
        cloud.server.throttle(cloud.case.create)
        cloud.server.throttle(cloud.case.describe, status=429)
        cloud.server.inject_fault(cloud.case.describe, 503)
        outcome = run_task(
            cloud.case.operator, ScenarioProbe(cloud, finish_on_first_poll()), **cloud.kwargs()
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.submitted_ids()) == 1
        assert [call.status for call in cloud.server.calls(cloud.case.create)] == [400, 200]


class TestFailureAndModes:
    """A failed job fails the try with SageMaker's reason; not waiting; max_ingestion_time; cancel."""

    def test_failure_reason_in_the_error(self, cloud: SageMakerDriver) -> None:
        """describe_failure reports FailureReason."""
        name = cloud.create("probe")
        cloud.server.finish(name, succeeded=False, reason="AlgorithmError: out of memory")
        with pytest.raises(JobFailedError, match="AlgorithmError: out of memory"):
            cloud.operator().poll_until_complete(name, context())

    def test_not_waiting_returns_the_running_job(self, cloud: SageMakerDriver) -> None:
        """wait_for_completion=False: the task returns the InProgress description; the job keeps running."""
        outcome = run_task(cloud.case.operator, retries=0, **cloud.kwargs(wait_for_completion=False))
        (name,) = cloud.names()
        described = xcoms(outcome)["return_value"][cloud.case.job_type]
        assert described[f"{cloud.case.job_type}JobStatus"] == "InProgress"
        assert cloud.server.job(name)["finished"] is False and cloud.cancelled_ids() == []

    def test_max_ingestion_time_stops_the_job(self, cloud: SageMakerDriver) -> None:
        """A job older than max_ingestion_time (from its CreationTime) is stopped and the try fails."""
        store = InMemoryTaskStateStore()
        later = datetime.now().astimezone() + timedelta(hours=1)
        with (
            mock.patch("airflow_resumable.providers.amazon.sagemaker._utcnow", return_value=later),
            pytest.raises(ResumableError, match="max_ingestion_time=60"),
        ):
            cloud.operator(max_ingestion_time=60).execute(task_context(store))
        (name,) = cloud.names()
        assert cloud.cancelled_ids() == [name] and cloud.state(name) == "Stopped"
        assert store.get(RECORD_KEY)["phase"] == "cancelled"

    def test_cancel_of_an_ended_job_is_not_an_error(self, cloud: SageMakerDriver) -> None:
        """Stop*Job of a completed job is refused by SageMaker; cancel_job and the canceller accept that."""
        name = cloud.create("probe")
        cloud.server.finish(name, succeeded=True)
        cloud.operator().cancel_job(name, context())
        canceller = CANCELLERS[cloud.case.name]
        canceller(name, aws_conn_id="aws_default")
        assert cloud.state(name) == "Completed" and cloud.cancelled_ids() == []

    def test_canceller_stops_a_running_job(self, cloud: SageMakerDriver) -> None:
        """The custodian's canceller stops the job named by the ledger."""
        name = cloud.create("probe")
        canceller = CANCELLERS[cloud.case.name]
        canceller(name, aws_conn_id="aws_default", region_name="us-east-1")
        assert cloud.cancelled_ids() == [name] and cloud.state(name) == "Stopped"

    def test_processing_output_files_to_xcom(self, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """The stock OutputFiles are read from S3 once the processing job completed."""
        # The stock reader builds its S3 client from the session, ignoring the connection's endpoint.
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
        cloud = SageMakerDriver(moto, PROCESSING)
        s3 = aws_client(moto.url, "s3")
        s3.put_object(
            Bucket=cloud.resources.bucket, Key="output/evaluation/metrics.json", Body=b'{"mse": 0.5}'
        )
        wanted = [{"output_name": "evaluation", "file_name": "metrics.json", "result_name": "Report"}]
        probe = ScenarioProbe(cloud, finish_on_first_poll())
        outcome = run_task(cloud.case.operator, probe, **cloud.kwargs(output_files_to_xcom=wanted))
        assert xcoms(outcome)["return_value"]["OutputFiles"] == {"Report": {"mse": 0.5}}


class TestInvalidSpec:
    """An invalid argument fails before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("change", "argument"),
        [
            (lambda config: None, "config"),
            (lambda config: {**config, "_name": None}, "JobName"),
            (lambda config: {**config, "_name": "has_underscore"}, "JobName"),
            (lambda config: {**config, "_name": "x" * 64}, "JobName"),
            (lambda config: {**config, "_name": "ends-with-"}, "JobName"),
            (lambda config: {**config, "Tags": [{"Key": TOKEN_TAG, "Value": "mine"}]}, TOKEN_TAG),
            (lambda config: {**config, "Tags": {"team": "ml"}}, "Tags"),
            (lambda config: _integer_field(config, "many"), "InstanceCount"),
        ],
        ids=[
            "no-config",
            "no-name",
            "underscore",
            "too-long",
            "trailing-hyphen",
            "reserved-tag",
            "tags-dict",
            "int",
        ],
    )
    def test_invalid_argument(
        self, cloud: SageMakerDriver, change: Callable[[dict[str, Any]], Any], argument: str
    ) -> None:
        """InvalidJobSpecError names the argument; the controller saw no call at all."""
        config = change(cloud.kwargs()["config"])
        if isinstance(config, dict) and "_name" in config:
            config[f"{cloud.case.job_type}JobName"] = config.pop("_name")
        cloud.server.reset()
        operator = cloud.case.operator(task_id="job", config=config, check_interval=0.001)
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(context())
        assert cloud.server.ledger() == []

    def test_output_files_need_waiting(self, moto: MotoServer) -> None:
        """output_files_to_xcom with wait_for_completion=False is refused before any AWS call."""
        cloud = SageMakerDriver(moto, PROCESSING)
        wanted = [{"output_name": "evaluation", "file_name": "m.json", "result_name": "R"}]
        operator = cloud.operator(output_files_to_xcom=wanted, wait_for_completion=False)
        moto.reset()
        with pytest.raises(InvalidJobSpecError, match="output_files_to_xcom"):
            operator.execute(context())
        assert moto.ledger() == []


class TestDeferrable:
    """deferrable=True: the name recorded first, our trigger, the way back, a user's stop."""

    KEY = ledger_key(TaskIdentity("dag", "manual__1", "job", -1))

    def test_defers_with_our_trigger_once_the_name_is_recorded(self, cloud: SageMakerDriver) -> None:
        """The record holds the job (phase submitted); the trigger is the stock one, stock arguments."""
        context_ = task_context()
        op = cloud.operator(deferrable=True, max_attempts=7)
        trigger = _defer(op, context_)
        store = context_["task_state_store"]
        (name,) = cloud.names()
        assert store.get(RECORD_KEY)["phase"] == "submitted" and store.get(op.external_id_key) == name
        assert type(trigger) is ResumableSageMakerTrigger and isinstance(trigger, SageMakerTrigger)
        assert (trigger.job_name, trigger.job_type, trigger.attempts) == (name, cloud.case.job_type, 7)
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_resumable.providers.amazon.sagemaker.ResumableSageMakerTrigger"
        _, stock_kwargs = SageMakerTrigger.serialize(trigger)
        assert {key: kwargs[key] for key in stock_kwargs} == stock_kwargs
        assert _rebuilt(trigger).serialize() == (classpath, kwargs)

    def test_timeout_is_max_ingestion_time(self, cloud: SageMakerDriver) -> None:
        """The deferral's timeout is max_ingestion_time, else execution_timeout, as in stock."""
        with pytest.raises(TaskDeferred) as deferred:
            cloud.operator(deferrable=True, max_ingestion_time=900).execute(task_context())
        assert deferred.value.timeout == timedelta(seconds=900)

    def test_not_waiting_does_not_defer(self, cloud: SageMakerDriver) -> None:
        """deferrable with wait_for_completion=False returns at once, as in stock."""
        result = cloud.operator(deferrable=True, wait_for_completion=False).execute(task_context())
        assert result[cloud.case.job_type][f"{cloud.case.job_type}JobStatus"] == "InProgress"

    def test_success_event_completes_the_record(self, cloud: SageMakerDriver) -> None:
        """The real trigger fires once the job completed; execute_complete returns the stock result."""
        context_ = task_context()
        trigger = _defer(cloud.operator(deferrable=True), context_)
        (name,) = cloud.names()
        cloud.finish(name, succeeded=True)
        event = _trigger_event(trigger)
        assert event == {"status": "success", "job_name": name}
        resumed = task_context(context_["task_state_store"], xcoms=context_["ti"].xcoms)
        result = cloud.operator(deferrable=True).execute_complete(resumed, event)
        assert result[cloud.case.job_type][f"{cloud.case.job_type}JobName"] == name
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"

    def test_failure_event_raises_the_reason(self, cloud: SageMakerDriver) -> None:
        """A failed job fails the try with JobFailedError and its FailureReason."""
        store = InMemoryTaskStateStore()
        trigger = _defer(cloud.operator(deferrable=True), task_context(store))
        (name,) = cloud.names()
        cloud.server.finish(name, succeeded=False, reason="ClientError: bad input")
        event = _trigger_event(trigger)
        assert event["status"] == "failed"
        with pytest.raises(JobFailedError, match="ClientError: bad input"):
            cloud.operator(deferrable=True).execute_complete(task_context(store), event)

    @pytest.mark.parametrize(("server_state", "stopped"), [("failed", True), ("queued", False)])
    def test_on_kill_stops_only_after_a_user_stop(
        self, cloud: SageMakerDriver, server_state: str, stopped: bool
    ) -> None:
        """Marked failed: Stop*Job; cleared (queued again): the job is left to the next try."""
        trigger = _rebuilt(_defer(cloud.operator(deferrable=True), task_context()))
        trigger.task_instance = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state)
        ledger = InMemoryJobLedger()
        ledger.set(self.KEY, {"record": "in flight"})
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=ledger):
            asyncio.run(trigger.on_kill())
        (name,) = cloud.names()
        assert (cloud.cancelled_ids() == [name]) is stopped
        assert cloud.state(name) == ("Stopped" if stopped else "InProgress")

    def test_deferred_dag_run_succeeds_with_one_job(self, cloud: SageMakerDriver) -> None:
        """The whole deferral through dag.test(): defer, trigger, resume, record completed."""
        cloud.server.set_lifecycle("clock", run_duration=0.3, final_result="succeeded", reads_per_state=1)
        outcome = run_task(cloud.case.operator, **cloud.kwargs(deferrable=True, check_interval=0.05))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        (name,) = cloud.names()
        assert record(outcome)["phase"] == "completed" and record(outcome)["external_id"] == name
        assert (
            xcoms(outcome)["return_value"][cloud.case.job_type][f"{cloud.case.job_type}JobStatus"]
            == "Completed"
        )


def _integer_field(config: dict[str, Any], value: str) -> dict[str, Any]:
    """The config with its InstanceCount set to ``value``."""
    config = json.loads(json.dumps(config))
    parent = config.get("ResourceConfig") or config["ProcessingResources"]["ClusterConfig"]
    parent["InstanceCount"] = value
    return config


def _masked(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The result's description without per-run values, the job name replaced by ``<job>``."""
    ((job_type, described),) = result.items()
    text = json.dumps({k: v for k, v in described.items() if k not in VOLATILE}, sort_keys=True, default=str)
    return {job_type: json.loads(text.replace(name, "<job>"))}


def _defer(op: Any, context_: dict[str, Any]) -> Any:
    """Run ``execute`` until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context_)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


def _rebuilt(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _trigger_event(trigger: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Run the real trigger (rebuilt; aiobotocore against moto) to its first event."""

    async def first() -> dict[str, Any]:
        async for event in _rebuilt(trigger).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))
