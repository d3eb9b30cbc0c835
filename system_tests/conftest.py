"""
System tests: real Airflow processes (api-server, scheduler with LocalExecutor, dag-processor,
task supervisors) against fake clouds that run in their own processes, so remote jobs outlive a
killed worker. One Airflow deployment and one fake Databricks serve the whole session.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_resumable.testing.cluster import AirflowCluster, airflow_cluster
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

if TYPE_CHECKING:
    from collections.abc import Iterator

DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="session")
def fake_databricks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDatabricksProcess]:
    """A fake Databricks Jobs API in its own process; runs stay RUNNING until a test finishes them."""
    log_path = tmp_path_factory.mktemp("fake-databricks") / "fake.log"
    with FakeDatabricksProcess(lifecycle="manual", log_path=log_path) as fake:
        yield fake


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, fake_databricks: FakeDatabricksProcess
) -> Iterator[AirflowCluster]:
    """A real Airflow deployment whose Databricks connection points at the fake."""
    with airflow_cluster(
        tmp_path_factory,
        DAGS,
        env=databricks_connection_env(fake_databricks.url),
        dag_ids={"resumable_databricks", "resumable_databricks_timeout", "resumable_databricks_no_retries"},
    ) as started:
        yield started
