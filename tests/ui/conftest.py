"""
A metadata database holding many resumable job records, for the "Resumable jobs" page's queries.

Real Airflow rows: two serialized DAGs, DAG runs and task instances created by Airflow itself
(``create_dagrun``); the records are written straight into ``task_state_store`` as the mixin
writes them, one per task instance, with a spread of phases and task states.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity

if TYPE_CHECKING:
    from collections.abc import Callable

#: (phase, task state, extra record fields) cycled over the task instances, in this order.
SHAPES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("completed", "success", {}),
    ("submitted", "running", {}),
    ("interrupted", "up_for_reschedule", {"resumes": 1}),
    ("submitted", "failed", {}),  # the job may run on: nobody watches it
    ("cancelled", "failed", {}),
    ("completed", "success", {"resumes": 2}),
    ("submitted", "deferred", {}),
    ("interrupted", "failed", {"resumes": 1, "kind": "unknown"}),  # an unclassified stop
    ("cancelled", "failed", {"cancel_failed": True}),
    ("completed", "success", {}),
]


@dataclass(frozen=True)
class Deployment:
    """What the fixture created: DAG ids, task instances per DAG, and a record builder."""

    dag_ids: tuple[str, ...]
    per_dag: int
    record_for: Callable[[TaskIdentity, int], tuple[dict[str, Any], str | None]]

    @property
    def total(self) -> int:
        """Records in the database."""
        return self.per_dag * len(self.dag_ids)


def record_for(identity: TaskIdentity, index: int) -> tuple[dict[str, Any], str | None]:
    """The record of the ``index``-th task instance and the task state it gets (one of :data:`SHAPES`)."""
    phase, state, extra = SHAPES[index % len(SHAPES)]
    record = JobRecord.new_intent(identity, generation=1, fingerprint="sha256:x")
    interruption = None
    if extra.get("resumes"):
        interruption = {"at": "2026-01-01T00:00:00.000+00:00", "try_number": 1, "signal": "SIGTERM"}
        interruption["kind"] = extra.get("kind", "worker_shutdown")
    failed = None
    if extra.get("cancel_failed"):
        failed = {
            "at": "2026-01-01T00:00:00+00:00",
            "external_id": index,
            "reason": "user stop",
            "error": "E",
        }
    record = record.evolve(
        external_id=1000 + index,
        phase=phase,
        resumes=int(extra.get("resumes", 0)),
        interruption=interruption,
        cancel_failed=failed,
    )
    return record.to_json(), state


def _serialize(dag_id: str, tasks: int) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with DAG(dag_id, schedule=None) as dag:
        for number in range(tasks):
            EmptyOperator(task_id=f"job_{number:03d}")
    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def build(dag_ids: tuple[str, ...], runs: int, tasks: int) -> Deployment:
    """Create the DAGs, ``runs`` runs of each with ``tasks`` task instances, one record per task instance."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import insert, update

    now = datetime.now(tz=timezone.utc)
    for dag_id in dag_ids:
        _serialize(dag_id, tasks)
        with create_session() as session:
            dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
            assert dag is not None
            rows, states = [], {}
            for run in range(runs):
                dag_run = dag.create_dagrun(
                    run_id=f"manual__{run:04d}_{uuid.uuid4().hex[:6]}",
                    run_after=now,
                    run_type=DagRunType.MANUAL,
                    triggered_by=DagRunTriggeredByType.TEST,
                    state=DagRunState.RUNNING,
                    session=session,
                )
                for number in range(tasks):
                    index = run * tasks + number
                    identity = TaskIdentity(dag_id, dag_run.run_id, f"job_{number:03d}", -1)
                    value, state = record_for(identity, index)
                    states.setdefault(state, []).append((dag_run.run_id, identity.task_id))
                    rows.append(
                        {
                            "dag_run_id": dag_run.id,
                            "dag_id": dag_id,
                            "run_id": dag_run.run_id,
                            "task_id": identity.task_id,
                            "map_index": -1,
                            "key": RECORD_KEY,
                            "value": json.dumps(value),
                            "updated_at": now - timedelta(seconds=index),
                        }
                    )
            session.execute(insert(TaskStateStoreModel), rows)
            for state, keys in states.items():
                for run_id in {run_id for run_id, _ in keys}:
                    task_ids = [task_id for r, task_id in keys if r == run_id]
                    session.execute(
                        update(TaskInstance)
                        .where(
                            TaskInstance.dag_id == dag_id,
                            TaskInstance.run_id == run_id,
                            TaskInstance.task_id.in_(task_ids),
                        )
                        .values(state=state, operator="ResumableDatabricksSubmitRunOperator")
                    )
    return Deployment(dag_ids, runs * tasks, record_for)


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    """10,000 records: two DAGs, 100 runs of 50 task instances each."""
    return build(("ui_dag_a", "ui_dag_b"), runs=100, tasks=50)
