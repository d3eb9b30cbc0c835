"""
A mass resume: 64 resumable tasks reconnect at once to their running jobs through a throttled API.

``make mass-resume`` (also the last step of ``make benchmark``) or
``.venv/bin/python benchmarks/mass_resume.py`` runs, per service, 64 tasks of a resumable
operator whose jobs are running (``ResumableBatchOperator`` against the moto lifecycle
controller, ``ResumableDatabricksSubmitRunOperator`` against the fake Databricks, each fake in
its own process): every first try submits its job and polls it, then is stopped as a worker
shutdown stops it (a checkpoint); the fake's realism throttle goes on (``--rate`` calls a second
after a burst of ``--burst``: AWS answers 429 ``TooManyRequestsException``, Databricks 429 with
``Retry-After``), and 64 new tries start at the same instant. Neither botocore nor the
Databricks hook retries (one attempt per call), so every throttled answer reaches the operator.
Once every job has been read by a resumed try, the jobs end.

The tries run in threads (``mass_resume_threads.py`` says exactly what is real); ``--airflow``
runs each service on a real deployment instead (``mass_resume_airflow.py``; PostgreSQL,
LocalExecutor, a node drain of 64 task instances). There ``resume_delay`` is 30 s by default:
at 5 s a loaded scheduler can fail the resumed try (docs/benchmarks.md, *On a real deployment*).

Figures per service: tasks; throttled answers the fake served after the release; jobs created
beyond one per task (duplicates, from the fake's ledger); retries used (tries that failed: each
would spend one of Airflow's retries); seconds from the release until the first and the last job
were read successfully by a resumed try (all reconnected); seconds from the jobs' end until every
try returned (all finished). It exits non-zero unless every service shows 0 duplicates, 0 retries,
and throttled answers (a run the throttle never touched proves nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).parent))

from mass_resume_threads import BatchService, DatabricksService, ThreadResult, run_threads  # siblings

from airflow_resumable.testing.aws import MotoControlClient, MotoProcess, provision_batch
from airflow_resumable.testing.databricks import FakeDatabricksProcess
from airflow_resumable.testing.realism import Realism
from airflow_resumable.testing.services import missing_services

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mass_resume_threads import Service

SERVICES = ("batch", "databricks")


def _api(realism: Realism) -> str:
    if realism.throttle_rate is None:
        return "no throttle (baseline)"
    return f"throttled to {realism.throttle_rate:g} calls/s after a burst of {realism.throttle_burst}"


def report(results: list[ThreadResult], realism: Realism) -> list[str]:
    """Print one row per service; return the broken claims (empty when every run holds them)."""
    print(f"\nMass resume: {results[0].tasks} tries per operator released at once, fakes {_api(realism)}\n")
    print(
        "| operator | tasks | checkpointed | throttled answers | calls | jobs created | duplicates "
        "| retries used | first reconnected (s) | all reconnected (s) | all finished (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    broken = []
    for r in results:
        print(
            f"| {r.operator_class} | {r.tasks} | {r.checkpointed} | {r.throttled_answers} | {r.calls} "
            f"| {r.jobs_created} | {r.duplicates} | {len(r.failed_tries)} | {r.first_read_s} "
            f"| {r.reconnected_s} | {r.finished_s} |"
        )
        for failure in r.failed_tries:
            print(f"  failed try {failure}")
        if r.duplicates or r.jobs_created != r.tasks:
            broken.append(f"{r.operator_class}: {r.jobs_created} jobs created for {r.tasks} tasks")
        if r.failed_tries:
            broken.append(f"{r.operator_class}: {len(r.failed_tries)} tries failed (retries used)")
        if r.checkpointed != r.tasks:
            broken.append(f"{r.operator_class}: {r.tasks - r.checkpointed} first tries did not checkpoint")
        if realism.throttle_rate is not None and r.throttled_answers == 0:
            broken.append(f"{r.operator_class}: the throttle refused no call (no throttled resume tested)")
    return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--services", nargs="+", default=list(SERVICES), choices=SERVICES)
    parser.add_argument("--tasks", type=int, default=64, help="tries per service (default 64)")
    parser.add_argument(
        "--rate", type=float, default=3.0, help="calls a second per service (default 3; 0: no throttle)"
    )
    parser.add_argument("--burst", type=int, default=10, help="calls accepted at once (default 10)")
    parser.add_argument(
        "--poll-interval", type=float, default=30.0, help="the operators' poll interval (default 30 s)"
    )
    parser.add_argument(
        "--airflow", action="store_true", help="on a real Airflow deployment (needs PostgreSQL)"
    )
    parser.add_argument(
        "--resume-delay",
        type=float,
        default=30.0,
        help="--airflow only: the tasks' resume_delay (default 30 s)",
    )
    args = parser.parse_args(argv)
    realism = Realism(throttle_rate=args.rate or None, throttle_burst=args.burst)
    no_realism = not hasattr(MotoControlClient, "set_realism")
    if realism.throttle_rate is not None and "batch" in args.services and no_realism:
        print("FAILED: this moto controller cannot throttle (no set_realism): Batch not measured")
        if "databricks" not in args.services:
            return 1
        args.services = ["databricks"]
        return max(_main_airflow(args, realism) if args.airflow else _main_threads(args, realism), 1)
    if args.airflow:
        return _main_airflow(args, realism)
    return _main_threads(args, realism)


def _main_threads(args: argparse.Namespace, realism: Realism) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="mass-resume-") as logs:
        for name in args.services:
            with _service(name, Path(logs)) as service:
                results.append(
                    run_threads(service, realism, tasks=args.tasks, poll_interval=args.poll_interval)
                )
    broken = report(results, realism)
    for claim in broken:
        print(f"FAILED: {claim}")
    return 1 if broken else 0


@contextlib.contextmanager
def _service(name: str, logs: Path) -> Iterator[Service]:
    """The fake of ``name`` in its own process, wrapped for :func:`run_threads`."""
    if name == "batch":
        with MotoProcess(lifecycle="manual", log_path=logs / "moto.log") as moto:
            batch = provision_batch(moto.url, name="resume")
            yield BatchService(
                moto.client, {"job_queue": batch.job_queue, "job_definition": batch.job_definition}
            )
    else:
        with FakeDatabricksProcess(lifecycle="manual", log_path=logs / "databricks.log") as fake:
            yield DatabricksService(fake.client, fake.url)


def _main_airflow(args: argparse.Namespace, realism: Realism) -> int:
    from mass_resume_airflow import report_airflow, run_airflow

    if missing := missing_services("postgres"):
        print(f"mass_resume --airflow: needs {', '.join(missing)} (docs/deployment.md); skipped")
        return 0
    clouds_env = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "65",
        # Task processes starting at once on 2 cores: each parses the DAG file slowly.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        # Airflow's default heartbeat (the cluster's 1 s makes a call a second per task).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        "MASS_RESUME_DELAY": str(args.resume_delay),
    }
    broken = []
    with tempfile.TemporaryDirectory(prefix="mass-resume-") as logs:
        for name in args.services:
            with _service(name, Path(logs)) as service:
                result = run_airflow(service, realism, tasks=min(args.tasks, 64), clouds_env=clouds_env)
            failed = report_airflow(result, _api(realism))
            if realism.throttle_rate is not None and result.throttled_answers == 0:
                failed.append("the throttle refused no call: the run did not test a throttled resume")
            if failed:
                print(f"The deployment's home and logs are kept: {result.home}")
            else:
                shutil.rmtree(result.home, ignore_errors=True)
            broken += [f"{result.operator_class} on Airflow: {claim}" for claim in failed]
    for claim in broken:
        print(f"FAILED: {claim}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
