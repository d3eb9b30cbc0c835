"""
An Airflow plugin for the chaos suite: the api-server refuses or stalls task-state-store writes.

The task state store is written by the task's supervisor on its behalf:
``PUT /execution/store/ti/{ti_id}/{key}`` with ``{"value": ..., "expires_at": ...}``. This plugin
adds a root ASGI middleware to the api-server (``fastapi_root_middlewares``, so it sees the
execution API too) that, for one task instance, answers such a ``PUT`` with an error instead of
handling it:

- ``refuse``: answer ``status`` (e.g. 429) at once, ``count`` times. The supervisor's client
  retries only 5xx and connection errors, so a 4xx reaches the task as an ``AirflowRuntimeError``
  from ``task_state_store.set``: a write that fails exactly once from the operator's point of view.
- ``stall``: hold the request ``seconds`` seconds, then answer 503 without handling it. A test
  kills the worker meanwhile: the remote job exists, its id never reaches the store.

Faults are files, so the test process needs no connection to the api-server: ``<dir>/<ti_id>.json``
holds one spec (written by :func:`inject`), ``<dir>/<ti_id>.hits`` gets one JSON line per request
the fault answered (read by :func:`hits`). ``<dir>`` is ``$AIRFLOW_RESUMABLE_CHAOS_FAULTS``; without
it, or without a spec for the task instance, every request passes through untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

FAULT_DIR_ENV = "AIRFLOW_RESUMABLE_CHAOS_FAULTS"
_STORE_PUT = re.compile(r"/execution/store/ti/(?P<ti_id>[0-9a-fA-F-]{36})/(?P<key>[^/]+)")


def inject(
    fault_dir: Path,
    ti_id: str,
    *,
    key: str,
    action: str = "refuse",
    status: int = 429,
    count: int = 1,
    phase: str | None = None,
    seconds: float = 0.0,
) -> None:
    """
    Make the api-server answer the next ``count`` writes of ``key`` by task instance ``ti_id``.

    :param action: ``refuse`` (answer ``status`` at once) or ``stall`` (hold ``seconds``, then 503).
    :param phase: only writes whose value has this ``phase`` (the resumable record's field).
    """
    spec = {"key": key, "action": action, "status": status, "remaining": count, "phase": phase}
    spec["seconds"] = seconds
    (fault_dir / f"{ti_id}.json").write_text(json.dumps(spec))


def hits(fault_dir: Path, ti_id: str) -> list[dict[str, Any]]:
    """The requests the fault of ``ti_id`` answered, oldest first."""
    path = fault_dir / f"{ti_id}.hits"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class StateStoreFaults:
    """Pure ASGI middleware: everything but a matching state-store ``PUT`` passes straight through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        fault_dir = os.environ.get(FAULT_DIR_ENV)
        match = _STORE_PUT.fullmatch(scope.get("path", "")) if scope["type"] == "http" else None
        if not fault_dir or match is None or scope.get("method") != "PUT":
            await self.app(scope, receive, send)
            return
        spec_path = Path(fault_dir) / f"{match['ti_id']}.json"
        if not spec_path.exists():
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        spec = json.loads(spec_path.read_text())
        value = _value(body)
        wanted_phase = spec.get("phase")
        applies = (
            spec["remaining"] > 0
            and spec["key"] == match["key"]
            and (wanted_phase is None or (isinstance(value, dict) and value.get("phase") == wanted_phase))
        )
        if not applies:
            await self.app(scope, _replay(body, receive), send)
            return
        spec["remaining"] -= 1
        spec_path.write_text(json.dumps(spec))
        hit = {"at": time.time(), "action": spec["action"], "key": match["key"], "phase": spec.get("phase")}
        with (Path(fault_dir) / f"{match['ti_id']}.hits").open("a") as log:
            log.write(json.dumps(hit) + "\n")
        status = int(spec["status"])
        if spec["action"] == "stall":
            await asyncio.sleep(float(spec["seconds"]))
            status = 503
        detail = {"reason": "chaos", "message": f"state store write refused by the chaos plugin ({status})"}
        payload = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    for _ in range(100_000):  # bounded: a state-store body is a few kB
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the app the body already read, then waits as the original does."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return dict(await receive())
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _value(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}").get("value")
    except (ValueError, AttributeError):
        return None


class ChaosFaultsPlugin(AirflowPlugin):
    """Registers :class:`StateStoreFaults` in the api-server."""

    name = "airflow_resumable_chaos_faults"
    fastapi_root_middlewares = [{"middleware": StateStoreFaults, "args": [], "kwargs": {}, "name": "chaos"}]
