"""
``make demo ALL=1``: every operator beside its stock one, a worker shut down in the middle of twelve
remote jobs.

Like ``make demo`` (``run_demo.py``), with every operator of the package at once: a Databricks
submit-run, run-now and notebook run, an AWS Batch job, an EMR step, an EMR Serverless and an EMR on
EKS job run, a Glue job run, a Step Functions execution, an ECS task, a SageMaker training and a
SageMaker processing job (``dags/demo_dags.py``, ``TASKS``). In the middle of them the worker shuts
down (SIGTERM to every task's supervisor, as a deploy, an eviction or a spot reclaim does, and
SIGKILL to what still runs of a task 5 s later, as when a pod's grace period ends); then the remote
jobs finish and the demo prints what happened. First with the stock provider operators
(``demo_all_stock``), then with the resumable ones (``demo_all_resumable``).

A task that is not waiting for its job when the worker shuts down (the stock
``StepFunctionStartExecutionOperator`` returns once the execution started) is not signalled; its
job runs on unwatched and ends with the others.

Run it with ``make demo ALL=1`` (``python demo/run_demo.py --all``); about twice as long as
``make demo``. Everything it starts is stopped when it ends.
"""

from __future__ import annotations

import contextlib
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

from airflow_resumable.testing.aws import (
    MotoProcess,
    aws_connection_env,
    provision_batch,
    provision_ecs,
    provision_emr_cluster,
    provision_emr_serverless_application,
    provision_emr_virtual_cluster,
    provision_glue,
    provision_sagemaker,
    provision_state_machine,
)
from airflow_resumable.testing.cluster import AirflowCluster, wait_until
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

if TYPE_CHECKING:
    from collections.abc import Callable

DAGS = Path(__file__).parent / "dags"
#: Seconds the remote jobs compute before the worker shuts down: the work a cancel throws away.
WORK_BEFORE_SHUTDOWN_S = 10.0
#: Tasks per DAG run (``dags/demo_dags.py``): all of them wait at once.
TASKS = 12
#: The shutdown's grace period (a pod's, scaled as in ``benchmarks/chaos_benchmark.py``): what of
#: a task still runs this many seconds after the SIGTERM is SIGKILLed with its supervisor.
GRACE_S = 5.0
#: The Databricks job that run-now starts (the fake runs any notebook).
DATABRICKS_JOB: dict[str, Any] = {
    "tasks": [
        {
            "task_key": "etl",
            "existing_cluster_id": "0000-000000-demo",
            "notebook_task": {"notebook_path": "/Shared/nightly_etl"},
        }
    ]
}


@dataclass(frozen=True)
class Remote:
    """How to see one task's remote jobs in its fake cloud."""

    task_id: str
    kind: str
    jobs: Callable[[str], list[str]]  # run name -> ids of the jobs created, oldest first
    #: run name -> the jobs a cancel call reached while they ran (a cancel after the demo ended a
    #: job, e.g. the custodian's idempotent clean-up of a finished task's entry, cancels nothing)
    cancelled: Callable[[str], list[str]]
    reads: Callable[[str, float], list[float]]  # job id, wall time -> times of its status reads since
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


def databricks_remote(
    fake: FakeDatabricksProcess, task_id: str, kind: str, label: Callable[[dict[str, Any]], Any]
) -> Remote:
    client = fake.client

    def jobs(name: str) -> list[str]:
        return [str(e.run_id) for e in client.submissions() if label(e.body) == name and e.run_id]

    finished_at: dict[str, float] = {}

    def cancelled(name: str) -> list[str]:
        mine = set(jobs(name))
        hits = [
            run
            for e in client.cancels()
            if (run := str(e.run_id)) in mine and e.timestamp < finished_at.get(run, float("inf"))
        ]
        return list(dict.fromkeys(hits))

    def reads(job: str, since: float) -> list[float]:
        """Reads of the run, or of its task run (the stock notebook operator follows that one)."""
        ids = {job} | {str(task["run_id"]) for task in client.get_run(int(job)).get("tasks", [])}
        return [e.timestamp for e in client.calls("runs/get") if str(e.run_id) in ids and e.timestamp > since]

    def finish(job: str) -> None:
        client.finish_run(int(job), "SUCCESS")
        finished_at[job] = time.time()

    def lifetime(job: str) -> tuple[float, float | None]:
        run = client.get_run(int(job))  # the fake's start_time / end_time (ms), set on cancel and end
        return run["start_time"] / 1000, (run["end_time"] / 1000) or None

    return Remote(task_id, kind, jobs, cancelled, reads, finish, lifetime)


