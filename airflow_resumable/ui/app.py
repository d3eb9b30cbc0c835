"""
The "Resumable jobs" web app, served by Airflow's API server under :data:`URL_PREFIX`.

**Purpose:** one place to see every remote job the deployment is responsible for: its phase, who
watches it now, its checkpoints, and which ones need attention (nobody watches a job that may
still run, a cancel failed, a stop could not be classified).

**How it works:** the provider's plugin (:class:`airflow_resumable.plugin.ResumablePlugin`)
registers this FastAPI app in ``fastapi_apps``, and two ``external_views``: a "Resumable jobs" entry
in the Browse menu and a "Resumable job" tab on the task instance page; both show the HTML page in
the Airflow UI. Requests are authenticated like the REST API's (the UI's JWT cookie, or an
``Authorization: Bearer`` token), and authorized by the configured auth manager: access to task
instances, and only the DAGs the user may read (``get_authorized_dag_ids``). Reads only; it never
calls a cloud.

Routes (under ``/resumable``):

- ``GET /jobs``: the HTML page; query ``dag_id``, ``phase``, ``attention=1``, ``page``, or
  ``dag_id`` + ``run_id`` + ``task_id`` + ``map_index`` for one task instance (the tab);
  ``ledger_after`` reads the ledger on from a cursor when it holds more than one request reads;
- ``GET /api/jobs``: the same as JSON (``jobs``, ``total_entries``, ``attention_entries``,
  ``ledger_only_entries``, ``ledger_unread_entries``, ``ledger_next_after``, ``next_before_id``,
  ``query_ms``), with ``limit``, ``offset`` and the keyset cursor ``before_id``.

A page costs a fixed number of SQL queries whatever its size (see ``docs/ui.md``, "How it reads"):
two for the records and their counts, one for the ledger notes, one to three per ledger batch,
three for the operators' links (:mod:`._links`).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 - FastAPI reads it at runtime
from airflow.api_fastapi.core_api.security import bearer_scheme
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials  # noqa: TC002 - FastAPI reads it at runtime

from airflow_resumable.record import TaskIdentity
from airflow_resumable.ui._links import links_of
from airflow_resumable.ui._page import PageView, render_page
from airflow_resumable.ui._query import JobFilter, LedgerScan, ledger_keys_present, ledger_only, query_jobs
from airflow_resumable.ui._rows import ACTIVE_PHASES, ENDED_PHASES, job_row

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_resumable.ui._rows import JobRow

__all__ = ["PAGE_SIZE", "URL_PREFIX", "create_app"]

#: Where the API server mounts the app. Part of the external views' links: never change it.
URL_PREFIX = "/resumable"
#: Rows per page of the HTML page (and the JSON endpoint's default ``limit``).
PAGE_SIZE = 50
#: The JSON endpoint's largest ``limit``.
MAX_LIMIT = 500
_PHASES = (*ACTIVE_PHASES, *ENDED_PHASES)


async def _user_or_none(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Any:
    """The request's user (bearer token or UI cookie, as Airflow's own routes read them), or None."""
    from airflow.api_fastapi.core_api.security import get_user

    try:
        return await get_user(request, None, bearer)
    except HTTPException:
        return None


UserDep = Annotated[Any, Depends(_user_or_none)]


def _readable_dag_ids(user: Any, session: Session) -> set[str]:
    """The DAGs ``user`` may read task instances of, as the auth manager says."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    manager = get_auth_manager()
    if not manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, user=user):
        raise HTTPException(403, "Forbidden: the user may not read task instances")
    return set(manager.get_authorized_dag_ids(user=user, method="GET", session=session))


def _filters(
    dag_id: str | None = None,
    phase: str | None = None,
    attention: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int = -1,
) -> JobFilter:
    """The query parameters both routes take (a FastAPI dependency); 422 for an unknown phase."""
    if phase and phase not in _PHASES:
        raise HTTPException(422, f"phase must be one of {', '.join(_PHASES)}")
    task = None
    if dag_id and run_id and task_id:
        task = TaskIdentity(dag_id, run_id, task_id, map_index)
    return JobFilter(
        dag_id=dag_id or None,
        phase=phase or None,
        attention_only=attention in ("1", "true", "yes"),
        task=task,
    )


FilterDep = Annotated[JobFilter, Depends(_filters)]


@dataclass(frozen=True)
class _Read:
    """What one request read: the page's rows, the ledger-only rows, the totals and the cursors."""

    rows: list[JobRow]
    extra: list[JobRow]
    total: int
    attention_total: int
    seconds: float
    ledger: LedgerScan
    next_before_id: int | None


