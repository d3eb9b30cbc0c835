"""
The triggers of the resumable AWS operators in ``deferrable=True`` mode.

Each is the stock trigger of the stock operator's deferrable path (same waiter, same events, same
serialized arguments, run by the triggerer through ``aiobotocore``) with
:class:`~airflow_resumable.triggers.ResumableTriggerMixin` in front: its ``on_kill`` asks the API
server whether the user stopped the task or cleared it, and cancels the job only after a stop.
``serialize()`` names our class and adds the mixin's arguments.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.triggers.batch import BatchJobTrigger
from airflow.providers.amazon.aws.triggers.emr import (
    EmrAddStepsTrigger,
    EmrContainerTrigger,
    EmrServerlessStartJobTrigger,
)
from airflow.triggers.base import TriggerEvent
from botocore.exceptions import ClientError

from airflow_resumable.triggers import ResumableTriggerMixin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "ResumableBatchJobTrigger",
    "ResumableEmrAddStepsTrigger",
    "ResumableEmrContainerTrigger",
    "ResumableEmrServerlessStartJobTrigger",
]

#: The reason ``TerminateJob`` records on a Batch job stopped by a user (as the operator's).
TERMINATE_REASON = "Terminated by Airflow (airflow_resumable): the task was stopped"
#: A cancel call answered with this code found the run already ended (EMR's ``CancelJobRun``).
_ALREADY_ENDED_CODES = ("ValidationException",)


def _already_ended(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in _ALREADY_ENDED_CODES


class ResumableBatchJobTrigger(ResumableTriggerMixin, BatchJobTrigger):
    """
    The stock ``BatchJobTrigger``, plus an ``on_kill`` that terminates the job after a user's stop.

    **Purpose:** the stock trigger has no ``on_kill``: a job whose deferred task a user marks
    failed keeps running. Here a user's stop terminates it, a clear leaves it to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``TerminateJob`` (every active state).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight, deleted once the
        job is terminated (None: no ledger).

    The other arguments are those of ``BatchJobTrigger``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_id: str = str(self.serialized_fields["job_id"])

    async def cancel_job(self) -> None:
        """``TerminateJob``."""
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            await client.terminate_job(jobId=self.job_id, reason=TERMINATE_REASON)
        self.log.info("AWS Batch job %s terminated.", self.job_id)


class ResumableEmrServerlessStartJobTrigger(ResumableTriggerMixin, EmrServerlessStartJobTrigger):
    """
    The stock ``EmrServerlessStartJobTrigger``, whose ``on_kill`` cancels only after a user's stop.

    **Purpose:** the stock trigger cancels its run on every user action, a clear included, which
    cancels the very run the next try reconnects to.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``CancelJobRun``. The operator passes the stock ``cancel_on_kill=False``:
    the stock ``run()`` then never cancels on its own when it is cancelled (it would after a
    triggerer shutdown that meets a cleared task); ``on_kill`` alone decides. Every event carries
    ``job_details`` (the stock failure event has none), so the task knows which run to check.

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).

    The other arguments are those of ``EmrServerlessStartJobTrigger``.
    """

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The stock events, each with ``job_details``."""
        async for event in super().run():
            payload = event.payload
            if isinstance(payload, dict) and self.return_key not in payload:
                event = TriggerEvent({**payload, self.return_key: self.return_value})
            yield event

    async def cancel_job(self) -> None:
        """``CancelJobRun``; a run that already ended is left as it is."""
        hook = self.hook()
        try:
            async with await hook.get_async_conn() as client:
                await client.cancel_job_run(applicationId=self.application_id, jobRunId=self.job_id)
        except ClientError as err:
            if not _already_ended(err):
                raise
            self.log.info("EMR Serverless job run %s was not cancelled: %s", self.job_id, err)
            return
        self.log.info("EMR Serverless job run %s cancelled.", self.job_id)


class ResumableEmrContainerTrigger(ResumableTriggerMixin, EmrContainerTrigger):
    """
    The stock ``EmrContainerTrigger``, whose ``on_kill`` cancels only after a user's stop.

    **Purpose:** the stock trigger cancels its run on every user action, a clear included.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``CancelJobRun``. The stock ``cancel_on_kill`` is passed False by the
    operator (``on_kill`` alone decides, with ``cancel_on_user_stop``).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).

    The other arguments are those of ``EmrContainerTrigger``.
    """

    async def cancel_job(self) -> None:
        """``CancelJobRun``; a run that already ended is left as it is."""
        hook = self.hook()
        try:
            async with await hook.get_async_conn() as client:
                await client.cancel_job_run(virtualClusterId=self.virtual_cluster_id, id=self.job_id)
        except ClientError as err:
            if not _already_ended(err):
                raise
            self.log.info("EMR on EKS job run %s was not cancelled: %s", self.job_id, err)
            return
        self.log.info("EMR on EKS job run %s cancelled.", self.job_id)


#: Step states after which a step no longer runs.
_STEP_TERMINAL = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
#: The stock ``steps_wait_for_terminal`` waiter fails as soon as one step failed; the resumable
#: steps are one job, which ends once no step is pending or running (``combined_step_state``).
_STEPS_ENDED_ACCEPTORS = [
    {"matcher": "pathAll", "argument": "Steps[].Status.State", "expected": "COMPLETED", "state": "success"},
    {
        "matcher": "path",
        "argument": f"length(Steps[?!contains(`{json.dumps(_STEP_TERMINAL)}`, Status.State)]) == `0`",
        "expected": True,
        "state": "failure",
    },
]


class ResumableEmrAddStepsTrigger(ResumableTriggerMixin, EmrAddStepsTrigger):
    """
    The stock ``EmrAddStepsTrigger`` (the stock ``EmrAddStepsOperator``'s), plus an ``on_kill``.

    **Purpose:** the stock trigger has no ``on_kill``: steps whose deferred task a user marks
    failed keep running. Here a user's stop cancels them, a clear leaves them to the next try.

    **How it works:** see :class:`~airflow_resumable.triggers.ResumableTriggerMixin`;
    :meth:`cancel_job` is ``CancelSteps`` (``SEND_INTERRUPT``) for every step. The waiter's
    failure acceptors are replaced so that the trigger fires once *no* step is pending or
    running, not as soon as one failed: with ``ActionOnFailure=CONTINUE`` the later steps still
    run, and the task waits for them as it does when polling. Every event carries
    ``job_flow_id`` (the cluster the task then asks about the steps).

    :param cancel_on_user_stop: the operator's switch.
    :param stop_classification_timeout: seconds to wait for the server's answer.
    :param ledger_key: the task instance's entry in the ledger of jobs in flight (None: no ledger).

    The other arguments are those of ``EmrAddStepsTrigger``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_flow_id: str = str(self.serialized_fields["job_flow_id"])
        self.step_ids: list[str] = [str(step_id) for step_id in self.serialized_fields["step_ids"]]
        self.waiter_config_overrides = {"acceptors": _STEPS_ENDED_ACCEPTORS}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The stock events, each with ``job_flow_id``."""
        async for event in super().run():
            payload = event.payload
            if isinstance(payload, dict) and "job_flow_id" not in payload:
                event = TriggerEvent({**payload, "job_flow_id": self.job_flow_id})
            yield event

    async def cancel_job(self) -> None:
        """``CancelSteps`` for every step (EMR leaves ended steps as they are)."""
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            await client.cancel_steps(
                ClusterId=self.job_flow_id, StepIds=self.step_ids, StepCancellationOption="SEND_INTERRUPT"
            )
        self.log.info("EMR steps %s of cluster %s cancelled.", self.step_ids, self.job_flow_id)
