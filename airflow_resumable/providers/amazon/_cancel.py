"""
The custodian's AWS cancellers (:mod:`airflow_resumable.custodian`): a job no task polls any more.

Each is called as ``function(external_id, **recipe_arguments)`` with the connection id, region and
resource ids the operator put in its :meth:`~airflow_resumable.mixin.ResumableJobMixin.cancel_recipe`.
The same calls as the operators' own ``cancel_job``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import JsonValue

#: The reason Batch shows for a job the custodian terminated.
CUSTODIAN_REASON = "Stopped by airflow_resumable: its task instance was stopped"


def _client(service: str, aws_conn_id: str | None, region_name: str | None) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service, region_name=region_name).conn


def cancel_batch_job(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """``TerminateJob`` (canceller ``aws_batch_job``)."""
    _client("batch", aws_conn_id, region_name).terminate_job(jobId=str(external_id), reason=CUSTODIAN_REASON)


def cancel_emr_serverless_job_run(
    external_id: JsonValue,
    *,
    application_id: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> None:
    """``CancelJobRun`` of EMR Serverless (canceller ``aws_emr_serverless_job_run``)."""
    client = _client("emr-serverless", aws_conn_id, region_name)
    client.cancel_job_run(applicationId=application_id, jobRunId=str(external_id))


def cancel_emr_container_job_run(
    external_id: JsonValue,
    *,
    virtual_cluster_id: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> None:
    """``CancelJobRun`` of EMR on EKS (canceller ``aws_emr_container_job_run``)."""
    client = _client("emr-containers", aws_conn_id, region_name)
    client.cancel_job_run(virtualClusterId=virtual_cluster_id, id=str(external_id))


def cancel_emr_steps(
    external_id: JsonValue,
    *,
    cluster_id: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> None:
    """``CancelSteps`` of every step of the job (canceller ``aws_emr_steps``)."""
    if not isinstance(external_id, list):
        raise ValueError(f"{external_id!r} is not a list of EMR step ids")
    _client("emr", aws_conn_id, region_name).cancel_steps(
        ClusterId=cluster_id,
        StepIds=[str(step_id) for step_id in external_id],
        StepCancellationOption="SEND_INTERRUPT",
    )
