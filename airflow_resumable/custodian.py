"""
The custodian: it hears a user's stop for the jobs that no worker and no trigger polls.

**Purpose:** between a checkpoint and the resumed try (``up_for_reschedule``), between a crash and
the retry (``up_for_retry``), and after a stop the running try could not classify in time, no
process polls the remote job. A user who then marks the task failed or success, fails its DAG
run or deletes the run would leave the job running and billing. The custodian closes that window:
a job its task no longer intends is cancelled.

**How it works:** the ledger of jobs in flight (:mod:`airflow_resumable.ledger`) lists every job
that may be active, with its task instance and a *cancel recipe* (a registered canceller's name and
its connection ids). For each entry the custodian reads the present (the task instance's state and
try, its record in ``task_state_store``) at the moment it acts, and applies
:func:`airflow_resumable._custody.stop_meaning`: finished or gone → cancel the job, mark the record
``cancelled``, delete the entry; anything else (running, deferred, cleared, waiting for a retry or a
reschedule) → leave it to its watcher or to the next try, which reconnects. It runs in two places,
both Airflow components, both started by the provider's plugin:

- **at once**, from listener hooks, when the API server records a user's mark failed / mark
  success / DAG run failed, or the scheduler fails a task for good. Hooks fire before their
  transaction commits: the custodian snapshots the entry at once, then waits (a few seconds at
  most) until the database shows that very try (by its id) ended. If a clear already started a new
  try, the stopped try's job is still cancelled, and its record says ``stop_requested`` so that the
  new try does not reconnect to it (:mod:`airflow_resumable._decision`);
- **every** ``custodian_interval_seconds`` (10 s), a sweep of the whole ledger in the scheduler,
  which also covers a deleted DAG run (Airflow has no hook for it) and a cancel that failed.

**Trust** (``docs/security.md``): the ledger is a hint, not an authority. An entry is acted on only
if its seal verifies (:mod:`airflow_resumable._trust`): written by our own code for the task
instance it names, with that operator's connection. A record in the store that names another
generation wins over the entry; a finished record is never cancelled or rewritten. A recipe without
a connection is refused (a missing connection never means the component's own credentials).

**Bounds:** cancels run on :class:`~airflow_resumable._cancel_lanes.CancelLanes` (one lane per
connection, a deadline per call, at most ``custodian_parallel_cancels`` at once), so one hung cloud
never delays the others and never holds up the scheduler's exit. A failed cancel is retried with
backoff until ``custodian_give_up_seconds`` after its first failure; then the custodian gives up
loudly, keeps the entry marked ``gave_up`` (the "Resumable jobs" page shows it, also for a deleted
run) and records the failure in the task's record.

.. versionadded:: 0.2.0
.. versionchanged:: 0.3.0 sealed entries only, the present re-read, bounded cancels, entry points.
"""

from __future__ import annotations

