"""
Stock vs resumable provider operators under the same seeded worker disruptions, in one run.

``make benchmark`` (or ``.venv/bin/python benchmarks/chaos_benchmark.py --seed 42``) starts a real
Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor, sqlite), the fake
Databricks Jobs API and the moto lifecycle controller, each in its own process, and runs
``benchmarks/dags/chaos_benchmark_dags.py``: every provider operator twice, stock and resumable,
with the same arguments.

**The schedule** (from ``--seed``): per operator, ``--tasks`` tasks (4 by default: 12 operators x 4
= 48 tasks per variant, 96 DAG runs). Each task gets a remote-job length (a realistic length in
minutes, one minute scaled to ``--minute`` seconds, +-20 %), a fault, and when it strikes (30-60 %
into the job). The faults: ``none``; ``shutdown``, a worker shutdown: SIGTERM to the task's
supervisor, then SIGKILL to whatever is left of it after a grace period (a pod's termination
grace, scaled to 5 s); ``crash``: SIGKILL to supervisor and task. The stock and the resumable run
of one task get the same length, fault and fault time, and run side by side.

**The clouds** keep jobs running until the benchmark ends them: a job finishes successfully once
it has existed for its length, whether or not anything still polls it. Jobs are counted from the
fakes' ledgers; every call is attributed to one task by the names and resources that only that
task uses (each task gets its own Databricks job, Batch queue and job definition, EMR cluster,
EMR Serverless application, EMR on EKS virtual cluster, Glue job, state machine, ECS cluster and
task definition, and S3 bucket for SageMaker).

**The columns**, per operator class:

- ``tasks``: DAG runs; ``ok``: how many ended ``success``;
- ``subs/task``: remote jobs created per task (1.00 is exactly once);
- ``dup jobs``: jobs created beyond one per task;
- ``lost s``: remote compute seconds lost: the run time of jobs that were cancelled by a worker
  disruption, or superseded by a duplicate (left to run to completion with nobody waiting);
- ``retries sd/cr``: retries (tries beyond the first) consumed by worker shutdowns / by crashes;
- ``recover p50/p95``: seconds from the fault to the first status call of a new execution of the
  task (for a resumable operator, of the job that ran before the fault: it has no other; for a
  stock one, of any of its jobs); ``kept job``: faulted tasks whose final job is the one that
  was running before the fault, out of the faults that struck (a fault strikes once the task
  polls its job; a task that returns without waiting, like the stock
  ``StepFunctionStartExecutionOperator``, is never struck: the notes below the table say so);
- ``calls/attempt``: cloud API calls of a no-fault task per attempt, as ``status + other``;
  status calls depend on the job's length and the operator's poll cadence, the other calls are
  the operator's overhead (submission, look-ups, links). The breakdown by operation is printed
  below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

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
from airflow_resumable.testing.cluster import AirflowCluster
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

DAGS = Path(__file__).parent / "dags"
TASK = "job"
#: Typical remote-job lengths in minutes: a Databricks notebook ETL run, a job run, a Batch
#: container job, a Spark job on EMR Serverless, on EMR on EKS, an EMR step; then (0.2.0) a
#: one-notebook run, a Glue ETL job, a Step Functions workflow, an ECS container task, a SageMaker
#: training job and a SageMaker processing job. New operators go at the end: the seeded schedule of
#: the earlier ones stays as it was.
LENGTH_MINUTES = {
    "databricks_submit_run": 25,
    "databricks_run_now": 20,
    "batch": 10,
    "emr_serverless": 15,
    "emr_containers": 15,
    "emr_steps": 12,
    "databricks_notebook": 15,
    "glue": 12,
    "step_function": 8,
    "ecs": 6,
    "sagemaker_training": 30,
    "sagemaker_processing": 12,
}
OPERATORS = tuple(LENGTH_MINUTES)
CLASS_NAMES = {
    "databricks_submit_run": "DatabricksSubmitRunOperator",
    "databricks_run_now": "DatabricksRunNowOperator",
    "batch": "BatchOperator",
    "emr_serverless": "EmrServerlessStartJobOperator",
    "emr_containers": "EmrContainerOperator",
    "emr_steps": "EmrAddStepsOperator",
    "databricks_notebook": "DatabricksNotebookOperator",
    "glue": "GlueJobOperator",
    "step_function": "StepFunctionStartExecutionOperator",
    "ecs": "EcsRunTaskOperator",
    "sagemaker_training": "SageMakerTrainingOperator",
    "sagemaker_processing": "SageMakerProcessingOperator",
}
VARIANTS = ("stock", "resumable")
#: Seconds between two DAG runs' starts (see :class:`Bench`).
START_GAP = 1.5
#: A worker shutdown's grace period: SIGTERM, then SIGKILL to what is left after this many seconds.
GRACE_SECONDS = 5.0
SUBMIT_OPS = {
    "databricks_submit_run": {"runs/submit"},
    "databricks_run_now": {"run-now"},
    "batch": {"SubmitJob"},
    "emr_serverless": {"StartJobRun"},
    "emr_containers": {"StartJobRun"},
    "emr_steps": {"AddJobFlowSteps"},
    "databricks_notebook": {"runs/submit"},
    "glue": {"StartJobRun"},
    "step_function": {"StartExecution"},
    "ecs": {"RunTask"},
    "sagemaker_training": {"CreateTrainingJob"},
    "sagemaker_processing": {"CreateProcessingJob"},
}
STATUS_OPS = {
    "databricks_submit_run": {"runs/get"},
    "databricks_run_now": {"runs/get"},
    "batch": {"DescribeJobs"},
    "emr_serverless": {"GetJobRun"},
    "emr_containers": {"DescribeJobRun"},
    "emr_steps": {"DescribeStep", "ListSteps"},
    # The stock notebook operator polls its run's task run: the ledgers file it under the run.
    "databricks_notebook": {"runs/get"},
    "glue": {"GetJobRun"},
    "step_function": {"DescribeExecution"},
    "ecs": {"DescribeTasks"},
    "sagemaker_training": {"DescribeTrainingJob"},
    "sagemaker_processing": {"DescribeProcessingJob"},
}
CANCEL_OPS = frozenset(
    {"runs/cancel", "TerminateJob", "CancelJob", "CancelJobRun", "CancelSteps"}
    | {"BatchStopJobRun", "StopExecution", "StopTask", "StopTrainingJob", "StopProcessingJob"}
)
_DATABRICKS_TERMINAL = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})


# ---------------------------------------------------------------------------------------- ledgers
@dataclass(frozen=True)
class Call:
    """One cloud API call, from either fake's ledger, in one shape."""

    op: str
    at: float
    ok: bool
    created: tuple[str, ...]
    names: frozenset[str]
    text: str