def aws_remote(
    moto: MotoProcess,
    task_id: str,
    kind: str,
    service: str,
    label: Callable[[dict[str, Any]], Any],
    suffix: str = "",
) -> Remote:
    """
    ``service``: the botocore service or the controller's job kind; ``label``: the run's name in a
    submit request (it may go on: a resumable operator appends its token's key to a job name).
    """
    client = moto.client

    def jobs(name: str) -> list[str]:
        return [
            job
            for e in client.submissions(service)
            if str(label(e.request) or "").startswith(f"{name}{suffix}")
            for job in e.created
        ]

    finished_at: dict[str, float] = {}

    def cancelled(name: str) -> list[str]:
        mine = set(jobs(name))
        hits = [
            job
            for e in client.cancels(service)
            for job in e.job_ids
            if job in mine and e.at < finished_at.get(job, float("inf"))
        ]
        return list(dict.fromkeys(hits))

    def reads(job: str, since: float) -> list[float]:
        return [
            e.at
            for e in client.ledger()
            if job in e.job_ids and e.at > since and e.operation.startswith(("Describe", "Get", "List"))
        ]

    def finish(job: str) -> None:
        client.finish(job, succeeded=True)
        finished_at[job] = time.time()

    def lifetime(job: str) -> tuple[float, float | None]:
        """Submitted when the ledger's submit call created it; ended at its first cancel call."""
        started = next(e.at for e in client.submissions(service) if job in e.created)
        cancels = [e.at for e in client.cancels(service) if job in e.job_ids]
        return started, min(cancels) if cancels else finished_at.get(job)

    return Remote(task_id, kind, jobs, cancelled, reads, finish, lifetime)


