"""
``ResumableEmrAddStepsOperator``: steps added to an EMR cluster once per intended submission.

Private module: import the class from :mod:`airflow_resumable.providers.amazon.emr` or
:mod:`airflow_resumable.providers.amazon`. ``AddJobFlowSteps`` has no idempotency token, so each
step's ``Name`` carries a short marker derived from the submission token, and ``find_job`` lists
the cluster's steps to find them again.
"""

from __future__ import annotations

import ast
import copy
import re
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.links.emr import EmrClusterLink, EmrLogsLink, get_log_uri
from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

from airflow_resumable.exceptions import InvalidJobSpecError, JobNotFoundError, ResumableError
from airflow_resumable.providers.amazon.common import (
    AwsJobMixin,
    no_retry_client,
    require_text,
    status_read_bound,
    token_key,
)
from airflow_resumable.providers.amazon.triggers import ResumableEmrAddStepsTrigger

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = ["STEP_TERMINAL", "ResumableEmrAddStepsOperator", "combined_step_state", "step_marker"]

STEP_TERMINAL = frozenset(("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"))
_SERVICE = "EMR"
_MAX_NAME = 256
_LIST_STEPS_IDS = 10  # ListSteps takes at most 10 StepIds
_FIND_MAX_STEPS = 1000  # ListSteps lists newest first: an intent's steps are among the newest
#: `` [ar:<12 hex of the token>:<index>/<count>]`` at the end of a step name. Never change the
#: format: find_job of in-flight retries parses it.
_MARKER = re.compile(r" \[ar:([0-9a-f]{12}):(\d+)/(\d+)\]$")


def step_marker(token: str, index: int, count: int) -> str:
    """The suffix added to the name of step ``index`` (0-based) of ``count`` submitted with ``token``."""
    return f" [ar:{token_key(token)}:{index + 1}/{count}]"


def combined_step_state(states: list[str]) -> str:
    """
    One state for a list of steps, in step order.

    ``COMPLETED`` when all completed; else the state of the first step still active (``PENDING``,
    ``RUNNING``, ``CANCEL_PENDING`` or a state not known here); else the state of the first step
    that did not complete (``FAILED``, ``CANCELLED``, ``INTERRUPTED``). The steps of one submission
    are thus waited for until none runs any more, even after one failed.
    """
    if all(state == "COMPLETED" for state in states):
        return "COMPLETED"
    active = [state for state in states if state not in STEP_TERMINAL]
    if active:
        return active[0]
    return next(state for state in states if state != "COMPLETED")