import enum
import importlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from airflow_resumable._cancel_lanes import CancelLanes, CancelOutcome, LaneSaturatedError, LanesClosedError
from airflow_resumable._custodian_policy import (
    CustodianLimits,
    next_attempt_delay,
    require_connection,
    should_give_up,
)
from airflow_resumable._custody import StopMeaning, stop_meaning
from airflow_resumable._retention import expires_at_for
from airflow_resumable.exceptions import RecipeRefusedError
from airflow_resumable.ledger import (
    LEDGER_KEY_PREFIX,
    cancel_recipe_of_entry,
    entry_verdict,
    identity_of_entry,
    ledger_key,
)
from airflow_resumable.record import (
    RECORD_KEY,
    JobRecord,
    RecordFormatError,
    TaskIdentity,
    cancel_failure,
    record_verdict,
    seal_record,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pydantic import JsonValue

    from airflow_resumable.ledger import CancelRecipe

__all__ = [
    "CANCELLERS",
    "CANCELLER_ENTRY_POINT_GROUP",
    "Custodian",
    "LedgerItem",
    "Plan",
    "Present",
    "SweepReport",
    "plan",
    "register_canceller",
    "require_connection",
    "run_canceller",
    "sweep",
]

#: Built-in cancellers: name → ``"module:function"``, called as ``function(external_id, **args)``.
#: Only registered names can run: a recipe names one, it never carries code.
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
}
#: The entry point group through which a third-party package registers its cancellers: the name is
#: the canceller's name, the value ``"module:function"``. The scheduler and the API server never
#: import an operator's module, so this is how their custodian finds a maintainer's canceller.
CANCELLER_ENTRY_POINT_GROUP = "airflow_resumable.cancellers"
#: Ledger entries read per whole-ledger sweep (the next ones each time), to bound one sweep's work.
SWEEP_BATCH = 500
#: How long a hook's sweep waits for the database to show the stop it heard (hooks fire before
#: their transaction commits).
HOOK_SETTLE_SECONDS = 5.0
_HOOK_POLL_SECONDS = 0.25
#: Recipe arguments that name the connection a canceller uses: the lane of its cancels.
_CONNECTION_ARGUMENTS = ("aws_conn_id", "databricks_conn_id", "conn_id")
_entry_point_cancellers: dict[str, str] | None = None


def register_canceller(name: str, path: str) -> None:
    """
    Register a canceller in this process (``"module:function"``); calling it again is harmless.

    For the custodian in the scheduler and the API server, register through the entry point group
    :data:`CANCELLER_ENTRY_POINT_GROUP` instead: those processes never import your module.
    """
    if ":" not in path:
        raise ValueError(f"canceller path must be 'module:function', got {path!r}")
    CANCELLERS[name] = path


def canceller_path(name: str) -> str | None:
    """The ``"module:function"`` registered as ``name`` (in code or by an entry point), or None."""
    global _entry_point_cancellers
    if name in CANCELLERS:
        return CANCELLERS[name]
    if _entry_point_cancellers is None:
        from importlib.metadata import entry_points

        _entry_point_cancellers = {
            point.name: point.value for point in entry_points(group=CANCELLER_ENTRY_POINT_GROUP)
        }
    return _entry_point_cancellers.get(name)


def run_canceller(recipe: CancelRecipe, external_id: JsonValue) -> None:
    """
    Call the registered canceller a recipe names.

    :raises RecipeRefusedError: the name is not registered (an unknown or forged entry).
    """
    name, arguments = recipe
    path = canceller_path(name)
    if path is None or ":" not in path:
        raise RecipeRefusedError(f"no canceller registered as {name!r}")
    module, function = path.split(":", 1)
    getattr(importlib.import_module(module), function)(external_id, **arguments)


@dataclass
class LedgerItem:
    """One ledger entry as the custodian read it (sealed: :func:`_item` drops any other)."""

    key: str
    identity: TaskIdentity
    record: JobRecord
    #: The raw entry (its cancel recipe, the operator's switches, the custodian's bookkeeping).
    entry: dict[str, Any]

    def recipe(self, state: str | None) -> CancelRecipe | None:
        """The cancel recipe, if the operator's switches allow a cancel for a task in ``state``."""
        return cancel_recipe_of_entry(self.entry, state)

    @property
    def bookkeeping(self) -> dict[str, Any]:
        """The custodian's notes on this entry (outside the seal: never trusted beyond a bound)."""
        notes = self.entry.get("custodian")
        return notes if isinstance(notes, dict) else {}

    def number(self, name: str) -> float | None:
        """A numeric bookkeeping value, or None when absent or not a number."""
        value = self.bookkeeping.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def gave_up(self) -> bool:
        """Whether the custodian gave up on this job's cancel (the entry is kept to show it)."""
        return bool(self.bookkeeping.get("gave_up"))

    def lane(self) -> str:
        """The lane of this job's cancels: its canceller and connection."""
        cancel = self.entry.get("cancel")
        name = cancel.get("with") if isinstance(cancel, dict) else None
        args = cancel.get("args") if isinstance(cancel, dict) else None
        if not isinstance(args, dict):
            return f"{name}:"
        conn = next((args[a] for a in _CONNECTION_ARGUMENTS if a in args), None)
        return f"{name}:{conn if conn is not None else json.dumps(args, sort_keys=True, default=str)}"


