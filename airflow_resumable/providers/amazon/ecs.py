"""
``ResumableEcsRunTaskOperator``: the stock ``EcsRunTaskOperator`` that keeps its ECS task through
worker shutdowns, crashes and retries, and never starts it twice.

``RunTask`` deduplicates on ``clientToken`` within a cluster (the same token and the same request
return the original task for 24 hours), so the submission token is the client token and a
resubmission of the same intent returns the same task. Also here: the trigger of the deferrable
mode, :class:`ResumableTaskDoneTrigger`, and the custodian's canceller
:func:`cancel_ecs_task_by_recipe`.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.exceptions import EcsOperatorError
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.triggers.ecs import TaskDoneTrigger
from airflow.providers.amazon.aws.utils.identifiers import generate_uuid
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.triggers.base import TriggerEvent

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon._cancel import CUSTODIAN_REASON, cancel_client
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    require_mapping,
    require_text,
    status_read_bound,
)
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Container

    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "STOP_REASON",
    "ResumableEcsRunTaskOperator",
    "ResumableTaskDoneTrigger",
    "cancel_ecs_task_by_recipe",
    "task_verdict",
]

#: The ``stoppedReason`` of a task stopped by the operator or its trigger (user stop, timeout).
STOP_REASON = "Stopped by Airflow (airflow_resumable): the task was stopped"
#: What :meth:`ResumableEcsRunTaskOperator.get_job_status` says once a task is ``STOPPED``:
#: the stock operator's verdict. SKIPPED counts as succeeded (the try then ends skipped).
SUCCEEDED, FAILED, SKIPPED = "SUCCEEDED", "FAILED", "SKIPPED"
ENDED = frozenset((SUCCEEDED, FAILED, SKIPPED))
#: A ``stoppedReason`` the stock operator fails on although the exit codes may say success.
_HOST_STOPPED = re.compile(r"Host EC2 \(instance .+?\) (stopped|terminated)\.")
_SERVICE = "Amazon ECS"
_LIST_ARGUMENTS = (
    "capacity_provider_strategy",
    "volume_configurations",
    "placement_constraints",
    "placement_strategy",
)
_TEXT_ARGUMENTS = ("launch_type", "group", "platform_version", "propagate_tags")


def task_verdict(task: Mapping[str, Any], skip_on_exit_code: Container[int]) -> tuple[str, str]:
    """
    ``(SUCCEEDED | FAILED | SKIPPED, why)`` of a ``STOPPED`` task, decided as the stock
    ``EcsRunTaskOperator._check_success_task`` decides it (first matching rule wins):

    - ``stopCode`` ``TaskFailedToStart``, or a ``stoppedReason`` saying the EC2 host stopped: failed;
    - then, container by container: stopped with a non-zero exit code (none counts as 1): skipped
      if the code is in ``skip_on_exit_code``, else failed; still ``PENDING``: failed; a
      ``reason`` mentioning an error: failed;
    - otherwise succeeded (``why`` is empty).
    """
    reason = str(task.get("stoppedReason") or "")
    if task.get("stopCode") == "TaskFailedToStart":
        return FAILED, f"the task failed to start: {reason}"
    if _HOST_STOPPED.match(reason):
        return FAILED, f"the task was stopped because the host instance terminated: {reason}"
    for container in task.get("containers") or []:
        name = container.get("name")
        code = container.get("exitCode")
        code = 1 if code is None else code
        if container.get("lastStatus") == "STOPPED" and code != 0:
            verdict = SKIPPED if code in skip_on_exit_code else FAILED
            return verdict, f"container {name!r} exited with code {code}"
        if container.get("lastStatus") == "PENDING":
            return FAILED, f"container {name!r} is still pending"
        if "error" in str(container.get("reason") or "").lower():
            return FAILED, f"container {name!r} encountered an error during launching: {container['reason']}"
    return SUCCEEDED, ""


class ResumableTaskDoneTrigger(ResumableTriggerMixin, TaskDoneTrigger):
    """
    The stock ``TaskDoneTrigger``, plus an ``on_kill`` that stops the task after a user's stop.

    **Purpose:** the stock trigger has no ``on_kill``: a task whose deferred Airflow task a user
    marks failed keeps running. Here a user's stop stops it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``StopTask``. Where the stock ``run()`` raises (the waiter's attempts ran
    out, an AWS error, a task ECS no longer knows), this one yields
    ``{"status": "error", "task_arn", "cluster", "message"}`` instead, so that the operator's
    ``execute_complete`` decides by the task's own status (a retry reconnects to a task that still
    runs) rather than the triggerer failing the task.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        task is stopped (None: no ledger).

    The other arguments are those of ``TaskDoneTrigger``.

    .. versionadded:: 0.2.0
    """

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The stock events; an error event where the stock trigger raises."""
        try:
            async for event in super().run():
                yield event
        except Exception as err:  # the operator asks ECS about the task; a raise would fail the try
            self.log.warning("Stopped waiting for ECS task %s: %r", self.task_arn, err)
            yield TriggerEvent(
                {"status": "error", "task_arn": self.task_arn, "cluster": self.cluster, "message": str(err)}
            )

    async def cancel_job(self) -> None:
        """``StopTask`` (ECS answers a task that already stopped as it is)."""
        hook = EcsHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )
        async with await hook.get_async_conn() as client:
            await client.stop_task(cluster=self.cluster, task=self.task_arn, reason=STOP_REASON)
        self.log.info("ECS task %s stopped.", self.task_arn)


