"""
The DAG of ``benchmarks/mass_resume.py --airflow``: resumable tasks that resume at the same moment.

``mass_resume`` maps ``ResumableBatchOperator`` over ``dag_run.conf["batch_tasks"]`` jobs and
``ResumableDatabricksSubmitRunOperator`` over ``dag_run.conf["databricks_tasks"]`` runs (at most
64 each; 0: that task is skipped). Each job's name carries the DAG run's ``label`` and the map
index, so the benchmark finds every job in the fake's ledger; the jobs run until the benchmark
finishes them. A worker shutdown checkpoints every task; all resume ``resume_delay`` later,
against an API that the benchmark throttles.

The poll interval is the stock default (30 s): 64 tasks then poll about 2 calls a second once
resumed, inside the throttled rate, so only the resume itself is more than the API allows.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.amazon import ResumableBatchOperator
from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator
from airflow_resumable.retry import RetryPolicy

CONF = "{{{{ dag_run.conf['{}'] }}}}"
#: The most mapped task instances a run may ask for, per operator.
TASKS = 64
_NOTEBOOK = {
    "task_key": "etl",
    "existing_cluster_id": "0000-000000-fake",
    "notebook_task": {"notebook_path": "/x"},
}


def _names(conf: dict[str, Any], kind: str) -> list[str]:
    count = min(int(conf.get(f"{kind}_tasks", 0)), TASKS)
    return [f"resume-{conf['label']}-{index}" for index in range(count)]


@task
def batch_names(**context: Any) -> list[str]:
    """One job name per mapped Batch task: ``resume-<label>-<index>``."""
    return _names(context["dag_run"].conf, "batch")


@task
def run_specs(**context: Any) -> list[dict[str, Any]]:
    """One ``runs/submit`` body per mapped Databricks task (run name ``resume-<label>-<index>``)."""
    return [
        {"run_name": name, "tasks": [_NOTEBOOK]} for name in _names(context["dag_run"].conf, "databricks")
    ]


COMMON: dict[str, Any] = {
    # A retry would be a failed try: the benchmark counts them and fails if there is one.
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    # ``mass_resume.py --resume-delay`` (the deployment's environment, read when parsed).
    "resume_delay": timedelta(seconds=float(os.environ.get("MASS_RESUME_DELAY", "5"))),
    "cloud_retry": RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
}

with DAG("mass_resume", schedule=None, catchup=False, max_active_tasks=TASKS, tags=["benchmark"]):
    ResumableBatchOperator.partial(
        task_id="batch",
        job_queue=CONF.format("job_queue"),
        job_definition=CONF.format("job_definition"),
        poll_interval=30,
        **COMMON,
    ).expand(job_name=batch_names())
    ResumableDatabricksSubmitRunOperator.partial(
        task_id="databricks",
        polling_period_seconds=30,
        # One attempt per call, as botocore's (max_attempts=1): every 429 reaches the operator.
        databricks_retry_args={"stop": stop_after_attempt(1), "wait": wait_fixed(0)},
        **COMMON,
    ).expand(json=run_specs())
