"""
Real Airflow in a test process: a throw-away ``AIRFLOW_HOME`` with a migrated sqlite database, and
:func:`run_dag`, which runs a DAG object through ``dag.test()`` (real task runner, real
``task_state_store``, real retries and reschedules) without a DAG file.

Call :func:`use_temporary_airflow_home` before anything imports ``airflow``: Airflow reads its
configuration once, at import.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = [
    "DagRunOutcome",
    "TaskOutcome",
    "read_ledger",
    "read_task_state",
    "run_dag",
    "use_temporary_airflow_home",
]

_SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__METRICS__STATSD_ON": "False",
}


def use_temporary_airflow_home(home: str | os.PathLike[str] | None = None) -> Path:
    """
    Point this process at a fresh ``AIRFLOW_HOME`` and migrate its sqlite database.

    :param home: directory to use; a new temporary one when None.
    :return: the home directory.
    :raises RuntimeError: ``airflow`` was imported already (its configuration would not follow).
    """
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(home):
        loaded_home = os.environ.get("AIRFLOW_HOME")
        if home is None and loaded_home and Path(loaded_home, "airflow.db").exists():
            return Path(loaded_home)
        raise RuntimeError("use_temporary_airflow_home() must run before airflow is imported")
    path = Path(home) if home else Path(tempfile.mkdtemp(prefix="airflow-resumable-"))
    (path / "dags").mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(path)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(path / "dags")
    for key, value in _SETTINGS.items():
        os.environ.setdefault(key, value)
    # As every real deployment has one: the key that seals records and ledger entries (_trust).
    os.environ.setdefault("AIRFLOW__API__SECRET_KEY", secrets.token_hex(16))
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return path


@dataclass(frozen=True)
class TaskOutcome:
    """The final state of one task instance after :func:`run_dag`."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int


@dataclass(frozen=True)
class DagRunOutcome:
    """What :func:`run_dag` observed: the run's state and each task instance's final state."""

    dag_id: str
    run_id: str
    state: str
    tasks: dict[tuple[str, int], TaskOutcome]

    def task(self, task_id: str, map_index: int = -1) -> TaskOutcome:
        """The outcome of one task instance."""
        return self.tasks[(task_id, map_index)]


def run_dag(dag: DAG, **test_kwargs: Any) -> DagRunOutcome:
    """
    Serialize ``dag`` into the metadata database and run it once with ``dag.test()``.

    Retries happen inside the run (use ``retry_delay=timedelta(0)``); the task state store of each
    task instance survives them, exactly as in production.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    dag_run = dag.test(**test_kwargs)
    run_id, state = dag_run.run_id, str(dag_run.state)
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)
        ).all()
        tasks = {
            (ti.task_id, ti.map_index): TaskOutcome(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=None if ti.state is None else str(ti.state),
                try_number=ti.try_number,
            )
            for ti in tis
        }
        return DagRunOutcome(dag_id=dag.dag_id, run_id=run_id, state=state, tasks=tasks)


def read_task_state(dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
    """Read one value of a task instance's ``task_state_store`` from the metadata database."""
    import json

    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        raw = session.scalar(
            select(TaskStateStoreModel.value).where(
                TaskStateStoreModel.dag_id == dag_id,
                TaskStateStoreModel.run_id == run_id,
                TaskStateStoreModel.task_id == task_id,
                TaskStateStoreModel.map_index == map_index,
                TaskStateStoreModel.key == key,
            )
        )
    return None if raw is None else json.loads(raw)


def read_ledger(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """
    The task instance's entry in the ledger of jobs in flight (an Airflow Variable), or None.

    .. versionadded:: 0.2.0
    """
    import json

    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_resumable.ledger import ledger_key
    from airflow_resumable.record import TaskIdentity

    key = ledger_key(TaskIdentity(dag_id, run_id, task_id, map_index))
    with create_session() as session:
        variable = session.scalar(select(Variable).where(Variable.key == key))
        return None if variable is None else json.loads(variable.val)


def read_xcoms(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """
    Every XCom a task instance left in the metadata database, by key (``return_value``, the
    links' ``_link_<Name>``, the operator's own keys), deserialized.

    .. versionadded:: 0.5.0
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
            )
        ).all()
    return {row.key: XComModel.deserialize_value(row) for row in rows}