class Ledgers:
    """
    Both fakes' ledgers as :class:`Call` lists, fetched at most every half second.

    A Databricks call about a task run of a run (the stock ``DatabricksNotebookOperator`` polls its
    run's one task run) names the run itself: a run's calls are all filed under the id it was
    created with.
    """

    def __init__(self, databricks: Any, moto: Any) -> None:
        self._databricks, self._moto = databricks, moto
        self._lock = threading.Lock()
        self._at = 0.0
        self._calls: dict[str, list[Call]] = {"databricks": [], "aws": []}
        #: Task run id -> the id of the run it belongs to (looked up once per created run).
        self._run_of: dict[str, str] = {}

    def calls(self, cloud: str, *, fresh: bool = False) -> list[Call]:
        """Every call to ``cloud`` (``databricks`` or ``aws``), as of at most half a second ago."""
        with self._lock:
            if fresh or time.monotonic() - self._at >= 0.5:
                self._calls = {"databricks": self._fetch_databricks(), "aws": self._fetch_moto()}
                self._at = time.monotonic()
            return self._calls[cloud]

    def _fetch_databricks(self) -> list[Call]:
        calls = []
        for e in self._databricks.ledger():
            run = str(e.run_id) if e.run_id is not None else ""
            if e.created and run and run not in self._run_of:
                self._run_of[run] = run
                for task in self._databricks.get_run(int(run)).get("tasks", []):
                    self._run_of[str(task["run_id"])] = run
            run = self._run_of.get(run, run)
            calls.append(
                Call(
                    op=e.endpoint,
                    at=e.timestamp,
                    ok=e.status < 300 and e.handled,
                    created=(run,) if e.created else (),
                    names=frozenset({run} - {""}),
                    text=json.dumps(e.body, sort_keys=True, default=str),
                )
            )
        return calls

    def _fetch_moto(self) -> list[Call]:
        return [
            Call(
                op=e.operation,
                at=e.at,
                ok=e.handled and (e.status < 300 or e.fault == "after"),
                created=tuple(e.created),
                names=frozenset(e.job_ids) | frozenset(e.created),
                text=json.dumps(e.request, sort_keys=True, default=str),
            )
            for e in self._moto.ledger()
        ]


