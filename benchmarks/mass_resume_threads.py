"""
The mass resume without Airflow's processes: N operator tries in N threads, released together.

``benchmarks/mass_resume.py`` runs this by default (``--airflow`` runs the same on a real
deployment). What is real: the operator classes (``ResumableBatchOperator``,
``ResumableDatabricksSubmitRunOperator``) and the mixin (decision, poll loop, stop
classification, checkpoint, record seal, patience with throttling), their hooks and clients
(botocore, the Databricks hook over ``requests``) over HTTP to the fakes in their own processes
(the moto lifecycle controller, the fake Databricks) with the fakes' realism throttle. What is
not: Airflow's task runner, scheduler and API server. The task state store and the ledger of jobs
in flight are the in-memory ones of :mod:`airflow_resumable.testing.state` (the same interface);
the worker shutdown is the call Airflow's SIGTERM handler makes (``on_kill``) instead of a
signal; a resumed try is a new operator instance (as in a new task process), and all N start at
one barrier, so their first calls leave at the same instant: more at once than a 2-core
LocalExecutor can start N task processes.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from airflow.sdk.exceptions import AirflowRescheduleException
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.ledger import LEDGER_CONTEXT_KEY
from airflow_resumable.providers.amazon import ResumableBatchOperator
from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.aws import aws_connection_env
from airflow_resumable.testing.cluster import wait_until
from airflow_resumable.testing.databricks import databricks_connection_env
from airflow_resumable.testing.state import InMemoryJobLedger, InMemoryTaskStateStore, XComTaskInstance

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.definitions.context import Context

    from airflow_resumable.testing.aws import MotoControl
    from airflow_resumable.testing.databricks import FakeDatabricksControl
    from airflow_resumable.testing.realism import Realism

DAG_ID = "mass_resume"
#: What both operators share: the mass shutdown benchmark's settings (resume 5 s after a checkpoint).
COMMON: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    "resume_delay": timedelta(seconds=5),
    "cloud_retry": RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
}


class Service(Protocol):
    """One fake cloud as the benchmark sees it: operators, the ledger's figures, the throttle."""

    name: str
    operator_class: str
    #: The task id of its operator (in the threads and in the DAG).
    task_id: str
    #: What the DAG run's conf needs for this service's task (``--airflow``).
    dag_conf: dict[str, str]
    #: The connection's environment variables.
    env: dict[str, str]

    def operator(self, index: int, label: str, poll_interval: float) -> BaseOperator:
        """The task's operator (a new instance per try, as in a new task process)."""

    def created(self, label: str) -> list[str]:
        """Ids of the jobs that submit calls of this run created (a duplicate counts)."""

    def first_reads(self, job_ids: set[str], since: float) -> dict[str, float]:
        """Job id -> ``time.time()`` of its first successful status read after ``since``."""

    def calls(self, since: float) -> tuple[int, int]:
        """(API calls, calls refused by the throttle) after ``since``."""

    def finish(self, job_id: str) -> None:
        """End the job successfully."""

    def throttle(self, realism: Realism) -> None:
        """Switch the fake's realism on."""