class ResumableEmrAddStepsOperator(AwsJobMixin, EmrAddStepsOperator):
    """
    Add steps to an EMR cluster once per intended submission and wait for them across disruptions.

    **Purpose:** a drop-in for :class:`~airflow.providers.amazon.aws.operators.emr.EmrAddStepsOperator`
    (same arguments, the step ids as return value, the ``job_flow_id`` XCom and the same extra
    links) that never adds its steps twice: a retry or a reschedule after a worker shutdown waits
    for the steps already added, and a user's stop cancels them.

    **How it works:** ``AddJobFlowSteps`` has no idempotency token (``submission_is_idempotent`` is
    False): every step's ``Name`` gets the suffix `` [ar:<token key>:<i>/<n>]`` and :meth:`find_job`
    finds the steps again with ``ListSteps`` when an earlier try may have added them without
    recording their ids, and before every resubmission. The external id is the list of step ids.
    The steps are one job: ``COMPLETED`` once all completed, active while any is pending or running,
    else failed with the first step that did not complete (:func:`combined_step_state`);
    :meth:`describe_failure` names that step and its reason. ``AddJobFlowSteps`` goes through a
    client with botocore's retries turned off. Cancel is ``CancelSteps`` (``SEND_INTERRUPT``).

    **Deferrable:** with ``deferrable=True`` the step ids are recorded, then the task defers to
    :class:`~airflow_resumable.providers.amazon.triggers.ResumableEmrAddStepsTrigger` (the stock
    ``EmrAddStepsTrigger``, stock ``waiter_delay`` and ``waiter_max_attempts``, no timeout, as in
    stock), which frees the worker slot while the steps run; as in stock it waits whatever
    ``wait_for_completion`` says. It fires once no step is pending or running (the stock waiter
    fires at the first failed step). Its ``on_kill`` cancels the steps after a user's stop, never
    after a clear. ``execute_complete`` re-enters the engine: the step ids, or
    :class:`~airflow_resumable.exceptions.JobFailedError`; a lost trigger, a trigger timeout or
    error fails the try and the next one reconnects.

    **Limitations:** the marker is visible in the step names (user names are cut to fit EMR's 256
    characters); with ``ActionOnFailure=CONTINUE`` the task fails only once the later steps ended;
    ``waiter_max_attempts`` bounds the status reads of a try's wait, as in stock. As in the
    stock operator, ``wait_for_completion`` defaults to False: the task then ends once the steps
    exist (still added only once); set it to True to wait.

    :param waiter_delay: seconds between status calls of the resumable poll loop, or of the
        trigger when deferred.

    The other arguments are those of ``EmrAddStepsOperator`` and of
    :class:`~airflow_resumable.mixin.ResumableJobMixin`.

    .. versionadded:: 0.1.0
    """

    #: Key of the bare list of step ids in ``task_state_store``. Never rename: in-flight retries read it.
    external_id_key = "emr_step_ids"
    submission_is_idempotent: ClassVar[bool] = False
    service_name: ClassVar[str] = _SERVICE
    visibility_key: ClassVar[str] = "emr_steps"

    @property
    def resumable_poll_interval(self) -> float:
        """Seconds between status calls: the stock ``waiter_delay``."""
        return float(self.waiter_delay)

    @resumable_poll_interval.setter
    def resumable_poll_interval(self, seconds: float) -> None:
        self.waiter_delay = seconds  # type: ignore[assignment]  # stock annotates int, takes float

    def max_status_reads(self) -> tuple[int, str] | None:
        """``waiter_max_attempts`` bounds the wait, as the stock ``step_complete`` waiter."""
        return status_read_bound(self.waiter_max_attempts, "waiter_max_attempts")

    # ------------------------------------------------------------------ spec and per-try set-up
    def _steps(self) -> list[dict[str, Any]]:
        """The rendered steps, parsed as the stock operator parses them, and checked."""
        steps: Any = self.steps
        if isinstance(steps, str):
            try:
                steps = ast.literal_eval(steps)
            except (ValueError, SyntaxError) as err:
                raise InvalidJobSpecError(
                    f"{_SERVICE}: argument 'steps' is a string that is not a list: {err}"
                ) from err
        if not isinstance(steps, list) or not steps:
            raise InvalidJobSpecError(f"{_SERVICE}: argument 'steps' must be a non-empty list of step dicts.")
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                raise InvalidJobSpecError(
                    f"{_SERVICE}: steps[{index}] must be a dict, got a {type(step).__name__}."
                )
            require_text(step.get("Name"), f"steps[{index}]['Name']", _SERVICE)
            if not isinstance(step.get("HadoopJarStep"), dict) or not step["HadoopJarStep"]:
                raise InvalidJobSpecError(
                    f"{_SERVICE}: steps[{index}]['HadoopJarStep'] must be a non-empty dict."
                )
        return steps

    def job_request(self) -> dict[str, Any]:
        if self.job_flow_id is not None:
            require_text(self.job_flow_id, "job_flow_id", _SERVICE)
        else:
            require_text(self.job_flow_name, "job_flow_name", _SERVICE)
        return {
            "jobFlowId": self.job_flow_id,
            "jobFlowName": self.job_flow_name,
            "clusterStates": self.cluster_states,
            "steps": self._steps(),
            "executionRoleArn": self.execution_role_arn,
        }

    def prepare_try(self, context: Context) -> None:
        """Resolve the cluster, push the ``job_flow_id`` XCom and the two links, as the stock execute."""
        cluster_id = self.job_flow_id or self._retrying(
            self.hook.get_cluster_id_by_name,
            str(self.job_flow_name),
            self.cluster_states,
            what="find cluster",
        )
        if not cluster_id:
            raise JobNotFoundError(
                f"No EMR cluster found for name {self.job_flow_name!r} in {self.cluster_states}."
            )
        self._cluster_id = str(cluster_id)
        if self.do_xcom_push:
            context["ti"].xcom_push(key="job_flow_id", value=self._cluster_id)
        region, partition = self.hook.conn_region_name, self.hook.conn_partition
        EmrClusterLink.persist(
            context=context,
            operator=self,
            region_name=region,
            aws_partition=partition,
            job_flow_id=self._cluster_id,
        )
        EmrLogsLink.persist(
            context=context,
            operator=self,
            region_name=region,
            aws_partition=partition,
            job_flow_id=self.job_flow_id,
            log_uri=self._retrying(
                get_log_uri, emr_client=self.hook.conn, job_flow_id=self._cluster_id, what="describe_cluster"
            ),
        )

    # ------------------------------------------------------------------ the mixin's hooks
    def submit_job(self, context: Context) -> JsonValue:
        """``AddJobFlowSteps`` with marked step names, without botocore retries; returns the step ids."""
        steps = self._steps()
        if self.openlineage_inject_parent_job_info:
            steps = self._inject_openlineage_parent_job_information(steps, context)
        steps = copy.deepcopy(steps)
        if self.submission_token:
            for index, step in enumerate(steps):
                marker = step_marker(self.submission_token, index, len(steps))
                step["Name"] = str(step["Name"])[: _MAX_NAME - len(marker)] + marker
        extra = {"ExecutionRoleArn": self.execution_role_arn} if self.execution_role_arn else {}
        self.log.info("Adding steps", job_flow_id=self._cluster_id, steps=len(steps))
        response = no_retry_client(self.hook).add_job_flow_steps(
            JobFlowId=self._cluster_id, Steps=steps, **extra
        )
        step_ids: list[JsonValue] = [str(step_id) for step_id in response["StepIds"]]
        return step_ids

    def find_job(self, token: str, context: Context) -> JsonValue:
        """The ids of the steps marked with ``token``, in submission order, or None if there are none."""
        key, found, count, seen = token_key(token), {}, 0, 0
        paginator = self.hook.conn.get_paginator("list_steps")
        for page in paginator.paginate(ClusterId=self._cluster_id):
            for step in page.get("Steps") or []:
                match = _MARKER.search(str(step.get("Name", "")))
                if match and match.group(1) == key:
                    found[int(match.group(2))] = str(step["Id"])
                    count = int(match.group(3))
            # Bounded by steps, not pages: the service may page smaller than its documented 50.
            seen += len(page.get("Steps") or [])
            if seen >= _FIND_MAX_STEPS:
                break
        if not found:
            return None
        if sorted(found) != list(range(1, count + 1)):
            raise ResumableError(
                f"EMR cluster {self._cluster_id} has {len(found)} of the {count} steps an earlier try "
                f"added (token {token}); refusing to add them again. Check the cluster's steps, then "
                f"clear the task."
            )
        step_ids: list[JsonValue] = [found[index] for index in range(1, count + 1)]
        return step_ids

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        """:func:`combined_step_state` of the steps (``ListSteps``, ten ids per call, every page)."""
        ids = self._ids(external_id)
        steps: dict[str, dict[str, Any]] = {}
        paginator = self.hook.conn.get_paginator("list_steps")
        for start in range(0, len(ids), _LIST_STEPS_IDS):
            chunk = ids[start : start + _LIST_STEPS_IDS]
            for page in paginator.paginate(ClusterId=self._cluster_id, StepIds=chunk):
                for step in page.get("Steps") or []:
                    steps[str(step["Id"])] = step
        missing = [step_id for step_id in ids if step_id not in steps]
        if missing:
            raise JobNotFoundError(f"EMR cluster {self._cluster_id} has no steps {missing}.")
        self._last_steps = [steps[step_id] for step_id in ids]
        return combined_step_state([str(step["Status"]["State"]) for step in self._last_steps])

    def is_job_active(self, status: str) -> bool:
        """Anything but COMPLETED, CANCELLED, FAILED and INTERRUPTED."""
        return status not in STEP_TERMINAL

    def is_job_succeeded(self, status: str) -> bool:
        """Only COMPLETED (every step)."""
        return status == "COMPLETED"

    def get_job_result(self, external_id: JsonValue, context: Context) -> list[str]:
        """The step ids, as the stock ``execute`` returns them."""
        return self._ids(external_id)

    def cancel_job(self, external_id: JsonValue, context: Context) -> None:
        """``CancelSteps`` for every step of the job (EMR leaves ended steps as they are)."""
        self.hook.conn.cancel_steps(
            ClusterId=self._cluster_id,
            StepIds=self._ids(external_id),
            StepCancellationOption="SEND_INTERRUPT",
        )

    def cancel_recipe(self, context: Context) -> CancelRecipe | None:
        """``CancelSteps`` through the same connection, for the custodian (once the cluster is known)."""
        cluster_id = self.__dict__.get("_cluster_id")
        if cluster_id is None:
            return None
        return "aws_emr_steps", {
            "cluster_id": cluster_id,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }

    def describe_failure(self, external_id: JsonValue, status: str, context: Context) -> str:
        """Which step did not complete, and why."""
        for step in self.__dict__.get("_last_steps") or []:
            state = step["Status"]["State"]
            if state != "COMPLETED" and state in STEP_TERMINAL:
                status_info = step["Status"]
                reason = (status_info.get("FailureDetails") or {}).get("Message") or (
                    status_info.get("StateChangeReason") or {}
                ).get("Message")
                return f"step {step['Id']} ({step.get('Name')}) ended {state}" + (
                    f": {reason}" if reason else ""
                )
        return ""

    def is_valid_external_id(self, value: JsonValue) -> bool:
        """A non-empty list of step ids (non-blank strings)."""
        return (
            isinstance(value, list) and bool(value) and all(isinstance(i, str) and i.strip() for i in value)
        )

    def adopt_job(self, external_id: JsonValue, context: Context) -> None:
        """Nothing per job: the stock XCom and links name the cluster and were pushed by ``prepare_try``."""

    # ------------------------------------------------------------------ deferral
    def job_trigger(self, external_id: JsonValue, resumable: dict[str, Any]) -> ResumableEmrAddStepsTrigger:
        """The stock deferral's ``EmrAddStepsTrigger`` arguments."""
        return ResumableEmrAddStepsTrigger(
            job_flow_id=self._cluster_id,
            step_ids=self._ids(external_id),
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            waiter_max_attempts=self.waiter_max_attempts,
            waiter_delay=self.waiter_delay,
            **resumable,
        )

    def event_external_id(self, event: dict[str, Any]) -> JsonValue:
        value = event.get("value")
        step_ids: list[JsonValue] | None = (
            [str(step_id) for step_id in value] if isinstance(value, list) else None
        )
        return step_ids

    def resume_after_trigger(self, external_id: JsonValue, event: dict[str, Any], context: Context) -> None:
        """The cluster of the steps: from the event; else resolved (and XComs pushed) as in execute."""
        cluster_id = event.get("job_flow_id")
        if isinstance(cluster_id, str) and cluster_id:
            self._cluster_id = cluster_id
        else:
            self.prepare_try(context)

    @staticmethod
    def _ids(external_id: JsonValue) -> list[str]:
        if not isinstance(external_id, list):
            raise JobNotFoundError(f"{external_id!r} is not a list of EMR step ids")
        return [str(step_id) for step_id in external_id]