# ---------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Planned:
    """One task of the schedule; run once stock and once resumable."""

    operator: str
    index: int
    fault: str
    length: float
    fault_after: float


def plan(seed: int, tasks: int, minute: float) -> list[Planned]:
    """The seeded schedule: per operator, one task of each fault, then seeded ones, shuffled."""
    rng = random.Random(seed)
    planned = []
    for operator in OPERATORS:
        faults = ["none", "shutdown", "crash"] + [rng.choice(["shutdown", "crash"]) for _ in range(tasks - 3)]
        rng.shuffle(faults)
        for index, fault in enumerate(faults):
            length = round(LENGTH_MINUTES[operator] * minute * rng.uniform(0.8, 1.2), 1)
            planned.append(Planned(operator, index, fault, length, round(length * rng.uniform(0.3, 0.6), 1)))
    rng.shuffle(planned)
    return planned


# ---------------------------------------------------------------------------------------- one run
@dataclass
class Result:
    """What one DAG run cost."""

    planned: Planned
    variant: str
    #: ``<dag id> <run id>``: where its task logs are.
    dag_run: str = ""
    state: str = ""
    try_number: int = 0
    jobs: int = 0
    lost_seconds: float = 0.0
    recovery: float | None = None
    #: The job the task finally waited for is the one that was running before the fault.
    kept_job: bool | None = None
    #: The fault struck (it waits for the task to poll its job; a task may end before that).
    struck: bool = False
    #: Seconds the task's final job ran on after the task had ended (0: the task waited for it).
    unwatched: float = 0.0
    attempts: int = 1
    calls: Counter[str] = field(default_factory=Counter)
    status_calls: int = 0
    error: str = ""
    #: (operation, seconds after the trigger, request) of every call attributed to the run.
    trail: list[tuple[str, float, str]] = field(default_factory=list)


