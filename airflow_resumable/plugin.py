"""
The provider's Airflow plugin: it starts the custodian (:mod:`airflow_resumable.custodian`) and
serves the "Resumable jobs" page (:mod:`airflow_resumable.ui`) from the API server.

Registered through the ``airflow.plugins`` entry point (which Airflow always loads; a provider
info's ``plugins`` only with lazy provider discovery off), so installing the package is the only
step: ``airflow plugins`` lists ``airflow_resumable``. The listener acts
only in the processes that hold the metadata database (the scheduler, the API server); in a task
process it does nothing.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl
from airflow.sdk.plugins_manager import AirflowPlugin

from airflow_resumable.record import TaskIdentity

__all__ = ["CustodianListener", "ResumablePlugin"]


class CustodianListener:
    """Listener hooks that feed the custodian: user stops at once, the whole ledger periodically."""

    def __init__(self) -> None:
        self._custodian: Any = None

    def custodian(self) -> Any:
        """The process's one custodian (created on first use)."""
        if self._custodian is None:
            from airflow_resumable._config import setting
            from airflow_resumable.custodian import Custodian

            self._custodian = Custodian(interval=float(setting("custodian_interval_seconds")))
        return self._custodian

    @hookimpl
    def on_starting(self, component: Any) -> None:
        """In the scheduler: sweep the whole ledger every ``custodian_interval_seconds``."""
        if not _in_server(component, "airflow.jobs.job", "Job") or self.custodian().interval <= 0:
            return
        # Airflow 3.3 calls this from Job.__init__, before the runner sets job_type: decide at
        # the sweep thread's first tick (the thread of a triggerer or dag-processor then ends).
        self.custodian().start(should_run=lambda: getattr(component, "job_type", None) == "SchedulerJob")

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        """Stop the sweeps and cancels with the component, within seconds whatever a cloud does."""
        if self._custodian is not None:
            self._custodian.stop(timeout=2.0)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        """Marked failed by a user, or failed for good by the scheduler (a crash, retries exhausted)."""
        self._react(task_instance)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        """Marked success by a user."""
        self._react(task_instance)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        """Marked skipped by a user."""
        self._react(task_instance)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        """A DAG run marked failed (its unfinished task instances were failed or skipped)."""
        if _in_server(dag_run, "airflow.models.dagrun", "DagRun"):
            self.custodian().soon_for_run(str(dag_run.dag_id), str(dag_run.run_id))

    def _react(self, task_instance: Any) -> None:
        if not _in_server(task_instance, "airflow.models.taskinstance", "TaskInstance"):
            return  # a task process: the try itself handles its own end
        identity = TaskIdentity(
            str(task_instance.dag_id),
            str(task_instance.run_id),
            str(task_instance.task_id),
            -1 if task_instance.map_index is None else int(task_instance.map_index),
        )
        from airflow_resumable._custody import StopMeaning, stop_meaning

        state = getattr(task_instance, "state", None)
        state_name = None if state is None else str(getattr(state, "value", state))
        if stop_meaning(state_name) is not StopMeaning.USER_STOP:
            return  # a failed try that will be retried (up_for_retry): its job is the next try's
        try_id = getattr(task_instance, "id", None)
        self.custodian().soon({identity: None if try_id is None else str(try_id)})


def _in_server(value: Any, module: str, name: str) -> bool:
    """True for the metadata database's own model objects (scheduler, API server), not a task's."""
    import importlib

    try:
        model = getattr(importlib.import_module(module), name)
    except Exception:
        return False
    return isinstance(value, model)


#: The page in the UI: Browse > Resumable jobs, and a tab of every task instance. The ``href`` is
#: the app's own path; the UI fills in ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}``, ``{MAP_INDEX}``.
#: The ``url_route`` values are part of bookmarked UI addresses: never rename them.
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {
        "name": "Resumable jobs",
        "href": "/resumable/jobs",
        "destination": "nav",
        "category": "browse",
        "url_route": "resumable-jobs",
    },
    {
        "name": "Resumable job",
        "href": "/resumable/jobs?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}",
        "destination": "task_instance",
        "url_route": "resumable-job",
    },
]

_APPS: list[dict[str, Any]] = []


class ResumablePlugin(AirflowPlugin):
    """airflow_resumable's plugin: the custodian's listener and the "Resumable jobs" page."""

    name = "airflow_resumable"
    listeners = [CustodianListener()]
    external_views = EXTERNAL_VIEWS

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # lazy; Airflow only reads it
        """
        The page's app, built on first access: only the API server asks, so task processes,
        which load plugins too, never import FastAPI for it.
        """
        if not _APPS:
            from airflow_resumable.ui import URL_PREFIX, create_app

            _APPS.append({"app": create_app(), "url_prefix": URL_PREFIX, "name": "Resumable jobs"})
        return _APPS
