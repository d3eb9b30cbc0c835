"""
The DAG of ``benchmarks/mass_resume.py --airflow``: resumable Batch tasks that resume at once.

``mass_resume`` maps ``ResumableBatchOperator`` over ``dag_run.conf["tasks"]`` jobs (at most 64).
Each job's name carries the DAG run's ``label`` and the map index, so the benchmark finds every
job in the controller's ledger; the jobs run until the benchmark finishes them. A worker shutdown
checkpoints every task; all resume ``resume_delay`` (5 s) later, against an API that the
benchmark throttles.

``poll_interval`` is the stock default (30 s): 64 tasks then poll about 2 calls a second in the
steady state, inside the throttled rate, so only the resume itself is more than the API allows.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task
from tenacity import wait_fixed

from airflow_resumable.providers.amazon import ResumableBatchOperator
from airflow_resumable.retry import RetryPolicy

CONF = "{{{{ dag_run.conf['{}'] }}}}"
#: The most mapped task instances a run may ask for.
TASKS = 64


@task
def job_names(**context: Any) -> list[str]:
    """One job name per mapped task: ``resume-<label>-<index>``."""
    conf = context["dag_run"].conf
    return [f"resume-{conf['label']}-{index}" for index in range(min(int(conf["tasks"]), TASKS))]


with DAG("mass_resume", schedule=None, catchup=False, max_active_tasks=TASKS, tags=["benchmark"]):
    ResumableBatchOperator.partial(
        task_id="batch",
        job_queue=CONF.format("job_queue"),
        job_definition=CONF.format("job_definition"),
        poll_interval=30,
        # A retry would be a failed try: the benchmark counts them and fails if there is one.
        retries=2,
        retry_delay=timedelta(seconds=1),
        # ``mass_resume.py --resume-delay`` (the deployment's environment, read when parsed).
        resume_delay=timedelta(seconds=float(os.environ.get("MASS_RESUME_DELAY", "5"))),
        cloud_retry=RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
    ).expand(job_name=job_names())