@dataclass(frozen=True)
class Present:
    """
    A task instance and its record as they are now, read just before acting.

    :param found: False when the task instance no longer exists (its DAG run was deleted).
    :param state: its state name (None: cleared, or no state yet).
    :param try_id: the id of its current try (Airflow 3 gives every try its own id), or None.
    :param stored: its record in ``task_state_store`` when present and sealed, else None.
    """

    found: bool
    state: str | None
    try_id: str | None = None
    stored: JobRecord | None = None


class Act(enum.Enum):
    """What the custodian does with one entry."""

    LEAVE = "leave"
    FORGET = "forget"
    UNREACHABLE = "unreachable"
    WAIT = "wait"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Plan:
    """The decision for one entry: the act, why, and for a cancel its recipe and job."""

    act: Act
    #: Why (not ``reason``: the metric-name check resolves ``.reason`` to the decision table's).
    why: str
    recipe: CancelRecipe | None = None
    external_id: JsonValue = None


def plan(item: LedgerItem, present: Present, *, now: float, stop_confirmed: bool = False) -> Plan:
    """
    Decide what to do with one sealed entry, from the present. Pure: every row is a unit test.

    :param stop_confirmed: a listener hook saw this entry's try end by a user's stop and the
        database confirmed it, although the task instance has moved on (a clear right after).
    """
    if item.gave_up:
        return Plan(Act.LEAVE, "the custodian gave up on this job's cancel; it is shown on the jobs page")
    if not stop_confirmed and stop_meaning(present.state, found=present.found) is not StopMeaning.USER_STOP:
        return Plan(Act.LEAVE, "its task instance runs, or will run again")
    external_id = item.record.external_id
    stored = present.stored
    if stored is not None:
        if stored.token != item.record.token:
            return Plan(Act.FORGET, "the task's record names another generation: the entry is stale")
        if stored.phase in ("completed", "cancelled"):
            return Plan(Act.FORGET, f"the task's record says the job was {stored.phase}")
        if external_id is None:
            external_id = stored.external_id
    state = present.state if present.found else None
    recipe = item.recipe("failed" if stop_confirmed else state)
    if recipe is None and isinstance(item.entry.get("cancel"), dict):
        return Plan(Act.FORGET, "the operator's cancel switch is off")
    if external_id is None or recipe is None:
        why = "no job id recorded" if external_id is None else "no cancel recipe"
        return Plan(Act.UNREACHABLE, why, recipe, external_id)
    next_attempt_at = item.number("next_attempt_at")
    if next_attempt_at is not None and now < next_attempt_at:
        return Plan(Act.WAIT, "backing off after a failed cancel", recipe, external_id)
    return Plan(Act.CANCEL, "its task instance was stopped", recipe, external_id)


@dataclass
class SweepReport:
    """What one sweep did: job ids cancelled (or queued), left, waiting, unreachable, distrusted."""

    cancelled: list[JsonValue] = field(default_factory=list)
    left: list[JsonValue] = field(default_factory=list)
    waiting: list[JsonValue] = field(default_factory=list)
    failed: list[JsonValue] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


class Effects(Protocol):
    """The I/O of :func:`sweep` (the metadata database in :class:`Custodian`, memory in tests)."""

    def present(self, item: LedgerItem) -> Present:
        """The task instance and its record now."""

    def cancel(self, item: LedgerItem, plan: Plan, done: Callable[[BaseException | None], None]) -> bool:
        """Start the cancel; ``done`` gets its error (None: cancelled). False: not started now."""

    def forget(self, item: LedgerItem) -> None:
        """Delete the entry, if it is still the one read."""

    def mark_cancelled(self, item: LedgerItem) -> None:
        """The task's record says ``cancelled`` (if it still holds this generation, unfinished)."""

    def note_failure(self, item: LedgerItem, notes: dict[str, Any]) -> None:
        """Keep the custodian's notes in the entry (if it is still the one read)."""

    def mark_cancel_failed(self, item: LedgerItem, failure: dict[str, JsonValue]) -> None:
        """The task's record keeps why its job could not be cancelled."""


