"""
System tests: real Airflow processes (api-server, scheduler with LocalExecutor, dag-processor,
triggerer, task supervisors) against fake clouds that run in their own processes, so remote jobs outlive a
killed worker. One Airflow deployment, one fake Databricks and one moto lifecycle controller
serve the whole session; ``chaos/test_chaos_celery.py`` adds a CeleryExecutor deployment.

Every deployment gets a fresh PostgreSQL database (:func:`metadata_database`) on the machine's
PostgreSQL. Without one, the LocalExecutor deployment falls back to sqlite and the Celery tests
skip, each with one line saying so; under ``CI=true`` a missing PostgreSQL or Redis fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_resumable.testing.aws import MotoProcess, aws_connection_env
from airflow_resumable.testing.cluster import AirflowCluster, airflow_cluster
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env
from airflow_resumable.testing.services import (
    fresh_postgres_database,
    missing_services,
    require,
    service_urls,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

DAGS = Path(__file__).parent / "dags"
#: The AWS connection with botocore's retries on (``dags/chaos_resumable.py``, shape ``_sdk_retries``).
SDK_RETRIES_CONN_ID = "aws_sdk_retries"
#: Airflow plugins of the session's cluster: ``chaos_faults`` (api-server fault injection). Airflow
#: puts this folder on ``sys.path``; so do the tests, which write the plugin's fault files.
PLUGINS = Path(__file__).parent / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

import chaos_faults  # noqa: E402 - importable once PLUGINS is on sys.path


@contextlib.contextmanager
def _fresh_metadata_database(*, required: bool) -> Iterator[str | None]:
    """
    A fresh PostgreSQL database for one deployment (dropped afterwards), as its SQLAlchemy URL.

    Without a reachable PostgreSQL: ``required`` skips the test (fails it under ``CI=true``);
    otherwise None (sqlite), with one warning line, except under CI, where it fails.
    """
    if required or os.environ.get("CI", "").lower() == "true" or not missing_services("postgres"):
        with fresh_postgres_database(require("postgres").postgres) as url:
            yield url
        return
    warnings.warn(f"no PostgreSQL at {service_urls().postgres}: this deployment runs on sqlite", stacklevel=2)
    yield None


@pytest.fixture(scope="session")
def metadata_database() -> Callable[..., contextlib.AbstractContextManager[str | None]]:
    """
    The one way a deployment of these tests gets its metadata database: call it per deployment.

    ``with metadata_database(required=False) as url:`` gives a fresh PostgreSQL database's URL
    (None: sqlite, on a machine without PostgreSQL); ``required=True`` skips (under CI: fails)
    where there is no PostgreSQL.
    """
    return _fresh_metadata_database


@pytest.fixture(scope="session")
def deployment_env(
    fake_databricks: FakeDatabricksProcess, moto: MotoProcess, chaos_fault_dir: Path
) -> Mapping[str, str]:
    """
    What the session's deployments share: the fake clouds' connections, the fault plugin, a 20 s
    heartbeat timeout and a 5 s custodian sweep.
    """
    return {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__RESUMABLE__CUSTODIAN_INTERVAL_SECONDS": "5",
        **databricks_connection_env(fake_databricks.url),
        **aws_connection_env(moto.url, conn_id=SDK_RETRIES_CONN_ID, max_attempts=3),
        **aws_connection_env(moto.url, max_attempts=1),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        chaos_faults.FAULT_DIR_ENV: str(chaos_fault_dir),
    }


@pytest.fixture(scope="session")
def fake_databricks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDatabricksProcess]:
    """A fake Databricks Jobs API in its own process; runs stay RUNNING until a test finishes them."""
    log_path = tmp_path_factory.mktemp("fake-databricks") / "fake.log"
    with FakeDatabricksProcess(lifecycle="manual", log_path=log_path) as fake:
        yield fake


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoProcess]:
    """moto with the lifecycle controller in its own process; jobs run until a test finishes them."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoProcess(lifecycle="manual", log_path=log_path) as process:
        yield process


@pytest.fixture(scope="session")
def chaos_fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests put the faults the api-server's ``chaos_faults`` plugin injects (one file per try)."""
    return tmp_path_factory.mktemp("chaos-faults")


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    fake_databricks: FakeDatabricksProcess,
    moto: MotoProcess,
    metadata_database: Callable[..., contextlib.AbstractContextManager[str | None]],
    deployment_env: Mapping[str, str],
) -> Iterator[AirflowCluster]:
    """
    A real Airflow deployment whose Databricks and AWS connections point at the fakes.

    Six executor slots: the chaos suite runs up to five task instances at once, and a worker
    killed by a test is replaced without waiting for one. On ``aws_default`` botocore does not
    retry (one attempt per call): the operators' own ``cloud_retry`` is what the tests exercise.
    ``aws_sdk_retries`` keeps botocore's retries on (3 attempts), as most deployments do: the
    lost-response case uses it to show that a submit call is still never re-sent blindly.
    A triggerer runs the deferrable shapes' triggers (``chaos_<op>_deferrable``).

    The metadata database is a fresh PostgreSQL database (sqlite where the machine has none).
    The heartbeat timeout is 20 s, not the harness's 10 s: on 2 cores, with five chaos cases at
    once, the sqlite api-server once stalled for 15 s, long enough for the scheduler to fail a
    healthy try as "without a heartbeat" (seen once in five full runs). A SIGKILLed worker is
    retried 10 s later for it.

    The custodian (``airflow_resumable.custodian``) sweeps the ledger of jobs in flight every 5 s
    instead of 10 s (``[resumable] custodian_interval_seconds``): a deleted DAG run, which no
    listener hook reports, has its job cancelled by that sweep, and the chaos case that deletes
    one waits for it.
    """
    with (
        metadata_database(required=False) as database_url,
        airflow_cluster(
            tmp_path_factory,
            DAGS,
            env=deployment_env,
            executor_parallelism=6,
            triggerer=True,
            database_url=database_url,
        ) as started,
    ):
        yield started
