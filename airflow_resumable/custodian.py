"""
The custodian: it hears a user's stop for the jobs that no worker and no trigger polls.

**Purpose:** between a checkpoint and the resumed try (``up_for_reschedule``), between a crash and
the retry (``up_for_retry``), and after a stop the running try could not classify in time, no
process polls the remote job. A user who then marks the task failed or success, fails its DAG
run or deletes the run would leave the job running and billing. The custodian closes that window:
a job its task no longer intends is cancelled.

**How it works:** the ledger of jobs in flight (:mod:`airflow_resumable.ledger`) lists every job
that may be active, with its task instance and a *cancel recipe* (a registered canceller's name and
its connection ids). The custodian applies :func:`airflow_resumable._custody.stop_meaning` to each
entry's task instance: finished or gone → cancel the job, mark the record ``cancelled``, delete the
entry; anything else (running, deferred, cleared, waiting for a retry or a reschedule) → leave it
to its watcher or to the next try, which reconnects. It runs in two places, both Airflow
components, both started by the provider's plugin (installing the package is the only step):

- **at once**, from listener hooks, when the API server records a user's mark failed / mark
  success / DAG run failed, or the scheduler fails a task for good (``on_task_instance_failed``,
  ``..._success``, ``..._skipped``, ``on_dag_run_failed``): a sweep of those task instances on a
  background thread, so the request is not held up by a cloud call;
- **every** ``custodian_interval_seconds`` (10 s), a sweep of the whole ledger in the scheduler
  (started by ``on_starting``), which also covers a deleted DAG run (Airflow has no hook for it)
  and a cancel that failed.

Cancels are idempotent: a job cancelled by its own watcher as well is harmless.

**What it does not do:** it never calls a cloud for a task instance that a try or a trigger owns,
and never cancels after a clear. It needs, in the scheduler and the API server, the provider
packages of the operators (usually the same image) and read access to their connections.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import importlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_resumable._custody import StopMeaning, stop_meaning
from airflow_resumable.ledger import (
    LEDGER_KEY_PREFIX,
    cancel_recipe_of_entry,
    identity_of_entry,
    ledger_key,
)
from airflow_resumable.record import RECORD_KEY, JobRecord, RecordFormatError, TaskIdentity, cancel_failure

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = ["CANCELLERS", "Custodian", "LedgerItem", "SweepReport", "register_canceller", "sweep"]

#: Registered cancellers: name → ``"module:function"``, called as ``function(external_id, **args)``.
#: Only these can run: a recipe names one, it never carries code (a Variable is editable by users).
CANCELLERS: dict[str, str] = {
    "databricks_run": "airflow_resumable.providers.databricks._base:cancel_run_by_recipe",
    "aws_batch_job": "airflow_resumable.providers.amazon._cancel:cancel_batch_job",
    "aws_emr_serverless_job_run": "airflow_resumable.providers.amazon._cancel:cancel_emr_serverless_job_run",
    "aws_emr_container_job_run": "airflow_resumable.providers.amazon._cancel:cancel_emr_container_job_run",
    "aws_emr_steps": "airflow_resumable.providers.amazon._cancel:cancel_emr_steps",
    "aws_ecs_task": "airflow_resumable.providers.amazon.ecs:cancel_ecs_task_by_recipe",
    "aws_glue_job_run": "airflow_resumable.providers.amazon.glue:cancel_glue_job_run_by_recipe",
    "aws_sagemaker_training_job": (
        "airflow_resumable.providers.amazon.sagemaker:cancel_training_job_by_recipe"
    ),
    "aws_sagemaker_processing_job": (
        "airflow_resumable.providers.amazon.sagemaker:cancel_processing_job_by_recipe"
    ),
    "aws_sfn_execution": "airflow_resumable.providers.amazon.step_function:cancel_execution_by_recipe",
    "toy_job": "airflow_resumable.testing.toy:cancel_toy_job_by_recipe",
}
#: Sweeps in a row a cancel may fail before the custodian gives up on the job and says so.
MAX_CANCEL_ATTEMPTS = 5
#: Ledger entries read per whole-ledger sweep (the next ones each time), to bound one sweep's work.
SWEEP_BATCH = 500


def register_canceller(name: str, path: str) -> None:
    """Register a canceller for a third-party operator's :meth:`cancel_recipe` (``"module:function"``)."""
    if ":" not in path:
        raise ValueError(f"canceller path must be 'module:function', got {path!r}")
    CANCELLERS[name] = path


