"""
The demo: real Airflow (task runner, task state store, retries) against a fake job service.

A worker "dies" twice under each operator: once right after the service accepted the job (before
its id could be stored), once while polling. The stock code path (Airflow's core mixin, as the
provider operators use it) and airflow_resumable's mixin run the same DAG and the same faults;
the table shows how many remote jobs each one started.

Run it with ``make demo``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from airflow_resumable.testing.airflow_env import run_dag, use_temporary_airflow_home


def main() -> int:
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "CRITICAL")  # the table is the output
    use_temporary_airflow_home()
    from airflow.sdk import DAG
    from airflow.sdk import ResumableJobMixin as CoreMixin

    from airflow_resumable.testing.contract import ScenarioProbe, SimulatedWorkerCrash
    from airflow_resumable.testing.toy import ToyTaggedJobOperator, toy_service

    class StockStyleOperator(ToyTaggedJobOperator):
        """The same operator, driven by Airflow's core mixin (what the stock providers do)."""

        def execute(self, context: Any) -> Any:
            return CoreMixin.execute_resumable(self, context)

    def faults(probe: ScenarioProbe, try_number: int, external_id: Any, index: int) -> None:
        if try_number == 2:
            print(f"  try 2: polling {external_id}; killing the worker", flush=True)
            raise SimulatedWorkerCrash("worker killed while polling")
        print(f"  try {try_number}: polling {external_id}; the job finishes", flush=True)
        probe.cloud.finish(external_id, succeeded=True)

    rows = []
    for label, operator_class in (("stock (core mixin)", StockStyleOperator), ("airflow_resumable", None)):
        operator_class = operator_class or ToyTaggedJobOperator
        service = toy_service(f"demo-{uuid.uuid4().hex[:6]}", deduplicates=False)
        print(f"\n== {label}: submit, worker dies before the id is stored, then dies while polling")
        probe = ScenarioProbe(_Driver(service), faults, crash_after_submit={1})
        with DAG(f"demo_{label.split()[0]}_{uuid.uuid4().hex[:4]}", schedule=None) as dag:
            operator_class(
                task_id="remote_job",
                service=service.name,
                command="spark-submit etl.py",
                poll_interval=0.01,
                retries=3,
                retry_delay=timedelta(0),
            )
        started = time.monotonic()
        with probe.install(operator_class):
            outcome = run_dag(dag)
        task = outcome.task("remote_job")
        rows.append(
            (
                label,
                len(service.submissions),
                max(0, len(service.submissions) - 1),
                task.try_number,
                task.state,
                time.monotonic() - started,
            )
        )

    print("\n| operator            | remote jobs | duplicates | tries | final state | seconds |")
    print("|---------------------|-------------|------------|-------|-------------|---------|")
    for label, jobs, dupes, tries, state, seconds in rows:
        print(f"| {label:<19} | {jobs:>11} | {dupes:>10} | {tries:>5} | {state:<11} | {seconds:>7.1f} |")
    resumable = rows[-1]
    ok = resumable[1] == 1 and resumable[4] == "success"
    print(
        "\nresumable: exactly one remote job, reconnected after each crash" if ok else "\nUNEXPECTED RESULT"
    )
    return 0 if ok else 1


class _Driver:
    def __init__(self, service: Any) -> None:
        self.service = service

    def submitted_ids(self) -> list[Any]:
        return list(self.service.submissions)

    def cancelled_ids(self) -> list[Any]:
        return list(self.service.cancels)

    def finish(self, external_id: Any, *, succeeded: bool) -> None:
        self.service.finish(str(external_id), succeeded=succeeded)

    def expire(self, external_id: Any) -> None:
        self.service.expire(str(external_id))


if __name__ == "__main__":
    sys.exit(main())