def sweep(
    items: Iterable[LedgerItem],
    effects: Effects,
    *,
    log: Any,
    limits: CustodianLimits | None = None,
    clock: Callable[[], float] = time.time,
    confirmed: frozenset[str] = frozenset(),
) -> SweepReport:
    """
    Cancel the jobs whose task instance no longer intends them; leave every other one alone.

    :param confirmed: keys of entries whose try a hook saw stopped by a user (see :func:`plan`).
    """
    limits = limits or CustodianLimits()
    report = SweepReport()
    for item in items:
        present = effects.present(item)
        decision = plan(item, present, now=clock(), stop_confirmed=item.key in confirmed)
        where = _where(item.identity, present.state if present.found else "gone")
        if decision.act is Act.LEAVE:
            report.left.append(item.record.external_id)
        elif decision.act is Act.WAIT:
            report.waiting.append(decision.external_id)
        elif decision.act is Act.FORGET:
            # A switch left off is worth a warning; an entry whose job ended or moved on is not.
            level = log.warning if "switch" in decision.why else log.info
            level(f"Not cancelling a stopped task's job: {decision.why}", task=where)
            effects.forget(item)
            report.forgotten.append(item.key)
        elif decision.act is Act.UNREACHABLE:
            log.warning(
                "A stopped task's job may still run and cannot be cancelled here; stop it by hand",
                task=where,
                external_id=decision.external_id,
                token=item.record.token,
                reason=decision.why,
            )
            report.unreachable.append(item.key)
            effects.forget(item)
        elif effects.cancel(item, decision, _on_done(item, decision, effects, log, limits, clock, where)):
            report.cancelled.append(decision.external_id)
        else:
            report.waiting.append(decision.external_id)
    return report


def _on_done(
    item: LedgerItem,
    decision: Plan,
    effects: Effects,
    log: Any,
    limits: CustodianLimits,
    clock: Callable[[], float],
    where: str,
) -> Callable[[BaseException | None], None]:
    def done(error: BaseException | None) -> None:
        external_id = decision.external_id
        if error is None:
            effects.mark_cancelled(item)
            effects.forget(item)
            log.warning("Cancelled the remote job of a stopped task", task=where, external_id=external_id)
            return
        now = clock()
        failures = int(item.number("failures") or 0) + 1
        first = item.number("first_failure_at")
        first = now if first is None or first > now else first
        refused = isinstance(error, RecipeRefusedError)
        if refused or should_give_up(first, now, limits.give_up_after):
            log.error(
                "COULD NOT CANCEL the remote job of a stopped task: giving up, stop it by hand",
                task=where,
                external_id=external_id,
                attempts=failures,
                error=repr(error),
            )
            effects.mark_cancel_failed(
                item, cancel_failure(external_id, "custodian: the task was stopped", error)
            )
            notes = {
                "gave_up": True,
                "failures": failures,
                "first_failure_at": first,
                "error": type(error).__name__,
            }
        else:
            delay = next_attempt_delay(failures)
            log.warning(
                "Could not cancel a stopped task's job; trying again with backoff",
                task=where,
                external_id=external_id,
                attempts=failures,
                retry_in_seconds=delay,
                error=repr(error),
            )
            notes = {"failures": failures, "first_failure_at": first, "next_attempt_at": now + delay}
        effects.note_failure(item, notes)

    return done


def _where(identity: TaskIdentity, state: str | None) -> str:
    index = f"[{identity.map_index}]" if identity.map_index >= 0 else ""
    return f"{identity.dag_id}.{identity.task_id}{index} (run {identity.run_id}, {state or 'cleared'})"