class BatchService:
    """AWS Batch on the moto lifecycle controller (``DescribeJobs`` reads the status)."""

    name, operator_class, task_id = "AWS Batch", "ResumableBatchOperator", "batch"

    def __init__(self, moto: MotoControl, conf: dict[str, str]) -> None:
        self.moto, self.conf, self.dag_conf = moto, conf, conf
        self.env = aws_connection_env(moto.url, max_attempts=1)  # botocore: one attempt
        os.environ.update(self.env)

    def operator(self, index: int, label: str, poll_interval: float) -> BaseOperator:
        return ResumableBatchOperator(
            task_id=self.task_id,
            job_name=f"resume-{label}-{index}",
            job_queue=self.conf["job_queue"],
            job_definition=self.conf["job_definition"],
            poll_interval=poll_interval,
            **COMMON,
        )

    def created(self, label: str) -> list[str]:
        return [
            job_id
            for e in self.moto.ledger()
            if e.operation == "SubmitJob" and label in str(e.request.get("jobName"))
            for job_id in e.created
        ]

    def first_reads(self, job_ids: set[str], since: float) -> dict[str, float]:
        first: dict[str, float] = {}
        for e in self.moto.ledger():
            if e.operation == "DescribeJobs" and e.status == 200 and e.at > since:
                for job_id in e.job_ids:
                    if job_id in job_ids and job_id not in first:
                        first[job_id] = e.at
        return first

    def calls(self, since: float) -> tuple[int, int]:
        entries = [e for e in self.moto.ledger() if e.at > since]
        return len(entries), sum(1 for e in entries if is_throttled(e))

    def finish(self, job_id: str) -> None:
        self.moto.finish(job_id, succeeded=True)

    def throttle(self, realism: Realism) -> None:
        set_realism = getattr(self.moto, "set_realism", None)
        if set_realism is None:
            raise SystemExit("mass_resume: this moto controller has no realism (set_realism) yet")
        set_realism(realism)


class DatabricksService:
    """Databricks Jobs on the fake Databricks (``runs/get`` reads the status)."""

    name, operator_class, task_id = "Databricks Jobs", "ResumableDatabricksSubmitRunOperator", "databricks"

    def __init__(self, fake: FakeDatabricksControl, url: str) -> None:
        self.fake = fake
        self.dag_conf: dict[str, str] = {}
        self.env = databricks_connection_env(url)
        os.environ.update(self.env)

    def operator(self, index: int, label: str, poll_interval: float) -> BaseOperator:
        task = {
            "task_key": "etl",
            "existing_cluster_id": "0000-000000-fake",
            "notebook_task": {"notebook_path": "/x"},
        }
        return ResumableDatabricksSubmitRunOperator(
            task_id=self.task_id,
            json={"run_name": f"resume-{label}-{index}", "tasks": [task]},
            polling_period_seconds=poll_interval,
            # One attempt per call, as botocore's above: every 429 reaches the operator.
            databricks_retry_args={"stop": stop_after_attempt(1), "wait": wait_fixed(0)},
            **COMMON,
        )

    def created(self, label: str) -> list[str]:
        return [
            str(e.run_id)
            for e in self.fake.ledger()
            if e.endpoint == "runs/submit" and e.created and label in str(e.body.get("run_name"))
        ]

    def first_reads(self, job_ids: set[str], since: float) -> dict[str, float]:
        first: dict[str, float] = {}
        for e in self.fake.ledger():
            run = str(e.run_id)
            read = e.endpoint == "runs/get" and e.status == 200 and e.timestamp > since
            if read and run in job_ids and run not in first:
                first[run] = e.timestamp
        return first

    def calls(self, since: float) -> tuple[int, int]:
        entries = [e for e in self.fake.ledger() if e.timestamp > since]
        return len(entries), sum(1 for e in entries if e.throttled)

    def finish(self, job_id: str) -> None:
        self.fake.finish_run(int(job_id), "SUCCESS")

    def throttle(self, realism: Realism) -> None:
        self.fake.set_realism(realism)


@dataclass
class ThreadResult:
    """
    One service's figures. ``first_read_s`` and ``reconnected_s``: from the barrier that releases
    the resumed tries to the first and the last job's first successful status read;
    ``finished_s``: from the jobs' end to the last try's return.
    """

    service: str
    operator_class: str
    tasks: int
    checkpointed: int
    succeeded: int
    failed_tries: list[str]
    calls: int
    throttled_answers: int
    jobs_created: int
    first_read_s: float
    reconnected_s: float
    finished_s: float

    @property
    def duplicates(self) -> int:
        """Jobs created beyond one per task."""
        return max(0, self.jobs_created - self.tasks)


