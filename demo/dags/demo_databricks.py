"""The demo's DAGs: the same Databricks run, once with the stock operator and once resumable."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG

from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator

SPEC = {
    "run_name": "{{ dag_run.conf['run_name'] }}",
    "tasks": [
        {
            "task_key": "etl",
            "existing_cluster_id": "0000-000000-demo",
            "notebook_task": {"notebook_path": "/Shared/nightly_etl"},
        }
    ],
}
COMMON = {"json": SPEC, "polling_period_seconds": 1, "retries": 2, "retry_delay": timedelta(seconds=2)}

with DAG("demo_stock", schedule=None, catchup=False, tags=["demo"]):
    DatabricksSubmitRunOperator(task_id="databricks_run", **COMMON)

with DAG("demo_resumable", schedule=None, catchup=False, tags=["demo"]):
    ResumableDatabricksSubmitRunOperator(
        task_id="databricks_run", resume_delay=timedelta(seconds=5), **COMMON
    )
