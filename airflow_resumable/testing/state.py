"""An in-memory ``context["task_state_store"]`` and a minimal task context, for fast unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InMemoryTaskStateStore", "make_context"]


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
class _TaskInstance:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 1
    stats_tags: dict[str, str] = field(default_factory=dict)


def make_context(
    store: InMemoryTaskStateStore | None = None,
    *,
    dag_id: str = "dag",
    run_id: str = "manual__1",
    task_id: str = "task",
    map_index: int = -1,
    try_number: int = 1,
) -> dict[str, Any]:
    """A task context with a ``ti`` and a ``task_state_store``, enough for ``execute_resumable``."""
    return {
        "ti": _TaskInstance(dag_id, run_id, task_id, map_index, try_number),
        "task_state_store": store if store is not None else InMemoryTaskStateStore(),
    }
