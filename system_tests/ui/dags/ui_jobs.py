"""
The "Resumable jobs" page's system test DAGs: three resumable Databricks runs side by side.

``completed`` finishes, ``checkpointed`` is checkpointed by a worker shutdown and resumes,
``orphan_risk`` is marked failed by a user while ``cancel_on_user_stop=False`` (its run keeps
going with nobody watching). ``ui_jobs_other`` exists so that a second user can be allowed one
DAG and not the other.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator


def run_spec(task: str) -> dict[str, Any]:
    """A one-task run named after the DAG run's ``run_name`` and the Airflow task."""
    return {
        "run_name": "{{ dag_run.conf.get('run_name', 'ui') }}-" + task,
        "tasks": [
            {
                "task_key": "etl",
                "existing_cluster_id": "0000-000000-fake",
                "notebook_task": {"notebook_path": f"/Shared/{task}"},
            }
        ],
    }


COMMON: dict[str, Any] = {
    "polling_period_seconds": 1,
    "resume_delay": timedelta(seconds=5),
    "databricks_retry_args": {"stop": stop_after_attempt(2), "wait": wait_fixed(0.2)},
}

with DAG("ui_jobs", schedule=None, catchup=False, tags=["airflow_resumable"]):
    for task_id in ("completed", "checkpointed"):
        ResumableDatabricksSubmitRunOperator(task_id=task_id, json=run_spec(task_id), **COMMON)
    ResumableDatabricksSubmitRunOperator(
        task_id="orphan_risk", json=run_spec("orphan_risk"), cancel_on_user_stop=False, **COMMON
    )

with DAG("ui_jobs_other", schedule=None, catchup=False, tags=["airflow_resumable"]):
    ResumableDatabricksSubmitRunOperator(task_id="other", json=run_spec("other"), **COMMON)
