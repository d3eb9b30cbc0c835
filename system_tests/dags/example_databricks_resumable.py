"""
Resumable Databricks runs under worker disruption: the DAGs the system tests run.

The task swaps ``DatabricksSubmitRunOperator`` for ``ResumableDatabricksSubmitRunOperator``;
nothing else changes. ``run_name`` comes from the DAG run's conf so that each test can find its
runs in the fake Databricks' ledger.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator
from airflow_resumable.retry import RetryPolicy

RUN_SPEC = {
    "run_name": "{{ dag_run.conf.get('run_name', 'nightly-etl') }}",
    "tasks": [
        {
            "task_key": "etl",
            "existing_cluster_id": "0000-000000-fake",
            "notebook_task": {"notebook_path": "/Shared/etl"},
        }
    ],
}
FAST_HOOK_RETRIES = {"stop": stop_after_attempt(2), "wait": wait_fixed(0.2)}

# [START howto_resumable_databricks_submit_run]
with DAG("resumable_databricks", schedule=None, catchup=False, tags=["airflow_resumable"]) as dag:
    ResumableDatabricksSubmitRunOperator(
        task_id="submit_run",
        json=RUN_SPEC,
        polling_period_seconds=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
        # resumable arguments: a worker shutdown resumes after 5 s, at most 3 times in a row
        resume_delay=timedelta(seconds=5),
        max_resumes=3,
        databricks_retry_args=FAST_HOOK_RETRIES,
    )
# [END howto_resumable_databricks_submit_run]

with DAG("resumable_databricks_timeout", schedule=None, catchup=False, tags=["airflow_resumable"]):
    ResumableDatabricksSubmitRunOperator(
        task_id="submit_run",
        json=RUN_SPEC,
        polling_period_seconds=1,
        execution_timeout=timedelta(seconds=6),
        retries=0,
        databricks_retry_args=FAST_HOOK_RETRIES,
    )

with DAG("resumable_databricks_no_retries", schedule=None, catchup=False, tags=["airflow_resumable"]):
    ResumableDatabricksSubmitRunOperator(
        task_id="submit_run",
        json=RUN_SPEC,
        polling_period_seconds=1,
        retries=0,
        cloud_retry=RetryPolicy(attempts=2, wait=wait_fixed(0.2)),
        databricks_retry_args=FAST_HOOK_RETRIES,
    )