class ResumableEcsRunTaskOperator(AwsJobMixin, EcsRunTaskOperator):
    """
    Run an ECS task once per intended submission and reconnect to it after any disruption.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.ecs.EcsRunTaskOperator`
    (same arguments, the same ``ecs_task_arn`` XCom and return value) whose task survives the
    worker that waits for it: a retry, a reschedule after a worker shutdown, or a class swap
    reconnects to the task instead of starting another, and a user's stop stops it.

    **How it works:** ``RunTask`` deduplicates on ``clientToken`` within a cluster
    (``submission_is_idempotent``), so the submission token is the client token: a resubmission
    of an intent whose task ARN was never recorded (a crash right after ``RunTask``, a lost answer)
    returns that same task. botocore's own retries of ``RunTask`` are therefore harmless and stay
    on. The external id is the task ARN. :meth:`get_job_status` is the task's ``lastStatus`` while
    it runs (``PROVISIONING`` ... ``RUNNING``, ``DEACTIVATING`` ... ``DEPROVISIONING``, any other
    state: still active); once ``STOPPED``, the stock operator's verdict (:func:`task_verdict`):
    ``SUCCEEDED``, ``FAILED`` or ``SKIPPED`` (an exit code in ``skip_on_exit_code``: counts as
    done, and the try ends skipped, as in stock, also when a retry finds the task already
    stopped). A task ECS no longer knows (``DescribeTasks`` failure ``MISSING``: ECS keeps stopped
    tasks for about an hour) raises :class:`~airflow_resumable.exceptions.JobNotFoundError`.
    Cancel is ``StopTask``. While the worker waits, the CloudWatch log lines are forwarded as in
    stock (``awslogs_group`` and ``awslogs_stream_prefix``), and the last ``number_logs_exception``
    of them end the failure message.

    **Deferrable:** with ``deferrable=True`` the task ARN is recorded, then the task defers to
    :class:`ResumableTaskDoneTrigger` (the stock ``TaskDoneTrigger`` with the stock arguments and
    timeout, ``waiter_max_attempts * waiter_delay + 60`` s), which frees the worker slot and
    forwards the logs while the task runs; as in stock, it waits even with
    ``wait_for_completion=False``. Its ``on_kill`` stops the task after a user's stop, never after
    a clear. ``execute_complete`` re-enters the engine: the stock return value, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try and the next one reconnects.

    **reattach:** not needed any more: the record and the token find the task. ``reattach=True``
    still sets the stock ``startedBy`` (a UUID of the task instance), so that the stock operator,
    swapped back, finds the task; and a try that finds nothing recorded for its task instance
    (the stock operator ran before) adopts a task of that ``startedBy`` still running, as stock
    does, instead of starting one.

    **Limitations:** ``waiter_max_attempts`` bounds the status reads of a try's wait, as in stock
    (the task keeps running; a retry reconnects); ``stop_task_on_failure`` is replaced by
    ``cancel_on_failure`` (stop the task when the try fails for good while it may still run), and
    the stock ``on_kill`` by ``cancel_on_user_stop``. A ``RunTask`` answered with ``failures``
    (no capacity) raises the stock ``EcsOperatorError``; the retry resends the same token. A task
    that failed to start raises ``JobFailedError``, not the stock ``EcsTaskFailToStart``. The
    stock log lines that print ``overrides`` and the ``RunTask`` answer are left out (they may hold
    secrets).

    :param waiter_delay: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``EcsRunTaskOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.2.0
    """

    #: Key of the bare task ARN in ``task_state_store`` (the stock operator stores none; named as
    #: its XCom). Never rename: in-flight retries read it.
    external_id_key = "ecs_task_arn"
    submission_is_idempotent: ClassVar[bool] = True
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "ecs"

    #: Set by :meth:`get_job_result` for a task that stopped with an exit code of ``skip_on_exit_code``.
    _skip_message: str | None = None
    #: The ARN of a running task the stock ``reattach`` lookup found before the first submission.
    _reattached: str | None = None

    if TYPE_CHECKING:
        skip_on_exit_code: Container[int]

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``waiter_delay``."""
        return float(self.waiter_delay)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.waiter_delay = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``waiter_max_attempts`` bounds the wait, as the stock ``ecs`` waiter's ``MaxAttempts``."""
        return status_read_bound(self.waiter_max_attempts, "waiter_max_attempts")

    # ------------------------------------------------------------------ execute
    def execute(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Run the engine; a task that stopped with a skip exit code then skips the try, as in stock."""
        self._skip_message = None
        result = super().execute(context, event)
        self._raise_if_skipped()
        return result

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger (see :class:`~.common.AwsJobMixin`); skip exit codes skip, as in stock."""
        self._skip_message = None
        result = super().execute_complete(context, event)
        self._raise_if_skipped()
        return result

    def _raise_if_skipped(self) -> None:
        if self._skip_message is not None:
            raise AirflowSkipException(self._skip_message)

    # ------------------------------------------------------------------ spec
    def job_request(self) -> dict[str, Any]:
        require_text(self.task_definition, "task_definition", _SERVICE)
        require_text(self.cluster, "cluster", _SERVICE)
        if not isinstance(self.overrides, Mapping):
            raise InvalidJobSpecError(
                f"{_SERVICE}: argument 'overrides' must be a dict (may be empty), got "
                f"{type(self.overrides).__name__}; nothing was submitted."
            )
        require_mapping(self.network_configuration, "network_configuration", _SERVICE)
        require_mapping(self.tags, "tags", _SERVICE)
        for argument in _LIST_ARGUMENTS:
            if getattr(self, argument) is not None and not isinstance(getattr(self, argument), list):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument {argument!r} must be a list, got "
                    f"{type(getattr(self, argument)).__name__}; nothing was submitted."
                )
        for argument in _TEXT_ARGUMENTS:
            if getattr(self, argument) is not None and not isinstance(getattr(self, argument), str):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument {argument!r} must be a string, got "
                    f"{type(getattr(self, argument)).__name__}; nothing was submitted."
                )
        return self._run_args()

    def _run_args(self) -> dict[str, Any]:
        """The ``RunTask`` arguments but ``startedBy`` and ``clientToken``, as the stock ``_start_task``."""
        args: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": self.task_definition,
            "overrides": self.overrides,
        }
        if self.capacity_provider_strategy:
            args["capacityProviderStrategy"] = self.capacity_provider_strategy
        elif self.launch_type:
            args["launchType"] = self.launch_type
        optional = {
            "volumeConfigurations": self.volume_configurations,
            "platformVersion": self.platform_version,
            "group": self.group,
            "placementConstraints": self.placement_constraints,
            "placementStrategy": self.placement_strategy,
            "networkConfiguration": self.network_configuration,
            "propagateTags": self.propagate_tags,
        }
        args.update({key: value for key, value in optional.items() if value is not None})
        if self.tags is not None:
            args["tags"] = [{"key": key, "value": value} for key, value in self.tags.items()]
        return args

    def prepare_try(self, context: Context) -> None:
        """The stock per-try set-up: the log warning, and with ``reattach`` the stock ``startedBy`` lookup."""
        self.task_log_fetcher = None
        self._reattached = None
        if self._aws_logs_enabled() and not self.wait_for_completion:
            self.log.warning(
                "Trying to get logs without waiting for the task to complete is undefined behavior."
            )
        self.log.info("Running ECS task", task_definition=self.task_definition, cluster=self.cluster)
        if not self.reattach:
            return
        ti = context["ti"]
        self._started_by = generate_uuid(*map(str, [ti.dag_id, ti.task_id, ti.run_id, ti.map_index]))
        if self._nothing_recorded(context):
            self.arn = None
            self._retrying(self._try_reattach_task, started_by=self._started_by, what="list_tasks")
            self._reattached = self.arn

    def _nothing_recorded(self, context: Context) -> bool:
        """True when the task state store holds neither our record nor a bare ARN (or there is none)."""
        store = context.get("task_state_store") if self.durable else None
        if store is None:
            return True
        try:
            return store.get(RECORD_KEY) is None and store.get(self.external_id_key) is None
        except Exception as err:  # unreadable: leave it to the engine, which retries and decides
            self.log.warning("Could not read the task state store for reattach", error=repr(err))
            return False

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> str:
        """
        ``RunTask`` with ``clientToken`` = the submission token; returns the task ARN.

        With ``reattach=True``, a task the same task instance started (found before the first
        submission, see the class docstring) is returned instead, once.
        """
        reattached, self._reattached = self._reattached, None
        if reattached:
            self.arn = reattached
            self.log.info("Reattached to a running task started by this task instance", task_arn=self.arn)
            return reattached
        args = {**self._run_args(), "startedBy": self._started_by or self.owner}
        if self.submission_token:
            args["clientToken"] = self.submission_token
        response = self.client.run_task(**args)
        tasks, failures = response.get("tasks") or [], response.get("failures") or []
        if failures or not tasks:
            raise EcsOperatorError(failures, f"{_SERVICE}: RunTask started no task; failures: {failures}")
        self.arn = str(tasks[0]["taskArn"])
        self._learn_container_name(tasks[0])
        self.log.info("ECS task started", task_arn=self.arn, cluster=self.cluster)
        return self.arn

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """The task's ``lastStatus``; once ``STOPPED``, ``SUCCEEDED``, ``FAILED`` or ``SKIPPED``."""
        task = self._describe(str(external_id))
        status = str(task.get("lastStatus") or "")
        if status == "STOPPED":
            status, _ = task_verdict(task, self.skip_on_exit_code)
        return status

    def is_job_active(self, status: str) -> bool:
        """Anything but the three verdicts: a state ECS may add later is waited on, not resubmitted."""
        return status not in ENDED

    def is_job_succeeded(self, status: str) -> bool:
        """SUCCEEDED, and SKIPPED (the task ran and ended; the try then ends skipped)."""
        return status in (SUCCEEDED, SKIPPED)

    def get_job_result(self, external_id: JsonValue, context: Context) -> str | None:
        """
        The stock return value: the last CloudWatch log line with ``awslogs_*`` and
        ``do_xcom_push``, else None; pushes the ``ecs_task_arn`` XCom first.
        """
        self.adopt_job(external_id, context)
        if not self.wait_for_completion:
            return None
        task = self._cached_task(external_id)
        if task is not None and task.get("lastStatus") == "STOPPED":
            verdict, why = task_verdict(task, self.skip_on_exit_code)
            if verdict == SKIPPED:
                self._skip_message = (
                    f"{_SERVICE} task {external_id} stopped: {why}, listed in skip_on_exit_code"
                )
                return None
        if not (self._aws_logs_enabled() and self.do_xcom_push):
            return None
        fetcher = self.task_log_fetcher or self._get_task_log_fetcher()
        message: str | None = self._retrying(fetcher.get_last_log_message, what="get_log_events")
        return message

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``StopTask`` (ECS answers a task that already stopped as it is)."""
        self.client.stop_task(cluster=self.cluster, task=str(external_id), reason=STOP_REASON)

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``StopTask`` through the same connection, for the custodian."""
        return "aws_ecs_task", {
            "cluster": self.cluster,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """Why the stock check fails, ``stopCode``, ``stoppedReason``, and the last log lines."""
        task = self._cached_task(external_id)
        if task is None:
            return ""
        _, why = task_verdict(task, self.skip_on_exit_code)
        code, reason = task.get("stopCode"), task.get("stoppedReason")
        parts = [why, f"{code or 'stopped'}: {reason}" if reason else str(code or "")]
        detail = "; ".join(part for part in parts if part)
        lines = self._last_log_lines()
        if lines:
            detail += f" - last {self.number_logs_exception} logs from Cloudwatch:\n" + "\n".join(lines)
        return detail

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A task ARN (``arn:...:ecs:...:task/...``)."""
        return isinstance(value, str) and value.startswith("arn:") and ":task/" in value

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """The engine's wait; while the worker waits, the task's CloudWatch logs are forwarded as in stock."""
        if not (self._aws_logs_enabled() and self.wait_for_completion and not self.deferrable):
            super().poll_until_complete(external_id, context)
            return
        self.arn = str(external_id)
        if not self.container_name:  # the log stream's name needs it (a reconnect already knows it)
            self._retrying(self._describe, self.arn, what="describe_tasks")
        self.task_log_fetcher = self._get_task_log_fetcher()
        self.task_log_fetcher.start()
        ended = False
        try:
            super().poll_until_complete(external_id, context)
            ended = True
        finally:
            self.task_log_fetcher.stop()
            if ended:  # the last lines are forwarded before the result is read; never delay a stop
                self.task_log_fetcher.join()

    # ------------------------------------------------------------------ deferral
    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableTaskDoneTrigger:
        """The stock deferral's ``TaskDoneTrigger`` arguments."""
        return ResumableTaskDoneTrigger(
            cluster=self.cluster,
            task_arn=str(external_id),
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            log_region_name=self.resolve_awslogs_region(),
            log_group=self.awslogs_group,
            log_stream=self._get_logs_stream_name(),
            verify=self.verify,
            botocore_config=self.botocore_config,
            **resumable,
        )

    def defer_timeout(self) -> timedelta | None:
        """``waiter_max_attempts * waiter_delay`` plus 60 s, as the stock deferral."""
        return timedelta(seconds=self.waiter_max_attempts * self.waiter_delay + 60)

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        task_arn: JsonValue = event.get("task_arn")
        return task_arn

    # ------------------------------------------------------------------ helpers
    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """``self.arn`` plus the stock ``ecs_task_arn`` XCom (once per task and try)."""
        self.arn = str(external_id)
        if self.__dict__.get("_pushed_for") == self.arn:
            return
        if self.do_xcom_push:
            context["ti"].xcom_push(key="ecs_task_arn", value=self.arn)
        self._pushed_for = self.arn

    def _describe(self, task_arn: str) -> dict[str, Any]:
        response = self.client.describe_tasks(cluster=self.cluster, tasks=[task_arn])
        task = next((t for t in response.get("tasks") or [] if _same_task(t.get("taskArn"), task_arn)), None)
        if task is None:
            failures = response.get("failures") or []
            if any(failure.get("reason") == "MISSING" for failure in failures):
                raise JobNotFoundError(
                    f"{_SERVICE} task {task_arn!r} of cluster {self.cluster!r} does not exist "
                    f"(ECS forgets stopped tasks after about an hour)."
                )
            raise ResumableError(
                f"{_SERVICE}: DescribeTasks answered neither task {task_arn!r} nor why it cannot "
                f"(failures: {failures}). A retry asks again."
            )
        self._last_task = task
        self._learn_container_name(task)
        return dict(task)

    def _cached_task(self, external_id: JsonValue) -> dict[str, Any] | None:
        task = self.__dict__.get("_last_task")
        return dict(task) if task is not None and _same_task(task.get("taskArn"), str(external_id)) else None

    def _learn_container_name(self, task: Mapping[str, Any]) -> None:
        """The first container's name for the log stream, as the stock ``_start_task`` finds it."""
        if self.container_name or not self._aws_logs_enabled():
            return
        containers = task.get("containers") or []
        if containers and containers[0].get("name"):
            self.container_name = str(containers[0]["name"])

    def _last_log_lines(self) -> list[str]:
        """The last ``number_logs_exception`` CloudWatch lines (best effort, empty without logs)."""
        if not self._aws_logs_enabled():
            return []
        try:
            fetcher = self.task_log_fetcher or self._get_task_log_fetcher()
            return [str(line) for line in fetcher.get_last_log_messages(self.number_logs_exception)]
        except Exception as err:  # the failure must surface, not a failure to read its logs
            self.log.warning("Could not read the task's last log lines", task_arn=self.arn, error=repr(err))
            return []


def _same_task(arn: Any, value: str) -> bool:
    """True if ``value`` (an ARN or a task id) names the task ``arn``."""
    return isinstance(arn, str) and (arn == value or arn.rsplit("/", 1)[-1] == value.rsplit("/", 1)[-1])


def cancel_ecs_task_by_recipe(
    external_id: JsonValue, *, cluster: str, aws_conn_id: str | None = None, region_name: str | None = None
) -> None:
    """
    ``StopTask`` of the task, for the custodian (canceller ``aws_ecs_task``).

    :raises RecipeRefusedError: no ``aws_conn_id``, or no such connection (no ambient credentials).

    .. versionadded:: 0.2.0
    .. versionchanged:: 0.3.0 refuses a recipe without a connection; calls have a deadline.
    """
    client = cancel_client("ecs", aws_conn_id, region_name, canceller="aws_ecs_task")
    client.stop_task(cluster=cluster, task=str(external_id), reason=CUSTODIAN_REASON)
