"""The "Resumable jobs" page's reads: 10,000 records paginated, filtered and counted in SQL."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from airflow_resumable.ledger import ledger_entry, ledger_key
from airflow_resumable.record import JobRecord, TaskIdentity
from airflow_resumable.ui import app as ui_app
from airflow_resumable.ui._query import JobFilter, ledger_only, query_jobs
from airflow_resumable.ui._rows import job_row
from tests.ui.conftest import SHAPES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from tests.ui.conftest import Deployment

#: Generous bounds for a 2-core CI machine; the figures printed are what the note reports.
QUERY_BOUND_S = 1.0
PAGE_BOUND_S = 3.0


@pytest.fixture
def session() -> Iterator[Session]:
    from airflow.utils.session import create_session

    with create_session() as session:
        yield session


def page(session: Session, deployment: Deployment, **kwargs: Any) -> Any:
    limit, offset = kwargs.pop("limit", 50), kwargs.pop("offset", 0)
    readable = kwargs.pop("readable", deployment.dag_ids)
    before_id = kwargs.pop("before_id", None)
    return query_jobs(
        session,
        readable_dag_ids=readable,
        filters=JobFilter(**kwargs),
        limit=limit,
        offset=offset,
        before_id=before_id,
    )


class TestTenThousandRecords:
    def test_a_page_is_read_with_limit_and_offset_in_the_database(
        self, session: Session, deployment: Deployment, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The first and the last page of 10,000 records each come back fast, with the right totals."""
        assert deployment.total == 10_000
        first = page(session, deployment)
        last = page(session, deployment, offset=9_990)
        attention = page(session, deployment, attention_only=True)
        with capsys.disabled():
            print(
                f"\n  [10,000 records] first page {first.query_seconds * 1000:.1f} ms, "
                f"last page {last.query_seconds * 1000:.1f} ms, "
                f"attention page {attention.query_seconds * 1000:.1f} ms"
            )
        assert (first.total, len(first.records)) == (10_000, 50)
        assert (last.total, len(last.records)) == (10_000, 10)
        assert max(first.query_seconds, last.query_seconds, attention.query_seconds) < QUERY_BOUND_S

    def test_pages_are_disjoint_and_newest_first(self, session: Session, deployment: Deployment) -> None:
        """Page 2 continues page 1: no row twice, every record created before the ones above it."""
        one, two = page(session, deployment), page(session, deployment, offset=50)
        keys = [(r.dag_id, r.run_id, r.task_id) for r in [*one.records, *two.records]]
        assert len(set(keys)) == 100
        ids = [r.store_id for r in [*one.records, *two.records]]
        assert ids == sorted(ids, reverse=True)  # type: ignore[type-var]

    def test_the_keyset_cursor_gives_the_same_page_as_the_offset(
        self, session: Session, deployment: Deployment
    ) -> None:
        """Reading on from ``next_before_id`` gives the ``offset`` page; the last page has no cursor."""
        one = page(session, deployment)
        assert one.next_before_id == one.records[-1].store_id
        by_cursor = page(session, deployment, before_id=one.next_before_id)
        by_offset = page(session, deployment, offset=50)
        assert [r.store_id for r in by_cursor.records] == [r.store_id for r in by_offset.records]
        assert page(session, deployment, offset=9_990).next_before_id is None

    def test_the_whole_page_loads_fast(
        self, deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """GET /jobs over 10,000 records (query, rows, links, HTML) answers within the bound."""
        monkeypatch.setattr(ui_app, "_readable_dag_ids", lambda user, session: set(deployment.dag_ids))
        app = ui_app.create_app()
        app.dependency_overrides[ui_app._user_or_none] = lambda: object()
        with TestClient(app) as client:
            client.get("/jobs")  # warm up: imports, the serialized DAGs' first load
            began = time.perf_counter()
            response = client.get("/jobs")
            seconds = time.perf_counter() - began
            attention = client.get("/jobs", params={"attention": "1", "page": 3})
        with capsys.disabled():
            print(f"\n  [10,000 records] GET /jobs: {seconds * 1000:.0f} ms, {len(response.text)} bytes")
        assert response.status_code == 200 and attention.status_code == 200
        assert '<b id="total">10000</b>' in response.text
        assert response.text.count('<tr class="job') == 50
        assert "page 3 of 80" in attention.text  # 4,000 of 10,000 need attention, 50 a page
        assert seconds < PAGE_BOUND_S


class TestFilters:
    def test_dag_filter(self, session: Session, deployment: Deployment) -> None:
        """One DAG: only its records, counted in SQL."""
        result = page(session, deployment, dag_id="ui_dag_b")
        assert result.total == 5_000 and {r.dag_id for r in result.records} == {"ui_dag_b"}

    def test_phase_filter(self, session: Session, deployment: Deployment) -> None:
        """One phase: its records only (3 of every 10 shapes are completed)."""
        result = page(session, deployment, phase="completed", limit=500)
        assert result.total == 3_000
        assert {json.loads(r.value)["phase"] for r in result.records} == {"completed"}

    def test_attention_filter_counts_the_same_set_as_the_rows(
        self, session: Session, deployment: Deployment
    ) -> None:
        """SQL's "needs attention" and the row's own verdict agree on every shape of record."""
        sample = page(session, deployment, limit=len(SHAPES) * 2).records
        for stored in sample:
            task = TaskIdentity(stored.dag_id, stored.run_id, stored.task_id, stored.map_index)
            selected = page(session, deployment, task=task, attention_only=True).records
            assert bool(selected) == bool(job_row(stored).attention), (stored.ti_state, stored.value)
        assert page(session, deployment, attention_only=True).total == 4_000

    def test_only_readable_dags_are_seen(self, session: Session, deployment: Deployment) -> None:
        """A user who may read one DAG gets its records only, and its count only."""
        result = page(session, deployment, readable={"ui_dag_a"}, limit=500)
        assert result.total == 5_000 and {r.dag_id for r in result.records} == {"ui_dag_a"}
        assert page(session, deployment, readable=set()).total == 0


class TestLedgerOnly:
    def test_a_job_whose_run_was_deleted_shows_from_the_ledger(
        self, session: Session, deployment: Deployment
    ) -> None:
        """A ledger entry without a record (its DAG run deleted) is listed, its task instance gone."""
        from airflow.models.variable import Variable

        gone = TaskIdentity("ui_dag_a", "manual__deleted", "job_000", -1)
        record = JobRecord.new_intent(gone, generation=1, fingerprint=None).evolve(
            external_id=77, phase="submitted"
        )
        Variable.set(ledger_key(gone), ledger_entry(gone, record), serialize_json=True, session=session)
        kept = page(session, deployment).records[0]  # has a record: not listed again
        kept_identity = TaskIdentity(kept.dag_id, kept.run_id, kept.task_id, kept.map_index)
        kept_record = JobRecord.from_json(json.loads(kept.value))
        Variable.set(
            ledger_key(kept_identity),
            ledger_entry(kept_identity, kept_record),
            serialize_json=True,
            session=session,
        )
        session.flush()
        found = ledger_only(session, readable_dag_ids=deployment.dag_ids, filters=JobFilter()).records
        assert [(r.run_id, r.ti_found, r.source) for r in found] == [("manual__deleted", False, "ledger")]
        row = job_row(found[0])
        assert row.ti_state == "gone" and row.attention
        assert ledger_only(session, readable_dag_ids={"ui_dag_b"}, filters=JobFilter()).records == []
        session.rollback()

    def test_a_forged_ledger_entry_is_not_listed_and_a_given_up_cancel_is_said(
        self, session: Session, deployment: Deployment
    ) -> None:
        """A forged (unsealed) Variable is not listed; a sealed one the custodian gave up on says so."""
        from airflow.models.variable import Variable

        forged = TaskIdentity("ui_dag_a", "manual__forged", "job_000", -1)
        gone = TaskIdentity("ui_dag_a", "manual__gave_up", "job_000", -1)
        record = JobRecord.new_intent(forged, generation=1, fingerprint=None).evolve(
            external_id=66, phase="submitted"
        )
        unsealed = {k: v for k, v in ledger_entry(forged, record).items() if k != "seal"}
        Variable.set(ledger_key(forged), unsealed, serialize_json=True, session=session)
        entry = ledger_entry(gone, record)
        entry["custodian"] = {"gave_up": True, "failures": 4, "error": "TimeoutError"}
        Variable.set(ledger_key(gone), entry, serialize_json=True, session=session)
        session.flush()
        found = ledger_only(session, readable_dag_ids=deployment.dag_ids, filters=JobFilter()).records
        assert [r.run_id for r in found] == ["manual__gave_up"], "the forged entry is not listed"
        (row,) = [job_row(r) for r in found]
        assert any("custodian gave up" in why and "TimeoutError" in why for why in row.attention)
        session.rollback()
