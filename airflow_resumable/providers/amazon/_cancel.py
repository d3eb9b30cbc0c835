"""
The custodian's AWS cancellers (:mod:`airflow_resumable.custodian`): a job no task polls any more.

Each is called as ``function(external_id, **recipe_arguments)`` with the connection id, region and
resource ids the operator put in its :meth:`~airflow_resumable.mixin.ResumableJobMixin.cancel_recipe`.
The same calls as the operators' own ``cancel_job``, with two differences (0.3.0), in
:func:`cancel_client`, which every AWS canceller (here and in the operator modules) builds its client
with:

- **a connection, never ambient credentials.** A recipe without ``aws_conn_id`` (``None``, ``""``)
  or naming a connection that does not exist is refused (:class:`RecipeRefusedError`) before any
  client is built: the AWS hooks would otherwise use the scheduler's or API server's own IAM role.
  An operator's own ``cancel_job`` (a running try) still works with ``aws_conn_id=None``.
- **a deadline.** The client's connect and read timeouts and its retries (2 attempts in all,
  ``standard`` mode) are bounded by ``[resumable] custodian_call_timeout_seconds``, whatever the connection's
  ``config_kwargs`` say (its other settings, proxies for example, are kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_resumable._custodian_policy import clamp_call_timeout, require_connection
from airflow_resumable.exceptions import RecipeRefusedError

if TYPE_CHECKING:
    from botocore.config import Config
    from pydantic import JsonValue

#: The reason Batch shows for a job the custodian terminated.
CUSTODIAN_REASON = "Stopped by airflow_resumable: its task instance was stopped"
#: Attempts of one custodian call, the first included: botocore's ``total_max_attempts`` (its
#: ``max_attempts`` counts retries only, so ``max_attempts=2`` would make three calls).
CANCEL_CALL_ATTEMPTS = 2


def deadline_config(call_timeout: float) -> Config:
    """
    The botocore settings that keep one custodian call near ``call_timeout`` seconds.

    Each of the :data:`CANCEL_CALL_ATTEMPTS` attempts gets an equal share: a connect timeout of a
    third of it (1 to 10 s) and the rest as read timeout (at least 1 s). At 30 s: 5 s + 10 s per
    attempt, about 31 s with botocore's backoff of at most 1 s between the two.
    """
    from botocore.config import Config

    share = call_timeout / CANCEL_CALL_ATTEMPTS
    connect = min(max(share / 3, 1.0), 10.0)
    return Config(
        connect_timeout=connect,
        read_timeout=max(share - connect, 1.0),
        retries={"total_max_attempts": CANCEL_CALL_ATTEMPTS, "mode": "standard"},
    )


def cancel_client(service: str, aws_conn_id: object, region_name: object, *, canceller: str) -> Any:
    """
    The boto3 client of a custodian canceller: the recipe's connection, with a deadline.

    :param service: the boto3 service name (``ecs``, ``glue``, ``stepfunctions``, ...).
    :param aws_conn_id: the recipe's connection id.
    :param region_name: the recipe's region (None: the connection's).
    :param canceller: the canceller's registered name, for messages.
    :raises RecipeRefusedError: no connection id, no such connection, or a region that is no string.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from airflow_resumable._config import setting

    conn_id = require_connection(aws_conn_id, argument="aws_conn_id", canceller=canceller)
    if region_name is not None and not isinstance(region_name, str):
        raise RecipeRefusedError(
            f"The custodian's canceller {canceller!r} refuses region_name={region_name!r}"
        )
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region_name)
    # The hook reads the connection here; one it cannot find silently becomes "no connection".
    wrapper = hook.conn_config
    if wrapper.conn_id != conn_id:
        raise RecipeRefusedError(
            f"The custodian's canceller {canceller!r} found no Airflow connection {conn_id!r}: it "
            "would run with this component's own credentials. Create the connection in the "
            "scheduler's and API server's environment, and stop this job by hand."
        )
    # Our timeouts win over the connection's config_kwargs, whose other settings are kept. The
    # wrapper is the hook's (cached), read by both the session (assume-role) and the client.
    deadline = deadline_config(clamp_call_timeout(setting("custodian_call_timeout_seconds")))
    wrapper.botocore_config = (
        deadline if wrapper.botocore_config is None else wrapper.botocore_config.merge(deadline)
    )
    return hook.conn


def cancel_batch_job(
    external_id: JsonValue, *, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """``TerminateJob`` (canceller ``aws_batch_job``)."""
    cancel_client("batch", aws_conn_id, region_name, canceller="aws_batch_job").terminate_job(
        jobId=str(external_id), reason=CUSTODIAN_REASON
    )


def cancel_emr_serverless_job_run(
    external_id: JsonValue,
    *,
    application_id: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> None:
    """``CancelJobRun`` of EMR Serverless (canceller ``aws_emr_serverless_job_run``)."""
    client = cancel_client("emr-serverless", aws_conn_id, region_name, canceller="aws_emr_serverless_job_run")
    client.cancel_job_run(applicationId=application_id, jobRunId=str(external_id))


def cancel_emr_container_job_run(
    external_id: JsonValue,
    *,
    virtual_cluster_id: str,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> None:
    """``CancelJobRun`` of EMR on EKS (canceller ``aws_emr_container_job_run``)."""
    client = cancel_client("emr-containers", aws_conn_id, region_name, canceller="aws_emr_container_job_run")
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
    cancel_client("emr", aws_conn_id, region_name, canceller="aws_emr_steps").cancel_steps(
        ClusterId=cluster_id,
        StepIds=[str(step_id) for step_id in external_id],
        StepCancellationOption="SEND_INTERRUPT",
    )
