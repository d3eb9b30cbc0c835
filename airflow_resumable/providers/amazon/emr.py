"""
Resumable EMR operators: EMR Serverless and EMR on EKS job runs, and EMR steps.

Both ``StartJobRun`` APIs deduplicate on ``clientToken``, so the submission token is the client
token and a resubmission of the same intent returns the same run. ``AddJobFlowSteps`` has no
token: :class:`ResumableEmrAddStepsOperator` (in :mod:`._emr_steps`, re-exported here) marks its
steps by name instead.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook
from airflow.providers.amazon.aws.operators.emr import EmrContainerOperator, EmrServerlessStartJobOperator
from airflow.providers.amazon.aws.utils.waiter_with_logging import wait
from airflow.providers.common.compat.openlineage.utils.spark import (
    inject_parent_job_information_into_emr_serverless_properties,
    inject_transport_information_into_emr_serverless_properties,
)

from airflow_resumable.exceptions import JobNotFoundError
from airflow_resumable.providers.amazon._emr_steps import ResumableEmrAddStepsOperator
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    error_code,
    require_mapping,
    require_text,
    status_read_bound,
)
from airflow_resumable.providers.amazon.triggers import (
    ResumableEmrContainerTrigger,
    ResumableEmrServerlessStartJobTrigger,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "ResumableEmrAddStepsOperator",
    "ResumableEmrContainerOperator",
    "ResumableEmrServerlessStartJobOperator",
]

SERVERLESS_TERMINAL = frozenset(("SUCCESS", "FAILED", "CANCELLED"))
EKS_TERMINAL = frozenset(("COMPLETED", "FAILED", "CANCELLED"))
_NOT_FOUND = ("ResourceNotFoundException",)


class _LineageMixin:
    """OpenLineage injection into ``configurationOverrides``, exactly as both stock operators do it."""

    if TYPE_CHECKING:
        configuration_overrides: Any
        openlineage_inject_parent_job_info: bool
        openlineage_inject_transport_info: bool

    def _overrides_for_submit(self, context: Context) -> Any:
        overrides = self.configuration_overrides
        if self.openlineage_inject_parent_job_info:
            overrides = inject_parent_job_information_into_emr_serverless_properties(overrides, context)
        if self.openlineage_inject_transport_info:
            overrides = inject_transport_information_into_emr_serverless_properties(overrides, context)
        return overrides


class ResumableEmrServerlessStartJobOperator(AwsJobMixin, _LineageMixin, EmrServerlessStartJobOperator):
    """
    Run an EMR Serverless job run once per intended submission and reconnect to it after any disruption.

    **Purpose:** a drop-in for
    :class:`~airflow.providers.amazon.aws.operators.emr.EmrServerlessStartJobOperator` (same
    arguments, the job run id as return value, the same extra links) whose run survives the worker
    that waits for it: a retry or a reschedule after a worker shutdown reconnects to the run instead
    of starting another, and a user's stop cancels it.

    **How it works:** ``StartJobRun`` deduplicates on ``clientToken``
    (``submission_is_idempotent``), so the submission token is the client token: a resubmission of
    an intent whose run id was never recorded returns that same run. The application is started
    first if it is not, as the stock operator does. Without a ``name`` (argument or ``config``) the
    run is named ``emr_serverless_job_airflow_<token>``: stable across resubmissions of one
    intent, unlike the stock random name. ``CANCELLING`` and ``QUEUED`` count as active (the stock
    hook counts ``CANCELLING`` as failed; waiting for ``CANCELLED`` keeps a resubmitted run from
    overlapping one that is still being cancelled). Cancel is ``CancelJobRun``.

    **Deferrable:** with ``deferrable=True`` and ``wait_for_completion`` (as in stock) the run id is
    recorded, then the task defers to
    :class:`~airflow_resumable.providers.amazon.triggers.ResumableEmrServerlessStartJobTrigger`
    (the stock trigger, stock ``waiter_delay``, ``waiter_max_attempts`` and timeout), which frees
    the worker slot while the run runs. Its ``on_kill`` cancels the run after a user's stop, never
    after a clear. ``execute_complete`` re-enters the engine: the run id, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try (the run is not cancelled, unlike stock, unless the try fails for good)
    and the next one reconnects. Starting a stopped application still waits in the worker.

    **Limitations:** ``client_request_token`` is replaced by the per-intent token (a fixed token
    would hand every retry the earlier, failed run); ``waiter_max_attempts`` bounds the status
    reads of a try's wait, as in stock (the run keeps going; a retry reconnects); ``cancel_on_kill`` is
    replaced by ``cancel_on_user_stop``; with OpenLineage injection on, a resubmission on a later
    try carries that try's lineage properties.

    :param waiter_delay: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``EmrServerlessStartJobOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.1.0
    """

    #: Key of the bare run id in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "emr_serverless_job_run_id"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = "EMR Serverless"
    visibility_key: ClassVar[str] = "emr_serverless"
    deferral_always_waits: ClassVar[bool] = False  # stock: deferrable waits only with wait_for_completion

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``waiter_delay``."""
        return float(self.waiter_delay)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.waiter_delay = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``waiter_max_attempts`` bounds the wait, as the stock waiter for the job run."""
        return status_read_bound(self.waiter_max_attempts, "waiter_max_attempts")

    def job_request(self) -> dict[str, Any]:
        service = self.service_name
        require_text(self.application_id, "application_id", service)
        require_text(self.execution_role_arn, "execution_role_arn", service)
        require_mapping(self.job_driver, "job_driver", service, optional=False)
        require_mapping(self.configuration_overrides, "configuration_overrides", service)
        config = dict(require_mapping(self.config, "config", service) or {})
        if self.name is not None:
            require_text(self.name, "name", service)
        return {
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "jobDriver": self.job_driver,
            "configurationOverrides": self.configuration_overrides,
            "name": self.name or config.pop("name", None),
            **config,
        }

    def submit_job(self, context: Context) -> str:
        """``StartJobRun`` with ``clientToken`` = the submission token; returns the job run id."""
        self._ensure_application_started()
        token = self.submission_token or self.client_request_token
        self.client_request_token = token
        config = {k: v for k, v in (self.config or {}).items() if k != "name"}
        name = self.name or (self.config or {}).get("name") or f"emr_serverless_job_airflow_{token}"
        args: dict[str, Any] = {
            "clientToken": token,
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "jobDriver": self.job_driver,
            "name": name,
            **config,
        }
        overrides = self._overrides_for_submit(context)
        if overrides is not None:
            args["configurationOverrides"] = overrides
        response = self.hook.conn.start_job_run(**args)
        self.job_id = str(response["jobRunId"])
        self.log.info(
            "EMR Serverless job run started", application_id=self.application_id, job_run_id=self.job_id
        )
        return self.job_id

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The run's ``state``."""
        try:
            run = self.hook.conn.get_job_run(applicationId=self.application_id, jobRunId=str(external_id))[
                "jobRun"
            ]
        except Exception as err:
            if error_code(err) in _NOT_FOUND:
                raise JobNotFoundError(
                    f"EMR Serverless job run {external_id!r} of application {self.application_id!r} "
                    f"does not exist."
                ) from err
            raise
        self._last_run = run
        return str(run["state"])

    def is_job_active(self, status: str) -> bool:
        """Anything but SUCCESS, FAILED and CANCELLED (so CANCELLING and QUEUED too)."""
        return status not in SERVERLESS_TERMINAL

    def is_job_succeeded(self, status: str) -> bool:
        """Only SUCCESS."""
        return status == "SUCCESS"

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The job run id, as the stock ``execute`` returns; persists the stock links first."""
        self.adopt_job(external_id, context)
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``CancelJobRun``."""
        self.hook.conn.cancel_job_run(applicationId=self.application_id, jobRunId=str(external_id))

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``CancelJobRun`` through the same connection, for the custodian."""
        return "aws_emr_serverless_job_run", {
            "application_id": self.application_id,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """The run's ``stateDetails``."""
        run = self.__dict__.get("_last_run") or {}
        return str(run.get("stateDetails") or "") if run.get("id") in (None, external_id) else ""

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A job run id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        self.job_id = str(external_id)
        if self.__dict__.get("_links_for") != self.job_id:
            self.persist_links(context)
            self._links_for = self.job_id

    def job_trigger(
        self, external_id: JsonValue, resumable: dict[str, Any]
    ) -> ResumableEmrServerlessStartJobTrigger:
        """The stock deferral's trigger arguments; its own ``cancel_on_kill`` is off (on_kill decides)."""
        return ResumableEmrServerlessStartJobTrigger(
            application_id=self.application_id,
            job_id=str(external_id),
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            cancel_on_kill=False,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``waiter_max_attempts * waiter_delay``, as the stock deferral."""
        return timedelta(seconds=self.waiter_max_attempts * self.waiter_delay)

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        details = event.get("job_details")
        job_id: JsonValue = details.get("job_id") if isinstance(details, dict) else None
        return job_id

    def _ensure_application_started(self) -> None:
        """Start the application if needed, as the stock ``execute`` does (without deferring)."""
        state = self.hook.conn.get_application(applicationId=self.application_id)["application"]["state"]
        if state in EmrServerlessHook.APPLICATION_SUCCESS_STATES:
            return
        self.log.info("Starting EMR Serverless application", application_id=self.application_id, state=state)
        self.hook.conn.start_application(applicationId=self.application_id)
        wait(
            waiter=self.hook.get_waiter("serverless_app_started"),
            waiter_max_attempts=self.waiter_max_attempts,
            waiter_delay=self.waiter_delay,
            args={"applicationId": self.application_id},
            failure_message="Serverless Application failed to start",
            status_message="Serverless Application status is",
            status_args=["application.state", "application.stateDetails"],
        )


class ResumableEmrContainerOperator(AwsJobMixin, _LineageMixin, EmrContainerOperator):
    """
    Run an EMR on EKS job run once per intended submission and reconnect to it after any disruption.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.emr.EmrContainerOperator`
    (same arguments, the job run id as return value) whose run survives the worker that waits for
    it: a retry or a reschedule after a worker shutdown reconnects to the run instead of starting
    another, and a user's stop cancels it.

    **How it works:** ``StartJobRun`` deduplicates on ``clientToken``
    (``submission_is_idempotent``), so the submission token is the client token. A new token per
    intent means a retry after a failed run never gets that failed run back, which a fixed
    ``client_request_token`` does (apache/airflow#69625). ``CANCEL_PENDING`` counts as active
    (the stock hook counts it as failed). Cancel is ``CancelJobRun``.

    **Deferrable:** with ``deferrable=True`` the run id is recorded, then the task defers to
    :class:`~airflow_resumable.providers.amazon.triggers.ResumableEmrContainerTrigger` (the stock
    trigger, stock ``poll_interval``, ``max_polling_attempts`` and timeout), which frees the
    worker slot while the run runs; as in stock, it waits even with ``wait_for_completion=False``.
    Its ``on_kill`` cancels the run after a user's stop, never after a clear.
    ``execute_complete`` re-enters the engine: the run id, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try and the next one reconnects.

    **Limitations:** ``client_request_token`` is replaced by the per-intent token;
    ``max_polling_attempts`` bounds the status reads of a try's wait, as in stock (the run keeps
    going; a retry reconnects); ``cancel_on_kill`` is replaced by ``cancel_on_user_stop``; with OpenLineage
    injection on, a resubmission on a later try carries that try's lineage properties.

    :param poll_interval: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``EmrContainerOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.1.0
    """

    #: Key of the bare run id in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "emr_containers_job_run_id"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = "EMR on EKS"
    visibility_key: ClassVar[str] = "emr_containers"

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``poll_interval``."""
        return float(self.poll_interval)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.poll_interval = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``max_polling_attempts`` bounds the wait, as the stock ``poll_query_status`` (None: no bound)."""
        return status_read_bound(self.max_polling_attempts, "max_polling_attempts")

    def job_request(self) -> dict[str, Any]:
        service = self.service_name
        for argument in ("name", "virtual_cluster_id", "execution_role_arn", "release_label"):
            require_text(getattr(self, argument), argument, service)
        require_mapping(self.job_driver, "job_driver", service, optional=False)
        require_mapping(self.configuration_overrides, "configuration_overrides", service)
        require_mapping(self.tags, "tags", service)
        return {
            "name": self.name,
            "virtualClusterId": self.virtual_cluster_id,
            "executionRoleArn": self.execution_role_arn,
            "releaseLabel": self.release_label,
            "jobDriver": self.job_driver,
            "configurationOverrides": self.configuration_overrides,
            "tags": self.tags,
            "retryMaxAttempts": self.job_retry_max_attempts,
        }

    def submit_job(self, context: Context) -> str:
        """``StartJobRun`` with ``clientToken`` = the submission token; returns the job run id."""
        token = self.submission_token or self.client_request_token
        self.job_id = self.hook.submit_job(
            self.name,
            self.execution_role_arn,
            self.release_label,
            self.job_driver,
            self._overrides_for_submit(context),
            token,
            self.tags,
            self.job_retry_max_attempts,
        )
        return str(self.job_id)

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The run's ``state``."""
        try:
            run = self.hook.conn.describe_job_run(
                virtualClusterId=self.virtual_cluster_id, id=str(external_id)
            )
        except Exception as err:
            if error_code(err) in _NOT_FOUND:
                raise JobNotFoundError(
                    f"EMR on EKS job run {external_id!r} of virtual cluster {self.virtual_cluster_id!r} "
                    f"does not exist."
                ) from err
            raise
        self._last_run = run["jobRun"]
        return str(run["jobRun"]["state"])

    def is_job_active(self, status: str) -> bool:
        """Anything but COMPLETED, FAILED and CANCELLED (so CANCEL_PENDING too)."""
        return status not in EKS_TERMINAL

    def is_job_succeeded(self, status: str) -> bool:
        """Only COMPLETED."""
        return status == "COMPLETED"

    def get_job_result(self, external_id: JsonValue, context: Context) -> str:
        """The job run id, as the stock ``execute`` returns."""
        self.adopt_job(external_id, context)
        return str(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``CancelJobRun``; a run that ended meanwhile is left as it is."""
        try:
            self.hook.conn.cancel_job_run(virtualClusterId=self.virtual_cluster_id, id=str(external_id))
        except Exception as err:
            if error_code(err) == "ValidationException" and not self.is_job_active(
                self.get_job_status(external_id, context)
            ):
                self.log.info("The job run ended before it could be cancelled", job_run_id=external_id)
                return
            raise

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``CancelJobRun`` through the same connection, for the custodian."""
        return "aws_emr_container_job_run", {
            "virtual_cluster_id": self.virtual_cluster_id,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """``failureReason - stateDetails``, as the stock operator reports it."""
        run = self.__dict__.get("_last_run") or {}
        if run.get("id") not in (None, external_id):
            return ""
        return " - ".join(str(run[key]) for key in ("failureReason", "stateDetails") if run.get(key))

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A job run id: a non-blank string."""
        return isinstance(value, str) and bool(value.strip())

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        self.job_id = str(external_id)  # the stock operator has no extra links

    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableEmrContainerTrigger:
        """The stock deferral's trigger arguments; its own ``cancel_on_kill`` is off (on_kill decides)."""
        return ResumableEmrContainerTrigger(
            virtual_cluster_id=self.virtual_cluster_id,
            job_id=str(external_id),
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            waiter_delay=self.poll_interval,
            waiter_max_attempts=self.max_polling_attempts or sys.maxsize,
            cancel_on_kill=False,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``max_polling_attempts * poll_interval``, else ``execution_timeout``, as the stock deferral."""
        if self.max_polling_attempts:
            return timedelta(seconds=self.max_polling_attempts * self.poll_interval)
        return self.execution_timeout

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        job_id: JsonValue = event.get("job_id")
        return job_id
