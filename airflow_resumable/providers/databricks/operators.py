"""
Resumable drop-ins for ``DatabricksSubmitRunOperator`` and ``DatabricksRunNowOperator``.

Swap the class name; keep every argument::

    from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator

    ResumableDatabricksSubmitRunOperator(task_id="etl", json={...}, polling_period_seconds=60)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from airflow.providers.databricks.operators.databricks import (
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from airflow.providers.databricks.utils.databricks import normalise_json_content

from airflow_resumable.exceptions import JobFailedError
from airflow_resumable.providers.databricks import _status
from airflow_resumable.providers.databricks._base import DatabricksRunMixin, as_run_id
from airflow_resumable.providers.databricks._spec import check_run_now_spec, check_submit_run_spec

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue

__all__ = ["ResumableDatabricksRunNowOperator", "ResumableDatabricksSubmitRunOperator"]


class ResumableDatabricksSubmitRunOperator(DatabricksRunMixin, DatabricksSubmitRunOperator):
    """
    ``DatabricksSubmitRunOperator`` that keeps its run through worker crashes, deploys and retries.

    **Purpose:** a one-line swap for the stock operator. A worker shutdown no longer cancels the
    run; a retry or a reschedule reconnects to it; a crash right after runs/submit creates no
    duplicate; a retry after a failed run gets a *new* run even with a fixed ``idempotency_token``
    (apache/airflow#64828).

    **How it works:** before runs/submit, the intent (generation, token, spec hash) is recorded in
    ``task_state_store``; the token is sent as ``idempotency_token``, so a resubmission of the same
    intent returns the same run. The run id is then recorded (also under the stock key
    ``databricks_run_id``, so ids the stock operator stored are adopted and the other way round).
    SIGTERM while the server still holds the try running is a checkpoint: the run keeps going and
    the try ends ``up_for_reschedule``. A user's stop, ``execution_timeout`` or a final failure
    cancels the run. With ``deferrable=True`` the run id is recorded before deferring; a retry
    after a lost trigger reconnects and defers again. XComs (``run_id``, ``run_page_url``; plus
    ``job_id`` when deferrable) and the "See Databricks Job Run" link are the stock ones, pushed on
    every path (fresh, reconnect, already succeeded). The spec is validated before any HTTP call.

    **Limitations:** a user ``idempotency_token`` is combined with ours (see
    :func:`~._spec.databricks_idempotency_token`): keep it stable across tries. A run whose history
    expired is submitted again. ``SUCCESS_WITH_FAILURES`` fails the task, as in stock. A key given
    both in ``json`` and as a named argument: the named one is sent, as in stock (an error in
    0.1.0 to 0.4.0). OpenLineage injection and DAG params are not part of the spec hash (they are
    fixed within a DAG run or change per try).

    Takes every argument of ``DatabricksSubmitRunOperator``; ``polling_period_seconds`` paces the
    resumable poll loop. Plus:

    :param cloud_retry: retries of Databricks calls that failed transiently (429, 5xx, lost
        connections) after the hook's own ``databricks_retry_*`` retries gave up.
    :param state_store_retry: retries of task-state-store reads and writes.
    :param resume_delay: how long after a worker-shutdown checkpoint the task resumes.
    :param max_resumes: consecutive checkpoints allowed per run; the next shutdown fails the task.
    :param cancel_on_user_stop: cancel the run when a user stops the task (marks it failed or
        success, clears it, deletes the DAG run).
    :param cancel_on_timeout: cancel the run when ``execution_timeout`` is reached.
    :param cancel_on_failure: cancel a possibly active run when the task fails for good.
    :param on_checkpoint_callback: called with the context plus a ``checkpoint`` entry whenever a
        worker shutdown becomes a checkpoint.
    :param stop_classification_timeout: seconds to wait for the API server's answer after a signal.

    .. versionadded:: 0.1.0
    """

    #: The stock operator's key: adopting its ids depends on it. Never rename.
    external_id_key = "databricks_run_id"
    _endpoint = "runs/submit"

    def _checked_payload(self) -> dict[str, Any]:
        payload = check_submit_run_spec(self._operator_label(), self.json, self._get_named_json_parameters())
        payload.setdefault("run_name", self.task_id)
        return payload

    def _payload_for_submit(self, context: Context) -> dict[str, Any]:
        return dict(self._prepare_submit_json(context))

    def _send(self, payload: dict[str, Any]) -> int:
        return int(self._hook.submit_run(payload))


class ResumableDatabricksRunNowOperator(DatabricksRunMixin, DatabricksRunNowOperator):
    """
    ``DatabricksRunNowOperator`` that keeps its run through worker crashes, deploys and retries.

    **Purpose:** a one-line swap for the stock operator, with the same guarantees as
    :class:`ResumableDatabricksSubmitRunOperator`: no cancel on worker shutdown, reconnect on
    retry, no duplicate run after a crash, a new run after a failed one.

    **How it works:** as for :class:`ResumableDatabricksSubmitRunOperator`, with run-now's
    per-job ``idempotency_token`` and the stock key ``databricks_run_now_id``. ``repair_run``
    repairs a failed run once per try, synchronously or deferred; a run under repair counts as
    active, so a retry reconnects to it. ``cancel_previous_runs`` cancels the job's active runs
    only before a *new* submission, never before resubmitting an intent whose run may already
    exist (that would cancel our own run).

    **Limitations:** as for :class:`ResumableDatabricksSubmitRunOperator`. A crash after the run
    failed and before the repair was requested leads the next try to a fresh run, as in stock.
    ``job_name`` is resolved to a job id at submission time (an API call), so only its syntax is
    checked up front.

    Takes every argument of ``DatabricksRunNowOperator``; ``polling_period_seconds`` paces the
    resumable poll loop. Plus:

    :param cloud_retry: retries of Databricks calls that failed transiently (429, 5xx, lost
        connections) after the hook's own ``databricks_retry_*`` retries gave up.
    :param state_store_retry: retries of task-state-store reads and writes.
    :param resume_delay: how long after a worker-shutdown checkpoint the task resumes.
    :param max_resumes: consecutive checkpoints allowed per run; the next shutdown fails the task.
    :param cancel_on_user_stop: cancel the run when a user stops the task (marks it failed or
        success, clears it, deletes the DAG run).
    :param cancel_on_timeout: cancel the run when ``execution_timeout`` is reached.
    :param cancel_on_failure: cancel a possibly active run when the task fails for good.
    :param on_checkpoint_callback: called with the context plus a ``checkpoint`` entry whenever a
        worker shutdown becomes a checkpoint.
    :param stop_classification_timeout: seconds to wait for the API server's answer after a signal.

    .. versionadded:: 0.1.0
    """

    #: The stock operator's key: adopting its ids depends on it. Never rename.
    external_id_key = "databricks_run_now_id"
    _endpoint = "run-now"

    def _checked_payload(self) -> dict[str, Any]:
        return check_run_now_spec(self._operator_label(), self.json, self._get_named_json_parameters())

    def _payload_for_submit(self, context: Context) -> dict[str, Any]:
        payload = dict(self._build_run_now_payload(context))
        if self.cancel_previous_runs:
            self._cancel_previous_runs(payload["job_id"])
        self._merged_json = payload
        return dict(payload)

    def _send(self, payload: dict[str, Any]) -> int:
        return int(self._hook.run_now(payload))

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        """Wait as the base does; with ``repair_run``, repair a failed run once and wait again."""
        try:
            super().poll_until_complete(external_id, context)
        except JobFailedError:
            if not self._repair_after_failure(as_run_id(external_id), context, event=None):
                raise
            self.resume_waiting()
            super().poll_until_complete(external_id, context)

    def _cancel_previous_runs(self, job_id: Any) -> None:
        token = self.submission_token
        reused = {self.__dict__.get("_inherited_token"), self.__dict__.get("_cancelled_previous_for")}
        if token is not None and token in reused:
            self.log.info(
                "Not cancelling previous runs: this submission repeats an earlier one, whose run "
                "cancel_previous_runs would cancel",
                job_id=job_id,
                token=token,
            )
            return
        self._hook.cancel_all_runs(job_id)
        self._cancelled_previous_for = token

    def _repair_after_failure(self, run_id: int, context: Context, *, event: dict[str, Any] | None) -> bool:
        allowed = bool(event.get("repair_run")) if event is not None else bool(self.repair_run)
        if not allowed:
            return False
        run = self._cached_run(run_id)
        message = _status.failure_message(run)
        settings = self.databricks_repair_reason_new_settings
        reason = next((reason for reason in settings if reason in message), None)
        if settings and reason is None:
            return False
        self.repair_run = False  # once per try; a new trigger carries repair_run=False
        job_id = run.get("job_id")
        if reason is not None and job_id is not None:
            new_settings = cast("dict[str, Any]", normalise_json_content(settings[reason]))
            self._hook.update_job(job_id=job_id, json=new_settings)
        repair: dict[str, Any] = {"run_id": run_id, "rerun_all_failed_tasks": True}
        latest_repair_id = self._hook.get_latest_repair_id(run_id)
        if latest_repair_id is not None:
            repair["latest_repair_id"] = latest_repair_id
        parameters = self._inject_run_now_job_parameters(self._get_merged_json(), context)
        if "job_parameters" in parameters:
            repair["job_parameters"] = parameters["job_parameters"]
        self.log.warning("Repairing the failed run (repair_run=True)", run_id=run_id, reason=message)
        self._hook.repair_run(repair)
        return True
