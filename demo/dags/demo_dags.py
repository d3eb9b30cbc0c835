"""
The demo's DAGs: one Databricks run, one AWS Batch job and one EMR Serverless job run, waited for
side by side; once with the stock provider operators, once with the resumable ones.

Everything that names the remote resources comes from the DAG run's conf, which the demo fills in
after it provisioned them in moto.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG

from airflow_resumable.providers.amazon import ResumableBatchOperator, ResumableEmrServerlessStartJobOperator
from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator

CONF = "{{{{ dag_run.conf['{}'] }}}}"
NAME = CONF.format("run_name")
ROLE_ARN = "arn:aws:iam::123456789012:role/airflow-resumable-demo"
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=2)}

DATABRICKS: dict[str, Any] = {
    "task_id": "databricks_run",
    "json": {
        "run_name": NAME,
        "tasks": [
            {
                "task_key": "etl",
                "existing_cluster_id": "0000-000000-demo",
                "notebook_task": {"notebook_path": "/Shared/nightly_etl"},
            }
        ],
    },
    "polling_period_seconds": 1,
}
BATCH: dict[str, Any] = {
    "task_id": "batch_job",
    "job_name": f"{NAME}-batch",
    "job_queue": CONF.format("job_queue"),
    "job_definition": CONF.format("job_definition"),
    "poll_interval": 1,
}
EMR_SERVERLESS: dict[str, Any] = {
    "task_id": "emr_serverless_job",
    "name": f"{NAME}-emr",
    "application_id": CONF.format("application_id"),
    "execution_role_arn": ROLE_ARN,
    "job_driver": {"sparkSubmit": {"entryPoint": "s3://demo/etl.py"}},
    "waiter_delay": 1,
    "waiter_max_attempts": 600,  # the stock default (25) would end a long job on its own
}

with DAG("demo_stock", schedule=None, catchup=False, tags=["demo"]):
    DatabricksSubmitRunOperator(**DATABRICKS, **RETRIES)
    BatchOperator(**BATCH, **RETRIES)
    EmrServerlessStartJobOperator(**EMR_SERVERLESS, **RETRIES)

with DAG("demo_resumable", schedule=None, catchup=False, tags=["demo"]):
    resumable: dict[str, Any] = {"resume_delay": timedelta(seconds=5), **RETRIES}
    ResumableDatabricksSubmitRunOperator(**DATABRICKS, **resumable)
    ResumableBatchOperator(**BATCH, **resumable)
    ResumableEmrServerlessStartJobOperator(**EMR_SERVERLESS, **resumable)
