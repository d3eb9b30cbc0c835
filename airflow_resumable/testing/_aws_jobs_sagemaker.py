"""
Job kinds for SageMaker training and processing jobs: see :mod:`airflow_resumable.testing._aws_jobs`.

Private. moto creates both kinds ``Completed`` at once, lets ``Create*Job`` overwrite a job of the
same name (AWS answers ``ResourceInUse``), has no ``StopTrainingJob``, and stops a processing job
in any state (AWS refuses to stop one that ended). The kinds give both a lifecycle through moto's
own model objects and answer or refuse those calls as AWS does.
:func:`provision_sagemaker` creates what a job needs first (an S3 bucket with training input).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_resumable.testing._aws_clients import TEST_ACCOUNT_ID, TEST_ROLE_ARN, aws_client
from airflow_resumable.testing._aws_kind import JobKind
from airflow_resumable.testing._aws_wire import ErrorReply

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_kind import TrackedJob
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["SAGEMAKER_KINDS", "SageMakerResources", "provision_sagemaker"]

#: The tag that carries the submission token (``airflow_resumable.providers.amazon.sagemaker``).
TOKEN_TAG = "airflow-resumable-token"
_STATUSES = frozenset(("InProgress", "Completed", "Failed", "Stopping", "Stopped"))


class _SageMakerJobs(JobKind):
    """One kind of SageMaker job, named by its ``<Kind>JobName``; the name is the job id."""

    service = "sagemaker"
    succeeded, failed, cancelled = "Completed", "Failed", "Stopped"
    terminal = frozenset(("Completed", "Failed", "Stopped"))
    not_found_error = (400, "ValidationException", "Requested resource not found: {id}")
    #: ``training`` or ``processing``: in the operation names, the attributes and the messages.
    noun: ClassVar[str]
    name_field: ClassVar[str]

    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [(str(call.body.get(self.name_field, "")), None, None)]

    def token(self, call: ApiCall) -> str | None:
        """The value of the token tag (recorded in the ledger; AWS has no token: the name dedups)."""
        tags = call.body.get("Tags") or []
        return next(
            (str(t.get("Value")) for t in tags if isinstance(t, dict) and t.get("Key") == TOKEN_TAG), None
        )

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [str(call.body.get(self.name_field, ""))]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [str(call.body.get(self.name_field, ""))]

    def cancel_reason(self, call: ApiCall) -> str:
        return f"Stopped by {call.operation}"

    def precheck(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> None:
        name = str(call.body.get(self.name_field, ""))
        if call.operation == self.submit_operation:
            account = self.locate(name, call.region, None)
            if account is not None:
                arn = f"arn:aws:sagemaker:{call.region}:{account}:{self.noun}-job/{name}"
                raise ErrorReply(
                    400,
                    "ResourceInUse",
                    f"{self.noun.capitalize()} job names must be unique within an AWS account and region, "
                    f"and a {self.noun} job with this name already exists ({arn})",
                )
        elif call.operation in self.cancel_operations:
            model = self._model_in(call.region, name)
            if model is None:
                raise ErrorReply(400, "ValidationException", "Requested resource not found.")
            status = str(getattr(model, self._status_attribute))
            if status in self.terminal:
                raise ErrorReply(
                    400,
                    "ValidationException",
                    f"The request was rejected because the {self.noun} job is in status {status}.",
                )

    def backends(self) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        return getattr(backend, f"{self.noun}_jobs").get(job_id)

    def _model_in(self, region: str, name: str) -> Any:
        for regions in list(self.backends().values()):
            if region in regions and (model := self.find_model(regions[region], name, None)) is not None:
                return model
        return None

    @property
    def _status_attribute(self) -> str:
        return f"{self.noun}_job_status"

    def read_state(self, job: TrackedJob) -> str:
        model = self.model(job)
        return "EXPIRED" if model is None else str(getattr(model, self._status_attribute))

    def _write_common(self, model: Any, status: str, reason: str) -> None:
        from moto.core.utils import utcnow

        now = utcnow()
        setattr(model, self._status_attribute, status)
        setattr(model, f"{self.noun}_end_time", now if status in self.terminal else None)
        model.failure_reason = (reason or self.default_failure_reason) if status == self.failed else None
        model.last_modified_time = now

    def remove(self, job: TrackedJob) -> None:
        backend = self.backends()[job.account][job.region]
        getattr(backend, f"{self.noun}_jobs").pop(job.job_id, None)


class TrainingJobs(_SageMakerJobs):
    """
    SageMaker training jobs. The active path is the secondary status (``Starting`` → ``Downloading``
    → ``Training``, all ``InProgress``); ``set_state`` takes a primary or a secondary status.
    """

    name = "sagemaker-training"
    noun = "training"
    name_field = "TrainingJobName"
    path = ("Starting", "Downloading", "Training")
    #: Secondary status → primary status.
    _SECONDARY: ClassVar[dict[str, str]] = {
        "Starting": "InProgress",
        "Downloading": "InProgress",
        "Training": "InProgress",
        "Uploading": "InProgress",
        "Stopping": "Stopping",
        "Stopped": "Stopped",
        "Completed": "Completed",
        "Failed": "Failed",
    }
    states = frozenset((*_STATUSES, *_SECONDARY))
    submit_operation = "CreateTrainingJob"
    read_operations = frozenset(("DescribeTrainingJob",))
    not_found_lookalike = (
        "DescribeTrainingJob",
        400,
        "ValidationException",
        "1 validation error detected: Value at 'trainingJobName' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern",
    )
    cancel_operations = frozenset(("StopTrainingJob",))
    default_failure_reason = "AlgorithmError: the training script exited with code 1"

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        return {} if call.operation == "StopTrainingJob" else None  # moto has no StopTrainingJob

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        from moto.core.utils import utcnow

        secondary = "Training" if state == "InProgress" else state
        status = self._SECONDARY[secondary]
        model = self.model(job)
        self._write_common(model, status, reason)
        model.secondary_status = secondary
        transitions = list(getattr(model, "secondary_status_transitions", None) or [])
        if not transitions or transitions[-1].get("Status") != secondary:
            now = utcnow()
            if transitions:
                transitions[-1] = {**transitions[-1], "EndTime": now}
            message = reason or f"{secondary} the training job"
            transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": message})
        model.secondary_status_transitions = transitions


class ProcessingJobs(_SageMakerJobs):
    """
    SageMaker processing jobs: ``InProgress`` until the controller ends them (they have no
    secondary status; the path's two steps let the clock count from the first status read).
    """

    name = "sagemaker-processing"
    noun = "processing"
    name_field = "ProcessingJobName"
    path = ("InProgress", "InProgress")
    states = _STATUSES
    submit_operation = "CreateProcessingJob"
    read_operations = frozenset(("DescribeProcessingJob",))
    not_found_lookalike = (
        "DescribeProcessingJob",
        400,
        "ValidationException",
        "1 validation error detected: Value at 'processingJobName' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern",
    )
    cancel_operations = frozenset(("StopProcessingJob",))
    default_failure_reason = "AlgorithmError: the processing script exited with code 1"

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        model = self.model(job)
        self._write_common(model, state, reason)
        model.exit_message = (reason or self.default_failure_reason) if state == self.failed else None


SAGEMAKER_KINDS: tuple[JobKind, ...] = (TrainingJobs(), ProcessingJobs())


@dataclass(frozen=True)
class SageMakerResources:
    """
    What :func:`provision_sagemaker` created: a bucket with training input, and where jobs write.

    :param input_uri: an S3 prefix holding one object (the stock training operator checks it exists).
    """

    bucket: str
    input_uri: str
    output_uri: str
    role_arn: str
    image_uri: str


def provision_sagemaker(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable"
) -> SageMakerResources:
    """
    Create an S3 bucket ``<name>-sagemaker`` with an input object under ``input/`` (idempotent).

    :param url: the controller's base url.
    :param region: the region.
    :param name: prefix of the bucket name (lower-case letters, digits, hyphens).
    """

    bucket = f"{name}-sagemaker"
    s3 = aws_client(url, "s3", region)
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # provisioned before: fine
        s3.create_bucket(Bucket=bucket, **location)
    s3.put_object(Bucket=bucket, Key="input/train.csv", Body=b"x,y\n1,2\n")
    return SageMakerResources(
        bucket=bucket,
        input_uri=f"s3://{bucket}/input/",
        output_uri=f"s3://{bucket}/output/",
        role_arn=TEST_ROLE_ARN,
        image_uri=f"{TEST_ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com/airflow-resumable:latest",
    )
