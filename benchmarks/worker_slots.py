"""
The worker-slot cost of waiting for a remote job: stock deferrable vs resumable deferrable vs resumable.

``make benchmark`` (after the chaos benchmark) or ``.venv/bin/python benchmarks/worker_slots.py``
starts a real Airflow deployment **with a triggerer** (api-server, scheduler with LocalExecutor,
dag-processor, triggerer, sqlite), the fake Databricks Jobs API and the moto lifecycle controller,
and runs each operator three ways on a remote job of ``--job-seconds`` (no fault):

- ``stock deferrable``: the provider's operator with ``deferrable=True``;
- ``resumable deferrable``: ours with ``deferrable=True``;
- ``resumable``: ours waiting in the worker (what it did for every AWS operator before 0.2.0).

**Worker seconds** are what the supervisors log as ``Workload finished duration=`` for the task
instance, summed over its executions (a deferred task runs twice: submit, then resume): the time a
worker slot was held. The table shows them per second of remote job, and the seconds themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from chaos_benchmark import (  # the sibling script's machinery: same clouds, same DAGs
    CLASS_NAMES,
    DAGS,
    OPERATORS,
    Bench,
    Ledgers,
    Planned,
    Result,
    Run,
    _exit_on_sigterm,
)

from airflow_resumable.testing.aws import MotoProcess, aws_connection_env
from airflow_resumable.testing.cluster import AirflowCluster, wait_until
from airflow_resumable.testing.databricks import (
    FakeDatabricksProcess,
    databricks_connection_env,
)

VARIANTS = {
    "stock_deferrable": "stock deferrable",
    "resumable_deferrable": "resumable deferrable",
    "resumable": "resumable (waits in the worker)",
}
_WORKLOAD = re.compile(r"Workload finished.*")
_FIELD = {name: re.compile(rf"\b{name}=['\"]?([^\s'\"]+)") for name in ("workload_id", "duration")}


def worker_seconds(scheduler_log: Path, ti_id: str) -> tuple[float, int]:
    """Seconds the workloads of task instance ``ti_id`` held a worker, and how many there were."""
    total, count = 0.0, 0
    for line in scheduler_log.read_text(errors="replace").splitlines():
        if _WORKLOAD.search(line) is None:
            continue
        fields = {name: pattern.search(line) for name, pattern in _FIELD.items()}
        if fields["workload_id"] and fields["duration"] and fields["workload_id"].group(1) == ti_id:
            total += float(fields["duration"].group(1))
            count += 1
    return total, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--job-seconds", type=float, default=30.0, help="length of every remote job")
    parser.add_argument("--parallel", type=int, default=6, help="DAG runs at once")
    parser.add_argument("--operators", nargs="+", choices=OPERATORS, default=OPERATORS, help="a subset")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="airflow-resumable-slots-")))
        databricks = stack.enter_context(FakeDatabricksProcess(lifecycle="manual", log_path=tmp / "db.log"))
        moto = stack.enter_context(MotoProcess(lifecycle="manual", log_path=tmp / "moto.log"))
        env = {**databricks_connection_env(databricks.url), **aws_connection_env(moto.url, max_attempts=1)}
        cluster = stack.enter_context(
            AirflowCluster(
                DAGS, home=tmp / "airflow", env=env, executor_parallelism=args.parallel + 1, triggerer=True
            )
        )
        print(f"Airflow (with a triggerer) up after {time.monotonic() - began:.0f}s.", flush=True)
        bench = Bench(cluster, databricks, moto, Ledgers(databricks.client, moto.client))
        planned = [Planned(op, 0, "none", args.job_seconds, 0.0) for op in args.operators]
        runs = [Run(bench, p, variant) for p in planned for variant in VARIANTS]
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            try:
                results: list[Result] = list(pool.map(lambda run: run.run(), runs))
            finally:
                bench.stopped.set()
        slots: dict[tuple[str, str], tuple[float, int]] = {}
        log = cluster.process_log("scheduler")
        for run, result in zip(runs, results, strict=True):
            if not result.error:
                ti_id = str(cluster.task_instance(run.dag_id, run.run_id, "job")["id"])
                # A supervisor logs its workload's end after the task reported its state: wait for
                # one line per execution (submit, resume) the task logs show.
                wait_until(
                    lambda ti_id=ti_id, run=run: worker_seconds(log, ti_id)[1] >= max(run.executions(), 1),
                    timeout=60,
                    what=f"{run.dag_id}: every workload's end in the scheduler log "
                    f"({worker_seconds(log, ti_id)[1]} of {run.executions()} executions)",
                )
                slots[(run.op, run.variant)] = worker_seconds(log, ti_id)
    print()
    print(table(args.operators, runs, results, slots, args.job_seconds))
    errors = [(run, r) for run, r in zip(runs, results, strict=True) if r.error or r.state != "success"]
    for run, r in errors:
        print(f"  ERROR {run.dag_id}: {r.error or r.state} (jobs={r.jobs})")
    print(f"\n{len(runs)} DAG runs, {time.monotonic() - began:.0f}s on {os.cpu_count()} cores.")
    return 1 if errors else 0


def table(
    operators: Any,
    runs: list[Run],
    results: list[Result],
    slots: dict[tuple[str, str], tuple[float, int]],
    job_seconds: float,
) -> str:
    """Worker seconds per second of remote job (worker seconds, workloads; jobs created)."""
    jobs = {(run.op, run.variant): r.jobs for run, r in zip(runs, results, strict=True)}
    header = ["operator", *VARIANTS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for op in operators:
        cells = [CLASS_NAMES[op]]
        for variant in VARIANTS:
            if (op, variant) not in slots:
                cells.append("error")
                continue
            seconds, workloads = slots[(op, variant)]
            cells.append(
                f"{seconds / job_seconds:.2f} ({seconds:.1f} s, {workloads} workloads, "
                f"{jobs[(op, variant)]} job)"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
