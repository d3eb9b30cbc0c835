"""
The mass resume on a real Airflow deployment (``benchmarks/mass_resume.py --airflow``).

The DAG ``benchmarks/dags/mass_resume_dags.py`` maps ``ResumableBatchOperator`` or
``ResumableDatabricksSubmitRunOperator`` over N jobs on LocalExecutor and PostgreSQL (N worker
slots), against the moto lifecycle controller or the fake Databricks in its own process. Once
every task polls its running job, the fake's throttle goes on and every task's supervisor gets
SIGTERM at once (a node drain): each try checkpoints (``up_for_reschedule``) and all resume
``resume_delay`` later, as fast as the scheduler and the machine start N task processes. Once
every job has been read by a resumed try, the benchmark ends the jobs and waits for the DAG run.
Retries used are Airflow's (tries beyond the first).

On 2 cores 64 task processes starting at once load Airflow heavily: the REST calls of this module
tolerate time-outs; on a machine busy with other work, tries can fail at start-up on Execution API
time-outs before any operator code runs (docs/benchmarks.md, *On a real deployment*).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

from airflow_resumable.testing.cluster import AirflowCluster, wait_until
from airflow_resumable.testing.services import fresh_postgres_database, service_urls

if TYPE_CHECKING:
    from mass_resume_threads import Service

    from airflow_resumable.testing.realism import Realism

DAGS = Path(__file__).parent / "dags"
DAG_ID = "mass_resume"


@dataclass
class AirflowResult:
    """One run's figures; seconds from the SIGTERM to the supervisors (``finished_s``: from the jobs' end)."""

    operator_class: str
    tasks: int
    succeeded: int
    checkpointed_s: float
    throttled_answers: int
    throttled_waits_logged: int
    reconnect_decisions: int
    jobs_created: int
    retries_used: int
    first_read_s: float
    reconnected_s: float
    finished_s: float
    calls: int
    home: Path

    @property
    def duplicates(self) -> int:
        """Jobs created beyond one per task."""
        return max(0, self.jobs_created - self.tasks)


def _tis(cluster: AirflowCluster, run_id: str, task_id: str) -> list[dict[str, Any]] | None:
    """The run's task instances; None when the API server did not answer in time (it is loaded)."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    try:
        found = cluster.api("GET", path, params={"limit": 200})
    except httpx.TimeoutException:
        return None
    return [ti for ti in found["task_instances"] if ti["task_id"] == task_id]


def _run_finished(cluster: AirflowCluster, run_id: str) -> bool:
    """Whether the DAG run ended; False also when the loaded API server did not answer in time."""
    try:
        return cluster.dag_run(DAG_ID, run_id)["state"] in ("success", "failed")
    except httpx.TimeoutException:
        return False


def _supervisors(cluster: AirflowCluster, run_id: str, task_id: str, tasks: int) -> list[int] | None:
    """
    The supervisor pid of every running task instance, found in one pass over the processes.

    A task process is titled ``airflow worker -- <ti id>``; its parent is its supervisor. One
    REST call for all (a call per task instance can wait 30 s on a loaded API server).
    """
    tis = _tis(cluster, run_id, task_id)
    if tis is None or len(tis) != tasks or any(ti["state"] != "running" for ti in tis):
        return None
    titles = {f"airflow worker -- {ti['id']}" for ti in tis}
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        title = " ".join(proc.info["cmdline"] or ()).strip()
        if title in titles:
            found[title] = int(proc.info["ppid"])
    return list(found.values()) if len(found) == tasks else None


def _log_count(cluster: AirflowCluster, run_id: str, *texts: str) -> int:
    """Lines of the DAG run's task logs that contain every one of ``texts``."""
    folder = cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    return sum(
        all(text in line for text in texts)
        for path in folder.rglob("attempt=*.log")
        for line in path.read_text(errors="replace").splitlines()
    )


