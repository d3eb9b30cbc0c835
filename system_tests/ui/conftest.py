"""
The "Resumable jobs" page's own Airflow deployment: the session's fake Databricks, two users.

Not the session's ``cluster``: that one makes every request an admin
(``simple_auth_manager_all_admins``), and this test needs two users who may read different DAGs
(:mod:`ui_auth`). Three executor slots, no triggerer: the three tasks of ``dags/ui_jobs.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_resumable.testing.cluster import AirflowCluster, airflow_cluster
from airflow_resumable.testing.databricks import FakeDatabricksProcess, databricks_connection_env

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator

HERE = Path(__file__).parent
DAGS = HERE / "dags"
#: Users of the deployment: alice may read every DAG, bob only ``ui_jobs_other`` (:mod:`ui_auth`).
PASSWORDS = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}


@pytest.fixture(scope="module")
def ui_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    fake_databricks: FakeDatabricksProcess,
    metadata_database: Callable[..., contextlib.AbstractContextManager[str | None]],
) -> Iterator[AirflowCluster]:
    """
    Airflow with the per-user auth manager and two users, against the session's fake Databricks,
    on a fresh PostgreSQL database (the page's SQL reads the records with PostgreSQL's JSON
    operators there; sqlite where the machine has no PostgreSQL).
    """
    passwords = tmp_path_factory.mktemp("ui-auth") / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    python_path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {
        **databricks_connection_env(fake_databricks.url),
        "PYTHONPATH": python_path,
        "AIRFLOW__CORE__AUTH_MANAGER": "ui_auth.PerUserDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "alice:admin,bob:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    dag_ids = {"ui_jobs", "ui_jobs_other"}
    with (
        metadata_database(required=False) as database_url,
        airflow_cluster(
            tmp_path_factory,
            DAGS,
            env=env,
            executor_parallelism=3,
            dag_ids=dag_ids,
            database_url=database_url,
        ) as started,
    ):
        yield started


@pytest.fixture(scope="module")
def ui_passwords() -> dict[str, str]:
    """The users' passwords (written to the SimpleAuthManager's password file)."""
    return dict(PASSWORDS)


@pytest.fixture
def chromium() -> tuple[str, str]:
    """
    Debian's chromium and chromium-driver paths, or skip (one line) / fail under ``CI=true``.

    ``make browser`` (run by ``make test`` and ``make system``) installs them with apt-get.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    try:
        import selenium  # noqa: F401 - only checking that it is installed
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"no browser for the UI test: {', '.join(missing)} missing (`make browser` installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert chromium is not None and driver is not None
    return chromium, driver
