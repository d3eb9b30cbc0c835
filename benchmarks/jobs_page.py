"""
The "Resumable jobs" page at 100,000 records: how long a page takes, and how many SQL statements.

``.venv/bin/python benchmarks/jobs_page.py`` fills a fresh Airflow metadata database (PostgreSQL at
``127.0.0.1:5432`` when reachable, as the tests find it, else sqlite; ``--database`` chooses) with
``--records`` job records and everything they hang on: serialized DAGs of an operator with an extra
link, DAG runs, task instances (a spread of states), the links the workers stored in XCom, and a
ledger of jobs in flight (some of them orphans whose DAG run was deleted). Rows are bulk-inserted.

Then it asks the page's JSON endpoint (the real FastAPI app, in process) for the first page, a
middle and the last page by ``offset``, the middle page by keyset cursor (``before_id``), filtered
pages, a page of 500, and the HTML page, and prints, per request: the rows returned, the median
time of ``--repeat`` requests and the SQL statements one request ran. ``docs/ui.md`` shows the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_resumable.testing.airflow_env import use_temporary_airflow_home
from airflow_resumable.testing.services import fresh_postgres_database, missing_services, service_urls

if TYPE_CHECKING:
    from collections.abc import Iterator

#: (phase, task state) cycled over the tasks of a DAG run: 4 of 10 may run, 2 of them unwatched.
SHAPES: list[tuple[str, str]] = [
    ("completed", "success"),
    ("submitted", "running"),
    ("interrupted", "up_for_reschedule"),
    ("submitted", "failed"),
    ("cancelled", "failed"),
    ("completed", "success"),
    ("submitted", "deferred"),
    ("interrupted", "failed"),
    ("cancelled", "failed"),
    ("completed", "success"),
]
LINK_KEY = "_link_JobRunLink"


@contextlib.contextmanager
def database(choice: str) -> Iterator[str]:
    """Point Airflow at a fresh database of ``choice`` (auto, sqlite, postgresql); yield its kind."""
    use_postgres = choice == "postgresql" or (choice == "auto" and not missing_services("postgres"))
    if not use_postgres:
        use_temporary_airflow_home()
        yield "sqlite"
        return
    with fresh_postgres_database(service_urls().postgres, prefix="airflow_jobs_page") as url:
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
        use_temporary_airflow_home()
        yield "postgresql"
        from airflow import settings

        settings.dispose_orm()


def _linked_dag(dag_id: str, tasks: int) -> Any:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, BaseOperatorLink

    class JobRunLink(BaseOperatorLink):
        name = "See job run"

        def get_link(self, operator: Any, *, ti_key: Any) -> str:
            return ""

    class LinkedOperator(EmptyOperator):
        operator_extra_links = (JobRunLink(),)

    with DAG(dag_id, schedule=None) as dag:
        for number in range(tasks):
            LinkedOperator(task_id=f"job_{number:03d}")
    return dag


def fill(records: int, dags: int, tasks: int, ledger: int, orphans: int) -> list[str]:
    """Bulk-insert ``records`` records over ``dags`` DAGs of ``tasks`` tasks; return the DAG ids."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.variable import Variable
    from airflow.models.xcom import XComModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from sqlalchemy import select, update
    from uuid6 import uuid7

    from airflow_resumable.ledger import ledger_entry, ledger_key
    from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity

    runs = records // (dags * tasks)
    dag_ids = [f"jobs_page_{n:02d}" for n in range(dags)]
    DagBundlesManager().sync_bundles_to_db()
    start = datetime.now(tz=timezone.utc) - timedelta(days=1)
    in_flight: list[tuple[TaskIdentity, JobRecord]] = []
    for d, dag_id in enumerate(dag_ids):
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder",
                None,
                [LazyDeserializedDAG.from_dag(_linked_dag(dag_id, tasks))],
                {},
                None,
                set(),
                session=session,
            )
        with create_session() as session:
            version = session.scalar(select(DagVersion.id).where(DagVersion.dag_id == dag_id))
            run_ids = [f"manual__{r:05d}" for r in range(runs)]
            session.execute(
                DagRun.__table__.insert(),
                [
                    {
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "run_type": "manual",
                        "state": "running",
                        "run_after": start,
                        "created_dag_version_id": version,
                    }
                    for run_id in run_ids
                ],
            )
            ids = dict(session.execute(select(DagRun.run_id, DagRun.id).where(DagRun.dag_id == dag_id)).all())
            tis, rows, links = [], [], []
            for r, run_id in enumerate(run_ids):
                for number in range(tasks):
                    phase, state = SHAPES[number % len(SHAPES)]
                    identity = TaskIdentity(dag_id, run_id, f"job_{number:03d}")
                    index = (r * dags + d) * tasks + number  # records of all DAGs interleave by run
                    record = JobRecord.new_intent(identity, generation=1, fingerprint="sha256:x").evolve(
                        external_id=index, phase=phase
                    )
                    scope = {"dag_id": dag_id, "run_id": run_id, "task_id": identity.task_id, "map_index": -1}
                    tis.append(
                        {
                            **scope,
                            "id": uuid7(),
                            "state": state,
                            "pool": "default_pool",
                            "try_number": 1,
                            "operator": "LinkedOperator",
                            "dag_version_id": version,
                        }
                    )
                    written = start + timedelta(milliseconds=index)
                    rows.append(
                        {
                            **scope,
                            "dag_run_id": ids[run_id],
                            "key": RECORD_KEY,
                            "value": json.dumps(record.to_json()),
                            "updated_at": written,
                            "expires_at": None if phase not in ("completed", "cancelled") else written,
                        }
                    )
                    links.append(
                        {
                            **scope,
                            "dag_run_id": ids[run_id],
                            "key": LINK_KEY,
                            "value": f"https://jobs.example/run/{index}",
                            "timestamp": written,
                        }
                    )
                    if phase in ("submitted", "interrupted") and len(in_flight) < ledger:
                        in_flight.append((identity, record))
            session.execute(TaskInstance.__table__.insert(), tis)
            session.execute(TaskStateStoreModel.__table__.insert(), rows)
            session.execute(XComModel.__table__.insert(), links)
        print(f"  filled {dag_id}: {runs * tasks:,} records", file=sys.stderr)
    with create_session() as session:
        for n in range(orphans):  # jobs whose DAG run was deleted: only the ledger has them
            identity = TaskIdentity(dag_ids[0], f"manual__deleted_{n:04d}", "job_000")
            record = JobRecord.new_intent(identity, generation=1, fingerprint=None).evolve(
                external_id=f"orphan-{n}", phase="submitted"
            )
            in_flight.append((identity, record))
        for identity, record in in_flight:
            session.add(Variable(key=ledger_key(identity), val=json.dumps(ledger_entry(identity, record))))
        # the records' rows look as they do once written (expiry set for ended jobs only)
        session.execute(
            update(TaskStateStoreModel)
            .where(TaskStateStoreModel.expires_at.is_not(None))
            .values(expires_at=start + timedelta(days=30))
        )
    return dag_ids