def _read(
    session: Session,
    readable: set[str],
    filters: JobFilter,
    *,
    limit: int,
    offset: int,
    before_id: int | None = None,
    ledger_after: int = 0,
) -> _Read:
    """The rows of one page: a fixed number of queries whatever ``limit`` (see the module docstring)."""
    began = time.perf_counter()
    page = query_jobs(
        session, readable_dag_ids=readable, filters=filters, limit=limit, offset=offset, before_id=before_id
    )
    rows = [job_row(record) for record in page.records]
    ledger = ledger_only(session, readable_dag_ids=readable, filters=filters, after_id=ledger_after)
    extra = [job_row(record) for record in ledger.records]
    if filters.attention_only:
        extra = [row for row in extra if row.attention]
    rows = _with_ledger_notes(session, rows)
    rows, extra = _with_links(session, [*rows, *extra], split=len(rows))
    return _Read(
        rows,
        extra,
        page.total,
        page.attention_total + len(extra),
        time.perf_counter() - began,
        ledger,
        page.next_before_id,
    )


def _with_ledger_notes(session: Session, rows: list[JobRow]) -> list[JobRow]:
    """Say so on rows whose job may run unwatched while the ledger no longer holds it."""
    flagged = {
        TaskIdentity(r.dag_id, r.run_id, r.task_id, r.map_index)
        for r in rows
        if r.phase in ACTIVE_PHASES and r.attention
    }
    present = ledger_keys_present(session, flagged)
    note = "not in the ledger: the custodian cannot cancel it on a user's stop"
    return [
        dataclasses.replace(row, attention=(*row.attention, note))
        if (identity := TaskIdentity(row.dag_id, row.run_id, row.task_id, row.map_index)) in flagged
        and identity not in present
        else row
        for row in rows
    ]


def _with_links(session: Session, rows: list[JobRow], *, split: int) -> tuple[list[JobRow], list[JobRow]]:
    """
    Each row with the operator's own extra link for its job (what the task instance page shows).

    One batch for all ``rows`` (:func:`._links.links_of`); returns ``rows[:split]``, ``rows[split:]``.
    """
    identities = [
        TaskIdentity(row.dag_id, row.run_id, row.task_id, row.map_index)
        if row.external_id is not None and row.ti_state != "gone"
        else None
        for row in rows
    ]
    links = links_of(session, [identity for identity in identities if identity is not None])
    linked = [
        dataclasses.replace(row, link=links[identity]) if identity is not None and identity in links else row
        for row, identity in zip(rows, identities, strict=True)
    ]
    return linked[:split], linked[split:]


def create_app() -> FastAPI:
    """The app the plugin registers; see the module docstring for its routes."""
    app = FastAPI(title="Resumable jobs", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page(
        request: Request,
        user: UserDep,
        session: SessionDep,
        filters: FilterDep,
        page: Annotated[int, Query(ge=1)] = 1,
        ledger_after: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        """The HTML page; without a valid login, a redirect to the auth manager's login page."""
        if user is None:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), 307)
        readable = _readable_dag_ids(user, session)
        offset = (page - 1) * PAGE_SIZE
        read = _read(session, readable, filters, limit=PAGE_SIZE, offset=offset, ledger_after=ledger_after)
        view = PageView(
            rows=read.rows,
            ledger_only=read.extra,
            filters=filters,
            dag_ids=sorted(readable),
            total=read.total,
            attention_total=read.attention_total,
            page=page,
            page_size=PAGE_SIZE,
            query_seconds=read.seconds,
            base_path=request.url.path,
            ledger_unread=read.ledger.unread,
            ledger_next_after=read.ledger.next_after,
            ledger_after=ledger_after,
            ledger_read=read.ledger.read,
        )
        return HTMLResponse(render_page(view))

    @app.get("/api/jobs")
    def jobs_json(
        user: UserDep,
        session: SessionDep,
        filters: FilterDep,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = PAGE_SIZE,
        offset: Annotated[int, Query(ge=0)] = 0,
        before_id: Annotated[int | None, Query(ge=1)] = None,
        ledger_after: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """
        The records as JSON; 401 without a valid credential.

        The ledger-only rows come first on the first page (``offset`` 0, no ``before_id``).
        ``ledger_unread_entries`` counts the ledger Variables this request did not read; pass
        ``ledger_next_after`` as ``ledger_after`` to read on.
        """
        if user is None:
            raise HTTPException(401, "Not authenticated")
        readable = _readable_dag_ids(user, session)
        read = _read(
            session,
            readable,
            filters,
            limit=limit,
            offset=offset,
            before_id=before_id,
            ledger_after=ledger_after,
        )
        first = offset == 0 and before_id is None
        shown = [*(read.extra if first else []), *read.rows]
        return {
            "jobs": [row.to_json() for row in shown],
            "total_entries": read.total,
            "attention_entries": read.attention_total,
            "ledger_only_entries": len(read.extra),
            "ledger_unread_entries": read.ledger.unread,
            "ledger_next_after": read.ledger.next_after,
            "next_before_id": read.next_before_id,
            "query_ms": round(read.seconds * 1000, 1),
        }

    return app