class Run:
    """One variant of one planned task: provision, trigger, disrupt, end its jobs, measure."""

    def __init__(self, bench: Bench, planned: Planned, variant: str) -> None:
        self.bench = bench
        self.planned = planned
        self.variant = variant
        self.op = planned.operator
        self.cloud = "databricks" if self.op.startswith("databricks") else "aws"
        self.dag_id = f"bench_{self.op}_{variant}"
        self.label = f"bench-{uuid.uuid4().hex[:10]}"
        self.identifiers: set[str] = {self.label}
        self.run_id = ""
        self.triggered_at = 0.0
        #: When the fault struck, and when the disrupted task process was gone (epoch seconds).
        self.fault_at = self.gone_at = 0.0
        self.finished_at: dict[str, float] = {}

    # -------------------------------------------------------------- cloud side
    def provision(self) -> dict[str, Any]:
        """This run's own resources, so that every cloud call names something only it uses."""
        url, name = self.bench.moto.url, self.label
        conf: dict[str, Any] = {"label": self.label}
        if self.op == "databricks_run_now":
            conf["job_id"] = self.bench.databricks.client.create_job(self.label)
            self.identifiers.add(f'"job_id": "{conf["job_id"]}"')
            self.identifiers.add(f'"job_id": {conf["job_id"]}')
        elif self.op == "batch":
            resources = provision_batch(url, name=name)
            conf |= {"job_queue": resources.job_queue, "job_definition": resources.job_definition}
        elif self.op == "emr_serverless":
            conf["application_id"] = provision_emr_serverless_application(url, name=name)
        elif self.op == "emr_containers":
            conf["virtual_cluster_id"] = provision_emr_virtual_cluster(url, name=name)
        elif self.op == "emr_steps":
            conf["job_flow_id"] = provision_emr_cluster(url, name=name)
        elif self.op == "glue":
            provision_glue(url, name=name)  # the job is named after the label
        elif self.op == "step_function":
            conf["state_machine_arn"] = provision_state_machine(url, name=name)
        elif self.op == "ecs":
            ecs = provision_ecs(url, name=name)
            conf |= {"ecs_cluster": ecs.cluster, "ecs_task_definition": ecs.task_definition}
        elif self.op.startswith("sagemaker"):
            sagemaker = provision_sagemaker(url, name=name)
            conf |= {"sagemaker_input_uri": sagemaker.input_uri, "sagemaker_output_uri": sagemaker.output_uri}
            conf["sagemaker_image_uri"] = sagemaker.image_uri
        # (Every run's SageMaker jobs name the same image: it identifies nothing.)
        shared = ("label", "job_id", "sagemaker_image_uri")
        self.identifiers |= {str(v) for k, v in conf.items() if k not in shared}
        return conf

    def jobs(self) -> list[Call]:
        """The submit calls that created this run's jobs, oldest first."""
        return [
            c
            for c in self.bench.ledgers.calls(self.cloud)
            if c.op in SUBMIT_OPS[self.op] and c.created and self.label in c.text
        ]

    def polled(self, job: Call) -> bool:
        """Whether the task (any execution of it) read the status of ``job``."""
        job_id = job.created[0]
        return any(
            c.op in STATUS_OPS[self.op] and c.at >= job.at and job_id in c.names
            for c in self.bench.ledgers.calls(self.cloud)
        )

    def mine(self, call: Call, job_ids: set[str]) -> bool:
        return bool(call.names & job_ids) or any(ident in call.text for ident in self.identifiers)

    def job_active(self, job_id: str) -> bool:
        if self.cloud == "databricks":
            run = self.bench.databricks.client.get_run(int(job_id))
            return run["state"]["life_cycle_state"] not in _DATABRICKS_TERMINAL
        return not self.bench.moto.client.job(job_id)["finished"]

    def finish(self, job_id: str) -> None:
        if self.cloud == "databricks":
            self.bench.databricks.client.finish_run(int(job_id), "SUCCESS")
        else:
            self.bench.moto.client.finish(job_id, succeeded=True)
        self.finished_at[job_id] = time.time()

    def finish_due_jobs(self) -> None:
        """A job succeeds once it has existed for the task's length, polled or not."""
        for job in self.jobs():
            job_id = job.created[0]
            if job_id not in self.finished_at and time.time() >= job.at + self.planned.length:
                if self.job_active(job_id):
                    self.finish(job_id)
                else:
                    self.finished_at[job_id] = time.time()  # cancelled: its end is the cancel's time

    # -------------------------------------------------------------- the run
    def run(self) -> Result:
        result = Result(self.planned, self.variant)
        try:
            self.bench.pace()
            self.run_id = self.trigger(self.provision())
            result.dag_run = f"{self.dag_id} {self.run_id}"
            self.drive(result)
            self.measure(result)
        except Exception as error:  # one broken run must not hide the others' figures
            result.error = f"{type(error).__name__}: {error}"
        return result

    def trigger(self, conf: dict[str, Any]) -> str:
        """
        Create the DAG run (one REST write at a time).

        A write that sqlite's lock refused after the client's own attempts never reached its
        handler (see ``AirflowCluster``): on a loaded machine it is sent again, twice at most.
        """
        for attempt in range(3):
            try:
                with self.bench.rest_lock:
                    self.triggered_at = time.time()  # the calls before are the benchmark's set-up
                    return self.bench.cluster.trigger(self.dag_id, conf)
            except httpx.HTTPStatusError as error:
                if attempt == 2 or "Database error" not in error.response.text:
                    raise
            time.sleep(2.0)
        raise AssertionError("unreachable")

    def drive(self, result: Result) -> None:
        """
        Until the DAG run ends: end jobs that are due, and inject the fault when it is due.

        The fault is due ``fault_after`` seconds after the first job was created, as soon as the
        task polls that job; a task that has ended by then is not struck.
        """
        cluster, planned = self.bench.cluster, self.planned
        deadline = time.monotonic() + 8 * planned.length + 180
        fault_due = planned.fault != "none"
        while time.monotonic() < deadline:
            self.bench.check()
            self.finish_due_jobs()
            jobs = self.jobs()
            due = fault_due and jobs and time.time() >= jobs[0].at + planned.fault_after
            if due and self.polled(jobs[0]):
                self.fault_at, self.gone_at = self.disrupt()
                result.struck, fault_due = True, False
            if cluster.dag_run(self.dag_id, self.run_id)["state"] in ("success", "failed"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.dag_id} {self.run_id} did not end in time")

    def disrupt(self) -> tuple[float, float]:
        """Inject the fault into the running task; return (fault time, task-exit time), epoch."""
        cluster = self.bench.cluster
        processes = cluster.task_processes(self.dag_id, TASK, self.run_id, timeout=60)
        fault_at = time.time()
        if self.planned.fault == "crash":
            processes.kill_both()
        else:
            processes.signal_supervisor(signal.SIGTERM)
            try:
                processes.wait_task_gone(timeout=GRACE_SECONDS)
            except TimeoutError:  # the grace period is over: the pod goes, with whatever runs in it
                processes.kill_both()
            # (A supervisor whose task has exited is not killed: LocalExecutor workers are reused.)
        processes.wait_task_gone(timeout=30)
        return fault_at, time.time()

    def measure(self, result: Result) -> None:
        # The clouds run every job to its end: what nobody cancelled finishes at its length.
        deadline = time.monotonic() + self.planned.length + 30
        while time.monotonic() < deadline:
            self.finish_due_jobs()
            if all(j.created[0] in self.finished_at for j in self.jobs()):
                break
            time.sleep(0.5)
        calls = self.bench.ledgers.calls(self.cloud, fresh=True)
        jobs = self.jobs()
        job_ids = {j.created[0] for j in jobs}
        cancelled = {name: c.at for c in calls if c.op in CANCEL_OPS and c.ok for name in c.names & job_ids}
        kept = [j for j in jobs if j.created[0] not in cancelled]
        productive = kept[-1].created[0] if kept else None
        for job in jobs:
            job_id = job.created[0]
            if job_id != productive:
                end = cancelled.get(job_id, self.finished_at.get(job_id, job.at + self.planned.length))
                result.lost_seconds += max(end - job.at, 0.0)
        ti = self.bench.cluster.task_instance(self.dag_id, self.run_id, TASK)
        result.state, result.try_number, result.jobs = str(ti["state"]), int(ti["try_number"]), len(jobs)
        if productive in self.finished_at and ti.get("end_date"):
            task_end = datetime.fromisoformat(str(ti["end_date"]).replace("Z", "+00:00")).timestamp()
            result.unwatched = max(self.finished_at[productive] - task_end, 0.0)
        result.attempts = max(self.executions(), 1)
        if self.gone_at and jobs:
            # Recovery: the first status call of the task's jobs after the disrupted process was gone.
            reads = [
                c for c in calls if c.op in STATUS_OPS[self.op] and c.at > self.gone_at and c.names & job_ids
            ]
            if reads:
                result.recovery = round(reads[0].at - self.fault_at, 2)
            result.kept_job = productive == jobs[0].created[0]
        first_job_at = jobs[0].at if jobs else 0.0
        for call in calls:
            if call.at >= self.triggered_at and self.mine(call, job_ids):
                result.trail.append((call.op, round(call.at - self.triggered_at, 2), call.text[:160]))
                result.calls[call.op] += 1
                if call.op in STATUS_OPS[self.op] and call.at >= first_job_at and call.names & job_ids:
                    result.status_calls += 1

    def executions(self) -> int:
        """Tries and resumed reschedules: one ``Pre Execute`` group per execution in the task logs."""
        folder = self.bench.cluster.home / "logs" / f"dag_id={self.dag_id}" / f"run_id={self.run_id}"
        return sum(
            path.read_text(errors="replace").count("::group::Pre Execute")
            for path in (folder / f"task_id={TASK}").glob("attempt=*.log")
        )


