"""
The DAG of ``benchmarks/mass_shutdown.py``: 32 resumable tasks on one worker, two operators.

``mass_shutdown`` maps ``ResumableDatabricksSubmitRunOperator`` over 16 runs and
``ResumableBatchOperator`` over 16 jobs. Each job's name carries the DAG run's ``label`` and the
map index, so the benchmark finds every job in the fake clouds' ledgers; the jobs run until the
benchmark finishes them. A worker shutdown checkpoints every task; each resumes 5 s later.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.amazon import ResumableBatchOperator
from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator
from airflow_resumable.retry import RetryPolicy

CONF = "{{{{ dag_run.conf['{}'] }}}}"
LABEL = CONF.format("label")
#: Tasks per operator (two operators: 32 in all).
PER_OPERATOR = 16
COMMON: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    "resume_delay": timedelta(seconds=5),
    "cloud_retry": RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
}
_NOTEBOOK = {"task_key": "etl", "existing_cluster_id": "0000-000000-fake"}

with DAG("mass_shutdown", schedule=None, catchup=False, max_active_tasks=64, tags=["benchmark"]):
    ResumableDatabricksSubmitRunOperator.partial(
        task_id="databricks",
        polling_period_seconds=2,
        databricks_retry_args={"stop": stop_after_attempt(2), "wait": wait_fixed(0.2)},
        **COMMON,
    ).expand(
        json=[
            {
                "run_name": f"mass-{LABEL}-d{index}",
                "tasks": [_NOTEBOOK | {"notebook_task": {"notebook_path": "/x"}}],
            }
            for index in range(PER_OPERATOR)
        ]
    )
    ResumableBatchOperator.partial(
        task_id="batch",
        job_queue=CONF.format("job_queue"),
        job_definition=CONF.format("job_definition"),
        poll_interval=2,
        **COMMON,
    ).expand(job_name=[f"mass-{LABEL}-b{index}" for index in range(PER_OPERATOR)])
