"""
The operators' extra links of a page of rows, read in a fixed number of queries.

Airflow 3 keeps an operator's extra link in XCom: the serialized task names each link and the
XCom key its URL is stored under (``_operator_extra_links``: ``{name: xcom_key}``), and the worker
writes the URL when the try ends. The task instance page asks one task at a time; this module asks
for a whole page at once:

1. the latest serialized version of each DAG on the page (one query for the ``dag_hash`` of each,
   one more for the DAGs not yet in :data:`_LINKS_BY_DAG_HASH`), deserialized at most once per
   DAG version per process;
2. the XCom values of every (task instance, link key) pair of the page (one query).

So a page costs at most three queries for its links, whatever its size. A row's link is the first
non-empty one in link-name order, as before 0.3.0.

**What it does not do:** links that a plugin adds (``global_operator_extra_links``, or
``operator_extra_links`` of an ``AirflowPlugin``) are computed by their own code, one task
instance at a time; the page leaves them out. Never raises: a link is a convenience, and a broken
one never breaks the page.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_

from airflow_resumable.record import TaskIdentity

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

__all__ = ["links_of"]

#: Per DAG version (``dag_hash``): task id -> {link name: XCom key}. Bounded by :data:`_CACHE_SIZE`.
_LINKS_BY_DAG_HASH: dict[str, dict[str, dict[str, str]]] = {}
_CACHE_SIZE = 256


def links_of(session: Session, identities: Iterable[TaskIdentity]) -> dict[TaskIdentity, str]:
    """
    The extra link of each task instance that has one; three queries at most, whatever the count.

    :param identities: the task instances (they must exist; a gone one simply has no link).
    :return: the first non-empty link of each task instance, by link name.
    """
    wanted = list(dict.fromkeys(identities))
    if not wanted:
        return {}
    try:
        keys_by_task = _link_keys(session, {identity.dag_id for identity in wanted})
        return _urls(session, wanted, keys_by_task)
    except Exception:  # a link is a convenience: a broken one never breaks the page
        return {}


def _link_keys(session: Session, dag_ids: set[str]) -> dict[tuple[str, str], dict[str, str]]:
    """(dag_id, task_id) -> {link name: XCom key}, from each DAG's latest serialized version."""
    from airflow.models.serialized_dag import SerializedDagModel

    latest = SerializedDagModel._latest_by_version_select(sorted(dag_ids))
    hashes = {
        row.dag_id: row.dag_hash
        for row in session.execute(
            latest.with_only_columns(SerializedDagModel.dag_id, SerializedDagModel.dag_hash)
        )
    }
    missing = sorted({dag_hash for dag_hash in hashes.values() if dag_hash not in _LINKS_BY_DAG_HASH})
    if missing:
        if len(_LINKS_BY_DAG_HASH) + len(missing) > _CACHE_SIZE:
            _LINKS_BY_DAG_HASH.clear()
        for model in session.scalars(
            select(SerializedDagModel).where(SerializedDagModel.dag_hash.in_(missing))
        ):
            _LINKS_BY_DAG_HASH[model.dag_hash] = _task_links(model)
    return {
        (dag_id, task_id): links
        for dag_id, dag_hash in hashes.items()
        for task_id, links in _LINKS_BY_DAG_HASH.get(dag_hash, {}).items()
    }


def _task_links(model: Any) -> dict[str, dict[str, str]]:
    """task id -> {link name: XCom key} of one serialized DAG (tasks without a link left out)."""
    try:
        dag = model.dag
    except Exception:  # a DAG this process cannot deserialize has no links here
        return {}
    found: dict[str, dict[str, str]] = {}
    for task in dag.tasks:
        links = {
            name: link.xcom_key
            for name, link in getattr(task, "operator_extra_link_dict", {}).items()
            if isinstance(getattr(link, "xcom_key", None), str)
        }
        if links:
            found[task.task_id] = links
    return found


def _urls(
    session: Session, wanted: list[TaskIdentity], keys_by_task: dict[tuple[str, str], dict[str, str]]
) -> dict[TaskIdentity, str]:
    """One XCom query for every (task instance, link key) of the page; the first non-empty URL each."""
    from airflow.models.xcom import XComModel

    with_links = [i for i in wanted if (i.dag_id, i.task_id) in keys_by_task]
    if not with_links:
        return {}
    xcom_keys = sorted({key for i in with_links for key in keys_by_task[(i.dag_id, i.task_id)].values()})
    # the column order of idx_xcom_task_instance
    columns = (XComModel.dag_id, XComModel.task_id, XComModel.run_id, XComModel.map_index)
    values: dict[tuple[TaskIdentity, str], Any] = {}
    for row in session.execute(
        select(*columns, XComModel.key, XComModel.value).where(
            tuple_(*columns).in_([(i.dag_id, i.task_id, i.run_id, i.map_index) for i in with_links]),
            XComModel.key.in_(xcom_keys),
        )
    ):
        values[(TaskIdentity(row.dag_id, row.run_id, row.task_id, row.map_index), row.key)] = row.value
    urls: dict[TaskIdentity, str] = {}
    for identity in with_links:
        for _name, key in sorted(keys_by_task[(identity.dag_id, identity.task_id)].items()):
            url = _link_text(values.get((identity, key)))
            if url:
                urls[identity] = url
                break
    return urls


def _link_text(value: Any) -> str | None:
    """A stored link as text, decoded as ``XComOperatorLink.get_link`` decodes it."""
    if value is None:
        return None
    from airflow.serialization.stringify import StringifyNotSupportedError, stringify

    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # a plain URL, as most links are stored
            value = json.loads(value)
    try:
        text = str(stringify(value))
    except StringifyNotSupportedError:
        text = str(value)
    return text or None
