"""The "Resumable jobs" page costs a fixed number of SQL statements, whatever its size."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from airflow_resumable.ledger import LEDGER_KEY_PREFIX, ledger_entry, ledger_key
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity
from airflow_resumable.ui import app as ui_app
from airflow_resumable.ui._query import JobFilter, ledger_only
from tests.ui.conftest import record_for

if TYPE_CHECKING:
    from collections.abc import Iterator

LINK_KEY = "_link_JobRunLink"
DAGS = tuple(f"ui_linked_{n:02d}" for n in range(10))
RUNS, TASKS = 2, 10  # 10 DAGs x 20 task instances: a page of 200 spans every DAG


def url_of(identity: TaskIdentity) -> str:
    """The link the worker stored for a task instance."""
    return f"https://jobs.example/{identity.dag_id}/{identity.run_id}/{identity.task_id}"


@pytest.fixture(scope="module")
def linked() -> tuple[str, ...]:
    """Ten DAGs of an operator with an extra link; a record and a stored link per task instance."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, BaseOperatorLink
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import insert, update

    class JobRunLink(BaseOperatorLink):
        name = "See job run"

        def get_link(self, operator: Any, *, ti_key: Any) -> str:
            return ""

    class LinkedOperator(EmptyOperator):
        operator_extra_links = (JobRunLink(),)

    DagBundlesManager().sync_bundles_to_db()
    now = datetime.now(tz=timezone.utc)
    for dag_id in DAGS:
        with DAG(dag_id, schedule=None) as dag:
            for number in range(TASKS):
                LinkedOperator(task_id=f"job_{number:02d}")
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
            )
        with create_session() as session:
            serialized = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
            assert serialized is not None
            records, links = [], []
            for run in range(RUNS):
                dag_run = serialized.create_dagrun(
                    run_id=f"manual__{run}_{uuid.uuid4().hex[:6]}",
                    run_after=now,
                    run_type=DagRunType.MANUAL,
                    triggered_by=DagRunTriggeredByType.TEST,
                    state=DagRunState.RUNNING,
                    session=session,
                )
                for number in range(TASKS):
                    identity = TaskIdentity(dag_id, dag_run.run_id, f"job_{number:02d}")
                    value, _state = record_for(identity, number)
                    scope = {"dag_run_id": dag_run.id, "dag_id": dag_id, "run_id": dag_run.run_id}
                    scope |= {"task_id": identity.task_id, "map_index": -1}
                    records.append(
                        {**scope, "key": RECORD_KEY, "value": json.dumps(value), "updated_at": now}
                    )
                    links.append({**scope, "key": LINK_KEY, "value": url_of(identity), "timestamp": now})
            session.execute(insert(TaskStateStoreModel), records)
            session.execute(insert(XComModel), links)
            # half the task instances finished, the other half running: some rows need attention
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == dag_id)
                .values(state="failed", operator="LinkedOperator")
            )
    return DAGS