@dataclass
class LedgerItem:
    """One ledger entry as the custodian sees it."""

    key: str
    identity: TaskIdentity
    record: JobRecord
    #: The raw entry (its cancel recipe and the operator's switches).
    entry: dict[str, Any]
    attempts: int = 0

    def recipe(self, state: str | None) -> CancelRecipe | None:
        """The cancel recipe, if the operator's switches allow a cancel for a task in ``state``."""
        return cancel_recipe_of_entry(self.entry, state)


@dataclass
class SweepReport:
    """What one sweep did: job ids cancelled, left to their watcher, failed, or reported."""

    cancelled: list[JsonValue] = field(default_factory=list)
    left: list[JsonValue] = field(default_factory=list)
    failed: list[JsonValue] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def sweep(
    items: Iterable[LedgerItem],
    *,
    task_state: Callable[[TaskIdentity], tuple[bool, str | None]],
    cancel: Callable[[CancelRecipe, JsonValue], None],
    forget: Callable[[LedgerItem], None],
    mark_cancelled: Callable[[LedgerItem], None],
    count_attempt: Callable[[LedgerItem], None],
    log: Any,
    mark_cancel_failed: Callable[[LedgerItem, dict[str, JsonValue]], None] | None = None,
) -> SweepReport:
    """
    Cancel the jobs whose task instance no longer intends them; leave every other one alone.

    Pure over the injected I/O, so every row is testable without Airflow.

    :param task_state: (found, state name) of a task instance, read just before acting.
    :param mark_cancel_failed: records on the task's record that the custodian gave up on the
        cancel (:attr:`JobRecord.cancel_failed`, what the "Resumable jobs" page flags).
    """
    report = SweepReport()
    for item in items:
        found, state = task_state(item.identity)
        if stop_meaning(state, found=found) is not StopMeaning.USER_STOP:
            report.left.append(item.record.external_id)
            continue
        external_id = item.record.external_id
        where = _where(item.identity, state if found else "gone")
        recipe = item.recipe(state)
        if recipe is None and isinstance(item.entry.get("cancel"), dict):
            log.warning(
                "Not cancelling a stopped task's job: the operator's switch is off",
                task=where,
                external_id=external_id,
            )
            report.left.append(external_id)
            forget(item)
            continue
        if external_id is None or recipe is None:
            log.warning(
                "A stopped task's job may still run and cannot be cancelled here; stop it by hand",
                task=where,
                external_id=external_id,
                token=item.record.token,
                reason="no job id recorded" if external_id is None else "no cancel recipe",
            )
            report.unreachable.append(item.key)
            forget(item)
            continue
        try:
            cancel(recipe, external_id)
        except Exception as err:
            report.failed.append(external_id)
            if item.attempts + 1 >= MAX_CANCEL_ATTEMPTS:
                log.error(
                    "COULD NOT CANCEL the remote job of a stopped task: giving up, stop it by hand",
                    task=where,
                    external_id=external_id,
                    attempts=item.attempts + 1,
                    error=repr(err),
                )
                if mark_cancel_failed is not None:
                    mark_cancel_failed(
                        item, cancel_failure(external_id, "custodian: the task was stopped", err)
                    )
                forget(item)
            else:
                log.warning(
                    "Could not cancel a stopped task's job; the next sweep tries again", error=repr(err)
                )
                count_attempt(item)
            continue
        mark_cancelled(item)
        forget(item)
        report.cancelled.append(external_id)
        log.warning("Cancelled the remote job of a stopped task", task=where, external_id=external_id)
    return report


