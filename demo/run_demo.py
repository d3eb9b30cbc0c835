"""
The demo: real Airflow, fake clouds, a worker shut down in the middle of three remote jobs.

It starts an Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor, sqlite),
a fake Databricks Jobs API and moto with its lifecycle controller, each in its own process. A DAG
waits for a Databricks run, an AWS Batch job and an EMR Serverless job run; in the middle of them
the worker shuts down (SIGTERM to every task's supervisor, as a deploy, an eviction or a spot
reclaim does); then the remote jobs finish and the demo prints what happened. First with the
stock provider operators, then with the resumable ones.

Run it with ``make demo``. Everything it starts is stopped when it ends. ``make demo ALL=1``
(``--all``) runs every operator of the package beside its stock one instead (``all_operators.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing.aws import (
    MotoProcess,
    aws_connection_env,
    provision_batch,
    provision_emr_serverless_application,
)
from airflow_resumable.testing.cluster import AirflowCluster, wait_until
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

if TYPE_CHECKING:
    from collections.abc import Callable

DAGS = Path(__file__).parent / "dags"
#: Seconds the remote jobs compute before the worker shuts down: the work a cancel throws away.
WORK_BEFORE_SHUTDOWN_S = 10.0


@dataclass(frozen=True)
class Remote:
    """How to see one task's remote jobs in its fake cloud."""

    task_id: str
    kind: str
    jobs: Callable[[str], list[str]]  # run name -> ids of the jobs created, oldest first
    cancelled: Callable[[str], list[str]]
    polled_since: Callable[[str, float], bool]  # job id, wall time -> polled since then?
    finish: Callable[[str], None]
    #: job id -> (started, ended or None while it runs), wall-clock seconds, from the fake's ledger
    lifetime: Callable[[str], tuple[float, float | None]]

    def lost_seconds(self, name: str) -> float:
        """
        Remote compute that produced nothing: every job of ``name`` but the one whose result the
        task returned (the last), from its start to its cancel or end (or now, if it still runs).
        """
        now = time.time()
        lost = 0.0
        for job in self.jobs(name)[:-1]:
            started, ended = self.lifetime(job)
            lost += max(0.0, (ended or now) - started)
        return lost


def databricks_remote(fake: FakeDatabricksProcess) -> Remote:
    client = fake.client

    def jobs(name: str) -> list[str]:
        return [str(e.run_id) for e in client.submissions() if e.body.get("run_name") == name and e.run_id]

    def cancelled(name: str) -> list[str]:
        return [str(e.run_id) for e in client.cancels() if str(e.run_id) in jobs(name)]

    def polled_since(job: str, since: float) -> bool:
        return any(str(e.run_id) == job and e.timestamp > since for e in client.calls("runs/get"))

    def lifetime(job: str) -> tuple[float, float | None]:
        run = client.get_run(int(job))  # the fake's start_time / end_time (ms), set on cancel and end
        return run["start_time"] / 1000, (run["end_time"] / 1000) or None

    return Remote(
        "databricks_run",
        "Databricks run",
        jobs,
        cancelled,
        polled_since,
        lambda job: client.finish_run(int(job), "SUCCESS"),
        lifetime,
    )


def aws_remote(
    moto: MotoProcess, task_id: str, kind: str, service: str, name_field: str, suffix: str
) -> Remote:
    client = moto.client

    def jobs(name: str) -> list[str]:
        return [
            job
            for e in client.submissions(service)
            if e.request.get(name_field) == f"{name}{suffix}"
            for job in e.created
        ]

    def cancelled(name: str) -> list[str]:
        mine = set(jobs(name))
        return [job for e in client.cancels(service) for job in e.job_ids if job in mine]

    def polled_since(job: str, since: float) -> bool:
        return any(job in e.job_ids and e.at > since and not e.created for e in client.ledger())

    finished_at: dict[str, float] = {}

    def finish(job: str) -> None:
        client.finish(job, succeeded=True)
        finished_at[job] = time.time()

    def lifetime(job: str) -> tuple[float, float | None]:
        """Submitted when the ledger's submit call created it; ended at its first cancel call."""
        started = next(e.at for e in client.submissions(service) if job in e.created)
        cancels = [e.at for e in client.cancels(service) if job in e.job_ids]
        return started, min(cancels) if cancels else finished_at.get(job)

    return Remote(task_id, kind, jobs, cancelled, polled_since, finish, lifetime)


@dataclass
class Outcome:
    """What one task did to the remote side."""

    label: str
    submitted: int
    cancelled: int
    tries: int
    state: str
    recovery_s: float
    lost_s: float


def say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')}  {message}", flush=True)


