"""An in-memory ``context["task_state_store"]`` and a minimal task context, for fast unit tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FakeTaskInstance",
    "InMemoryJobLedger",
    "InMemoryTaskStateStore",
    "XComTaskInstance",
    "make_context",
]


@dataclass
class InMemoryTaskStateStore:
    """
    Same ``get/set/delete/clear`` interface as Airflow's ``TaskStateStoreAccessor``.

    Values go through ``json`` as they would over the wire. ``fail_writes`` makes the next N
    ``set`` calls raise ``ConnectionError``, as an unreachable API server would.
    """

    values: dict[str, str] = field(default_factory=dict)
    fail_writes: int = 0
    writes: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value, or ``default``."""
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        """Store ``value`` (never None)."""
        if value is None:
            raise ValueError("Cannot set value as None")
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise ConnectionError("injected: task state store write failed")
        self.values[key] = json.dumps(value)
        self.writes.append(key)

    def delete(self, key: str) -> None:
        """Remove one key."""
        self.values.pop(key, None)

    def clear(self) -> None:
        """Remove every key."""
        self.values.clear()


@dataclass
class InMemoryJobLedger:
    """
    The ledger of jobs in flight (:mod:`airflow_resumable.ledger`) in memory, for unit tests.

    ``fail_reads`` makes the next N ``get`` calls raise ``ConnectionError``.

    .. versionadded:: 0.2.0
    """

    values: dict[str, str] = field(default_factory=dict)
    fail_reads: int = 0

    def get(self, key: str) -> Any:
        """The entry, or None."""
        if self.fail_reads > 0:
            self.fail_reads -= 1
            raise ConnectionError("injected: ledger read failed")
        return json.loads(self.values[key]) if key in self.values else None

    def set(self, key: str, value: Any) -> None:
        """Store the entry."""
        self.values[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        """Remove the entry."""
        self.values.pop(key, None)


@dataclass
class FakeTaskInstance:
    """
    The parts of a runtime task instance the mixin uses.

    ``server_state`` is what :meth:`get_task_states` answers for this task instance, as the API
    server would: ``"running"`` while it holds the try, ``"failed"`` after a user marked it failed.
    ``server_unreachable`` makes that call block (until ``release_server`` is set).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0
    stats_tags: dict[str, str] = field(default_factory=dict)
    server_state: str | None = "running"
    #: False: the server no longer knows the task instance (its DAG run was deleted).
    server_knows: bool = True
    server_unreachable: bool = False
    release_server: threading.Event = field(default_factory=threading.Event)

    def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict[str, Any]:
        """Answer like ``RuntimeTaskInstance.get_task_states`` for this one task instance."""
        if self.server_unreachable:
            self.release_server.wait(30)
            raise ConnectionError("API server unreachable")
        key = self.task_id if self.map_index < 0 else f"{self.task_id}_{self.map_index}"
        return {self.run_id: {key: self.server_state}} if self.server_knows else {}


@dataclass
class XComTaskInstance(FakeTaskInstance):
    """
    A :class:`FakeTaskInstance` that keeps what the operator pushes to XCom (links included).

    .. versionadded:: 0.2.0
    """

    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        """Record one XCom, as ``RuntimeTaskInstance.xcom_push`` would store it."""
        self.xcoms[key] = value


def make_context(
    store: InMemoryTaskStateStore | None = None,
    *,
    dag_id: str = "dag",
    run_id: str = "manual__1",
    task_id: str = "task",
    map_index: int = -1,
    try_number: int = 1,
    max_tries: int = 0,
    ledger: InMemoryJobLedger | None = None,
) -> dict[str, Any]:
    """
    A task context with a ``ti``, a ``task_state_store`` and an in-memory ledger of jobs in flight,
    enough for ``execute_resumable`` without an API server.
    """
    from airflow_resumable.ledger import LEDGER_CONTEXT_KEY

    return {
        "ti": FakeTaskInstance(dag_id, run_id, task_id, map_index, try_number, max_tries),
        "task_state_store": store if store is not None else InMemoryTaskStateStore(),
        LEDGER_CONTEXT_KEY: ledger if ledger is not None else InMemoryJobLedger(),
    }