def _where(identity: TaskIdentity, state: str | None) -> str:
    index = f"[{identity.map_index}]" if identity.map_index >= 0 else ""
    return f"{identity.dag_id}.{identity.task_id}{index} (run {identity.run_id}, {state or 'cleared'})"


def run_canceller(recipe: CancelRecipe, external_id: JsonValue) -> None:
    """
    Call the registered canceller a recipe names.

    :raises LookupError: the name is not registered (an unknown or forged entry).
    """
    name, arguments = recipe
    path = CANCELLERS.get(name)
    if path is None:
        raise LookupError(f"no canceller registered as {name!r}; known: {', '.join(sorted(CANCELLERS))}")
    module, function = path.split(":", 1)
    getattr(importlib.import_module(module), function)(external_id, **arguments)


class Custodian:
    """
    The Airflow side of :func:`sweep`: the ledger and task states from the metadata database.

    :param interval: seconds between whole-ledger sweeps of :meth:`start`.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The id of the last ledger Variable the previous whole-ledger sweep read.
        self._cursor = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airflow-resumable-custodian")

    # ------------------------------------------------------------------ lifecycle
    def start(self, should_run: Callable[[], bool] | None = None) -> None:
        """
        Sweep the whole ledger every ``interval`` seconds on a daemon thread, until :meth:`stop`.

        :param should_run: asked once, at the first tick: False ends the thread without a sweep.
            (Airflow 3.3 calls ``on_starting`` inside ``Job.__init__``, before the runner sets the
            job's type, so whether this process is the scheduler is known only a moment later.)
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, args=(should_run,), name="airflow-resumable-custodian", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the periodic sweeps (the current one finishes)."""
        self._stop.set()

    def _loop(self, should_run: Callable[[], bool] | None) -> None:
        while not self._stop.wait(self.interval):
            if should_run is not None:
                if not should_run():
                    return
                should_run = None
                _log().info("The custodian sweeps the ledger of jobs in flight", interval=self.interval)
            self.sweep_safely()

    def soon(self, states: dict[TaskIdentity, str | None]) -> None:
        """
        Sweep these task instances on the background thread (from a listener hook).

        :param states: each task instance's new state, as the hook saw it (its transaction may
            not be committed yet when the sweep reads the database).
        """
        if states:
            self._pool.submit(self.sweep_safely, dict(states))

    def soon_for_run(self, dag_id: str, run_id: str) -> None:
        """Sweep every task instance of a DAG run on the background thread (its run failed)."""
        self._pool.submit(self._sweep_run, dag_id, run_id)

    def _sweep_run(self, dag_id: str, run_id: str) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            ).all()
        keys = [ledger_key(TaskIdentity(dag_id, run_id, task_id, map_index)) for task_id, map_index in rows]
        if keys:
            self.sweep_safely(keys=keys)

    def sweep_safely(
        self, states: dict[TaskIdentity, str | None] | None = None, *, keys: list[str] | None = None
    ) -> SweepReport | None:
        """One sweep (of ``states``' task instances, ``keys``, or the whole ledger); never raises."""
        try:
            return self.sweep(states, keys=keys)
        except Exception:
            _log().exception("The custodian's sweep failed; the next one tries again")
            return None

    # ------------------------------------------------------------------ one sweep
    def sweep(
        self, states: dict[TaskIdentity, str | None] | None = None, *, keys: list[str] | None = None
    ) -> SweepReport:
        """Read the ledger (the entries of ``states`` or ``keys``, else all of it) and apply :func:`sweep`."""
        known = states or {}
        if states is not None:
            keys = [ledger_key(identity) for identity in states]

        def task_state(identity: TaskIdentity) -> tuple[bool, str | None]:
            if identity in known:
                return True, known[identity]
            return self._task_state(identity)

        return sweep(
            self._items(keys),
            task_state=task_state,
            cancel=run_canceller,
            forget=self._forget,
            mark_cancelled=self._mark_cancelled,
            count_attempt=self._count_attempt,
            log=_log(),
            mark_cancel_failed=self._mark_cancel_failed,
        )

    def _items(self, keys: list[str] | None) -> list[LedgerItem]:
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        if keys is not None:
            query = select(Variable).where(Variable.key.in_(keys))
        else:
            # A whole-ledger sweep reads the next SWEEP_BATCH entries after the last one it read,
            # wrapping around: every entry is seen, however many jobs are in flight.
            query = (
                select(Variable)
                .where(Variable.key.like(LEDGER_KEY_PREFIX + "%"), Variable.id > self._cursor)
                .order_by(Variable.id)
                .limit(SWEEP_BATCH)
            )
        items = []
        with create_session() as session:
            variables = list(session.scalars(query))
            for variable in variables:
                item = _item(variable.key, variable.val)
                if item is not None:
                    items.append(item)
        if keys is None:
            self._cursor = variables[-1].id if len(variables) == SWEEP_BATCH else 0
        return items

    @staticmethod
    def _task_state(identity: TaskIdentity) -> tuple[bool, str | None]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.execute(
                select(TaskInstance.state).where(
                    TaskInstance.dag_id == identity.dag_id,
                    TaskInstance.run_id == identity.run_id,
                    TaskInstance.task_id == identity.task_id,
                    TaskInstance.map_index == identity.map_index,
                )
            ).first()
        if row is None:
            return False, None
        state = row[0]
        return True, None if state is None else str(getattr(state, "value", state))

    @staticmethod
    def _forget(item: LedgerItem) -> None:
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session() as session:
            session.execute(delete(Variable).where(Variable.key == item.key))

    @staticmethod
    def _count_attempt(item: LedgerItem) -> None:
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            variable = session.scalar(select(Variable).where(Variable.key == item.key))
            if variable is not None:
                entry = json.loads(variable.val)
                entry["custodian_attempts"] = item.attempts + 1
                variable.set_val(json.dumps(entry))

    @staticmethod
    def _mark_cancelled(item: LedgerItem) -> None:
        """The task's record says ``cancelled`` (if it still holds this generation)."""
        Custodian._evolve_record(item, phase="cancelled", cancel_failed=None)

    @staticmethod
    def _mark_cancel_failed(item: LedgerItem, failure: dict[str, JsonValue]) -> None:
        """The task's record keeps why its job could not be cancelled (if it still holds this generation)."""
        Custodian._evolve_record(item, cancel_failed=failure)

    @staticmethod
    def _evolve_record(item: LedgerItem, **changes: Any) -> None:
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        identity = item.identity
        with create_session() as session:
            row = session.scalar(
                select(TaskStateStoreModel).where(
                    TaskStateStoreModel.dag_id == identity.dag_id,
                    TaskStateStoreModel.run_id == identity.run_id,
                    TaskStateStoreModel.task_id == identity.task_id,
                    TaskStateStoreModel.map_index == identity.map_index,
                    TaskStateStoreModel.key == RECORD_KEY,
                )
            )
            if row is None:
                return
            try:
                stored = JobRecord.from_json(json.loads(row.value))
            except (RecordFormatError, ValueError):
                return
            if stored.token == item.record.token:
                row.value = json.dumps(stored.evolve(**changes).to_json())


def _item(key: str, raw: str | None) -> LedgerItem | None:
    try:
        entry = json.loads(raw or "null")
        identity = identity_of_entry(entry)
        if identity is None or ledger_key(identity) != key:
            return None
        record = JobRecord.from_json(entry)
    except (ValueError, RecordFormatError):
        _log().warning("Ignoring an unreadable ledger entry", key=key)
        return None
    attempts = entry.get("custodian_attempts", 0)
    return LedgerItem(key, identity, record, entry, attempts if isinstance(attempts, int) else 0)


def _log() -> Any:
    import structlog

    return structlog.get_logger("airflow_resumable.custodian")
