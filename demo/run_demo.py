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
import sys
from typing import TYPE_CHECKING, Any

from all_operators import (  # demo/ is the script's directory: on sys.path
    DAGS,
    aws_remote,
    databricks_remote,
    main,
    run_once,
    say,
)

from airflow_resumable.testing.aws import (
    MotoProcess,
    aws_connection_env,
    provision_batch,
    provision_emr_serverless_application,
)
from airflow_resumable.testing.cluster import AirflowCluster
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from all_operators import Outcome


def run_three(tmp: Path) -> list[Outcome]:
    """Start everything, run the three-task stock DAG, then the resumable one; stop everything."""
    with contextlib.ExitStack() as stack:
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

        def field(name: str) -> Callable[[dict[str, Any]], Any]:
            return lambda request: request.get(name)

        remotes = [
            databricks_remote(fake, "databricks_run", "Databricks run", field("run_name")),
            aws_remote(moto, "batch_job", "Batch job", "batch", field("jobName"), "-batch"),
            aws_remote(
                moto, "emr_serverless_job", "EMR Serverless job", "emr-serverless", field("name"), "-emr"
            ),
        ]
        outcomes = run_once(cluster, remotes, "demo_stock", conf, "stock")
        return outcomes + run_once(cluster, remotes, "demo_resumable", conf, "resumable")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--all", action="store_true", help="every operator, twelve jobs at once")
    sys.exit(main() if parser.parse_args().all else main(run_three))