def run_once(
    cluster: AirflowCluster, remotes: list[Remote], dag_id: str, conf: dict[str, Any], label: str
) -> list[Outcome]:
    """Trigger ``dag_id``, shut its worker down mid-run, let the remote jobs finish, report."""
    name = f"{dag_id}-{uuid.uuid4().hex[:6]}"
    print(f"\n== {label}")
    run_id = cluster.trigger(dag_id, {**conf, "run_name": name})
    say(f"triggered {dag_id}")
    firsts = {r.task_id: wait_until(lambda r=r: r.jobs(name), timeout=120, what=r.kind)[0] for r in remotes}
    processes = {r.task_id: cluster.task_processes(dag_id, r.task_id, run_id) for r in remotes}
    for r in remotes:
        say(f"{r.kind} {firsts[r.task_id]} is running; {r.task_id} is polling it")
    # Not a wait for an event: the jobs do some work first, as real ones would before a deploy.
    time.sleep(WORK_BEFORE_SHUTDOWN_S)
    fault_at = time.monotonic()
    for p in processes.values():
        p.signal_supervisor(signal.SIGTERM)
    say("worker shutdown: SIGTERM to every task's supervisor")
    recovery: dict[str, float] = {}
    left: dict[str, float] = {}  # task -> wall time it left its worker

    def progress() -> bool:
        """Follow every task at once: it leaves its worker, then polls a job again; finish that job."""
        for r in remotes:
            if r.task_id in recovery:
                continue
            state = cluster.task_instance(dag_id, run_id, r.task_id)["state"]
            if r.task_id not in left:
                if state != "running":
                    left[r.task_id] = time.time()
                    say(f"{r.task_id} left its worker: {state}")
                continue
            latest = r.jobs(name)[-1]
            if state == "running" and r.polled_since(latest, left[r.task_id]):
                recovery[r.task_id] = time.monotonic() - fault_at
                same = latest == firsts[r.task_id]
                verb = "reconnected to the same job" if same else f"submitted a new job {latest}"
                say(f"{r.task_id} is back after {recovery[r.task_id]:.1f}s and {verb}; the job finishes")
                r.finish(latest)
        return len(recovery) == len(remotes)

    wait_until(progress, timeout=240, what="every task polling a job again")
    state = cluster.wait_for_dag_run(dag_id, run_id, timeout=180)
    say(f"DAG run {state}")
    outcomes = []
    for r in remotes:
        ti = cluster.task_instance(dag_id, run_id, r.task_id)
        outcomes.append(
            Outcome(
                f"{label}: {r.kind}",
                len(r.jobs(name)),
                len(r.cancelled(name)),
                ti["try_number"],
                ti["state"],
                recovery[r.task_id],
                r.lost_seconds(name),
            )
        )
    return outcomes


def main() -> int:
    started = time.monotonic()
    print(
        "Starting fake Databricks, moto and an Airflow deployment (api-server, scheduler, dag-processor)..."
    )
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="airflow-resumable-demo-")))
        fake = stack.enter_context(FakeDatabricksProcess(lifecycle="manual", log_path=tmp / "fake.log"))
        moto = stack.enter_context(MotoProcess(lifecycle="manual", log_path=tmp / "moto.log"))
        batch = provision_batch(moto.url)
        conf = {
            "job_queue": batch.job_queue,
            "job_definition": batch.job_definition,
            "application_id": provision_emr_serverless_application(moto.url),
        }
        env = {**databricks_connection_env(fake.url), **aws_connection_env(moto.url, max_attempts=3)}
        dag_ids = {"demo_stock", "demo_resumable"}
        cluster = stack.enter_context(AirflowCluster(DAGS, home=tmp / "airflow", env=env, dag_ids=dag_ids))
        say(f"Airflow up at {cluster.base_url}; fake Databricks at {fake.url}; moto at {moto.url}")
        remotes = [
            databricks_remote(fake),
            aws_remote(moto, "batch_job", "Batch job", "batch", "jobName", "-batch"),
            aws_remote(moto, "emr_serverless_job", "EMR Serverless job", "emr-serverless", "name", "-emr"),
        ]
        outcomes = run_once(cluster, remotes, "demo_stock", conf, "stock")
        outcomes += run_once(cluster, remotes, "demo_resumable", conf, "resumable")
    header = (
        "operator",
        "remote jobs",
        "cancelled",
        "duplicates",
        "remote work lost",
        "tries",
        "task",
        "back after",
    )
    rows = [
        (
            o.label,
            o.submitted,
            o.cancelled,
            o.submitted - 1,
            f"{o.lost_s:.1f}s",
            o.tries,
            o.state,
            f"{o.recovery_s:.1f}s",
        )
        for o in outcomes
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print()
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    resumable = [o for o in outcomes if o.label.startswith("resumable")]
    ok = all((o.submitted, o.cancelled, o.tries, o.state) == (1, 0, 1, "success") for o in resumable)
    print(
        "\nremote work lost: seconds of remote compute that produced nothing (cancelled jobs until "
        "their cancel,\nduplicates until they ended), from the fake clouds' records of each job's "
        "start, cancel and end."
    )
    print(f"\nDone in {time.monotonic() - started:.0f}s; every process the demo started is stopped.")
    if ok:
        print("Resumable: every job was reconnected, nothing was submitted twice, no retry was burned.")
        return 0
    print("UNEXPECTED: a resumable task did not keep its job.")
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--all", action="store_true", help="every operator, twelve jobs at once")
    if parser.parse_args().all:
        from all_operators import main as main_all  # demo/ is the script's directory: on sys.path

        sys.exit(main_all())
    sys.exit(main())