@dataclass
class Bench:
    """
    The running deployment and fakes every run shares, and what keeps sqlite out of trouble.

    On sqlite, a burst of task starts, or two action-logged REST calls (trigger, unpause) at once,
    can hold the database past its 5 s busy timeout: the scheduler then dies ("database is
    locked"). So runs start at least :data:`START_GAP` seconds apart, and REST writes go one by one.
    """

    cluster: AirflowCluster
    databricks: FakeDatabricksProcess
    moto: MotoProcess
    ledgers: Ledgers
    stopped: threading.Event = field(default_factory=threading.Event)
    rest_lock: threading.Lock = field(default_factory=threading.Lock)
    _pace_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_start: float = 0.0

    def pace(self) -> None:
        """Wait until the previous run started at least :data:`START_GAP` seconds ago."""
        with self._pace_lock:
            self.check()
            time.sleep(max(self._last_start + START_GAP - time.monotonic(), 0.0))
            self._last_start = time.monotonic()

    def check(self) -> None:
        """Raise if the benchmark is being stopped or an Airflow process died."""
        if self.stopped.is_set():
            raise RuntimeError("benchmark stopped")
        self.cluster.check()


# ---------------------------------------------------------------------------------------- the table
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def row(results: list[Result]) -> dict[str, str]:
    tasks = len(results)
    faults = {"shutdown": 0, "crash": 0}
    for r in results:
        if r.planned.fault in faults:
            faults[r.planned.fault] += max(r.try_number - 1, 0)
    recoveries = [r.recovery for r in results if r.recovery is not None]
    faulted = [r for r in results if r.struck]
    clean = [r for r in results if r.planned.fault == "none" and not r.error]
    status = statistics.fmean(r.status_calls / r.attempts for r in clean) if clean else 0.0
    other = (
        statistics.fmean((sum(r.calls.values()) - r.status_calls) / r.attempts for r in clean)
        if clean
        else 0.0
    )
    p50, p95 = percentile(recoveries, 0.5), percentile(recoveries, 0.95)
    return {
        "tasks": str(tasks),
        "ok": str(sum(r.state == "success" for r in results)),
        "subs/task": f"{sum(r.jobs for r in results) / tasks:.2f}",
        "dup jobs": str(sum(max(r.jobs - 1, 0) for r in results)),
        "lost s": f"{sum(r.lost_seconds for r in results):.1f}",
        "retries sd/cr": f"{faults['shutdown']}/{faults['crash']}",
        "recover p50/p95": "-" if p50 is None else f"{p50:.1f}/{p95:.1f}",
        "kept job": f"{sum(bool(r.kept_job) for r in faulted)}/{len(faulted)}",
        "calls/attempt": f"{status + other:.1f} ({status:.1f}+{other:.1f})",
    }