@contextlib.contextmanager
def counted() -> Iterator[list[str]]:
    """The SQL statements the metadata database's engine runs inside the block."""
    from airflow import settings
    from sqlalchemy import event

    statements: list[tuple[str, float]] = []
    began: list[float] = []

    def start(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        began.append(time.perf_counter())

    def done(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append((statement, (time.perf_counter() - began.pop()) * 1000))

    event.listen(settings.engine, "before_cursor_execute", start)
    event.listen(settings.engine, "after_cursor_execute", done)
    try:
        yield statements
    finally:
        event.remove(settings.engine, "before_cursor_execute", start)
        event.remove(settings.engine, "after_cursor_execute", done)


def measure(dag_ids: list[str], repeat: int) -> list[tuple[str, int, float, int, str]]:
    """(case, rows, median ms, statements, the slowest statement) per request of the page."""
    from fastapi.testclient import TestClient

    from airflow_resumable.ui import app as ui_app

    ui_app._readable_dag_ids = lambda user, session: set(dag_ids)  # type: ignore[assignment]  # no auth manager here
    app = ui_app.create_app()
    app.dependency_overrides[ui_app._user_or_none] = lambda: object()
    results = []
    with TestClient(app) as client:
        first = client.get("/resumable/api/jobs".removeprefix("/resumable"), params={"limit": 50}).json()
        total = first["total_entries"]
        middle = client.get("/api/jobs", params={"limit": 1, "offset": total // 2}).json()["jobs"][-1]
        before = client.get("/api/jobs", params={"limit": 1, "offset": total // 2 - 1}).json()[
            "next_before_id"
        ]
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("first page (50)", "/api/jobs", {"limit": 50}),
            (f"middle page, offset {total // 2:,}", "/api/jobs", {"limit": 50, "offset": total // 2}),
            (f"last page, offset {total - 50:,}", "/api/jobs", {"limit": 50, "offset": total - 50}),
            ("middle page, keyset before_id", "/api/jobs", {"limit": 50, "before_id": before}),
            ("one DAG", "/api/jobs", {"limit": 50, "dag_id": middle["dag_id"]}),
            ("phase=interrupted", "/api/jobs", {"limit": 50, "phase": "interrupted"}),
            ("needs attention", "/api/jobs", {"limit": 50, "attention": "1"}),
            ("page of 500", "/api/jobs", {"limit": 500}),
            ("HTML page 1", "/jobs", {}),
        ]
        for name, path, params in cases:
            client.get(path, params=params)  # warm: the link cache, the database's own caches
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                response = client.get(path, params=params)
                times.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, response.text
            with counted() as statements:
                response = client.get(path, params=params)
            rows = response.text.count('<tr class="job') if path == "/jobs" else len(response.json()["jobs"])
            slowest, ms = max(statements, key=lambda item: item[1])
            what = " ".join(slowest.split())[:40]
            results.append((name, rows, statistics.median(times), len(statements), f"{ms:.0f} ms: {what}"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dags", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=50, help="tasks per DAG")
    parser.add_argument("--ledger", type=int, default=1_000, help="ledger entries of jobs in flight")
    parser.add_argument("--orphans", type=int, default=200, help="ledger entries whose DAG run is gone")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=("auto", "sqlite", "postgresql"), default="auto")
    args = parser.parse_args()
    with database(args.database) as kind:
        began = time.perf_counter()
        dag_ids = fill(args.records, args.dags, args.tasks, args.ledger, args.orphans)
        filled = time.perf_counter() - began
        results = measure(dag_ids, args.repeat)
    print(
        f"\nResumable jobs page, {args.records:,} records in {args.dags} DAGs, "
        f"{args.ledger + args.orphans:,} ledger entries ({args.orphans} orphans), {kind} "
        f"(filled in {filled:.0f} s), median of {args.repeat}:\n"
    )
    print(f"| {'request':<36} | {'rows':>5} | {'ms':>7} | {'statements':>10} |  slowest statement")
    print(f"|{'-' * 38}|{'-' * 7}|{'-' * 9}|{'-' * 12}|")
    for name, rows, ms, statements, slowest in results:
        print(f"| {name:<36} | {rows:>5} | {ms:>7.0f} | {statements:>10} |  {slowest}")


if __name__ == "__main__":
    main()
