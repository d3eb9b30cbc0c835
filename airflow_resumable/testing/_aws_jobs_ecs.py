"""
The Amazon ECS job kind of :mod:`airflow_resumable.testing.aws`: tasks started by ``RunTask``.

Private. moto starts a task ``RUNNING`` and its state manager (``ecs::task``: ``manual``, one step
per ``DescribeTasks``) walks it to ``STOPPED``, with every container ``PENDING`` and exit code 0;
it ignores ``clientToken``, answers ``DescribeTasks`` of a task it does not know with neither the
task nor a failure (AWS: failure ``MISSING``), raises a bare exception (HTTP 500) for
``StopTask`` of an unknown task (AWS: ``InvalidParameterException``), and stops an already stopped
task again (AWS leaves it as it is). The kind takes each task over when the controller starts
tracking it: its ``_transitions`` become empty, so the state manager keeps the task in whatever
state the controller wrote (the task's own data; ``configure_moto`` needs no line for ECS). It
answers the three cases above as AWS does, rendering tasks through moto's own serializer.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing._aws_clients import aws_client
from airflow_resumable.testing._aws_kind import JobKind
from airflow_resumable.testing._aws_realism import Listing
from airflow_resumable.testing._aws_wire import ErrorReply

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_kind import TrackedJob
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["ECS_KINDS", "EcsResources", "EcsTasks", "provision_ecs"]

#: ``stopCode`` of a task whose essential container exited (success or failure: the exit code says).
ESSENTIAL_EXITED = "EssentialContainerExited"
#: ``stoppedReason`` AWS gives such a task.
ESSENTIAL_EXITED_REASON = "Essential container in task exited"
#: The ``stoppedReason`` of a task stopped by ``StopTask`` without a reason.
USER_STOP_REASON = "Task stopped by user"
#: The ``stoppedReason`` of a task pinned ``FAILED_TO_START`` without a reason.
PULL_FAILURE = (
    "CannotPullContainerError: pull image manifest has been retried 1 time(s): "
    "failed to resolve ref docker.io/library/busybox:latest"
)
#: Exit code of a container ``StopTask`` ended (SIGTERM, not handled by the program).
SIGTERM_EXIT_CODE = 143
#: Container ``lastStatus`` while the task is in each active state.
_CONTAINER_STATUS = {
    "PROVISIONING": "PENDING",
    "PENDING": "PENDING",
    "ACTIVATING": "PENDING",
    "RUNNING": "RUNNING",
    "DEACTIVATING": "RUNNING",
    "STOPPING": "RUNNING",
    "DEPROVISIONING": "STOPPED",
}


class EcsTasks(JobKind):
    """
    ECS tasks: ``RunTask``, ``DescribeTasks``, ``StopTask``.

    A job's id is the task ARN, its parent the cluster's ARN. ``RunTask`` deduplicates on
    ``clientToken`` within a cluster (AWS: the same token and the same request return the
    original answer; the same token with another request is a ``ConflictException``). A new task
    reads ``PROVISIONING``, ``PENDING``, ``ACTIVATING``, then ``RUNNING`` (one state per status
    read), as a Fargate task does.

    ECS says ``STOPPED`` for every ended task; the controller tells four ends apart, each
    rendered as AWS renders it (``lastStatus`` and ``desiredStatus`` ``STOPPED``, ``stoppedAt``):

    ===================  =============================  ==================================
    controller state     ``stopCode``                   containers
    ===================  =============================  ==================================
    ``SUCCEEDED``        ``EssentialContainerExited``   ``STOPPED``, exit code 0
    ``FAILED``           ``EssentialContainerExited``   ``STOPPED``, exit code 1
    ``CANCELLED``        ``UserInitiated``              ``STOPPED``, exit code 143
    ``FAILED_TO_START``  ``TaskFailedToStart``          ``STOPPED``, no exit code, a reason
    ===================  =============================  ==================================

    ``set_state`` also takes ``DEACTIVATING``, ``STOPPING`` and ``DEPROVISIONING`` (desired
    status ``STOPPED``, still active).
    """

    name = "ecs"
    service = "ecs"
    path = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")
    succeeded, failed, cancelled = "SUCCEEDED", "FAILED", "CANCELLED"
    terminal = frozenset(("SUCCEEDED", "FAILED", "CANCELLED", "FAILED_TO_START"))
    states = frozenset((*path, "DEACTIVATING", "STOPPING", "DEPROVISIONING", *terminal))
    submit_operation = "RunTask"
    read_operations = frozenset(("DescribeTasks",))
    listings = {"ListTasks": Listing("taskArns", None, "nextToken", "nextToken", "maxResults", 100, 100)}
    cancel_operations = frozenset(("StopTask",))
    default_failure_reason = ESSENTIAL_EXITED_REASON
    token_conflict = (400, "ConflictException")

    # ------------------------------------------------------------------ calls
    def created(self, call: ApiCall, reply: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        return [
            (str(task["taskArn"]), str(task.get("clusterArn")), None) for task in reply.get("tasks") or []
        ]

    def token(self, call: ApiCall) -> str | None:
        value = call.body.get("clientToken")
        return None if value is None else str(value)

    def token_scope(self, call: ApiCall) -> str:
        """The cluster's name (AWS: a token is unique within one cluster)."""
        return _cluster_name(call.body.get("cluster"))

    def read_ids(self, call: ApiCall) -> tuple[str | None, list[str] | None]:
        return None, [self._arn(call.region, str(task)) for task in call.body.get("tasks") or []]

    def cancel_ids(self, call: ApiCall) -> list[str]:
        return [self._arn(call.region, str(call.body.get("task", "")))]

    def cancel_reason(self, call: ApiCall) -> str:
        return str(call.body.get("reason") or USER_STOP_REASON)

    def conceal(self, call: ApiCall, body: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
        """``DescribeTasks`` reports a task it does not know under ``failures``, reason ``MISSING``."""
        tasks = [task for task in body.get("tasks") or [] if str(task.get("taskArn")) not in hidden]
        missing = [
            {"arn": task["taskArn"], "reason": "MISSING"}
            for task in body.get("tasks") or []
            if str(task.get("taskArn")) in hidden
        ]
        return {**body, "tasks": tasks, "failures": [*(body.get("failures") or []), *missing]}

    def precheck(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> None:
        """``StopTask`` of a task the cluster does not hold: AWS's ``InvalidParameterException``."""
        if call.operation != "StopTask" or self._cluster(call) is None:
            return
        if self._task(call, str(call.body.get("task", ""))) is None:
            raise ErrorReply(400, "InvalidParameterException", "The referenced task was not found.")

    def answer(self, call: ApiCall, jobs: dict[str, TrackedJob]) -> dict[str, Any] | None:
        if call.operation == "DescribeTasks":
            return self._describe(call)
        if call.operation == "StopTask":
            task = self._task(call, str(call.body.get("task", "")))
            if task is not None and task.last_status == "STOPPED":
                return _render("StopTask", {"task": task})  # AWS leaves a stopped task as it is
        return None

    def _describe(self, call: ApiCall) -> dict[str, Any] | None:
        """Tasks the cluster forgot as failures ``MISSING``, as AWS answers; None: moto answers."""
        if self._cluster(call) is None:
            return None  # moto's ClusterNotFoundException
        wanted = [str(task) for task in call.body.get("tasks") or []]
        found = [(value, self._task(call, value)) for value in wanted]
        if not wanted or all(task is not None for _, task in found):
            return None
        reply = _render(
            "DescribeTasks",
            {
                "tasks": [task for _, task in found if task is not None],
                "failures": [{"arn": value, "reason": "MISSING"} for value, task in found if task is None],
            },
        )
        if "TAGS" not in (call.body.get("include") or []):
            for task in reply.get("tasks") or []:
                task.pop("tags", None)
        return reply

    # ------------------------------------------------------------------ moto's model
    def backends(self) -> Any:
        from moto.ecs.models import ecs_backends

        return ecs_backends

    def find_model(self, backend: Any, job_id: str, parent: str | None) -> Any:
        for tasks in backend.tasks.values():
            if job_id in tasks:
                return tasks[job_id]
        return None

    def _cluster(self, call: ApiCall) -> Any:
        """moto's cluster of the call (``default`` when it names none), or None."""
        name = _cluster_name(call.body.get("cluster"))
        for regions in list(self.backends().values()):
            if call.region in regions and name in regions[call.region].clusters:
                return regions[call.region]
        return None

    def _task(self, call: ApiCall, value: str) -> Any:
        """The task of the call's cluster that ``value`` (an ARN or a task id) names, or None."""
        backend = self._cluster(call)
        if backend is None or not value:
            return None
        tasks = backend.tasks.get(_cluster_name(call.body.get("cluster")), {})
        return next((task for arn, task in tasks.items() if _same_task(arn, value)), None)

    def _arn(self, region: str, value: str) -> str:
        """The ARN of the task ``value`` names (an id is looked up), else ``value`` itself."""
        if value.startswith("arn:"):
            return value
        for regions in list(self.backends().values()):
            for tasks in regions[region].tasks.values() if region in regions else ():
                arn = next((arn for arn in tasks if _same_task(arn, value)), None)
                if arn is not None:
                    return str(arn)
        return value

    def read_state(self, job: TrackedJob) -> str:
        task = self.model(job)
        if task is None:
            return "EXPIRED"
        if task.last_status != "STOPPED" or getattr(task, "stop_code", None) is None:
            return str(task.last_status)
        if task.stop_code == "TaskFailedToStart":
            return "FAILED_TO_START"
        if task.stop_code == "UserInitiated":
            return self.cancelled
        codes = [container.exitCode for container in task.containers]
        return self.succeeded if all(code == 0 for code in codes) else self.failed

    def write_state(self, job: TrackedJob, state: str, reason: str) -> None:
        task = self.model(job)
        task._transitions = []  # the controller alone moves this task from now on (see the module doc)
        now = datetime.now(UTC)
        if getattr(task, "created_at", None) is None:
            task.created_at = now
        if state in self.terminal:
            self._stop(task, state, reason, now)
            return
        task.last_status = state
        task.desired_status = (
            "STOPPED" if state in ("DEACTIVATING", "STOPPING", "DEPROVISIONING") else "RUNNING"
        )
        task.stop_code, task.stopped_reason = None, None
        task.stopping_at = task.stopped_at = task.execution_stopped_at = None
        if state == "RUNNING" and getattr(task, "started_at", None) is None:
            task.pull_started_at = task.pull_stopped_at = task.started_at = now
        for container in task.containers:
            container.last_status = _CONTAINER_STATUS.get(state, "PENDING")
            container.exitCode = 0 if container.last_status == "STOPPED" else None
            container.reason = None

    def _stop(self, task: Any, state: str, reason: str, now: datetime) -> None:
        if state == "FAILED_TO_START":
            task.stop_code, default, exit_code = "TaskFailedToStart", PULL_FAILURE, None
        elif state == self.cancelled:
            task.stop_code, default, exit_code = "UserInitiated", USER_STOP_REASON, SIGTERM_EXIT_CODE
        else:
            default, exit_code = ESSENTIAL_EXITED_REASON, 0 if state == self.succeeded else 1
            task.stop_code = ESSENTIAL_EXITED
        task.last_status = task.desired_status = "STOPPED"
        task.stopped_reason = reason or default
        task.stopping_at = task.stopped_at = task.execution_stopped_at = now
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exitCode = exit_code
            container.reason = task.stopped_reason if state == "FAILED_TO_START" else None

    def remove(self, job: TrackedJob) -> None:
        for tasks in self.backends()[job.account][job.region].tasks.values():
            tasks.pop(job.job_id, None)


def _cluster_name(value: Any) -> str:
    """A cluster's name from its name or ARN (``default`` when there is none)."""
    return str(value or "default").rsplit("/", 1)[-1]


def _same_task(arn: str, value: str) -> bool:
    return value == arn or value.rsplit("/", 1)[-1] == arn.rsplit("/", 1)[-1]


def _render(operation: str, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (moto's model objects) as moto's own serializer renders ``operation``'s answer."""
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    model = get_service_model("ecs").operation_model(operation)
    serializer = JSONSerializer(model, value_picker=XFormedAttributePicker())
    body = serializer.serialize(result)["body"]
    rendered: dict[str, Any] = json.loads(body or "{}")
    return rendered


@dataclass(frozen=True)
class EcsResources:
    """
    What :func:`provision_ecs` created.

    :param cluster: the cluster's name.
    :param task_definition: the task definition's family (its latest revision runs).
    :param container_name: the task definition's one container.
    """

    cluster: str
    task_definition: str
    container_name: str


#: An AMI id moto accepts without loading its catalogue (``moto.ec2.utils.EXAMPLE_AMI_ID``).
_MOTO_AMI = "ami-12c6146b"


def provision_ecs(url: str, region: str = "us-east-1", *, name: str = "airflow-resumable") -> EcsResources:
    """
    Create a cluster with one EC2 container instance, and a task definition of one container.

    The container instance lets tasks run with the stock default ``launch_type="EC2"`` (moto
    places them on it: 4,096 CPU units and 7,482 MiB, 16 MiB per task); ``FARGATE`` tasks need no
    instance and no placement. Existing resources of these names are reused.

    :param url: the controller's base url.
    :param region: the region.
    :param name: prefix of the resource names (letters, digits, hyphens).

    .. versionadded:: 0.2.0
    """

    ecs = aws_client(url, "ecs", region)
    cluster = f"{name}-cluster"
    ecs.create_cluster(clusterName=cluster)
    if not ecs.list_container_instances(cluster=cluster).get("containerInstanceArns"):
        ec2 = aws_client(url, "ec2", region)
        # moto's example AMI: DescribeImages would load moto's whole AMI catalogue (seconds, per reset)
        instance = ec2.run_instances(ImageId=_MOTO_AMI, MinCount=1, MaxCount=1, InstanceType="m5.large")
        document = json.dumps({"instanceId": instance["Instances"][0]["InstanceId"], "region": region})
        ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document)
    container = "main"
    ecs.register_task_definition(
        family=f"{name}-task",
        containerDefinitions=[
            {"name": container, "image": "busybox", "memory": 16, "essential": True, "command": ["true"]}
        ],
    )
    return EcsResources(cluster, f"{name}-task", container)


ECS_KINDS: tuple[JobKind, ...] = (EcsTasks(),)