def demo_remotes(fake: FakeDatabricksProcess, moto: MotoProcess) -> list[Remote]:
    """The tasks of ``dags/demo_dags.py`` and where each one's run name sits in its submit request."""

    def key(name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda request: request.get(name)

    def notebook_label(body: dict[str, Any]) -> Any:
        return ((body.get("notebook_task") or {}).get("base_parameters") or {}).get("run_name")

    def run_now_label(body: dict[str, Any]) -> Any:
        return (body.get("notebook_params") or {}).get("run_name")

    def step_label(request: dict[str, Any]) -> Any:
        steps = request.get("Steps") or [{}]
        return steps[0].get("Name")

    def glue_label(request: dict[str, Any]) -> Any:
        return (request.get("Arguments") or {}).get("--run-name")

    sagemaker = "SageMaker training job", "SageMaker processing job"
    return [
        databricks_remote(fake, "databricks_run", "Databricks run", key("run_name")),
        databricks_remote(fake, "databricks_run_now", "Databricks run-now run", run_now_label),
        databricks_remote(fake, "databricks_notebook", "Databricks notebook run", notebook_label),
        aws_remote(moto, "batch_job", "Batch job", "batch", key("jobName"), "-batch"),
        aws_remote(moto, "emr_serverless_job", "EMR Serverless job", "emr-serverless", key("name"), "-emr"),
        aws_remote(moto, "emr_containers_job", "EMR on EKS job", "emr-containers", key("name"), "-eks"),
        aws_remote(moto, "emr_step", "EMR step", "emr", step_label, "-step"),
        aws_remote(moto, "glue_job", "Glue job run", "glue", glue_label),
        aws_remote(moto, "step_function", "Step Functions execution", "stepfunctions", key("name"), "-sfn"),
        aws_remote(moto, "ecs_task", "ECS task", "ecs", key("group"), "-ecs"),
        aws_remote(moto, "sagemaker_training", sagemaker[0], "sagemaker-training", key("TrainingJobName")),
        aws_remote(
            moto, "sagemaker_processing", sagemaker[1], "sagemaker-processing", key("ProcessingJobName")
        ),
    ]


@dataclass
class Outcome:
    """What one task did to the remote side."""

    label: str
    submitted: int
    cancelled: int
    tries: int
    state: str
    #: Seconds from the shutdown until it polled a job again; None: it was not waiting.
    recovery_s: float | None
    lost_s: float
    #: Seconds its job ran on after the task had ended without waiting for it (0: it waited).
    unwatched_s: float = 0.0


def say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')}  {message}", flush=True)


def run_once(
    cluster: AirflowCluster, remotes: list[Remote], dag_id: str, conf: dict[str, Any], label: str
) -> list[Outcome]:
    """Trigger ``dag_id``, shut its worker down mid-run, let the remote jobs finish, report."""
    name = f"{dag_id.replace('_', '-')}-{uuid.uuid4().hex[:6]}"  # SageMaker names: no underscore
    print(f"\n== {label}")
    run_id = cluster.trigger(dag_id, {**conf, "run_name": name})
    say(f"triggered {dag_id}")
    firsts = {r.task_id: wait_until(lambda r=r: r.jobs(name), timeout=180, what=r.kind)[0] for r in remotes}
    ended: dict[str, float] = {}  # task -> wall time it was seen ended without waiting for its job

    def settled(r: Remote) -> bool:
        """The task polls its job, or it ended without waiting for it."""
        job = firsts[r.task_id]
        if r.reads(job, r.lifetime(job)[0]):
            return True
        if cluster.task_instance(dag_id, run_id, r.task_id)["state"] in ("success", "failed"):
            ended[r.task_id] = time.time()
            return True
        return False

    for r in remotes:
        wait_until(lambda r=r: settled(r), timeout=120, what=f"{r.task_id} polling its job")
    waiting = [r for r in remotes if r.task_id not in ended]
    processes = {r.task_id: cluster.task_processes(dag_id, r.task_id, run_id) for r in waiting}
    for r in remotes:
        verb = "returned without waiting for it" if r.task_id in ended else "is polling it"
        say(f"{r.kind} {firsts[r.task_id]} is running; {r.task_id} {verb}")
    # Not a wait for an event: the jobs do some work first, as real ones would before a deploy.
    time.sleep(WORK_BEFORE_SHUTDOWN_S)
    fault_at = time.time()
    for p in processes.values():
        p.signal_supervisor(signal.SIGTERM)
    say(f"worker shutdown: SIGTERM to every waiting task's supervisor ({len(processes)})")

    def shut_down(task_id: str) -> float:
        """When the task left its worker: on the SIGTERM, or killed when the grace period ended."""
        p = processes[task_id]
        try:
            p.wait_task_gone(timeout=GRACE_S)
            say(f"{task_id} left its worker after {time.time() - fault_at:.1f}s")
        except TimeoutError:  # it ignored the SIGTERM: the pod goes, with whatever runs in it
            p.kill_both()
            say(f"{task_id} still ran when the grace period ended: SIGKILL to it and its supervisor")
        return time.time()

    with ThreadPoolExecutor(max_workers=len(processes)) as pool:  # every task's grace runs at once
        left = dict(zip(processes, pool.map(shut_down, processes), strict=True))
    recovery: dict[str, float] = {}

    def progress() -> bool:
        """Follow every task at once: once a new execution polls a job, finish that job."""
        for r in waiting:
            if r.task_id in recovery:
                continue
            latest = r.jobs(name)[-1]
            reads = r.reads(latest, left[r.task_id])
            # Two reads: a polling task, not the one look-up a stock operator may do before it
            # submits again (the SageMaker ones describe the configured name first).
            if len(reads) >= 2:
                recovery[r.task_id] = reads[0] - fault_at
                same = latest == firsts[r.task_id]
                verb = "reconnected to the same job" if same else f"submitted a new job {latest}"
                say(f"{r.task_id} is back after {recovery[r.task_id]:.1f}s and {verb}; the job finishes")
                r.finish(latest)
        return len(recovery) == len(waiting)

    wait_until(progress, timeout=300, what="every task polling a job again")
    unwatched: dict[str, float] = {}
    for r in remotes:
        if r.task_id in ended:  # nobody waits for it: it ends when the others' jobs do
            unwatched[r.task_id] = time.time() - ended[r.task_id]
            say(f"{r.kind} {firsts[r.task_id]} finishes; nothing watched it since its task ended")
            r.finish(firsts[r.task_id])
    state = cluster.wait_for_dag_run(dag_id, run_id, timeout=240)
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
                recovery.get(r.task_id),
                r.lost_seconds(name),
                unwatched.get(r.task_id, 0.0),
            )
        )
    return outcomes