def run_airflow(
    service: Service, realism: Realism, *, tasks: int, clouds_env: dict[str, str]
) -> AirflowResult:
    """Run the DAG with ``tasks`` mapped tasks of ``service``, drain, let all resume, end the jobs."""
    task_id = service.task_id
    label = f"r{uuid.uuid4().hex[:6]}"
    home = Path(tempfile.mkdtemp(prefix="mass-resume-"))
    with (
        fresh_postgres_database(service_urls().postgres, prefix="airflow_bench") as database_url,
        AirflowCluster(
            DAGS,
            home=home,
            env={**clouds_env, **service.env},
            executor_parallelism=tasks + 1,
            database_url=database_url,
            dag_ids={DAG_ID},
            start_timeout=300,
        ) as cluster,
    ):
        began = time.time()
        run_id = cluster.trigger(DAG_ID, {**service.dag_conf, "label": label, f"{task_id}_tasks": tasks})

        def all_polling() -> set[str] | None:
            jobs = set(service.created(label))
            return jobs if len(jobs) >= tasks and len(service.first_reads(jobs, began)) >= tasks else None

        job_ids = wait_until(
            all_polling, timeout=900, what="every task polling its job", step=1.0, check=cluster.check
        )
        supervisors = wait_until(
            lambda: _supervisors(cluster, run_id, task_id, tasks),
            timeout=300,
            what="the supervisors",
            check=cluster.check,
        )
        if realism.throttle_rate is not None:
            service.throttle(realism)
        signalled = time.time()
        for pid in supervisors:
            os.kill(pid, signal.SIGTERM)

        def all_checkpointed() -> bool:
            # Every try logged its checkpoint. (Not "every task instance up_for_reschedule": on a
            # stalled scheduler a quick task can be resumed, or failed, before the last one checkpoints.)
            return _log_count(cluster, run_id, '"event":"Checkpoint: worker shutdown') >= tasks

        wait_until(
            all_checkpointed, timeout=300, what="every task checkpointed", step=0.5, check=cluster.check
        )
        checkpointed = time.time()
        reads = wait_until(
            lambda: r if len(r := service.first_reads(job_ids, checkpointed)) == len(job_ids) else None,
            timeout=900,
            what="every job read by a resumed try",
            step=1.0,
            check=cluster.check,
        )
        for job_id in job_ids:
            service.finish(job_id)
        ended = time.time()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: _run_finished(cluster, run_id), timeout=900, what="the DAG run", step=1.0)
        finished = time.time()
        tis = wait_until(lambda: _tis(cluster, run_id, task_id), timeout=120, what="the task instances")
        calls, throttled = service.calls(signalled)
        result = AirflowResult(
            operator_class=service.operator_class,
            tasks=tasks,
            succeeded=sum(ti["state"] == "success" for ti in tis),
            checkpointed_s=round(checkpointed - signalled, 1),
            throttled_answers=throttled,
            throttled_waits_logged=_log_count(cluster, run_id, "The service throttled the call"),
            reconnect_decisions=_log_count(
                cluster, run_id, '"event":"Resume decision"', '"decision":"reconnect"'
            ),
            jobs_created=len(service.created(label)),
            retries_used=sum(max(0, int(ti["try_number"]) - 1) for ti in tis),
            first_read_s=round(min(reads.values()) - signalled, 1),
            reconnected_s=round(max(reads.values()) - signalled, 1),
            finished_s=round(finished - ended, 1),
            calls=calls,
            home=home,
        )
    return result


def report_airflow(result: AirflowResult, api: str) -> list[str]:
    """Print the figures; return the broken claims (empty when the run holds them all)."""
    print(f"\nMass resume on Airflow: {result.tasks} {result.operator_class} tasks, one node drain, {api}\n")
    rows = [
        ("tasks", result.tasks),
        ("task instances succeeded", result.succeeded),
        ("all checkpointed (s)", result.checkpointed_s),
        ("first job reconnected (s)", result.first_read_s),
        ("all reconnected (s)", result.reconnected_s),
        ("all finished after the jobs ended (s)", result.finished_s),
        ("API calls after the signal", result.calls),
        ("throttled answers served", result.throttled_answers),
        ("throttled calls waited out (task logs)", result.throttled_waits_logged),
        ("reconnect decisions (task logs)", result.reconnect_decisions),
        ("jobs created", result.jobs_created),
        ("duplicates", result.duplicates),
        ("retries used", result.retries_used),
    ]
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    broken = []
    if result.duplicates:
        broken.append(f"{result.duplicates} duplicate job(s)")
    if result.retries_used:
        broken.append(f"{result.retries_used} retr(y/ies) used")
    if result.succeeded != result.tasks:
        broken.append(f"{result.tasks - result.succeeded} task instance(s) did not succeed")
    return broken
