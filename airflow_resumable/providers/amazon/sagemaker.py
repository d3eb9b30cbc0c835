"""
Resumable SageMaker operators: ``SageMakerTrainingOperator`` and ``SageMakerProcessingOperator``
that keep their job through worker shutdowns, crashes and retries, and never create it twice.

SageMaker job names are unique per account and region, so the name itself is the idempotency key:
the job is named ``<configured name>-<12 hex of the submission token>``, a resubmission of the same
intent finds that name taken by its own job (tagged with the full token) and adopts it, and a new
intent gets a new name. Both operators share :class:`_ResumableSageMakerJob`; they differ only in
their API names and in what the stock ``execute`` does around the call.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import copy
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
    serialize,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon._cancel import cancel_client
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    error_code,
    name_with_token,
    no_retry_client,
    require_mapping,
    says_not_found,
)
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "TOKEN_TAG",
    "JobNameTakenError",
    "ResumableSageMakerProcessingOperator",
    "ResumableSageMakerTrainingOperator",
    "ResumableSageMakerTrigger",
    "cancel_processing_job_by_recipe",
    "cancel_training_job_by_recipe",
]

#: Tag that carries the full submission token on every job (the same key as the Batch tag). Never
#: rename: a resubmission checks it before adopting a job of its name.
TOKEN_TAG = "airflow-resumable-token"
#: Statuses after which a job no longer runs; anything else (``InProgress``, ``Stopping``, a status
#: AWS adds later) is waited on.
TERMINAL = frozenset(("Completed", "Failed", "Stopped"))
COMPLETED = "Completed"
#: SageMaker's job-name pattern (``TrainingJobName``, ``ProcessingJobName``).
_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_MAX_NAME = 63
#: ``Create*Job`` answers for a name in use (the model says ResourceInUse; ValidationException seen too).
_NAME_TAKEN = frozenset(("ResourceInUse", "ValidationException"))
#: ``Describe*Job`` answers for a name SageMaker does not know: ``ResourceNotFound``, or
#: ``ValidationException`` "Requested resource not found." (also its answer for any bad input, so
#: only one that says "not found" counts).
_NOT_FOUND = ("ValidationException",)
_NOT_FOUND_BY_CODE = ("ResourceNotFound",)


class JobNameTakenError(ResumableError, AirflowFailException):
    """
    A job of the name this task would use exists and was not submitted by this intent; no retry.

    .. versionadded:: 0.2.0
    """


class _MaxIngestionTimeExceededError(ResumableError):
    """The job ran longer than ``max_ingestion_time`` (counted from its ``CreationTime``)."""


if TYPE_CHECKING:  # the stock attributes (config, hook, check_interval, ...) for the type checker only
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerBaseOperator as _StockBase
else:
    _StockBase = object


class _ResumableSageMakerJob(AwsJobMixin, _StockBase):
    """
    What the training and processing operators share; the subclasses name the API and the result.

    Not public: use :class:`ResumableSageMakerTrainingOperator` or
    :class:`ResumableSageMakerProcessingOperator`.
    """

    submission_is_idempotent: ClassVar[bool] = True
    visibility_key: ClassVar[str] = "sagemaker"
    #: Stock: ``deferrable`` only matters with ``wait_for_completion``.
    deferral_always_waits: ClassVar[bool] = False
    #: ``Training`` or ``Processing``: the trigger's ``job_type`` and the return value's key.
    job_type: ClassVar[str]
    #: Registered custodian canceller (``airflow_resumable.custodian.CANCELLERS``).
    canceller: ClassVar[str]

    if TYPE_CHECKING:  # set by both stock operators
        check_interval: int
        max_attempts: int
        max_ingestion_time: int | None
        action_if_job_exists: str

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``check_interval``."""
        return float(self.check_interval)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.check_interval = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    # ------------------------------------------------------------------ names of the API
    @property
    def _name_key(self) -> str:
        return f"{self.job_type}JobName"

    @property
    def _status_key(self) -> str:
        return f"{self.job_type}JobStatus"

    def _call(self, client: Any, verb: str, name: str) -> Any:
        """``client.<verb>_<type>_job(<Type>JobName=name)``."""
        return getattr(client, f"{verb}_{self.job_type.lower()}_job")(**{self._name_key: name})

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        """A copy of ``config`` with the stock integer fields converted; checked, no AWS call."""
        service, key = self.service_name, self._name_key
        config = copy.deepcopy(dict(require_mapping(self.config, "config", service, optional=False) or {}))
        name = config.get(key)
        if not isinstance(name, str) or len(name) > _MAX_NAME or not _JOB_NAME.fullmatch(name):
            raise InvalidJobSpecError(
                f"{service}: argument 'config' must hold {key!r}: 1-63 letters, digits or hyphens, starting "
                f"and ending with a letter or digit; got {name!r}. Nothing was submitted."
            )
        tags = config.get("Tags")
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(tag, dict) and "Key" in tag for tag in tags)
        ):
            raise InvalidJobSpecError(
                f"{service}: config['Tags'] must be a list of {{'Key', 'Value'}} dicts; "
                f"nothing was submitted."
            )
        if any(tag["Key"] == TOKEN_TAG for tag in tags or []):
            raise InvalidJobSpecError(f"{service}: tag {TOKEN_TAG!r} is reserved for airflow_resumable.")
        self._create_integer_fields()
        for field in self.integer_fields:
            try:
                self.parse_integer(config, field)
            except (ValueError, TypeError) as err:
                raise InvalidJobSpecError(
                    f"{service}: config field {'.'.join(field)} must be an integer ({err}). "
                    f"Nothing was submitted."
                ) from err
        return config

    def _request(self, name: str, token: str) -> dict[str, Any]:
        """The ``Create*Job`` arguments: the stock preprocessing, our name and our tag."""
        request = self.job_request()
        self.hook.configure_s3_resources(request)  # the stock S3Operations (bucket creation, uploads)
        request[self._name_key] = name
        if "RoleArn" in request:  # as the stock expand_role
            request["RoleArn"] = AwsBaseHook(self.aws_conn_id, client_type="iam").expand_role(
                request["RoleArn"]
            )
        request["Tags"] = [*(request.get("Tags") or []), {"Key": TOKEN_TAG, "Value": token}]
        return request

    def _check_request(self, request: dict[str, Any]) -> None:
        """What the stock hook checks before creating the job (training: its S3 inputs)."""

    def _guards_configured_name(self) -> bool:
        """``action_if_job_exists="fail"``: refuse when a job has the configured name itself."""
        return self.action_if_job_exists == "fail"

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``Create*Job`` named ``<name>-<token key>``, tagged with the token; returns the job name.

        A ``ResourceInUse`` answer for a job that carries this token (a lost answer, a crash before
        the name was recorded) is that same job: its name is returned, nothing is created.

        :raises JobNameTakenError: the name belongs to a job of another intent, or (with
            ``action_if_job_exists="fail"``) a job has the configured name.
        """
        token = self.submission_token or _stray_token()
        configured = str(self.job_request()[self._name_key])
        name = name_with_token(configured, token, max_length=_MAX_NAME)
        if self._guards_configured_name() and self._describe_or_none(configured) is not None:
            if self._owned(name, token) is not True:  # a resubmission may find its own job first
                raise JobNameTakenError(
                    f"{self.service_name}: a job named {configured!r} already exists and "
                    f"action_if_job_exists is 'fail'; nothing was submitted."
                )
            self.log.info("The job of this intent exists already; adopting it", job_name=name)
            return name
        request = self._request(name, token)
        self._check_request(request)
        self.log.info("Creating SageMaker job", job_type=self.job_type, job_name=name)
        client = no_retry_client(self.hook)
        try:
            getattr(client, f"create_{self.job_type.lower()}_job")(**request)
        except ClientError as err:
            owned = self._owned(name, token, patient=True) if error_code(err) in _NAME_TAKEN else None
            if owned is None:
                raise
            if not owned:
                raise JobNameTakenError(
                    f"{self.service_name}: job name {name!r} is taken by a job that this task's intent did "
                    f"not create (no {TOKEN_TAG} tag with its token); nothing was submitted."
                ) from err
            self.log.info("The job of this intent exists already; adopting it", job_name=name)
        return name

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The job's ``<Type>JobStatus``; checks ``max_ingestion_time`` while waiting."""
        job = self._describe(str(external_id))
        status = str(job[self._status_key])
        if self.__dict__.get("_timing") and self.max_ingestion_time and status not in TERMINAL:
            created = job.get("CreationTime")
            if isinstance(created, datetime):
                elapsed = (_utcnow() - created).total_seconds()
                if elapsed > self.max_ingestion_time:
                    raise _MaxIngestionTimeExceededError(
                        f"{self.service_name} job {external_id!r} has run {elapsed:.0f} s, more than "
                        f"max_ingestion_time={self.max_ingestion_time} s."
                    )
        return status

    def is_job_active(self, status: str) -> bool:
        """Anything but Completed, Failed and Stopped (so Stopping and unknown statuses too)."""
        return status not in TERMINAL

    def is_job_succeeded(self, status: str) -> bool:
        """Only Completed."""
        return status == COMPLETED

    def get_job_result(self, external_id: JsonValue, context: Context) -> dict[str, Any]:
        """``{"<Type>": <Describe*Job answer>}``, as the stock ``execute`` returns."""
        job = self._retrying(self._describe, str(external_id), what=f"describe_{self.job_type.lower()}_job")
        self.log.info("SageMaker job ended", job_name=external_id, status=job.get(self._status_key))
        return {self.job_type: serialize(job)}

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``Stop*Job``; a job that ended meanwhile (or is gone) is left as it is."""
        if not _stop(self.hook.conn, self.job_type, str(external_id)):
            self.log.info("The job ended before it could be stopped", job_name=external_id)

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``Stop*Job`` through the same connection, for the custodian."""
        return self.canceller, {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name}

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The job's ``FailureReason`` (and its secondary status or exit message)."""
        job = self.__dict__.get("_last_job") or {}
        if job.get(self._name_key) != external_id:
            try:
                job = self._describe(str(external_id))
            except Exception as err:  # the failure must surface, not a failure to describe it
                self.log.warning("Could not describe the failed job", job_name=external_id, error=repr(err))
                return ""
        parts = [job.get("FailureReason"), job.get("ExitMessage")]
        if job.get("SecondaryStatus") not in (None, status):
            parts.append(f"secondary status {job['SecondaryStatus']}")
        return "; ".join(str(part) for part in parts if part)

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A SageMaker job name."""
        return isinstance(value, str) and len(value) <= _MAX_NAME and bool(_JOB_NAME.fullmatch(value))

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """
        Wait as :class:`AwsJobMixin` does, bounded by ``max_ingestion_time`` when it is set.

        The bound counts from the job's ``CreationTime``, so a retry that reconnects does not reset
        it. Once it is exceeded the job is stopped (``cancel_on_timeout``) and the try fails.
        """
        self._timing = bool(getattr(self, "wait_for_completion", True))
        try:
            super().poll_until_complete(external_id, context)
        except _MaxIngestionTimeExceededError:
            store = context.get("task_state_store") if self.durable else None
            if self._stop_remote_job(
                context, store, reason="max_ingestion_time", enabled=self.cancel_on_timeout
            ):
                self.stop_waiting("Stopping")  # stopped: nothing left for a failure to cancel
            raise
        finally:
            self._timing = False

    # ------------------------------------------------------------------ deferral
    def prepare_try(self, context: Context) -> None:
        if getattr(self, "deferrable", False) and not getattr(self, "wait_for_completion", True):
            self.log.warning(
                "Setting deferrable to True does not have effect when wait_for_completion is set to False."
            )

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """Nothing to persist: the stock training and processing operators have no extra links."""

    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableSageMakerTrigger:
        """The stock deferral's ``SageMakerTrigger`` arguments."""
        return ResumableSageMakerTrigger(
            job_name=str(external_id),
            job_type=self.job_type,
            waiter_delay=self.check_interval,
            waiter_max_attempts=self.max_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``max_ingestion_time`` if set, else ``execution_timeout``, as the stock deferral."""
        if self.max_ingestion_time:
            return timedelta(seconds=self.max_ingestion_time)
        return self.execution_timeout

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        job_name: JsonValue = event.get("job_name")
        return job_name

    # ------------------------------------------------------------------ helpers
    def _describe(self, name: str) -> dict[str, Any]:
        try:
            job: dict[str, Any] = self._call(self.hook.conn, "describe", name)
        except ClientError as err:
            if says_not_found(err, _NOT_FOUND, by_code=_NOT_FOUND_BY_CODE):
                raise JobNotFoundError(
                    f"{self.service_name} job {name!r} does not exist (deleted, or in another account or "
                    f"region)."
                ) from err
            raise
        self._last_job = job
        return job

    def _describe_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self._describe(name)
        except JobNotFoundError:
            return None

    def _owned(self, name: str, token: str, *, patient: bool = False) -> bool | None:
        """
        Whether the job of that name is tagged with ``token``; None when there is no such job.

        :param patient: the service said the name is taken, so the job exists: while it may still
            be invisible (younger than the visibility window since this intent), ask again.
        """
        record = self._current_record
        born = record.created_at if patient and record is not None else None
        try:
            job = self._cloud(self._describe, name, what=f"describe_{self.job_type.lower()}_job", born=born)
        except JobNotFoundError:
            job = None
        if job is None:
            return None
        tags = self.hook.conn.list_tags(ResourceArn=job[f"{self.job_type}JobArn"]).get("Tags") or []
        return any(tag.get("Key") == TOKEN_TAG and tag.get("Value") == token for tag in tags)


class ResumableSageMakerTrainingOperator(_ResumableSageMakerJob, SageMakerTrainingOperator):
    """
    Run a SageMaker training job exactly once per intended submission and reconnect to it after any
    disruption.

    **Purpose:** a drop-in for
    :class:`~airflow.providers.amazon.aws.operators.sagemaker.SageMakerTrainingOperator` (same
    arguments, the same ``{"Training": <DescribeTrainingJob>}`` return value) whose job survives
    the worker that waits for it: a retry, a reschedule after a worker shutdown, or a class swap
    reconnects to the job instead of creating a ``-<timestamp>`` twin, and a user's stop stops it.

    **How it works:** job names are unique per account and region, so the name is the idempotency
    key (``submission_is_idempotent``): the job is named ``<TrainingJobName>-<12 hex of the
    submission token>`` (the configured name cut to fit 63 characters) and tagged
    ``airflow-resumable-token=<token>``. A resubmission of an intent whose name was never recorded
    gets ``ResourceInUse``; if the job of that name carries the token it is adopted, otherwise
    :class:`JobNameTakenError`. ``CreateTrainingJob`` goes through a client with botocore's retries
    off; the mixin retries throttling and 5xx, and a lost answer then finds the job by its name.
    The stock preprocessing runs before each submission: ``S3Operations``, integer fields, role
    expansion, and the S3 input check of the stock hook. Cancel is ``StopTrainingJob``.
    ``max_ingestion_time`` bounds the wait from the job's ``CreationTime`` (also across retries);
    beyond it the job is stopped (``cancel_on_timeout``) and the try fails.

    **Deferrable:** with ``deferrable=True`` and ``wait_for_completion`` (as in stock) the job name
    is recorded, then the task defers to :class:`ResumableSageMakerTrigger` (the stock
    ``SageMakerTrigger``, ``waiter_delay=check_interval``, ``waiter_max_attempts=max_attempts``,
    timeout ``max_ingestion_time`` else ``execution_timeout``). Its ``on_kill`` stops the job after
    a user's stop, never after a clear. ``execute_complete`` re-enters the engine: the stock result,
    or :class:`~airflow_resumable.exceptions.JobFailedError` with the ``FailureReason``.

    **Limitations:** ``action_if_job_exists="timestamp"`` never appends a timestamp (a retry must
    find its job); ``"fail"`` (with ``check_if_job_exists``) still refuses to submit when a job
    has the configured name. ``config`` is not rewritten: the job's name is in the return value.
    With ``print_log`` the CloudWatch log lines are not tailed; the billable seconds are logged.

    :param check_interval: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``SageMakerTrainingOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.2.0
    """

    #: Key of the bare job name in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "sagemaker_training_job_name"
    service_name: ClassVar[str] = "SageMaker training"
    job_type: ClassVar[str] = "Training"
    canceller: ClassVar[str] = "aws_sagemaker_training_job"

    if TYPE_CHECKING:
        check_if_job_exists: bool
        print_log: bool

    def _guards_configured_name(self) -> bool:
        return self.check_if_job_exists and super()._guards_configured_name()

    def _check_request(self, request: dict[str, Any]) -> None:
        """The S3 inputs exist (the stock hook's ``check_training_config``)."""
        self.hook.check_training_config(request)

    def get_job_result(self, external_id: JsonValue, context: Context) -> dict[str, Any]:
        """``{"Training": ...}``; keeps it for OpenLineage and logs the billable seconds (``print_log``)."""
        result = super().get_job_result(external_id, context)
        self.serialized_training_data = result[self.job_type]
        job = self.__dict__.get("_last_job") or {}
        if self.print_log and job.get("TrainingStartTime") and job.get("TrainingEndTime"):
            seconds = SageMakerHook.count_billable_seconds(
                training_start_time=job["TrainingStartTime"],
                training_end_time=job["TrainingEndTime"],
                instance_count=(job.get("ResourceConfig") or {}).get("InstanceCount", 1),
            )
            self.log.info("Billable seconds", job_name=external_id, billable_seconds=seconds)
        return result

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The ``TrainingJobStatus``; with ``print_log``, a log line per secondary status change."""
        status = super().get_job_status(external_id, context)
        secondary = (self.__dict__.get("_last_job") or {}).get("SecondaryStatus")
        if self.print_log and secondary != self.__dict__.get("_secondary"):
            self.log.info(
                "Training job status", job_name=external_id, status=status, secondary_status=secondary
            )
            self._secondary = secondary
        return status


class ResumableSageMakerProcessingOperator(_ResumableSageMakerJob, SageMakerProcessingOperator):
    """
    Run a SageMaker processing job exactly once per intended submission and reconnect to it after
    any disruption.

    **Purpose:** a drop-in for
    :class:`~airflow.providers.amazon.aws.operators.sagemaker.SageMakerProcessingOperator` (same
    arguments, the same ``{"Processing": <DescribeProcessingJob>}`` return value, plus
    ``OutputFiles`` with ``output_files_to_xcom``) whose job survives the worker that waits for it.

    **How it works:** as :class:`ResumableSageMakerTrainingOperator`: the job is named
    ``<ProcessingJobName>-<12 hex of the submission token>`` and tagged with the token; a
    ``ResourceInUse`` answer for a job with this token is that job. The stock preprocessing runs
    before each submission (``S3Operations``, integer fields, role expansion; the stock checks no
    S3 input of a processing job). ``output_files_to_xcom`` is read on every path that returns.
    Cancel is ``StopProcessingJob``. ``max_ingestion_time`` as for training.

    **Deferrable:** as for training, with ``job_type="Processing"``.

    **Limitations:** ``action_if_job_exists`` as for training; ``config`` is not rewritten.

    :param check_interval: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``SageMakerProcessingOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.2.0
    """

    #: Key of the bare job name in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "sagemaker_processing_job_name"
    service_name: ClassVar[str] = "SageMaker processing"
    job_type: ClassVar[str] = "Processing"
    canceller: ClassVar[str] = "aws_sagemaker_processing_job"

    if TYPE_CHECKING:
        output_files_to_xcom: list[dict[str, Any]] | None

        def _read_output_files(self) -> dict[str, Any]: ...

    def job_request(self) -> dict[str, Any]:
        if self.output_files_to_xcom and not getattr(self, "wait_for_completion", True):
            raise InvalidJobSpecError(
                f"{self.service_name}: argument 'output_files_to_xcom' requires wait_for_completion=True "
                f"(output files cannot be read before the job completes); nothing was submitted."
            )
        return super().job_request()

    def get_job_result(self, external_id: JsonValue, context: Context) -> dict[str, Any]:
        """``{"Processing": ...}`` plus the stock ``OutputFiles``; keeps it for OpenLineage."""
        result = super().get_job_result(external_id, context)
        self.serialized_job = result[self.job_type]
        result.update(self._read_output_files())
        return result


class ResumableSageMakerTrigger(ResumableTriggerMixin, SageMakerTrigger):
    """
    The stock ``SageMakerTrigger``, plus an ``on_kill`` that stops the job after a user's stop.

    **Purpose:** the stock trigger has no ``on_kill``: a job whose deferred task a user marks
    failed keeps running (and billing). Here a user's stop stops it, a clear leaves it to the
    next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``StopTrainingJob`` or ``StopProcessingJob`` (by ``job_type``).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).

    The other arguments are those of ``SageMakerTrigger``.

    .. versionadded:: 0.2.0
    """

    async def cancel_job(self) -> None:
        """``Stop*Job``; a job that already ended is left as it is."""
        hook = self.hook()
        kind = self.job_type.capitalize()
        try:
            async with await hook.get_async_conn() as client:
                await getattr(client, f"stop_{kind.lower()}_job")(**{f"{kind}JobName": self.job_name})
        except ClientError as err:
            if error_code(err) != "ValidationException":
                raise
            self.log.info("SageMaker job %s was not stopped: %s", self.job_name, err)
            return
        self.log.info("SageMaker job %s stopped.", self.job_name)


def _stop(client: Any, job_type: str, name: str) -> bool:
    """
    ``Stop<Type>Job``: True once asked, False when the job already ended or is gone.

    :raises ClientError: any other refusal (a ``ValidationException`` for a job still active too).
    """
    try:
        getattr(client, f"stop_{job_type.lower()}_job")(**{f"{job_type}JobName": name})
    except ClientError as err:
        if error_code(err) != "ValidationException":
            raise
        try:
            job = getattr(client, f"describe_{job_type.lower()}_job")(**{f"{job_type}JobName": name})
        except ClientError as gone:
            if says_not_found(gone, _NOT_FOUND, by_code=_NOT_FOUND_BY_CODE):
                return False
            raise
        if job[f"{job_type}JobStatus"] not in TERMINAL:
            raise
        return False
    return True


def _utcnow() -> datetime:
    """The current time, aware (a seam for tests of ``max_ingestion_time``)."""
    return datetime.now(timezone.utc)


def _stray_token() -> str:
    """A fresh token for a submission outside the engine (the core mixin's code path): never reused."""
    return "ar-" + secrets.token_hex(20)


def _recipe_client(aws_conn_id: str | None, region_name: str | None, canceller: str) -> Any:
    return cancel_client("sagemaker", aws_conn_id, region_name, canceller=canceller)


def cancel_training_job_by_recipe(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """``StopTrainingJob`` (canceller ``aws_sagemaker_training_job``); an ended job is left alone."""
    client = _recipe_client(aws_conn_id, region_name, "aws_sagemaker_training_job")
    _stop(client, "Training", str(external_id))


def cancel_processing_job_by_recipe(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """``StopProcessingJob`` (canceller ``aws_sagemaker_processing_job``); an ended job is left alone."""
    client = _recipe_client(aws_conn_id, region_name, "aws_sagemaker_processing_job")
    _stop(client, "Processing", str(external_id))