def table(results: list[Result]) -> str:
    header = ["operator class", "tasks", "ok", "subs/task", "dup jobs", "lost s", "retries sd/cr"]
    header += ["recover p50/p95", "kept job", "calls/attempt"]
    lines = []
    for op in OPERATORS:
        for variant in VARIANTS:
            name = ("Resumable" if variant == "resumable" else "") + CLASS_NAMES[op]
            mine = [r for r in results if r.planned.operator == op and r.variant == variant]
            if mine:
                lines.append([name, *row(mine).values()])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join(out)


def notes(results: list[Result]) -> str:
    """Per class: faults that never struck, and tasks that ended while their job still ran."""
    out = []
    for op in OPERATORS:
        for variant in VARIANTS:
            mine = [r for r in results if r.planned.operator == op and r.variant == variant and not r.error]
            planned = [r for r in mine if r.planned.fault != "none"]
            early = [r.unwatched for r in mine if r.unwatched > 1.0]
            if not mine or (len(early) == 0 and all(r.struck for r in planned)):
                continue
            name = ("Resumable" if variant == "resumable" else "") + CLASS_NAMES[op]
            out.append(
                f"  {name}: {len(early)}/{len(mine)} tasks ended while their job still ran "
                f"(it ran on unwatched for {statistics.fmean(early) if early else 0.0:.1f} s on average); "
                f"{sum(r.struck for r in planned)} of {len(planned)} faults struck a task polling its job"
            )
    return "\n".join(out)