@contextmanager
def counted() -> Iterator[list[str]]:
    """Every SQL statement the metadata database's engine executes inside the block."""
    from airflow import settings
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(settings.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(settings.engine, "before_cursor_execute", count)


@pytest.fixture
def client(linked: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The jobs app for a user who may read the ten linked DAGs."""
    monkeypatch.setattr(ui_app, "_readable_dag_ids", lambda user, session: set(linked))
    app = ui_app.create_app()
    app.dependency_overrides[ui_app._user_or_none] = lambda: object()
    with TestClient(app) as test_client:
        yield test_client


class TestStatementsPerPage:
    def test_a_page_of_5_and_a_page_of_200_cost_the_same_statements(
        self, client: TestClient, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pages of 5 rows (one DAG) and 200 rows (ten DAGs, links, ledger notes) run as many statements."""
        from airflow_resumable.ui import _links

        client.get("/api/jobs", params={"limit": 1})  # warm up: imports
        counts: dict[int, int] = {}
        for limit in (5, 200):
            _links._LINKS_BY_DAG_HASH.clear()  # the worst case: no DAG's links known yet
            with counted() as statements:
                response = client.get("/api/jobs", params={"limit": limit})
            assert response.status_code == 200
            body = response.json()
            assert len(body["jobs"]) == limit and body["total_entries"] == len(DAGS) * RUNS * TASKS
            counts[limit] = len(statements)
        with capsys.disabled():
            print(f"\n  [jobs page] SQL statements: page of 5 -> {counts[5]}, page of 200 -> {counts[200]}")
        # records, counts, ledger batch, ledger notes, DAG versions, their links, the XComs
        assert counts[5] == counts[200] <= 8

    def test_the_html_page_costs_the_same_on_a_cold_link_cache(self, client: TestClient) -> None:
        """With the link cache empty, every DAG's links are still read in one statement, not one per DAG."""
        from airflow_resumable.ui import _links

        _links._LINKS_BY_DAG_HASH.clear()
        with counted() as cold:
            assert client.get("/jobs").status_code == 200
        with counted() as warm:
            assert client.get("/jobs").status_code == 200
        assert len(cold) == len(warm) + 1

    def test_the_links_read_in_one_batch_are_each_rows_own(self, client: TestClient) -> None:
        """Every row with a job id carries the URL stored for its own task instance."""
        jobs = client.get("/api/jobs", params={"limit": 200}).json()["jobs"]
        assert jobs and all(
            job["link"] == url_of(TaskIdentity(job["dag_id"], job["run_id"], job["task_id"])) for job in jobs
        )


class TestLedgerPaging:
    @pytest.fixture
    def orphans(self, linked: tuple[str, ...]) -> Iterator[list[TaskIdentity]]:
        """Seven ledger entries whose DAG runs were deleted (no record, no task instance)."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        gone = [TaskIdentity(linked[0], f"manual__deleted_{n}", "job_00") for n in range(7)]
        with create_session() as session:
            # Only these seven in the ledger: other test modules of this worker share the database.
            session.execute(delete(Variable).where(Variable.key.like(LEDGER_KEY_PREFIX + "%")))
            for identity in gone:
                record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
                entry = ledger_entry(identity, record.evolve(external_id=n_of(identity), phase="submitted"))
                Variable.set(ledger_key(identity), entry, serialize_json=True, session=session)
        yield gone
        with create_session() as session:
            session.execute(delete(Variable).where(Variable.key.in_([ledger_key(i) for i in gone])))

    def test_entries_past_the_budget_are_counted_and_read_on_from_the_cursor(
        self, orphans: list[TaskIdentity], linked: tuple[str, ...]
    ) -> None:
        """A budget of 4 reads 4 entries in batches of 2, reports 3 unread, and the cursor reads those 3."""
        from airflow.utils.session import create_session

        with create_session() as session, counted() as statements:
            first = ledger_only(session, readable_dag_ids=linked, filters=JobFilter(), budget=4, batch=2)
        assert (first.read, first.unread) == (4, 3) and first.next_after is not None
        assert len(statements) <= 2 * 3 + 1  # two batches of at most three queries, one count
        with create_session() as session:
            rest = ledger_only(
                session, readable_dag_ids=linked, filters=JobFilter(), after_id=first.next_after, batch=2
            )
        assert (rest.unread, rest.next_after) == (0, None)
        seen = [
            TaskIdentity(r.dag_id, r.run_id, r.task_id, r.map_index) for r in [*first.records, *rest.records]
        ]
        assert sorted(seen, key=str) == sorted(orphans, key=str)

    def test_the_page_says_how_many_ledger_entries_it_did_not_read(
        self, orphans: list[TaskIdentity], client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the budget, the HTML and the JSON both say how many entries were not read, with a cursor."""
        from airflow_resumable.ui import _query

        monkeypatch.setattr(_query, "LEDGER_SCAN_BUDGET", 3)
        body = client.get("/api/jobs", params={"limit": 5}).json()
        assert body["ledger_unread_entries"] == 4 and body["ledger_next_after"]
        page = client.get("/jobs").text
        assert 'id="ledger-unread"' in page and "4 ledger entries not read yet" in page
        after = client.get("/api/jobs", params={"limit": 5, "ledger_after": body["ledger_next_after"]}).json()
        assert after["ledger_unread_entries"] == 1


def n_of(identity: TaskIdentity) -> int:
    """A job id for an orphan: the number in its run id."""
    return int(identity.run_id.rsplit("_", 1)[1])
