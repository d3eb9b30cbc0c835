"""
The demo: real Airflow, a fake Databricks, a worker shut down in the middle of a remote run.

It starts an Airflow deployment (api-server, scheduler with LocalExecutor, dag-processor, sqlite)
and a fake Databricks Jobs API in its own process, runs a DAG whose task submits a Databricks run,
sends SIGTERM to the task's supervisor while the run is in progress (what a deploy, an eviction or
a spot reclaim does), lets the remote run finish, and prints what happened. First with the stock
``DatabricksSubmitRunOperator``, then with ``ResumableDatabricksSubmitRunOperator``.

Run it with ``make demo``. Everything it starts is stopped when it ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from airflow_resumable.testing.cluster import AirflowCluster, wait_until
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

DAGS = Path(__file__).parent / "dags"
TASK = "databricks_run"


@dataclass
class Outcome:
    """What one DAG run did to the remote side."""

    label: str
    submitted: int
    cancelled: int
    tries: int
    state: str
    recovery_s: float


def say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')}  {message}", flush=True)


def run_once(cluster: AirflowCluster, fake: FakeDatabricksProcess, dag_id: str, label: str) -> Outcome:
    """Trigger ``dag_id``, shut its worker down mid-run, let the remote run finish, report."""
    run_name = f"{dag_id}-{uuid.uuid4().hex[:6]}"

    def runs() -> list[int]:
        return [
            e.run_id for e in fake.client.submissions() if e.body.get("run_name") == run_name and e.run_id
        ]

    def cancels() -> list[int]:
        return [e.run_id for e in fake.client.cancels() if e.run_id in set(runs())]

    print(f"\n== {label}")
    run_id = cluster.trigger(dag_id, {"run_name": run_name})
    say(f"triggered {dag_id}")
    first = wait_until(runs, timeout=120, what="the Databricks run")[0]
    processes = cluster.task_processes(dag_id, TASK, run_id)
    say(f"Databricks run {first} is RUNNING; task polling it (supervisor pid {processes.supervisor_pid})")
    fault_at = time.monotonic()
    processes.signal_supervisor(signal.SIGTERM)
    say("worker shutdown: SIGTERM sent to the task's supervisor")

    left = cluster.wait_for_ti_state(
        dag_id, run_id, TASK, {"up_for_retry", "up_for_reschedule", "failed", "success"}, timeout=120
    )
    say(f"the task left its worker: {left['state']}")
    back_since = time.time()

    def recovered() -> int | None:
        latest = runs()[-1]
        ti = cluster.task_instance(dag_id, run_id, TASK)
        polled = any(e.run_id == latest and e.timestamp > back_since for e in fake.client.calls("runs/get"))
        return latest if ti["state"] == "running" and polled else None

    current = wait_until(recovered, timeout=120, what="the task polling a run again")
    recovery = time.monotonic() - fault_at
    verb = "reconnected to the same run" if current == first else f"submitted a new run {current}"
    say(f"the task is back after {recovery:.1f}s and {verb}")
    for remote in runs():
        state = fake.client.get_run(remote)["state"]
        say(f"  run {remote}: {state['life_cycle_state']} {state.get('result_state') or ''}".rstrip())
    fake.client.finish_run(current, "SUCCESS")
    say(f"Databricks run {current} finished: SUCCESS (the remote job did its work)")
    state = cluster.wait_for_dag_run(dag_id, run_id, timeout=120)
    ti = cluster.task_instance(dag_id, run_id, TASK)
    say(f"DAG run {state}, task {ti['state']} after {ti['try_number']} tries")
    return Outcome(label, len(runs()), len(cancels()), ti["try_number"], ti["state"], recovery)


def main() -> int:
    started = time.monotonic()
    print("Starting a fake Databricks and an Airflow deployment (api-server, scheduler, dag-processor)...")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="airflow-resumable-demo-")))
        fake = stack.enter_context(FakeDatabricksProcess(lifecycle="manual", log_path=tmp / "fake.log"))
        env = databricks_connection_env(fake.url)
        dag_ids = {"demo_stock", "demo_resumable"}
        cluster = stack.enter_context(AirflowCluster(DAGS, home=tmp / "airflow", env=env, dag_ids=dag_ids))
        say(f"Airflow up at {cluster.base_url}; fake Databricks at {fake.url}")
        outcomes = [
            run_once(cluster, fake, "demo_stock", "DatabricksSubmitRunOperator (stock)"),
            run_once(cluster, fake, "demo_resumable", "ResumableDatabricksSubmitRunOperator"),
        ]
    header = ("operator", "remote runs", "cancelled", "duplicates", "tries", "task", "back after")
    rows = [
        (o.label, o.submitted, o.cancelled, o.submitted - 1, o.tries, o.state, f"{o.recovery_s:.1f}s")
        for o in outcomes
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print()
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    resumable = outcomes[-1]
    ok = (resumable.submitted, resumable.cancelled, resumable.tries, resumable.state) == (1, 0, 1, "success")
    print(f"\nDone in {time.monotonic() - started:.0f}s; every process the demo started is stopped.")
    if ok:
        print("Resumable: the run was reconnected, nothing was submitted twice, no retry was burned.")
        return 0
    print("UNEXPECTED: the resumable task did not keep its run.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