def overhead(results: list[Result]) -> str:
    """Per operator: the no-fault calls per attempt by operation, stock vs resumable."""
    out = []
    for op in [op for op in OPERATORS if any(r.planned.operator == op for r in results)]:
        counts: dict[str, Counter[str]] = {}
        for variant in VARIANTS:
            clean = [r for r in results if r.planned.operator == op and r.variant == variant]
            clean = [r for r in clean if r.planned.fault == "none" and not r.error]
            total: Counter[str] = Counter()
            for r in clean:
                total.update({k: v / r.attempts / len(clean) for k, v in r.calls.items()})
            counts[variant] = total
        ops = sorted(set(counts["stock"]) | set(counts["resumable"]))
        parts = [f"{o} {counts['stock'][o]:g}->{counts['resumable'][o]:g}" for o in ops]
        non_status = {v: sum(n for o, n in counts[v].items() if o not in STATUS_OPS[op]) for v in VARIANTS}
        out.append(
            f"  {CLASS_NAMES[op]}: non-status calls {non_status['stock']:g} -> {non_status['resumable']:g} "
            f"({non_status['resumable'] - non_status['stock']:+g}); " + ", ".join(parts)
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- main
def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds main(): every process the benchmark started is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tasks", type=int, default=4, help="tasks per operator and variant (>= 3)")
    parser.add_argument("--minute", type=float, default=1.0, help="seconds that stand for one minute of job")
    parser.add_argument("--parallel", type=int, default=6, help="DAG runs at once")
    parser.add_argument("--operators", nargs="+", choices=OPERATORS, default=OPERATORS, help="a subset")
    parser.add_argument("--dump", type=Path, help="write every run's attributed calls here (JSON)")
    args = parser.parse_args(argv)
    if args.tasks < 3:
        parser.error("--tasks must be >= 3 (one task per fault kind)")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    began = time.monotonic()
    schedule = [p for p in plan(args.seed, args.tasks, args.minute) if p.operator in args.operators]
    print(f"Seed {args.seed}: {len(schedule)} tasks x 2 variants, on {os.cpu_count()} cores.", flush=True)
    # The deployment's home (task and component logs) and the fakes' logs: removed after a run
    # that went as expected, kept for a look otherwise.
    tmp = Path(tempfile.mkdtemp(prefix="airflow-resumable-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            databricks = stack.enter_context(
                FakeDatabricksProcess(lifecycle="manual", log_path=tmp / "db.log")
            )
            moto = stack.enter_context(MotoProcess(lifecycle="manual", log_path=tmp / "moto.log"))
            env = {
                **databricks_connection_env(databricks.url),
                **aws_connection_env(moto.url, max_attempts=1),
            }
            cluster = stack.enter_context(
                AirflowCluster(DAGS, home=tmp / "airflow", env=env, executor_parallelism=args.parallel + 1)
            )
            print(f"Airflow up after {time.monotonic() - began:.0f}s; running the schedule...", flush=True)
            bench = Bench(cluster, databricks, moto, Ledgers(databricks.client, moto.client))
            runs = [Run(bench, planned, variant) for planned in schedule for variant in VARIANTS]
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                try:
                    results = list(pool.map(lambda run: run.run(), runs))
                finally:  # on Ctrl-C or SIGTERM: the runs give up, the processes are stopped
                    bench.stopped.set()
    except BaseException:
        print(f"\nThe benchmark stopped; its home and logs are kept in {tmp}", file=sys.stderr)
        raise
    if args.dump:
        dump = [
            {"run": f"{r.variant} {r.planned}", "dag_run": r.dag_run, "error": r.error, "state": r.state}
            | {"tries": r.try_number}
            | {"jobs": r.jobs, "recovery": r.recovery, "kept_job": r.kept_job, "calls": r.trail}
            for r in results
        ]
        args.dump.write_text(json.dumps(dump, indent=1))
    errors = [r for r in results if r.error]
    print()
    print(table(results))
    if note := notes(results):
        print("\nNotes:")
        print(note)
    print("\nNo-fault cloud calls per attempt, stock -> resumable:")
    print(overhead(results))
    for r in errors:
        print(f"  ERROR {r.variant} {r.planned}: {r.error}")
    elapsed = time.monotonic() - began
    print(f"\nSeed {args.seed}, {len(runs)} DAG runs, {elapsed:.0f}s on {os.cpu_count()} cores.")
    resumable = [r for r in results if r.variant == "resumable"]
    broken = [
        r
        for r in resumable
        if r.jobs != 1
        or r.lost_seconds > 0
        or (r.planned.fault == "shutdown" and r.try_number != 1)
        or (r.planned.fault != "none" and not r.kept_job)
    ]
    for r in broken:
        print(f"  UNEXPECTED resumable {r.planned}: {r.jobs} jobs, {r.try_number} tries ({r.dag_run})")
    if errors or broken:
        print(f"The deployment's home and logs are kept in {tmp}")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
