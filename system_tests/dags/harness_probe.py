"""
A toy DAG for ``system_tests/test_cluster_harness.py``: one task that polls for a release file and
records, in ``<marker_dir>/events.jsonl``, what happens to it when its worker is disrupted.

The DAG run's ``conf`` drives it:

- ``marker_dir``: directory for ``events.jsonl`` and the ``release`` file (required).
- ``mode``: what ``execute`` does once ``on_kill`` ran (it sets a flag, nothing else):
  ``continue`` keeps polling, ``exit`` raises ``AirflowException``, ``reschedule`` raises
  ``AirflowRescheduleException(now + 2 s)``.

Events (one JSON object a line, ``event`` plus details): ``started`` (each ``execute``),
``on_kill``, ``term_seen`` (the main thread noticed the flag; carries the result and duration of
``RuntimeTaskInstance.get_task_states`` called right then), ``released``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowRescheduleException

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context


def record_event(marker_dir: Path, event: str, **details: Any) -> None:
    """Append one event to ``marker_dir/events.jsonl`` (a single small ``O_APPEND`` write)."""
    line = json.dumps({"event": event, "time": time.time(), "pid": os.getpid(), **details}) + "\n"
    fd = os.open(marker_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class ProbeOperator(BaseOperator):
    """Polls for ``<marker_dir>/release``; ``on_kill`` only sets a flag the poll loop reacts to."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._marker_dir: Path | None = None
        self._killed = False

    def execute(self, context: Context) -> str:
        conf = context["dag_run"].conf or {}
        self._marker_dir = marker_dir = Path(conf["marker_dir"])
        mode = conf.get("mode", "continue")
        ti = context["ti"]
        record_event(marker_dir, "started", try_number=ti.try_number)
        context["task_state_store"].set("probe", {"try_number": ti.try_number, "pid": os.getpid()})
        self.log.info("probe: polling for %s", marker_dir / "release")
        while not (marker_dir / "release").exists():
            if self._killed:
                self._killed = False
                self._on_term_seen(context, marker_dir, mode)
            time.sleep(0.05)
        record_event(marker_dir, "released", try_number=ti.try_number)
        return "released"

    def _on_term_seen(self, context: Context, marker_dir: Path, mode: str) -> None:
        ti = context["ti"]
        began = time.monotonic()
        try:
            states: Any = ti.get_task_states(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id])
            error = None
        except BaseException as e:  # record, whatever it is
            states, error = None, repr(e)
        seconds = time.monotonic() - began
        record_event(
            marker_dir, "term_seen", try_number=ti.try_number, states=states, seconds=seconds, error=error
        )
        self.log.info("probe: terminated; task states %s (%.3fs) error %s", states, seconds, error)
        if mode == "exit":
            raise AirflowException("probe: stopping after SIGTERM")
        if mode == "reschedule":
            raise AirflowRescheduleException(datetime.now(timezone.utc) + timedelta(seconds=2))

    def on_kill(self) -> None:
        self._killed = True
        if self._marker_dir is not None:
            record_event(self._marker_dir, "on_kill")


with DAG(
    dag_id="harness_probe",
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    ProbeOperator(task_id="probe")