def _item(key: str, raw: str | None, log: Any) -> LedgerItem | None:
    """The sealed entry stored under ``key``, or None (unreadable or untrusted: reported once)."""
    try:
        entry = json.loads(raw or "null")
        identity = identity_of_entry(entry)
        verdict = entry_verdict(key, entry)
        if identity is None or not verdict.trusted:
            if key not in _distrusted:
                if len(_distrusted) >= _DISTRUSTED_REMEMBERED:
                    _distrusted.clear()  # bounded: a flood of forgeries costs memory only once
                _distrusted.add(key)
                log.warning("Ignoring a ledger entry that is not trusted", key=key, why=verdict.value)
            return None
        record = JobRecord.from_json(entry)
    except (ValueError, RecordFormatError):
        log.warning("Ignoring an unreadable ledger entry", key=key)
        return None
    return LedgerItem(key, identity, record, entry)


#: Keys already reported as untrusted by this process (one warning each, not one per sweep).
_distrusted: set[str] = set()
_DISTRUSTED_REMEMBERED = 10_000


class Custodian:
    """
    The Airflow side of :func:`sweep`: the ledger, task instances and records in the metadata
    database, cancels on :class:`~airflow_resumable._cancel_lanes.CancelLanes`.

    :param interval: seconds between whole-ledger sweeps of :meth:`start`.
    :param limits: the bounds (default: the ``[resumable]`` options).
    """

    def __init__(self, interval: float, limits: CustodianLimits | None = None) -> None:
        self.interval = interval
        self.limits = limits or CustodianLimits.from_config()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The id of the last ledger Variable the previous whole-ledger sweep read.
        self._cursor = 0
        self._lanes = CancelLanes(max_parallel=self.limits.parallel, call_timeout=self.limits.call_timeout)
        self._sweep_lock = threading.Lock()
        self._effects = _DatabaseEffects(self._lanes)

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

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sweeps and the cancels; returns within ``timeout`` whatever a cloud does."""
        self._stop.set()
        self._lanes.shutdown(timeout=timeout)

    def drain(self, timeout: float) -> bool:
        """Wait until no cancel is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._lanes.busy() or self._effects.outstanding:
            if time.monotonic() > deadline:
                return False
            self._stop.wait(0.01)
        return True

    def _loop(self, should_run: Callable[[], bool] | None) -> None:
        while not self._stop.wait(self.interval):
            if should_run is not None:
                if not should_run():
                    return
                should_run = None
                _log().info("The custodian sweeps the ledger of jobs in flight", interval=self.interval)
            self.sweep_safely()

    def soon(self, tries: dict[TaskIdentity, str | None]) -> None:
        """
        Act on a user's stop that a listener hook heard, on a daemon thread.

        :param tries: each stopped task instance and the id of its stopped try (None: unknown).
        """
        if tries:
            threading.Thread(
                target=self._after_hook, args=(dict(tries),), name="airflow-resumable-hook", daemon=True
            ).start()

    def soon_for_run(self, dag_id: str, run_id: str) -> None:
        """Sweep every task instance of a DAG run on a daemon thread (its run failed)."""
        threading.Thread(
            target=self._sweep_run, args=(dag_id, run_id), name="airflow-resumable-hook", daemon=True
        ).start()

    def _sweep_run(self, dag_id: str, run_id: str) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.id).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            ).all()
        self._after_hook(
            {TaskIdentity(dag_id, run_id, task_id, index): str(try_id) for task_id, index, try_id in rows}
        )

    def _after_hook(self, tries: dict[TaskIdentity, str | None]) -> None:
        """
        Snapshot the entries now, wait until the database shows each stopped try ended (hooks fire
        before commit), then sweep them; a try that a clear replaced meanwhile counts as stopped.
        """
        try:
            items = {item.key: item for item in self._items([ledger_key(i) for i in tries])}
            confirmed: set[str] = set()
            pending = dict(items)
            deadline = time.monotonic() + HOOK_SETTLE_SECONDS
            while pending:
                for key, item in list(pending.items()):
                    present = self._present(item)
                    stopped = tries.get(item.identity)
                    if stop_meaning(present.state, found=present.found) is StopMeaning.USER_STOP:
                        del pending[key]
                    elif stopped is not None and present.try_id != stopped:  # a clear replaced it
                        if self._stopped_try_wrote(item, stopped) and self._try_ended_by_user(
                            stopped, present
                        ):
                            confirmed.add(key)
                        del pending[key]
                if not pending or time.monotonic() > deadline or self._stop.wait(_HOOK_POLL_SECONDS):
                    break
            for key in confirmed:
                self._mark_stop_requested(items[key])
            self.sweep(list(items.values()), confirmed=frozenset(confirmed))
        except Exception:
            _log().exception("The custodian could not act on a stop; the next whole-ledger sweep will")

    @staticmethod
    def _stopped_try_wrote(item: LedgerItem, try_id: str | None) -> bool:
        """
        Whether the entry was written by the stopped try: only then is its job that try's. (By the
        time the hook's thread reads it, a clear may have let a new try write its own entry.)
        """
        return try_id is not None and item.entry.get("try_id") == try_id

    @staticmethod
    def _try_ended_by_user(try_id: str, present: Present) -> bool:
        """Whether the stopped try is no longer current and its history says it ended stopped."""
        if present.try_id == try_id:
            return False
        from airflow.models.taskinstancehistory import TaskInstanceHistory
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            state = session.scalar(
                select(TaskInstanceHistory.state).where(
                    TaskInstanceHistory.task_instance_id == uuid.UUID(try_id)
                )
            )
        name = None if state is None else str(getattr(state, "value", state))
        return stop_meaning(name) is StopMeaning.USER_STOP

    def sweep_safely(self, *, keys: list[str] | None = None) -> SweepReport | None:
        """One sweep (of ``keys``, or the next batch of the whole ledger); never raises."""
        try:
            return self.sweep(self._items(keys))
        except Exception:
            _log().exception("The custodian's sweep failed; the next one tries again")
            return None

    # ------------------------------------------------------------------ one sweep
    def sweep(self, items: list[LedgerItem], *, confirmed: frozenset[str] = frozenset()) -> SweepReport:
        """Apply :func:`sweep` to ``items`` against the metadata database."""
        with self._sweep_lock:
            return sweep(items, self._effects, log=_log(), limits=self.limits, confirmed=confirmed)

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
                item = _item(variable.key, variable.val, _log())
                if item is not None:
                    items.append(item)
        if keys is None:
            self._cursor = variables[-1].id if len(variables) == SWEEP_BATCH else 0
        return items

    @staticmethod
    def _present(item: LedgerItem) -> Present:
        return _DatabaseEffects.read_present(item.identity)

    @staticmethod
    def _mark_stop_requested(item: LedgerItem) -> None:
        """The record of the stopped try's generation says so: a new try will not reconnect to it."""
        _evolve_record(item, stop_requested={"at": time.time(), "by": "custodian"})


