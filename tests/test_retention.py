"""Records expire only once their job ended: ``retention`` per phase, and ``expires_at`` in the database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from tenacity import wait_none

from airflow_resumable._retention import ENDED, NEVER_EXPIRE, expires_at_for, record_retention
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.state import InMemoryTaskStateStore, make_context
from airflow_resumable.testing.toy import ToyJobOperator, toy_service

FAST = RetryPolicy(attempts=3, wait=wait_none())
ACTIVE = ("intent", "submitted", "interrupted")


class RecordingStore(InMemoryTaskStateStore):
    """An in-memory store that keeps the ``retention`` of every write, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.retentions: list[tuple[str, str | None, Any]] = []

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        """Store ``value`` and note the phase (for a record) and the retention it came with."""
        super().set(key, value, retention=retention)
        phase = value.get("phase") if isinstance(value, dict) else None
        self.retentions.append((key, phase, retention))


class TestRetentionOfAPhase:
    @pytest.mark.parametrize("phase", [*ACTIVE, "a-phase-from-a-newer-version"])
    def test_a_job_that_may_run_never_expires(self, phase: str) -> None:
        """Active phases, and any phase this version does not know, are written with NEVER_EXPIRE."""
        assert record_retention(phase) is NEVER_EXPIRE
        assert expires_at_for(phase, datetime.now(tz=timezone.utc)) is None

    @pytest.mark.parametrize("phase", sorted(ENDED))
    def test_an_ended_job_expires_after_the_default_30_days(self, phase: str) -> None:
        """completed and cancelled records get 30 days unless configured otherwise."""
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        assert record_retention(phase) == timedelta(days=30)
        assert expires_at_for(phase, now) == now + timedelta(days=30)

    def test_the_option_sets_the_days_and_0_keeps_records(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """[resumable] record_retention_days is read at each write; 0 means never expire."""
        monkeypatch.setenv("AIRFLOW__RESUMABLE__RECORD_RETENTION_DAYS", "7")
        assert record_retention("completed") == timedelta(days=7)
        monkeypatch.setenv("AIRFLOW__RESUMABLE__RECORD_RETENTION_DAYS", "0")
        assert record_retention("completed") is NEVER_EXPIRE
        monkeypatch.setenv("AIRFLOW__RESUMABLE__RECORD_RETENTION_DAYS", "-1")
        with pytest.raises(ValueError, match="record_retention_days must be >= 0"):
            record_retention("cancelled")


class TestTheMixinWritesWithRetention:
    def test_active_writes_never_expire_and_the_final_one_does(self) -> None:
        """intent and submitted never expire, completed gets 30 days; the mirror, Airflow's default."""
        svc = toy_service(f"retention-{uuid.uuid4().hex[:6]}")
        svc.complete_after_polls = 1
        store = RecordingStore()
        op = ToyJobOperator(
            task_id="t",
            service=svc.name,
            command="echo",
            poll_interval=0,
            cloud_retry=FAST,
            state_store_retry=FAST,
        )
        op.execute(make_context(store))
        records = [(phase, retention) for key, phase, retention in store.retentions if key == RECORD_KEY]
        assert [phase for phase, _ in records] == ["intent", "submitted", "completed"]
        assert [r is NEVER_EXPIRE for _, r in records] == [True, True, False]
        assert records[-1][1] == timedelta(days=30)
        assert [r for key, _, r in store.retentions if key == op.external_id_key] == [None]


class TestExpiresAtInTheDatabase:
    def test_a_completed_record_gets_expires_at_and_clean_leaves_active_ones(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On real Airflow an ended record expires after the configured days; clean-up spares the rest."""
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.sdk import DAG
        from airflow.state.metastore import MetastoreBackend
        from airflow.utils.session import create_session
        from sqlalchemy import select, update

        from airflow_resumable.testing.airflow_env import run_dag

        svc = toy_service(f"retention-{uuid.uuid4().hex[:6]}")
        svc.complete_after_polls = 1
        with DAG(f"retention_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
            ToyJobOperator(task_id="ended", service=svc.name, command="a")
            ToyJobOperator(task_id="active", service=svc.name, command="b")
        monkeypatch.setenv("AIRFLOW__RESUMABLE__RECORD_RETENTION_DAYS", "3")  # not Airflow's 30
        began = datetime.now(tz=timezone.utc)
        outcome = run_dag(dag)
        where = (
            TaskStateStoreModel.dag_id == outcome.dag_id,
            TaskStateStoreModel.key == RECORD_KEY,
        )
        with create_session() as session:
            expiry = dict(
                session.execute(
                    select(TaskStateStoreModel.task_id, TaskStateStoreModel.expires_at).where(*where)
                ).all()
            )
            assert expiry["ended"] is not None
            assert (
                began + timedelta(days=3)
                <= expiry["ended"]
                <= datetime.now(tz=timezone.utc) + timedelta(days=3)
            )
            # what the record of a job that may still run looks like in the table: no expiry
            session.execute(
                update(TaskStateStoreModel)
                .where(*where, TaskStateStoreModel.task_id == "active")
                .values(expires_at=None)
            )
            session.execute(
                update(TaskStateStoreModel)
                .where(*where, TaskStateStoreModel.task_id == "ended")
                .values(expires_at=began - timedelta(days=1))
            )
        MetastoreBackend().cleanup()
        with create_session() as session:
            left = set(session.scalars(select(TaskStateStoreModel.task_id).where(*where)))
        assert left == {"active"}
