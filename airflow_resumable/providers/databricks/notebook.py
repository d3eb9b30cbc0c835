"""
Resumable drop-in for ``DatabricksNotebookOperator``.

Swap the class name; keep every argument::

    from airflow_resumable.providers.databricks.notebook import ResumableDatabricksNotebookOperator

    ResumableDatabricksNotebookOperator(
        task_id="etl", notebook_path="/Shared/etl", source="WORKSPACE", existing_cluster_id="0101-abc"
    )

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.databricks.operators.databricks import (
    DatabricksNotebookOperator,
    DatabricksTaskBaseOperator,
)
from airflow.providers.databricks.utils.retry import validate_deferrable_databricks_retry_args

from airflow_resumable.exceptions import InvalidJobSpecError
from airflow_resumable.providers.databricks._base import (
    XCOM_RUN_ID_KEY,
    XCOM_RUN_PAGE_URL_KEY,
    DatabricksRunMixin,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

__all__ = ["ResumableDatabricksNotebookOperator"]

#: ``notebook_task.source`` values Databricks takes (empty: Databricks picks WORKSPACE or GIT).
NOTEBOOK_SOURCES = ("WORKSPACE", "GIT")


class ResumableDatabricksNotebookOperator(DatabricksRunMixin, DatabricksNotebookOperator):
    """
    ``DatabricksNotebookOperator`` that keeps its notebook run through worker crashes, deploys and retries.

    **Purpose:** a one-line swap for the stock operator, standalone (outside a
    ``DatabricksWorkflowTaskGroup``). A worker shutdown no longer cancels the notebook run; a retry
    or a reschedule reconnects to it; a crash right after runs/submit creates no duplicate; a
    retry after a failed run submits a new one.

    **How it works:** the stock operator's one-time run (``_get_run_json``: ``run_name`` = the
    ``databricks_task_key``, the ``notebook_task``, the cluster, the packages, ``timeout_seconds``
    from ``execution_timeout``) is sent to runs/submit with our token as ``idempotency_token``, so
    resubmitting the same intent returns the same run. Before that call the intent (generation,
    token, hash of that payload) is recorded in ``task_state_store``; the run id is then recorded,
    also under ``databricks_run_id`` (the stock operator's attribute name). The task waits on the
    submitted run itself, the way the stock operator does when Databricks-native retries are on;
    for a one-task run it ends when its task's run ends. SIGTERM while the server still holds the
    try running is a checkpoint: the run keeps going and the try ends ``up_for_reschedule``. A
    user's stop, ``execution_timeout`` or a final failure cancels the run (runs/cancel). XComs
    (``run_id``, ``run_page_url``) and the "See Databricks Job Run" link are the stock ones,
    pushed on every path. The arguments are validated before any HTTP call.

    **Deferrable:** ``deferrable=True`` records the run id, then defers to
    :class:`~airflow_resumable.providers.databricks.triggers.ResumableDatabricksExecutionTrigger`
    (the stock trigger, whose ``on_kill`` cancels only on a user's stop); a retry after a lost
    trigger reconnects and defers again. The trigger follows the submitted run, not its task run.

    **Inside a DatabricksWorkflowTaskGroup** the task submits nothing: the group's launch task
    runs the whole workflow and this task watches its own task in that run. There the class
    behaves exactly like the stock operator (``execute``, ``execute_complete`` and ``on_kill``
    are the stock ones; no record, no checkpoint) and logs a warning once per try.

    **Limitations:** Databricks counts ``timeout_seconds`` (the stock operator sets it to
    ``execution_timeout``) from the run's start, so a run reconnected across tries may be timed
    out by Databricks although every try stayed within ``execution_timeout``. Stricter than
    stock: ``source`` must be ``WORKSPACE``, ``GIT`` or empty, and a spec the stock operator
    would reject at submit time (both or neither of ``new_cluster`` and ``existing_cluster_id``,
    ``execution_timeout`` under one second) fails with :class:`InvalidJobSpecError`, no retry.
    A run whose history expired is submitted again.

    Takes every argument of ``DatabricksNotebookOperator``; ``polling_period_seconds`` paces the
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

    .. versionadded:: 0.2.0
    """

    #: The stock operator stores no id; this is its attribute's name, shared with the stock
    #: submit-run operator's key. Renaming it breaks in-flight retries. Never rename.
    external_id_key = "databricks_run_id"
    _endpoint = "runs/submit"

    # The shared Databricks half calls the run ``run_id`` (the stock submit-run attribute); the
    # stock notebook operator calls it ``databricks_run_id``. One value, both names.
    @property
    def run_id(self) -> int | None:
        """The submitted run's id: the stock ``databricks_run_id``."""
        return self.databricks_run_id

    @run_id.setter
    def run_id(self, value: int | None) -> None:
        self.databricks_run_id = value

    # ------------------------------------------------------------------ entry points
    def execute(self, context: Context) -> Any:
        """Standalone: validate, then run the resumable engine. In a workflow group: the stock execute."""
        if self._in_workflow():
            self.log.warning(
                "Inside a DatabricksWorkflowTaskGroup the workflow's launch task owns the run: this task "
                "runs as the stock DatabricksNotebookOperator (no record, no checkpoint)",
                task_id=self.task_id,
            )
            return DatabricksTaskBaseOperator.execute(self, context)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after the trigger fired (see :meth:`DatabricksRunMixin.execute_complete`).

        :param context: the task context.
        :param event: the trigger's event.
        """
        if self._in_workflow():
            return DatabricksTaskBaseOperator.execute_complete(self, context, event or {})
        return super().execute_complete(context, event)

    def on_kill(self) -> None:
        """Record the stop for the poll loop (standalone); the stock ``on_kill`` in a workflow group."""
        if self._in_workflow():
            DatabricksTaskBaseOperator.on_kill(self)
            return
        super().on_kill()

    # ------------------------------------------------------------------ DatabricksRunMixin
    def _checked_payload(self) -> dict[str, Any]:
        """The stock run JSON, after checking every argument that goes into it (no HTTP)."""
        label = self._operator_label()
        _check_notebook_arguments(label, self)
        try:
            payload = self._get_run_json()
        except ValueError as err:  # the stock checks, should a future version add one
            raise _invalid(label, "new_cluster/existing_cluster_id", str(err).rstrip(".")) from None
        return payload

    def _payload_for_submit(self, context: Context) -> dict[str, Any]:
        return copy.deepcopy(self._get_run_json())

    def _send(self, payload: dict[str, Any]) -> int:
        run_id = int(self._hook.submit_run(payload))
        self.log.info("Submitted the notebook run", run_id=run_id)
        return run_id

    def _push_run_xcoms(self, run_id: int, context: Context) -> None:
        """``run_id`` and ``run_page_url``, as the stock ``_launch_job`` (never ``job_id``)."""
        self._xcoms_pushed_for = run_id
        if not self.do_xcom_push:
            return
        ti = context["ti"]
        ti.xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        url = self._run_field(run_id, "run_page_url")
        ti.xcom_push(key=XCOM_RUN_PAGE_URL_KEY, value=url)
        self.log.info("Check the notebook run in Databricks", run_id=run_id, run_page_url=url)

    def _in_workflow(self) -> bool:
        return self._databricks_workflow_task_group is not None


def _check_notebook_arguments(label: str, op: ResumableDatabricksNotebookOperator) -> None:
    """
    Check the rendered arguments of a standalone notebook run.

    :raises InvalidJobSpecError: naming the argument at fault.
    """
    if not isinstance(op.notebook_path, str) or not op.notebook_path.strip():
        raise _invalid(label, "notebook_path", "must be a non-empty string (the notebook's path)")
    if op.source not in (None, "", *NOTEBOOK_SOURCES):
        raise _invalid(label, "source", f"must be one of {', '.join(NOTEBOOK_SOURCES)} or empty")
    if not isinstance(op.notebook_params, Mapping):
        raise _invalid(
            label, "notebook_params", f"must be an object, got {type(op.notebook_params).__name__}"
        )
    if any(not isinstance(key, str) for key in op.notebook_params):
        raise _invalid(label, "notebook_params", "keys must be strings")
    if not isinstance(op.notebook_packages, list) or not all(
        isinstance(package, Mapping) for package in op.notebook_packages
    ):
        raise _invalid(label, "notebook_packages", "must be a list of objects (one per library)")
    _check_cluster(label, op)
    _check_retry_settings(label, op)
    timeout = op.execution_timeout
    if isinstance(timeout, timedelta) and int(timeout.total_seconds()) < 1:
        raise _invalid(
            label,
            "execution_timeout",
            "must be at least one second (it is the run's timeout_seconds) or None",
        )
    if op.deferrable:
        try:
            validate_deferrable_databricks_retry_args(op.databricks_retry_args, owner=label)
        except ValueError:
            raise _invalid(
                label,
                "databricks_retry_args",
                "cannot reach the trigger (deferrable=True): it must serialize",
            ) from None
    for name in ("notebook_params", "notebook_packages", "new_cluster"):
        try:
            json.dumps(getattr(op, name), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise _invalid(label, name, f"holds a value JSON cannot carry ({err})") from None


def _check_cluster(label: str, op: ResumableDatabricksNotebookOperator) -> None:
    if op.new_cluster and op.existing_cluster_id:
        raise _invalid(label, "new_cluster/existing_cluster_id", "are both set: pass one")
    if not op.new_cluster and not op.existing_cluster_id:
        hint = (
            " (job_cluster_key only applies inside a DatabricksWorkflowTaskGroup)"
            if op.job_cluster_key
            else ""
        )
        raise _invalid(label, "new_cluster/existing_cluster_id", f"are both missing: pass one{hint}")
    if not isinstance(op.new_cluster, Mapping):
        raise _invalid(label, "new_cluster", f"must be an object, got {type(op.new_cluster).__name__}")
    if not isinstance(op.existing_cluster_id, str):
        got = type(op.existing_cluster_id).__name__
        raise _invalid(label, "existing_cluster_id", f"must be a string, got {got}")


def _check_retry_settings(label: str, op: ResumableDatabricksNotebookOperator) -> None:
    """The Databricks-native retry fields, as the stock ``_retry_settings`` converts them."""
    for name, minimum in (("max_retries", -1), ("min_retry_interval_millis", 0)):
        value = getattr(op, name)
        if value is not None and not _is_int_like(value, minimum):
            raise _invalid(
                label, name, f"must be an integer >= {minimum}, got {type(value).__name__} {value!r}"
            )
    if op.retry_on_timeout is not None and not isinstance(op.retry_on_timeout, (bool, str)):
        got = type(op.retry_on_timeout).__name__
        raise _invalid(label, "retry_on_timeout", f"must be a boolean (or its string), got {got}")


def _is_int_like(value: Any, minimum: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= minimum
    if isinstance(value, str):
        try:
            return int(value.strip()) >= minimum
        except ValueError:
            return False
    return False


def _invalid(label: str, argument: str, problem: str) -> InvalidJobSpecError:
    return InvalidJobSpecError(
        f"{label}: argument {argument} {problem}. Nothing was sent to Databricks; fix the argument "
        f"and clear the task."
    )