class _DatabaseEffects:
    """:class:`Effects` on the metadata database; cancels on the lanes."""

    def __init__(self, lanes: CancelLanes) -> None:
        self._lanes = lanes
        #: Cancels accepted whose outcome has not been fully handled yet (for :meth:`Custodian.drain`).
        self.outstanding = 0
        self._count_lock = threading.Lock()

    def present(self, item: LedgerItem) -> Present:
        return self.read_present(item.identity)

    @staticmethod
    def read_present(identity: TaskIdentity) -> Present:
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.execute(
                select(TaskInstance.state, TaskInstance.id).where(
                    TaskInstance.dag_id == identity.dag_id,
                    TaskInstance.run_id == identity.run_id,
                    TaskInstance.task_id == identity.task_id,
                    TaskInstance.map_index == identity.map_index,
                )
            ).first()
            stored_value = session.scalar(
                select(TaskStateStoreModel.value).where(
                    TaskStateStoreModel.dag_id == identity.dag_id,
                    TaskStateStoreModel.run_id == identity.run_id,
                    TaskStateStoreModel.task_id == identity.task_id,
                    TaskStateStoreModel.map_index == identity.map_index,
                    TaskStateStoreModel.key == RECORD_KEY,
                )
            )
        if row is None:
            return Present(found=False, state=None)
        state = None if row[0] is None else str(getattr(row[0], "value", row[0]))
        return Present(True, state, str(row[1]), _trusted_record(identity, stored_value))

    def cancel(self, item: LedgerItem, plan: Plan, done: Callable[[BaseException | None], None]) -> bool:
        recipe, external_id = plan.recipe, plan.external_id
        assert recipe is not None  # a CANCEL plan always has one

        def on_done(outcome: CancelOutcome) -> None:
            try:
                if isinstance(outcome.error, (LanesClosedError, LaneSaturatedError)):
                    return  # never ran: not a failed cancel; the next sweep tries again
                if outcome.timed_out:
                    done(TimeoutError(f"the cancel took longer than {self._lanes.call_timeout:g} s"))
                else:
                    done(outcome.error)
            finally:
                with self._count_lock:
                    self.outstanding -= 1

        with self._count_lock:
            self.outstanding += 1
        accepted = self._lanes.submit(
            item.lane(), item.key, lambda: run_canceller(recipe, external_id), on_done
        )
        if not accepted:
            with self._count_lock:
                self.outstanding -= 1
        return accepted

    def forget(self, item: LedgerItem) -> None:
        _rewrite_entry(item, None)

    def mark_cancelled(self, item: LedgerItem) -> None:
        _evolve_record(item, phase="cancelled", cancel_failed=None)

    def note_failure(self, item: LedgerItem, notes: dict[str, Any]) -> None:
        _rewrite_entry(item, notes)

    def mark_cancel_failed(self, item: LedgerItem, failure: dict[str, JsonValue]) -> None:
        _evolve_record(item, cancel_failed=failure)


