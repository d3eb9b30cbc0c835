"""
A mass shutdown: one worker running 32 resumable tasks gets one shutdown.

``make benchmark`` (last) or ``.venv/bin/python benchmarks/mass_shutdown.py`` runs the DAG
``benchmarks/dags/mass_shutdown_dags.py`` (16 mapped Databricks submit-runs and 16 mapped Batch
jobs, against the fake Databricks and the moto lifecycle controller) on two topologies:

- ``celery warm``: CeleryExecutor on PostgreSQL and Redis, one ``airflow celery worker`` with 32
  pool processes and the bridge (``airflow_resumable.celery.CELERY_CONFIG``). Once every task
  polls its job, the worker gets SIGTERM (Celery's warm shutdown); when it has exited, a new
  worker starts.
- ``local sigterm``: LocalExecutor on PostgreSQL (32 worker slots); every task's supervisor gets
  SIGTERM at once, as when a node drains.

Figures, from the shutdown signal: seconds until every task instance is ``up_for_reschedule``
(checkpointed), how many stops the tasks could not classify (``"kind":"unknown"`` in their logs,
the ``unclassified_stop`` metric), remote jobs created (must be 32: no duplicate), seconds until
the Celery worker exited, and seconds until every job was polled again (resumed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing.aws import MotoProcess, aws_connection_env, provision_batch
from airflow_resumable.testing.cluster import AirflowCluster, CeleryWorker, wait_until
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env
from airflow_resumable.testing.services import fresh_postgres_database, missing_services, service_urls

if TYPE_CHECKING:
    from collections.abc import Iterator

DAGS = Path(__file__).parent / "dags"
DAG_ID = "mass_shutdown"
TASKS = ("databricks", "batch")
PER_OPERATOR = 16
BRIDGE = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_resumable.celery.CELERY_CONFIG"}


@dataclass
class Row:
    """One topology's figures."""

    topology: str
    tasks: int
    checkpointed_s: float
    unclassified: int
    checkpoints_logged: int
    jobs: int
    worker_exit_s: float | None
    resumed_s: float


class Clouds:
    """The two fakes: the jobs a DAG run created, their status reads, and finishing them."""

    def __init__(self, databricks: FakeDatabricksProcess, moto: MotoProcess) -> None:
        self.databricks, self.moto = databricks.client, moto.client

    def jobs(self, label: str) -> dict[str, tuple[str, str]]:
        """Job name -> (cloud, id), for every job whose submit call created it."""
        found = {
            str(e.body.get("run_name")): ("databricks", str(e.run_id))
            for e in self.databricks.ledger()
            if e.endpoint == "runs/submit" and e.created and label in str(e.body.get("run_name"))
        }
        for e in self.moto.ledger():
            if e.operation == "SubmitJob" and e.created and label in str(e.request.get("jobName")):
                found[str(e.request.get("jobName"))] = ("aws", e.created[0])
        return found

    def created(self, label: str) -> int:
        """Submit calls that created a job (a duplicate counts)."""
        runs = [e for e in self.databricks.ledger() if e.endpoint == "runs/submit" and e.created]
        batch = [e for e in self.moto.ledger() if e.operation == "SubmitJob" and e.created]
        return sum(label in str(e.body.get("run_name")) for e in runs) + sum(
            label in str(e.request.get("jobName")) for e in batch
        )

    def last_reads(self) -> dict[str, float]:
        """Job id -> ``time.time()`` of its latest status read."""
        reads: dict[str, float] = {}
        for e in self.databricks.ledger():
            if e.endpoint == "runs/get" and e.run_id is not None:
                reads[str(e.run_id)] = max(reads.get(str(e.run_id), 0.0), e.timestamp)
        for e in self.moto.ledger():
            if e.operation == "DescribeJobs":
                for job_id in e.job_ids:
                    reads[job_id] = max(reads.get(job_id, 0.0), e.at)
        return reads

    def finish(self, jobs: dict[str, tuple[str, str]]) -> None:
        """Let every job end successfully."""
        for cloud, job_id in jobs.values():
            if cloud == "databricks":
                self.databricks.finish_run(int(job_id), "SUCCESS")
            else:
                self.moto.finish(job_id, succeeded=True)


def _all_read_since(clouds: Clouds, jobs: dict[str, tuple[str, str]], since: float) -> bool:
    reads = clouds.last_reads()
    return all(reads.get(job_id, 0.0) > since for _, job_id in jobs.values())


def _states(cluster: AirflowCluster, run_id: str) -> list[str]:
    found = cluster.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return [str(ti["state"]) for ti in found["task_instances"] if ti["task_id"] in TASKS]


def _log_count(cluster: AirflowCluster, run_id: str, *texts: str) -> int:
    """Lines of the DAG run's task logs that contain every one of ``texts``."""
    folder = cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    return sum(
        all(text in line for text in texts)
        for path in folder.rglob("attempt=*.log")
        for line in path.read_text(errors="replace").splitlines()
    )


def _polling(cluster: AirflowCluster, clouds: Clouds, label: str, began: float) -> dict[str, tuple[str, str]]:
    """Wait until all 32 jobs exist and every one was read; return them."""

    def ready() -> dict[str, tuple[str, str]] | None:
        jobs = clouds.jobs(label)
        if len(jobs) == len(TASKS) * PER_OPERATOR and _all_read_since(clouds, jobs, began):
            return jobs
        return None

    return wait_until(ready, timeout=600, what="32 tasks polling their jobs", step=1.0, check=cluster.check)


