"""
The public REST API (``/api/v2``) helpers of :class:`airflow_resumable.testing.cluster.AirflowCluster`.

No credentials are sent: the cluster runs the SimpleAuthManager with
``[core] simple_auth_manager_all_admins = True``, whose middleware adds an admin token itself.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from airflow_resumable.testing._cluster_process import wait_until

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ClusterRestApi"]

log = logging.getLogger(__name__)

_API_PREFIX = "/api/v2"
_DB_ERROR_ATTEMPTS = 3
#: ``[api] maximum_page_limit`` (default 100): list endpoints return at most this many per call.
_PAGE = 100
FINISHED = frozenset({"success", "failed"})


def _ti_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id)}"


class ClusterRestApi:
    """REST helpers; the subclass sets ``_client`` and implements :meth:`check`."""

    _client: httpx.Client | None = None

    def check(self) -> None:
        """Raise if the cluster is broken; called on every poll of a wait."""

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._client is None:
            raise RuntimeError("the cluster is not started")
        for attempt in range(1, _DB_ERROR_ATTEMPTS + 1):
            response = self._client.request(method, _API_PREFIX + path, **kwargs)
            # On sqlite an action-logged request can deadlock against a concurrent task write: its
            # audit-log INSERT runs in an async dependency, blocking the event loop until sqlite's
            # 5 s busy timeout. It fails before its handler ran, so it is safe to send it again.
            if response.status_code != 500 or "Database error" not in response.text:
                break
            log.warning("%s %s hit a sqlite lock (attempt %d); retrying", method, path, attempt)
        if response.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"{method} {path} -> {response.status_code}: {response.text}",
                request=response.request,
                response=response,
            )
        return response

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2<path>``; return the decoded JSON (None for an empty body), raise on >= 400."""
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause ``dag_id``, create a manual DAG run with ``conf`` and return its run id."""
        self.api("PATCH", f"/dags/{quote(dag_id)}", json={"is_paused": False})
        run_id = f"manual__{datetime.now(timezone.utc).isoformat()}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        try:
            self.api("POST", f"/dags/{quote(dag_id)}/dagRuns", json=body)
        except httpx.HTTPStatusError as e:  # 409: a retried attempt had created it after all
            if e.response.status_code != 409:
                raise
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The DAG run as the REST API returns it."""
        result: dict[str, Any] = self.api("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}")
        return result

    def wait_for_dag_run(
        self, dag_id: str, run_id: str, timeout: float, states: frozenset[str] = FINISHED
    ) -> str:
        """Wait until the DAG run is in one of ``states`` (finished by default); return its state."""

        def probe() -> str | None:
            state = self.dag_run(dag_id, run_id)["state"]
            return state if state in states else None

        return wait_until(
            probe, timeout=timeout, what=f"DAG run {run_id} in {sorted(states)}", check=self.check
        )

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """The task instance as the REST API returns it (``state``, ``try_number``, ``id``, ``pid``...)."""
        path = _ti_path(dag_id, run_id, task_id) + (f"/{map_index}" if map_index >= 0 else "")
        result: dict[str, Any] = self.api("GET", path)
        return result

    def running_task_instance(self, dag_id: str, task_id: str) -> dict[str, Any] | None:
        """The running instance of ``task_id`` in any run of ``dag_id`` (the newest), or None."""
        params = {"task_id": task_id, "state": "running", "order_by": "-start_date", "limit": 1}
        found = self.api("GET", f"/dags/{quote(dag_id)}/dagRuns/~/taskInstances", params=params)
        tis: list[dict[str, Any]] = found["task_instances"]
        return tis[0] if tis else None

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of the task instance, oldest first, with the state each try ended in."""
        found = self.api("GET", _ti_path(dag_id, run_id, task_id) + "/tries")
        tries: list[dict[str, Any]] = found["task_instances"]
        return sorted(tries, key=lambda t: int(t["try_number"]))

    def wait_for_ti_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: set[str],
        timeout: float,
        map_index: int = -1,
        min_try_number: int = 0,
    ) -> dict[str, Any]:
        """
        Poll (every 0.2 s) until the task instance is in one of ``states``; return it.

        :param min_try_number: also wait until its ``try_number`` reached this value.
        """

        def probe() -> dict[str, Any] | None:
            try:
                ti = self.task_instance(dag_id, run_id, task_id, map_index)
            except httpx.HTTPStatusError as e:
                if e.response.status_code == 404:  # not created yet
                    return None
                raise
            return ti if ti["state"] in states and ti["try_number"] >= min_try_number else None

        what = f"{task_id} of {run_id} in {sorted(states)} (try >= {min_try_number})"
        return wait_until(probe, timeout=timeout, what=what, check=self.check)

    def mark_ti(self, dag_id: str, run_id: str, task_id: str, new_state: str = "failed") -> dict[str, Any]:
        """Set the task instance's state as a user does in the UI (``PATCH`` with ``new_state``)."""
        body = {"new_state": new_state}
        result: dict[str, Any] = self.api("PATCH", _ti_path(dag_id, run_id, task_id), json=body)
        return result

    def clear_ti(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """Clear the task instance, whatever its state, so that the scheduler runs it again."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False}
        result: dict[str, Any] = self.api("POST", f"/dags/{quote(dag_id)}/clearTaskInstances", json=body)
        return result

    def task_state_store_get(
        self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1
    ) -> Any:
        """
        One value of the task instance's ``task_state_store``, or None when the key is not set.

        ``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/{key}``
        (``?map_index=``); the same path also takes PUT, PATCH and DELETE, and without ``/{key}``
        it lists (GET) or clears (DELETE) every key.
        """
        path = _ti_path(dag_id, run_id, task_id) + f"/state-store/{quote(key, safe='')}"
        try:
            return self.api("GET", path, params={"map_index": map_index})["value"]
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return None
            raise

    def task_state_store_entries(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        """Every key of the task instance's ``task_state_store`` with its value (empty when none)."""
        path = _ti_path(dag_id, run_id, task_id) + "/state-store"
        entries: dict[str, Any] = {}
        while True:
            params = {"map_index": map_index, "limit": _PAGE, "offset": len(entries)}
            page = self.api("GET", path, params=params)["task_state_store"]
            entries.update((entry["key"], entry["value"]) for entry in page)
            if len(page) < _PAGE:
                return entries

    def task_state_store_clear(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> None:
        """
        Delete every key of the task instance's ``task_state_store`` (not action-logged).

        ``DELETE .../taskInstances/{task_id}/state-store?map_index=``: what a clear that also
        discards the task's state would do (apache/airflow#72100 proposes it).
        """
        path = _ti_path(dag_id, run_id, task_id) + "/state-store"
        self.api("DELETE", path, params={"map_index": map_index})

    def variables(self, prefix: str = "") -> dict[str, str | None]:
        """Airflow Variables whose key starts with ``prefix``, key to value (values may be redacted)."""
        found: dict[str, str | None] = {}
        offset = 0
        while True:
            params: dict[str, Any] = {"limit": _PAGE, "offset": offset, "order_by": "key"}
            if prefix:
                params["variable_key_prefix_pattern"] = prefix
            page = self.api("GET", "/variables", params=params)["variables"]
            offset += len(page)
            found.update((v["key"], v.get("value")) for v in page if str(v["key"]).startswith(prefix))
            if len(page) < _PAGE:
                return found