def _trusted_record(identity: TaskIdentity, raw: str | None) -> JobRecord | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return JobRecord.from_json(value) if record_verdict(identity, value).trusted else None
    except (ValueError, RecordFormatError):
        return None


def _rewrite_entry(item: LedgerItem, notes: dict[str, Any] | None) -> None:
    """Delete the entry (``notes`` None) or set its bookkeeping, only if it is still the one read."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        variable = session.scalar(select(Variable).where(Variable.key == item.key).with_for_update())
        if variable is None:
            return
        try:
            current = json.loads(variable.val or "null")
        except ValueError:
            return
        if not isinstance(current, dict) or current.get("seal") != item.entry.get("seal"):
            return  # rewritten since it was read (a new try's intent): not ours to touch
        if notes is None:
            session.delete(variable)
        else:
            current["custodian"] = notes
            variable.set_val(json.dumps(current))


def _evolve_record(item: LedgerItem, **changes: Any) -> None:
    """Rewrite the task's record (sealed) if it holds this generation and its job has not ended."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    identity = item.identity
    with create_session() as session:
        row = session.scalar(
            select(TaskStateStoreModel)
            .where(
                TaskStateStoreModel.dag_id == identity.dag_id,
                TaskStateStoreModel.run_id == identity.run_id,
                TaskStateStoreModel.task_id == identity.task_id,
                TaskStateStoreModel.map_index == identity.map_index,
                TaskStateStoreModel.key == RECORD_KEY,
            )
            .with_for_update()
        )
        stored = _trusted_record(identity, None if row is None else row.value)
        if row is None or stored is None or stored.token != item.record.token:
            return
        if stored.phase in ("completed", "cancelled"):
            return  # a finished record is never rewritten
        evolved = stored.evolve(**changes)
        row.value = json.dumps(seal_record(identity, evolved))
        # As the try's own writes do: a record whose job ended expires after its retention.
        row.expires_at = expires_at_for(evolved.phase, datetime.now(tz=timezone.utc))


def _log() -> Any:
    import structlog

    return structlog.get_logger("airflow_resumable.custodian")