def _context(store: InMemoryTaskStateStore, ledger: InMemoryJobLedger, task_id: str, index: int) -> Context:
    """Map index ``index`` of ``task_id``: its own store, the run's shared ledger."""
    ti = XComTaskInstance(DAG_ID, "manual__mass_resume", task_id, map_index=index, try_number=1, max_tries=2)
    return cast("Context", {"ti": ti, "task_state_store": store, LEDGER_CONTEXT_KEY: ledger})


def run_threads(service: Service, realism: Realism, *, tasks: int, poll_interval: float) -> ThreadResult:
    """
    First tries submit ``tasks`` jobs and poll them; then every try is stopped as a worker
    shutdown stops it (checkpoint), the fake's throttle goes on, and ``tasks`` new tries start at
    one barrier. Once every job was read by a resumed try the jobs end; then the tries return.
    """
    # What every Airflow component shares: the records are sealed with it (without a key, a record
    # is written unsealed and the next try believes only the bare id beside it).
    os.environ.setdefault("AIRFLOW__API__SECRET_KEY", secrets.token_hex(16))
    label = f"t{uuid.uuid4().hex[:6]}"
    stores = [InMemoryTaskStateStore() for _ in range(tasks)]
    ledger = InMemoryJobLedger()
    firsts = [service.operator(i, label, poll_interval) for i in range(tasks)]
    task_id = firsts[0].task_id

    def polled() -> list[str] | None:
        jobs = service.created(label)
        return jobs if len(jobs) >= tasks and len(service.first_reads(set(jobs), 0.0)) >= tasks else None

    with ThreadPoolExecutor(tasks) as pool:
        contexts = [_context(stores[i], ledger, task_id, i) for i in range(tasks)]
        tries = [pool.submit(op.execute, contexts[i]) for i, op in enumerate(firsts)]
        job_ids = set(wait_until(polled, timeout=300, what="every job polled", step=0.5))
        for op in firsts:
            op.on_kill()  # what Airflow's SIGTERM handler calls: the poll loop checkpoints
        wait(tries, timeout=120)
    checkpointed = sum(isinstance(t.exception(), AirflowRescheduleException) for t in tries)
    if realism.throttle_rate is not None:
        service.throttle(realism)

    resumed = [service.operator(i, label, poll_interval) for i in range(tasks)]  # new task processes
    barrier = threading.Barrier(tasks + 1)

    def resume(index: int) -> Any:
        context = _context(stores[index], ledger, task_id, index)
        barrier.wait()
        return resumed[index].execute(context)

    with ThreadPoolExecutor(tasks) as pool:
        second: list[Future[Any]] = [pool.submit(resume, i) for i in range(tasks)]
        barrier.wait()
        released = time.time()
        reads = wait_until(
            lambda: r if len(r := service.first_reads(job_ids, released)) == len(job_ids) else None,
            timeout=900,
            what="every job read by a resumed try",
            step=0.5,
        )
        for job_id in job_ids:
            service.finish(job_id)
        ended = time.time()
        wait(second, timeout=900)
        finished = time.time()
    calls, throttled = service.calls(released)
    failed = [f"{i}: {t.exception()!r}" for i, t in enumerate(second) if not t.done() or t.exception()]
    return ThreadResult(
        service=service.name,
        operator_class=service.operator_class,
        tasks=tasks,
        checkpointed=checkpointed,
        succeeded=tasks - len(failed),
        failed_tries=failed,
        calls=calls,
        throttled_answers=throttled,
        jobs_created=len(service.created(label)),
        first_read_s=round(min(reads.values()) - released, 2),
        reconnected_s=round(max(reads.values()) - released, 1),
        finished_s=round(finished - ended, 1),
    )


def is_throttled(entry: Any) -> bool:
    """An AWS call the controller refused for its rate: recorded not handled, fault ``throttled``."""
    return not entry.handled and entry.fault == "throttled"
