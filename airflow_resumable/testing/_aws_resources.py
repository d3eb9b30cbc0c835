"""
Resources and drivers for tests against :mod:`airflow_resumable.testing.aws`.

Private: import the public names from :mod:`airflow_resumable.testing.aws`. The ``provision_*``
helpers create, through boto3 against the controller's url, what each operator needs before it
can submit (a Batch queue and job definitions, an EMR cluster, an EMR Serverless application, an
EMR on EKS virtual cluster); :class:`MotoJobDriver` is the contract kit's ``CloudDriver``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_resumable.testing._aws_clients import (
    FAKE_CREDENTIALS,
    TEST_ACCOUNT_ID,
    TEST_ROLE_ARN,
    aws_client,
    aws_connection_env,
    forget_clients,
)
from airflow_resumable.testing._aws_jobs import KINDS

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing._aws_control import MotoControl
    from airflow_resumable.testing.realism import Realism

__all__ = [
    "FAKE_CREDENTIALS",
    "TEST_ACCOUNT_ID",
    "TEST_ROLE_ARN",
    "BatchResources",
    "MotoJobDriver",
    "aws_client",
    "aws_connection_env",
    "forget_clients",
    "provision_batch",
    "provision_emr_cluster",
    "provision_emr_serverless_application",
    "provision_emr_virtual_cluster",
]


@dataclass(frozen=True)
class BatchResources:
    """What :func:`provision_batch` created: a queue and two job definitions (container, multi-node)."""

    job_queue: str
    job_definition: str
    multinode_job_definition: str


def provision_batch(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable"
) -> BatchResources:
    """
    Create an unmanaged compute environment, a job queue and job definitions.

    :param url: the controller's base url.
    :param region: the region.
    :param name: prefix of the resource names (letters, digits, hyphens).
    """
    iam = aws_client(url, "iam", region)
    role = f"{name}-batch-service"
    try:
        role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role_arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    batch = aws_client(url, "batch", region)
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"{name}-environment", type="UNMANAGED", state="ENABLED", serviceRole=role_arn
    )
    batch.create_job_queue(
        jobQueueName=f"{name}-queue",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
    )
    container = {"image": "busybox", "vcpus": 1, "memory": 128, "command": ["echo", "hello"]}
    batch.register_job_definition(
        jobDefinitionName=f"{name}-job", type="container", containerProperties=container
    )
    batch.register_job_definition(
        jobDefinitionName=f"{name}-multinode",
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
        },
    )
    return BatchResources(f"{name}-queue", f"{name}-job", f"{name}-multinode")


def provision_emr_cluster(url: str, region: str = "us-east-1", *, name: str = "airflow-resumable") -> str:
    """Start an EMR cluster that waits for steps; return its id (``j-...``)."""
    emr = aws_client(url, "emr", region)
    response = emr.run_job_flow(
        Name=name,
        ReleaseLabel="emr-6.15.0",
        LogUri="s3://airflow-resumable-logs/emr/",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )
    return str(response["JobFlowId"])


def provision_emr_serverless_application(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable"
) -> str:
    """Create a started Spark application; return its id."""
    client = aws_client(url, "emr-serverless", region)
    return str(client.create_application(name=name, releaseLabel="emr-6.15.0", type="SPARK")["applicationId"])


def provision_emr_virtual_cluster(
    url: str, region: str = "us-east-1", *, name: str = "airflow-resumable"
) -> str:
    """Create an EMR on EKS virtual cluster (in a fresh namespace); return its id."""
    client = aws_client(url, "emr-containers", region)
    provider = {
        "id": f"{name}-eks",
        "type": "EKS",
        "info": {"eksInfo": {"namespace": f"{name}-{uuid.uuid4().hex[:8]}"}},
    }
    return str(client.create_virtual_cluster(name=name, containerProvider=provider)["id"])


class MotoJobDriver:
    """
    The contract kit's ``CloudDriver`` over a controller, for the jobs of one service.

    External ids are job ids, except for EMR steps (``service="emr"``), whose external id is the
    list of step ids one ``AddJobFlowSteps`` call created.

    :param control: a :class:`~airflow_resumable.testing.aws.MotoControl`.
    :param service: a job kind's name: ``batch``, ``emr``, ``emr-serverless``, ``emr-containers``,
        ``ecs``, ``glue``, ``sagemaker-training``, ``sagemaker-processing`` or ``states``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, control: MotoControl, service: str) -> None:
        if service not in KINDS:
            raise ValueError(f"no job kind named {service!r}; one of {sorted(KINDS)}")
        self.control = control
        self.service = service
        self._kind = KINDS[service]
        self._lists = self._kind.sequential

    def submitted_ids(self) -> list[JsonValue]:
        """Ids of the jobs the service created, in order (a step list per AddJobFlowSteps)."""
        entries = self.control.submissions(self.service)
        return [list(e.created) if self._lists else e.created[0] for e in entries]

    def cancelled_ids(self) -> list[JsonValue]:
        """Ids named by the cancel calls that took effect."""
        entries = self.control.cancels(self.service)
        return [list(e.job_ids) if self._lists else e.job_ids[0] for e in entries]

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        """End the job; for steps, all of them, or the first active one failed and the rest cancelled."""
        active = [
            i for i in self._ids(external_id) if self.control.job(i)["state"] not in self._kind.terminal
        ]
        for position, job_id in enumerate(active):
            if succeeded or position == 0:
                self.control.finish(job_id, succeeded=succeeded)
            else:
                self.control.set_state(job_id, self._kind.cancelled, "Cancelled after an earlier step failed")

    def expire(self, external_id: JsonValue) -> None:
        """Forget the job (every step of it)."""
        for job_id in self._ids(external_id):
            self.control.expire(job_id)

    def throttle_next_submit(self) -> None:
        """Answer the next submit call with HTTP 400 ``ThrottlingException`` (nothing is created)."""
        self.control.throttle(self._kind.submit_operation, service=self._kind.service)

    def lose_next_submit_response(self) -> None:
        """
        Carry out the next submit call, then answer HTTP 500 (a lost response).

        .. versionadded:: 0.4.0
        """
        self.control.lose_response(self._kind.submit_operation, service=self._kind.service)

    def not_found_lookalike(self) -> str | None:
        """
        The kind's ``not_found_lookalike`` in one line (``"400 InvalidRequestException '...'"``), or
        None when the service's not-found answer is unmistakable.

        .. versionadded:: 0.5.0
        """
        lookalike = self._kind.not_found_lookalike
        if lookalike is None:
            return None
        _, status, code, message = lookalike
        return f"{status} {code} {message!r}"

    def refuse_next_status_read_like_not_found(self) -> None:
        """
        Answer the next status read with the kind's ``not_found_lookalike`` (the job is untouched).

        .. versionadded:: 0.5.0
        """
        lookalike = self._kind.not_found_lookalike
        if lookalike is None:
            raise ValueError(f"the {self.service} kind declares no not_found_lookalike")
        operation, status, code, message = lookalike
        self.control.inject_fault(operation, status, code=code, message=message, service=self._kind.service)

    def fake_errors(self) -> list[str]:
        """
        What the fake itself failed on (a job kind's bug), for the contract kit.

        .. versionadded:: 0.5.0
        """
        return self.control.fake_errors()

    def state_of(self, external_id: JsonValue) -> str:
        """
        The state the fake shows for the job (comma-joined for a list of steps), for the contract
        kit to tell a fake that answers wrong from an operator that reads it wrong.

        .. versionadded:: 0.5.0
        """
        return ",".join(str(self.control.job(job_id)["state"]) for job_id in self._ids(external_id))

    def set_realism(self, realism: Realism) -> None:
        """
        Make the controller as unkind as ``realism`` from now on (every service, not only this
        driver's): visibility lag, throttling, page sizes, history retention.

        .. versionadded:: 0.4.0
        """
        self.control.set_realism(realism)

    @staticmethod
    def _ids(external_id: JsonValue) -> list[str]:
        return [str(i) for i in external_id] if isinstance(external_id, list) else [str(external_id)]
