"""
``ResumableBatchOperator``: the stock ``BatchOperator`` that keeps its AWS Batch job through
worker shutdowns, crashes and retries, and never submits it twice.

AWS Batch has no idempotency token, so the job carries the submission token as a tag and
:meth:`ResumableBatchOperator.find_job` finds it again by name and tag.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.links.batch import BatchJobDetailsLink
from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.providers.amazon.aws.utils import trim_none_values

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    no_retry_client,
    require_mapping,
    require_text,
    status_read_bound,
)
from airflow_resumable.providers.amazon.triggers import TERMINATE_REASON, ResumableBatchJobTrigger

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = ["TOKEN_TAG", "ResumableBatchOperator"]

#: Tag that carries the submission token on every job. Never rename: find_job of in-flight retries
#: looks for it.
TOKEN_TAG = "airflow-resumable-token"
ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_DESCRIBE_CHUNK = 100  # DescribeJobs takes at most 100 ids
_FIND_MAX_JOBS = 1000  # newest first: the job of an intent is among the newest with its name
_SERVICE = "AWS Batch"


class ResumableBatchOperator(AwsJobMixin, BatchOperator):
    """
    Run an AWS Batch job exactly once per intended submission and reconnect to it after any disruption.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.batch.BatchOperator`
    (same arguments, same return value and extra links) whose job survives the worker that waits
    for it: a retry, a reschedule after a worker shutdown, or a class swap reconnects to the job
    instead of submitting a duplicate, and a user's stop terminates it.

    **How it works:** AWS Batch has no idempotency token, so ``submission_is_idempotent`` is False:
    the job is tagged ``airflow-resumable-token=<submission token>`` and :meth:`find_job` looks it up
    (``ListJobs`` by queue and job name, newest first, then ``DescribeJobs`` for the tag) whenever
    an earlier try may have submitted it without recording its id, and before every resubmission.
    ``SubmitJob`` goes through a client with botocore's retries turned off, so a lost response is
    never re-sent blindly; the mixin's retry asks :meth:`find_job` first. Array and multi-node jobs
    are one job: the parent's status decides. Cancel is ``TerminateJob``. The stock
    ``submit_job(context)`` submitted and returned None; here it is the mixin's hook, which
    submits with the tag, sets ``self.job_id``, persists the job link as before, and returns the id.

    **Deferrable:** with ``deferrable=True`` the job id is recorded, then the task defers to
    :class:`~airflow_resumable.providers.amazon.triggers.ResumableBatchJobTrigger` (the stock
    ``BatchJobTrigger`` with ``waiter_delay=poll_interval``, ``waiter_max_attempts=max_retries``
    and the stock timeout, ``execution_timeout``), which frees the worker slot while the job runs;
    as in stock, it waits even with ``wait_for_completion=False``. Its ``on_kill`` terminates the
    job after a user's stop, never after a clear. ``execute_complete`` re-enters the engine: the
    stock return value and links, or :class:`~airflow_resumable.exceptions.JobFailedError`; a
    lost trigger, a trigger timeout or error fails the try and the next one reconnects.

    **Limitations:** ``max_retries`` bounds the status reads of a try's wait, as in stock, but
    ``status_retries`` and ``waiters`` do not apply to the poll loop; with ``awslogs_enabled``
    the CloudWatch log lines are printed once the job ended, not while it runs. The job name and
    the tag must stay visible to ``ListJobs``; jobs older than the newest 1,000 of the same name
    are not searched.

    :param poll_interval: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``BatchOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.1.0
    """

    #: Key of the bare job id in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "aws_batch_job_id"
    submission_is_idempotent: ClassVar[bool] = False
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "batch"

    if TYPE_CHECKING:
        poll_interval: int

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``poll_interval``."""
        return float(self.poll_interval)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.poll_interval = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``max_retries`` bounds the wait, as in the stock hook's ``poll_for_job_complete``."""
        return status_read_bound(self.max_retries, "max_retries")

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        name = require_text(self.job_name, "job_name", _SERVICE)
        if not _JOB_NAME.fullmatch(name):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'job_name' must be 1-128 letters, digits, hyphens or underscores, "
                f"starting with a letter or digit; got {name!r}. Nothing was submitted."
            )
        require_text(self.job_queue, "job_queue", _SERVICE)
        require_text(self.job_definition, "job_definition", _SERVICE)
        for argument in (
            "container_overrides",
            "array_properties",
            "ecs_properties_override",
            "eks_properties_override",
            "node_overrides",
            "parameters",
            "retry_strategy",
            "tags",
        ):
            require_mapping(getattr(self, argument), argument, _SERVICE)
        if TOKEN_TAG in (self.tags or {}):
            raise InvalidJobSpecError(f"{_SERVICE}: tag {TOKEN_TAG!r} is reserved for airflow_resumable.")
        return self._request(dict(self.tags or {}))

    def _request(self, tags: dict[str, str]) -> dict[str, Any]:
        """The ``SubmitJob`` arguments, built as the stock ``submit_job`` builds them."""
        args = {
            "jobName": self.job_name,
            "jobQueue": self.job_queue,
            "jobDefinition": self.job_definition,
            "arrayProperties": self.array_properties,
            "parameters": self.parameters,
            "tags": tags,
            "containerOverrides": self.container_overrides,
            "ecsPropertiesOverride": self.ecs_properties_override,
            "eksPropertiesOverride": self.eks_properties_override,
            "nodeOverrides": self.node_overrides,
            "retryStrategy": self.retry_strategy,
            "shareIdentifier": self.share_identifier,
            "schedulingPriorityOverride": self.scheduling_priority_override,
        }
        if self.submit_job_timeout:
            args["timeout"] = {"attemptDurationSeconds": self.submit_job_timeout}
        return dict(trim_none_values(args))

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``SubmitJob`` tagged with the submission token, without botocore retries; returns the job id.

        Replaces the stock ``submit_job(context)`` (which returned None): it still sets
        ``self.job_id`` and persists the job-details link. A refusal that is not transient (a
        ``ClientException``, a bad request) raises an ``AirflowException`` as in stock, with the
        service's error as its cause; transient errors stay as they are, for the mixin's retry.
        """
        tags = dict(self.tags or {})
        if self.submission_token:
            tags[TOKEN_TAG] = self.submission_token
        self.log.info(
            "Submitting AWS Batch job",
            job_name=self.job_name,
            job_queue=self.job_queue,
            job_definition=self.job_definition,
        )
        try:
            response = no_retry_client(self.hook).submit_job(**self._request(tags))
        except Exception as error:
            if self.is_transient_error(error) or self.is_throttling_error(error):
                raise  # the mixin retries it (and looks the job up first when it may exist)
            raise ResumableError(
                f"{_SERVICE} refused SubmitJob for job {self.job_name!r} on queue {self.job_queue!r}: "
                f"{error}. Nothing was submitted; fix the request, then clear the task."
            ) from error
        self.job_id = str(response["jobId"])
        self._persist_details_link(context)
        return self.job_id

    def find_job(self, token: str, context: Context) -> str | None:
        """The id of the newest job of this queue and name tagged with ``token``, or None."""
        client: Any = self.hook.client
        summaries: list[dict[str, Any]] = []
        paginator = client.get_paginator("list_jobs")
        name_filter = [{"name": "JOB_NAME", "values": [self.job_name]}]
        for page in paginator.paginate(jobQueue=self.job_queue, filters=name_filter):
            summaries.extend(page.get("jobSummaryList") or [])
            if len(summaries) >= _FIND_MAX_JOBS:
                break
        summaries.sort(key=lambda job: job.get("createdAt") or 0, reverse=True)
        ids = [str(job["jobId"]) for job in summaries[:_FIND_MAX_JOBS] if ":" not in str(job["jobId"])]
        for start in range(0, len(ids), _DESCRIBE_CHUNK):
            jobs = client.describe_jobs(jobs=ids[start : start + _DESCRIBE_CHUNK]).get("jobs") or []
            by_id = {str(job["jobId"]): job for job in jobs}
            for job_id in ids[start : start + _DESCRIBE_CHUNK]:
                if (by_id.get(job_id, {}).get("tags") or {}).get(TOKEN_TAG) == token:
                    return job_id
        return None

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The job's ``status`` (the parent's, for array and multi-node jobs)."""
        job = self._describe(str(external_id))
        return str(job["status"])

    def is_job_active(self, status: str) -> bool:
        """Anything but SUCCEEDED and FAILED: a state AWS may add later is waited on, not resubmitted."""
        return status not in (SUCCEEDED, FAILED)

    def is_job_succeeded(self, status: str) -> bool:
        """Only SUCCEEDED."""
        return status == SUCCEEDED

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The job id, as the stock ``execute`` returns; persists every stock link first."""
        self.adopt_job(external_id, context)
        self._retrying(self._persist_cloudwatch_link, context, what="CloudWatch link")
        if self.awslogs_enabled:
            self._print_cloudwatch_logs()
        self.log.info("AWS Batch job succeeded", job_id=self.job_id)
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``TerminateJob`` (works in every active state, unlike ``CancelJob``)."""
        self.hook.client.terminate_job(jobId=str(external_id), reason=TERMINATE_REASON)

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``TerminateJob`` through the same connection, for the custodian."""
        return "aws_batch_job", {"aws_conn_id": self.aws_conn_id, "region_name": self.region_name}

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The job's status reason, container reason and exit code, and array children's states."""
        try:
            job = self._describe(str(external_id), cached=True)
        except Exception as err:  # the failure must surface, not a failure to describe it
            self.log.warning("Could not describe the failed job", job_id=external_id, error=repr(err))
            return ""
        container = job.get("container") or {}
        parts = [job.get("statusReason"), container.get("reason")]
        if container.get("exitCode") is not None:
            parts.append(f"exit code {container['exitCode']}")
        summary = (job.get("arrayProperties") or {}).get("statusSummary")
        if summary:
            parts.append("array children " + ", ".join(f"{k}={v}" for k, v in sorted(summary.items()) if v))
        return "; ".join(str(part) for part in parts if part)

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A Batch job id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    # ------------------------------------------------------------------ deferral
    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableBatchJobTrigger:
        """The stock deferral's ``BatchJobTrigger`` arguments."""
        return ResumableBatchJobTrigger(
            job_id=str(external_id),
            waiter_max_attempts=self.max_retries,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            waiter_delay=self.poll_interval,
            verify=self.verify,
            botocore_config=self.botocore_config,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``execution_timeout``, as the stock deferral."""
        return self.execution_timeout

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        job_id: JsonValue = event.get("job_id")
        return job_id

    def on_job_failed(self, external_id: JsonValue, context: Context) -> None:
        """The CloudWatch link and, with ``awslogs_enabled``, the log lines: stock does both on failure."""
        self.job_id = str(external_id)
        try:
            self._persist_cloudwatch_link(context)
        except Exception as err:  # the failure must surface, not a failure to link its logs
            self.log.warning("Could not persist the CloudWatch link", job_id=self.job_id, error=repr(err))
        if self.awslogs_enabled:
            self._print_cloudwatch_logs()

    # ------------------------------------------------------------------ helpers
    def _describe(self, job_id: str, *, cached: bool = False) -> dict[str, Any]:
        last = self.__dict__.get("_last_job")
        if cached and last is not None and last.get("jobId") == job_id:
            return dict(last)
        jobs = self.hook.client.describe_jobs(jobs=[job_id]).get("jobs") or []
        match = [job for job in jobs if job.get("jobId") == job_id]
        if not match:
            raise JobNotFoundError(f"AWS Batch job {job_id!r} does not exist (expired or deleted).")
        self._last_job = match[0]
        return dict(match[0])

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """``self.job_id`` plus the job, definition and queue links (once per job and try)."""
        self.job_id = str(external_id)
        if self.__dict__.get("_links_for") == self.job_id:
            return
        self._persist_details_link(context)
        description = self._retrying(self._describe, self.job_id, cached=True, what="describe_jobs")
        self._persist_links(context, job_description=description)
        self._links_for = self.job_id

    def _persist_details_link(self, context: Context) -> None:
        BatchJobDetailsLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_id=self.job_id,
        )

    def _print_cloudwatch_logs(self) -> None:
        """The job's CloudWatch log lines, as the stock deferrable path prints them at the end."""
        try:
            fetcher = self._get_batch_log_fetcher(str(self.job_id))
            if fetcher is None:
                return
            for message in fetcher.get_last_log_messages(10000):
                self.log.info(message)
        except Exception:
            self.log.warning("Unable to retrieve CloudWatch logs for AWS Batch job", job_id=self.job_id)