def _wait_checkpointed(cluster: AirflowCluster, run_id: str, since: float) -> float:
    def all_checkpointed() -> bool:
        states = _states(cluster, run_id)
        return len(states) == len(TASKS) * PER_OPERATOR and set(states) == {"up_for_reschedule"}

    wait_until(all_checkpointed, timeout=120, what="every task checkpointed", step=0.2, check=cluster.check)
    return time.monotonic() - since


@contextlib.contextmanager
def _deployment(
    executor: str, home: Path, clouds_env: dict[str, str], database_url: str
) -> Iterator[AirflowCluster]:
    workers = (
        [CeleryWorker("celery-worker", concurrency=32, env=BRIDGE)] if executor == "CeleryExecutor" else []
    )
    cluster = AirflowCluster(
        DAGS,
        home=home,
        env=clouds_env,
        executor_parallelism=64,
        database_url=database_url,
        executor=executor,
        broker_url=service_urls().redis if executor == "CeleryExecutor" else None,
        celery_workers=workers,
        dag_ids={DAG_ID},
        start_timeout=300,
    )
    with cluster:
        yield cluster


def run_topology(topology: str, clouds: Clouds, clouds_env: dict[str, str], conf: dict[str, Any]) -> Row:
    """Run the DAG once on ``topology``, shut the worker(s) down, measure, finish every job."""
    executor = "CeleryExecutor" if topology == "celery warm" else "LocalExecutor"
    label = f"m{uuid.uuid4().hex[:6]}"
    home = Path(tempfile.mkdtemp(prefix="mass-shutdown-"))
    with (
        fresh_postgres_database(service_urls().postgres, prefix="airflow_bench") as database_url,
        _deployment(executor, home, clouds_env, database_url) as cluster,
    ):
        cluster.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        began = time.time()
        run_id = cluster.trigger(DAG_ID, {**conf, "label": label})
        jobs = _polling(cluster, clouds, label, began)
        worker_exit_s: float | None = None
        if executor == "CeleryExecutor":
            signalled_at, signalled_wall = time.monotonic(), time.time()
            with ThreadPoolExecutor(1) as pool:
                stop = pool.submit(cluster.shut_down_celery_worker, "celery-worker", signal.SIGTERM, 120)
                checkpointed_s = _wait_checkpointed(cluster, run_id, signalled_at)
                worker_exit_s = stop.result().stopped_s
            cluster.start_celery_worker("celery-worker", timeout=300)
        else:
            supervisors = [
                cluster.task_processes(DAG_ID, task, run_id, map_index=index, timeout=120).supervisor_pid
                for task in TASKS
                for index in range(PER_OPERATOR)
            ]
            signalled_at, signalled_wall = time.monotonic(), time.time()
            for pid in supervisors:
                os.kill(pid, signal.SIGTERM)
            checkpointed_s = _wait_checkpointed(cluster, run_id, signalled_at)
        wait_until(
            lambda: _all_read_since(clouds, jobs, signalled_wall + 1),
            timeout=600,
            what="every job polled again",
            step=1.0,
            check=cluster.check,
        )
        resumed_s = time.monotonic() - signalled_at
        row = Row(
            topology,
            len(jobs),
            round(checkpointed_s, 1),
            _log_count(cluster, run_id, '"event":"Stop signal classified"', '"kind":"unknown"'),
            _log_count(cluster, run_id, '"event":"Checkpoint: worker shutdown'),
            clouds.created(label),
            None if worker_exit_s is None else round(worker_exit_s, 1),
            round(resumed_s, 1),
        )
        clouds.finish(jobs)
        with contextlib.suppress(TimeoutError):
            cluster.wait_for_dag_run(DAG_ID, run_id, timeout=180)
    shutil.rmtree(home, ignore_errors=True)  # kept when the run failed: its logs say why
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--topologies",
        nargs="+",
        default=["celery warm", "local sigterm"],
        choices=["celery warm", "local sigterm"],
    )
    args = parser.parse_args(argv)
    if missing := missing_services("postgres", "redis"):
        print(f"mass_shutdown: needs {', '.join(missing)} (docs/deployment.md); skipped")
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="mass-clouds-") as logs,
        FakeDatabricksProcess(lifecycle="manual", log_path=Path(logs) / "databricks.log") as databricks,
        MotoProcess(lifecycle="manual", log_path=Path(logs) / "moto.log") as moto,
    ):
        batch = provision_batch(moto.url, name="mass")
        conf = {"job_queue": batch.job_queue, "job_definition": batch.job_definition}
        clouds_env = {
            **databricks_connection_env(databricks.url),
            **aws_connection_env(moto.url, max_attempts=1),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
        }
        rows = [run_topology(t, Clouds(databricks, moto), clouds_env, conf) for t in args.topologies]
    print("\nMass shutdown: one worker, 32 resumable tasks (16 Databricks submit-runs, 16 Batch jobs)\n")
    print(
        "| topology | tasks | all checkpointed (s) | unclassified stops | checkpoints logged "
        "| jobs created | worker exited (s) | all resumed (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        exit_s = "—" if r.worker_exit_s is None else f"{r.worker_exit_s}"
        print(
            f"| {r.topology} | {r.tasks} | {r.checkpointed_s} | {r.unclassified} | {r.checkpoints_logged} "
            f"| {r.jobs} | {exit_s} | {r.resumed_s} |"
        )
    ok = all(r.jobs == len(TASKS) * PER_OPERATOR and r.unclassified == 0 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