def main(run: Callable[[Path], list[Outcome]] | None = None) -> int:
    """
    Run the demo (``run``: every operator by default; ``run_demo.py`` passes its three) and report.

    :return: the process's exit code: 0 when every resumable task kept its one job.
    """
    run = run_demo if run is None else run
    started = time.monotonic()
    print(
        "Starting fake Databricks, moto and an Airflow deployment (api-server, scheduler, dag-processor)..."
    )
    # The deployment's home (task and component logs) and the fakes' logs: removed after a run
    # that went as expected, kept for a look otherwise.
    tmp = Path(tempfile.mkdtemp(prefix="airflow-resumable-demo-"))
    try:
        outcomes = run(tmp)
    except BaseException:
        print(f"\nThe demo failed; its logs are kept in {tmp}", file=sys.stderr)
        raise
    ok = report(outcomes)
    print(f"\nDone in {time.monotonic() - started:.0f}s; every process the demo started is stopped.")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
        print("Resumable: every job was reconnected, nothing was submitted twice, no retry was burned.")
        return 0
    print(f"UNEXPECTED: a resumable task did not keep its job. Logs: {tmp}")
    return 1


def run_demo(tmp: Path) -> list[Outcome]:
    """Start everything, run the stock DAG, then the resumable one; stop everything."""
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeDatabricksProcess(lifecycle="manual", log_path=tmp / "fake.log"))
        moto = stack.enter_context(MotoProcess(lifecycle="manual", log_path=tmp / "moto.log"))
        batch = provision_batch(moto.url, name="demo")
        ecs = provision_ecs(moto.url, name="demo")
        sagemaker = provision_sagemaker(moto.url, name="demo")
        conf = {
            "job_queue": batch.job_queue,
            "job_definition": batch.job_definition,
            "application_id": provision_emr_serverless_application(moto.url, name="demo"),
            "virtual_cluster_id": provision_emr_virtual_cluster(moto.url, name="demo"),
            "job_flow_id": provision_emr_cluster(moto.url, name="demo"),
            "databricks_job_id": fake.client.create_job("demo-nightly", DATABRICKS_JOB),
            "glue_job": provision_glue(moto.url, name="demo-nightly-etl"),
            "state_machine_arn": provision_state_machine(moto.url, name="demo-pipeline"),
            "ecs_cluster": ecs.cluster,
            "ecs_task_definition": ecs.task_definition,
            "sagemaker_input_uri": sagemaker.input_uri,
            "sagemaker_output_uri": sagemaker.output_uri,
            "sagemaker_image_uri": sagemaker.image_uri,
        }
        env = {**databricks_connection_env(fake.url), **aws_connection_env(moto.url, max_attempts=3)}
        dag_ids = {"demo_all_stock", "demo_all_resumable"}
        cluster = stack.enter_context(
            AirflowCluster(
                DAGS, home=tmp / "airflow", env=env, dag_ids=dag_ids, executor_parallelism=TASKS + 1
            )
        )
        say(f"Airflow up at {cluster.base_url}; fake Databricks at {fake.url}; moto at {moto.url}")
        remotes = demo_remotes(fake, moto)
        outcomes = run_once(cluster, remotes, "demo_all_stock", conf, "stock")
        return outcomes + run_once(cluster, remotes, "demo_all_resumable", conf, "resumable")


def report(outcomes: list[Outcome]) -> bool:
    """Print the table; whether every resumable task kept its one job."""
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
            o.state + ("*" if o.unwatched_s else ""),
            "-" if o.recovery_s is None else f"{o.recovery_s:.1f}s",
        )
        for o in outcomes
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print()
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    resumable = [o for o in outcomes if o.label.startswith("resumable")]
    ok = all(
        (o.submitted, o.cancelled, o.tries, o.state) == (1, 0, 1, "success") and o.recovery_s is not None
        for o in resumable
    )
    print(
        "\nremote work lost: seconds of remote compute that produced nothing (cancelled jobs until "
        "their cancel,\nduplicates until they ended, or until now if nothing stopped them), from the "
        "fake clouds' records\nof each job's start, cancel and end."
    )
    for o in outcomes:
        if o.unwatched_s:
            print(
                f"* {o.label}: the task returned once its job had started, without waiting for it: "
                f"the job ran\n  {o.unwatched_s:.0f}s after the task ended, and nothing in Airflow "
                "saw how it ended (no worker was waiting to be shut down)."
            )
    return ok


if __name__ == "__main__":
    sys.exit(main())
