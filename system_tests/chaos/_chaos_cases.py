"""
The chaos cases: one DAG run each, one fault each, and the facts the suite asserts on.

A :class:`CaseRun` triggers its own DAG run of ``dags/chaos_resumable.py`` (tag ``t<8 hex>``),
waits for events (the job in the fake cloud's ledger, ``Resume decision`` lines in the task log,
status reads in the ledger, task instance states), injects its fault, lets the job finish, and
returns an :class:`Outcome`: every job its submit calls created, grouped by submission token,
which of them were cancelled or are still running, and each task instance's final state and try.
Nothing sleeps for a fixed time; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import chaos_faults
import httpx

from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing.cluster import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from _chaos_clouds import CloudView, Job

    from airflow_resumable.testing.cluster import AirflowCluster

TASK = "job"
DECISION = "Resume decision"
MAP_INDEXES = (0, 1, 2)
#: 500s injected into the status calls: fewer than the status-call budget of every chaos task
#: (cloud_retry: 4 attempts; Databricks' hook tries twice within each).
STORM = 3
#: The api-server holds the "job submitted" record write this long while the worker is killed.
STALL_SECONDS = 30.0

#: One action-logged REST call (trigger, mark, clear) at a time. On sqlite, the api-server runs the
#: audit-log commit of such a call on its event loop; while it waits for the write lock the whole
#: api-server stalls (up to sqlite's 5 s busy timeout), heartbeats and the operators' stop
#: classification included (see docs/_notes/airflow-3.3.2-signals.md, harness notes). Two at once
#: made that frequent; one at a time, it is rare (and :meth:`CaseRun.action_logged` retries).
ACTION_LOGGED = threading.Lock()

CASES = (
    "no_fault",
    "sigterm",
    "sigkill",
    "crash_before_persist",
    "storm_5xx",
    "store_write_fails_once",
    "mark_failed",
    "clear_while_running",
    "execution_timeout",
    "three_disruptions",
    "mapped_sigterm_all",
    "lost_submit_response",
    "clear_while_checkpointed",
    "clear_after_crash",
    "clear_after_success",
    "clear_spec_changed",
    "clear_wiped_store",
    "checkpointed_mark_failed",
    "checkpointed_dag_run_failed",
    "checkpointed_dag_run_deleted",
    "crash_mark_failed",
    "deferred_clear",
    "deferred_mark_failed",
    "deferred_triggerer_restart",
    "pod_termination",
)
#: Seconds a Kubernetes-style termination waits between SIGTERM and SIGKILL (a pod's
#: ``terminationGracePeriodSeconds``; Kubernetes' default is 30).
POD_GRACE = 10.0
#: The DAG shape (``dags/chaos_resumable.py``) of the cases that do not run on ``chaos_<op>``.
SHAPES = {
    "execution_timeout": "_timeout",
    "mapped_sigterm_all": "_mapped",
    "lost_submit_response": "_sdk_retries",
    "clear_while_checkpointed": "_held",
    "clear_after_crash": "_held",
    "clear_wiped_store": "_held",
    "checkpointed_mark_failed": "_held",
    "checkpointed_dag_run_failed": "_held",
    "checkpointed_dag_run_deleted": "_deletable",
    "crash_mark_failed": "_held",
    "deferred_clear": "_deferrable",
    "deferred_mark_failed": "_deferrable",
    "deferred_triggerer_restart": "_deferrable",
}
#: Cases after which no ledger Variable of the DAG run may be left (figure ``ledger_variables_left``).
LEDGER_CHECKED = frozenset(
    {
        "clear_wiped_store",
        "checkpointed_mark_failed",
        "checkpointed_dag_run_failed",
        "checkpointed_dag_run_deleted",
        "crash_mark_failed",
        "deferred_clear",
        "deferred_mark_failed",
        "deferred_triggerer_restart",
    }
)
#: What the custodian logs when it cancelled a job (``airflow_resumable.custodian.sweep``).
CUSTODIAN_CANCELLED = "Cancelled the remote job of a stopped task"
#: The processes the custodian runs in (their logs say which one cancelled a case's job).
CUSTODIAN_PROCESSES = ("api-server", "scheduler")
#: The Variable the DAGs read a part of the job spec from (``dags/chaos_resumable.py``: ``SPEC``).
SPEC_VARIABLE = "chaos_spec_{tag}"
#: What a try logs when a stop leaves the job to the next try (``Stop signal classified``).
HAND_OVER = '"kind":"hand_over"'
#: What a try logs when it cancels the job of an earlier generation whose spec changed.
SUPERSEDED = '"reason":"superseded"'
#: Key prefix of the Variables the library keeps a copy of its record in while a job may be active.
LEDGER_VARIABLE_PREFIX = "airflow_resumable.ledger."


#: Task instance states in which nothing will poll again.
ENDED = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})


class TaskEnded(Exception):
    """A task instance ended while the case waited for it to poll (again)."""

    def __init__(self, map_index: int, state: str, try_number: int) -> None:
        super().__init__(f"task instance (map index {map_index}) ended {state} on try {try_number}")
        self.map_index = map_index


class Diverted(Exception):
    """The task took another path than the one the case waits for (e.g. a second job, no reconnect)."""


class CampaignStopped(Exception):
    """The campaign was stopped (a test failed or the session ends); the case gives up."""


@dataclass
class Outcome:
    """What one case did to the remote side and to Airflow; the test asserts on it."""

    operator: str
    case: str
    dag_id: str
    run_id: str
    jobs: list[Job]
    submit_calls: int
    cancelled: list[str]
    orphans: list[str]
    #: map index -> (final state, try number); -1 for an unmapped task.
    tis: dict[int, tuple[str, int]]
    figures: dict[str, Any] = field(default_factory=dict)

    def jobs_per_generation(self) -> dict[str, int]:
        """Jobs created per submission token (a token is one intended generation of one map index)."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[str(job.token)] = counts.get(str(job.token), 0) + 1
        return counts


@dataclass
class ChaosContext:
    """What every case shares: the cluster, the views of the fake clouds, the api-server fault dir."""

    cluster: AirflowCluster
    views: dict[str, CloudView]
    fault_dir: Path
    stopped: threading.Event


class CaseRun:
    """One case of one operator: trigger, disrupt, finish, collect."""

    #: Cases after which no ledger Variable of the DAG run may be left.
    ledger_checked: frozenset[str] = LEDGER_CHECKED

    def __init__(self, context: ChaosContext, operator: str, case: str) -> None:
        self.ctx = context
        self.cluster = context.cluster
        self.view = context.views[operator]
        self.operator = operator
        self.case = case
        self.tag = f"t{uuid.uuid4().hex[:8]}"
        shape = SHAPES.get(case, "")
        self.dag_id = f"chaos_{operator}{shape}"
        self.map_indexes: tuple[int, ...] = MAP_INDEXES if shape == "_mapped" else (-1,)
        self.run_id = ""
        self.figures: dict[str, Any] = {}
        #: ``time.time()`` when the last action-logged REST call was sent (its lock held).
        self.sent_at = 0.0

    # ------------------------------------------------------------------ events
    def check(self) -> None:
        """Abort a wait when the campaign stops or a process of the cluster died."""
        if self.ctx.stopped.is_set():
            raise CampaignStopped(f"{self.operator}/{self.case} stopped")
        self.cluster.check()

    def wait(self, probe: Callable[[], Any], timeout: float, what: str, step: float = 0.25) -> Any:
        return wait_until(
            probe, timeout=timeout, what=f"{self.operator}/{self.case}: {what}", step=step, check=self.check
        )

    def action_logged(self, method: str, path: str, **kwargs: Any) -> Any:
        """
        An action-logged REST call (trigger, mark, clear), one at a time, sent again on "Database error".

        On sqlite such a call can deadlock with any concurrent execution-API write (a heartbeat):
        its audit-log commit blocks the api-server's event loop, which the other request needs to
        commit. sqlite's 5 s busy timeout breaks it with a 500 before the handler ran, so sending it
        again is safe; the cluster's client sends it up to 3 times, this up to 3 times that.
        """
        for attempt in range(1, 4):
            try:
                with ACTION_LOGGED:
                    self.sent_at = time.time()
                    return self.cluster.api(method, path, **kwargs)
            except httpx.HTTPStatusError as error:
                if (
                    error.response.status_code != 500
                    or "Database error" not in error.response.text
                    or attempt == 3
                ):
                    raise
        raise AssertionError("unreachable")

    def run_path(self) -> str:
        return f"/dags/{self.dag_id}/dagRuns/{quote(self.run_id, safe='')}"

    def ti_path(self) -> str:
        return f"{self.run_path()}/taskInstances/{TASK}"

    def label(self, map_index: int = -1) -> str:
        return f"chaos-{self.tag}" + (f"-{map_index}" if map_index >= 0 else "")

    def jobs(self, map_index: int = -1) -> list[Job]:
        label = self.label(map_index)
        return [job for job in self.view.jobs(label) if job.label == label]

    def job(self, generation: int = 1, map_index: int = -1, timeout: float = 90) -> Job:
        """The job of a generation of a map index, once its submit call created it."""
        jobs = self.wait(lambda: self.jobs(map_index)[generation - 1 :], timeout, f"job {generation}")
        return jobs[0]

    def decisions(self, map_index: int = -1) -> int:
        """How many executions (tries and resumed reschedules) started deciding so far."""
        folder = (
            self.cluster.home / "logs" / f"dag_id={self.dag_id}" / f"run_id={self.run_id}" / f"task_id={TASK}"
        )
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        return sum(
            path.read_text(errors="replace").count(DECISION) for path in sorted(folder.glob("attempt=*.log"))
        )

    def wait_polling(
        self,
        job: Job,
        executions: int,
        map_index: int = -1,
        timeout: float = 90,
        diverted: Callable[[], str | None] | None = None,
    ) -> float:
        """
        Wait until execution number ``executions`` decided and then read ``job``'s status.

        :param diverted: says why waiting is pointless (the task went another way), or None.
        :return: ``time.monotonic()`` when that read was seen.
        :raises TaskEnded: the task instance ended instead (no point waiting for the timeout).
        :raises Diverted: ``diverted`` gave a reason.
        """
        self.wait(
            self._or_ended(lambda: self.decisions(map_index) >= executions, map_index, diverted),
            timeout,
            f"execution {executions}",
        )
        decided_at = time.time()
        polled = self._or_ended(
            lambda: any(r.at > decided_at for r in self.view.reads(job)), map_index, diverted
        )
        self.wait(polled, timeout, "a status read")
        return time.monotonic()

    def _or_ended(
        self,
        probe: Callable[[], Any],
        map_index: int,
        diverted: Callable[[], str | None] | None = None,
    ) -> Callable[[], Any]:
        """
        ``probe``, which raises :class:`TaskEnded` if the task instance ended (checked every 2 s).

        :param diverted: checked on every poll; a reason it returns is raised as :class:`Diverted`.
        """
        checked = [0.0]

        def probe_or_raise() -> Any:
            found = probe()
            if found:
                return found
            if diverted is not None and (reason := diverted()):
                raise Diverted(reason)
            if time.monotonic() - checked[0] >= 2.0:
                checked[0] = time.monotonic()
                ti = self.cluster.task_instance(self.dag_id, self.run_id, TASK, map_index)
                if ti["state"] in ENDED:
                    raise TaskEnded(map_index, str(ti["state"]), int(ti["try_number"]))
            return None

        return probe_or_raise

    def wait_ti(self, states: set[str], timeout: float) -> dict[str, Any]:
        """
        Wait until the (unmapped) task instance is in one of ``states``; return it.

        :raises TaskEnded: it ended in another state (no point waiting for the timeout).
        """

        def probe() -> dict[str, Any] | None:
            ti = self.cluster.task_instance(self.dag_id, self.run_id, TASK)
            if ti["state"] in states:
                return ti
            if ti["state"] in ENDED:
                raise TaskEnded(-1, str(ti["state"]), int(ti["try_number"]))
            return None

        found: dict[str, Any] = self.wait(probe, timeout, f"task instance in {sorted(states)}", step=0.5)
        return found

    def clear(self) -> float:
        """Clear the task instance as a user does (REST ``clearTaskInstances``); return when that returned."""
        body = {"dry_run": False, "dag_run_id": self.run_id, "task_ids": [TASK], "only_failed": False}
        self.action_logged("POST", f"/dags/{self.dag_id}/clearTaskInstances", json=body)
        return time.monotonic()

    def set_spec(self, value: str) -> None:
        """Change the spec the task renders from now on (the Variable ``chaos_spec_<tag>``)."""
        body = {"key": SPEC_VARIABLE.format(tag=self.tag), "value": value}
        self.action_logged("POST", "/variables", json=body)

    def tries_logging(self, text: str) -> list[int]:
        """The try numbers whose log (the trigger's included) has a line containing ``text``."""
        tries = {
            int(path.name.split("=", 1)[1].split(".", 1)[0])
            for path in self.cluster.task_log_files(self.dag_id, self.run_id, TASK)
            if text in path.read_text(errors="replace")
        }
        return sorted(tries)

    def ledger_variables(self) -> list[str]:
        """Keys of the library's ledger Variables that belong to this DAG run."""
        found = self.cluster.variables(LEDGER_VARIABLE_PREFIX)
        return sorted(
            key for key, value in found.items() if self.run_id in key or self.run_id in (value or "")
        )

    def _second_job(self) -> str | None:
        """Why a reconnect will not come: the job was cancelled, or another one submitted."""
        jobs = self.jobs()
        if jobs and self.view.cancelled(jobs[0]):
            return "the job was cancelled instead of reconnected"
        if len(jobs) > 1:
            return "a second job was submitted instead of reconnecting"
        return None

    def reconnect(self, job: Job, executions: int, action_at: float) -> None:
        """
        Wait for execution ``executions`` to read ``job`` again, then let every job of the case finish.

        Figures: ``reconnect_s`` (from the user's action to that read), or ``diverted`` (why it
        did not come: the test then counts the jobs and cancels rather than timing out).
        """
        try:
            read_at = self.wait_polling(job, executions, timeout=120, diverted=self._second_job)
            self.figures["reconnect_s"] = round(read_at - action_at, 1)
        except (Diverted, TaskEnded) as error:
            self.figures["diverted"] = str(error)
        self.finish_all()

    def finish_all(self) -> None:
        """Let every job of the case that still runs end successfully."""
        for job in self.jobs():
            if self.view.active(job):
                self.view.finish(job)

    def processes(self, map_index: int = -1) -> Any:
        return self.cluster.task_processes(self.dag_id, TASK, self.run_id, map_index=map_index, timeout=60)

    def ti_id(self, map_index: int = -1) -> str:
        return str(self.cluster.task_instance(self.dag_id, self.run_id, TASK, map_index)["id"])

    def record(self, map_index: int = -1) -> dict[str, Any]:
        store = self.cluster.task_state_store_get(self.dag_id, self.run_id, TASK, RECORD_KEY, map_index)
        return dict(store or {})

    # ------------------------------------------------------------------ the run
    def run(self) -> Outcome:
        """Trigger, inject this case's fault, finish the job(s), collect the outcome."""
        began = time.monotonic()
        self.run_id = f"chaos__{self.tag}"
        try:
            # A fault armed before the trigger: the task's first submit call may come at once.
            getattr(self, f"_before_{self.case}", lambda: None)()
            conf = self.view.conf(self.tag) | self.extra_conf()
            body = {"dag_run_id": self.run_id, "logical_date": None, "conf": conf}
            try:  # the DAG was unpaused once for the whole campaign
                self.action_logged("POST", f"/dags/{self.dag_id}/dagRuns", json=body)
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 409:  # 409: an attempt that looked failed created it
                    raise
            getattr(self, f"_{self.case}")()
        except BaseException:
            self._abandon()
            raise
        finally:
            if self.case == "clear_spec_changed":
                self._drop_spec()
        state = self._wait_for_end(timeout=180)
        self.figures["dag_run"] = state
        getattr(self, f"_after_{self.case}", lambda: None)()
        if self.case in self.ledger_checked:
            self.figures["ledger_variables_left"] = self._ledger_left()
        if "cancel_s" in self.figures:
            self.figures["cancel_calls"] = sum(len(self.view.cancels(job)) for job in self.all_jobs())
            self.figures["custodian_in"] = self.custodian_logged()
        outcome = self._collect()
        outcome.figures["duration_s"] = round(time.monotonic() - began, 1)
        return outcome

    def extra_conf(self) -> dict[str, Any]:
        """DAG run conf a case adds to its cloud view's (a subclass's cases)."""
        return {}

    def _abandon(self) -> None:
        """After a failed case: fail its DAG run and end its jobs, so its tasks free their slots."""
        with contextlib.suppress(Exception):
            self.action_logged("PATCH", self.run_path(), json={"state": "failed"})
        for job in self.view.jobs(self.label()):
            with contextlib.suppress(Exception):
                if self.view.active(job):
                    self.view.finish(job)

    def _wait_for_end(self, timeout: float) -> str:
        """
        Wait for the DAG run to end; finish every job submitted after the case's own steps.

        Such a late job is unexpected (a duplicate, or a fresh generation where a reconnect was
        due): left running, the DAG run would wait for it until the timeout, instead of the test
        counting it. Figure ``late_jobs_finished``.

        :return: the DAG run's final state, or ``deleted`` when the case deleted it.
        """
        known = {job.key for job in self.all_jobs()}
        late: set[str] = set()

        def ended() -> str | None:
            try:
                state = str(self.cluster.dag_run(self.dag_id, self.run_id)["state"])
            except httpx.HTTPStatusError as error:
                if error.response.status_code == 404:
                    return "deleted"
                raise
            if state in ("success", "failed"):
                return state
            for job in self.all_jobs():
                if job.key not in known and job.key not in late and self.view.active(job):
                    late.add(job.key)
                    self.view.finish(job)
            return None

        try:
            state: str = self.wait(ended, timeout, "the end of the DAG run", step=0.5)
        finally:
            if late:
                self.figures["late_jobs_finished"] = len(late)
        return state

    def all_jobs(self) -> list[Job]:
        """Every job of the case, of every map index."""
        label = self.label()
        return [
            job for job in self.view.jobs(label) if job.label == label or job.label.startswith(label + "-")
        ]

    def _collect(self) -> Outcome:
        jobs = self.all_jobs()

        def jobs_alive() -> list[str]:
            return [job.key for job in jobs if self.view.active(job)]

        with contextlib.suppress(TimeoutError):  # a cancel may still be on its way to the cloud
            self.wait(lambda: not jobs_alive(), 15, "every job ended", step=0.5)
        tis = {}
        if self.figures["dag_run"] != "deleted":  # a deleted DAG run has no task instances
            for map_index in self.map_indexes:
                ti = self.cluster.task_instance(self.dag_id, self.run_id, TASK, map_index)
                tis[map_index] = (str(ti["state"]), int(ti["try_number"]))
        return Outcome(
            operator=self.operator,
            case=self.case,
            dag_id=self.dag_id,
            run_id=self.run_id,
            jobs=jobs,
            submit_calls=self.view.submit_calls(self.label()),
            cancelled=[job.key for job in jobs if self.view.cancelled(job)],
            orphans=jobs_alive(),
            tis=tis,
            figures=self.figures,
        )

    # ------------------------------------------------------------------ the cases
    def _no_fault(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        self.view.finish(job)

    def _sigterm(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        self._disrupt(signal.SIGTERM, job, executions=2)
        self.figures["resumes"] = self.record().get("resumes")
        self.view.finish(job)

    def _pod_termination(self) -> None:
        """
        What a KubernetesExecutor pod's end does: SIGTERM to the supervisor alone (a pod's PID 1),
        ``POD_GRACE`` seconds, then SIGKILL to whatever of the task still runs.

        Unlike a pod's PID 1, a LocalExecutor worker (the supervisor here) outlives its task: it
        goes back to the executor's shared queue, and SIGKILLing it while it waits there would
        leave the queue's lock held and hang every other worker (multiprocessing). So at the
        grace's end supervisor and task are killed only if the task process still runs (figure
        ``task_killed_at_grace``: it must not, it checkpointed). Figures also: ``checkpoint_s``
        (SIGTERM to ``up_for_reschedule``), ``reconnect_s``.
        """
        job = self.job()
        self.wait_polling(job, 1)
        processes = self.processes()
        terminated_at = time.monotonic()
        processes.signal_supervisor(signal.SIGTERM)
        self.wait_ti({"up_for_reschedule"}, POD_GRACE)
        self.figures["checkpoint_s"] = round(time.monotonic() - terminated_at, 1)
        try:
            processes.wait_task_gone(max(POD_GRACE - (time.monotonic() - terminated_at), 0.1))
            self.figures["task_killed_at_grace"] = False
        except TimeoutError:  # the grace is over: what still runs of the task is killed
            self.figures["task_killed_at_grace"] = processes.task_pid in processes.kill_both()
        self.reconnect(job, 2, terminated_at)

    def _sigkill(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        self._disrupt(signal.SIGKILL, job, executions=2)
        self.view.finish(job)

    def _crash_before_persist(self) -> None:
        ti_id = self.ti_id()
        chaos_faults.inject(
            self.ctx.fault_dir,
            ti_id,
            key=RECORD_KEY,
            action="stall",
            phase="submitted",
            seconds=STALL_SECONDS,
        )
        self.wait(
            lambda: chaos_faults.hits(self.ctx.fault_dir, ti_id), 90, "the id's write held by the api-server"
        )
        job = self.job()
        self.figures["phase_at_crash"] = self.record().get("phase")
        processes = self.processes()
        fault_at = time.monotonic()
        processes.kill_both()
        self.figures["recovery_s"] = round(self.wait_polling(job, 2) - fault_at, 1)
        self.view.finish(job)

    def _storm_5xx(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        before = sum(r.injected for r in self.view.reads(job))
        self.view.storm(STORM)
        cleared = False
        try:

            def weathered() -> bool:
                reads = self.view.reads(job)
                injected = [i for i, r in enumerate(reads) if r.injected]
                return len(injected) - before >= STORM and not reads[-1].injected

            self.wait(weathered, 60, f"{STORM} injected 500s, then a good status read")
        except BaseException:
            self.view.clear_faults()
            cleared = True
            raise
        finally:
            self.figures["injected_500s"] = sum(r.injected for r in self.view.reads(job)) - before
            self.figures["faults_cleared"] = cleared
        self.view.finish(job)

    def _store_write_fails_once(self) -> None:
        ti_id = self.ti_id()
        chaos_faults.inject(
            self.ctx.fault_dir, ti_id, key=RECORD_KEY, action="refuse", status=429, phase="intent"
        )
        job = self.job()
        self.wait_polling(job, 1)
        self.figures["refused_writes"] = len(chaos_faults.hits(self.ctx.fault_dir, ti_id))
        self.view.finish(job)

    def _mark_failed(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        self.action_logged("PATCH", f"{self.ti_path()}", json={"new_state": "failed"})
        self.wait(lambda: self.view.cancelled(job), 60, "the job cancelled")

    def _clear_while_running(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        cleared_at = self.clear()
        self.reconnect(job, 2, cleared_at)
        self.figures["hand_over_in_try"] = self.tries_logging(HAND_OVER)

    def checkpointed(self) -> Job:
        """
        Poll the job, then SIGTERM the supervisor: the try checkpoints and the task instance waits
        ``up_for_reschedule`` (10 minutes on the ``_held`` shape: no process polls the job).
        """
        job = self.job()
        self.wait_polling(job, 1)
        self.processes().signal_supervisor(signal.SIGTERM)
        self.wait_ti({"up_for_reschedule"}, 60)
        return job

    def crashed(self) -> Job:
        """
        Poll the job, then SIGKILL supervisor and task: once the heartbeat timeout failed the try,
        the task instance waits ``up_for_retry`` (10 minutes on the ``_held`` shape).
        """
        job = self.job()
        self.wait_polling(job, 1)
        processes = self.processes()
        crashed_at = time.monotonic()
        processes.kill_both()
        self.wait_ti({"up_for_retry"}, self.cluster.heartbeat_timeout + 60)
        self.figures["up_for_retry_after_s"] = round(time.monotonic() - crashed_at, 1)
        return job

    def user_stop(self, job: Job, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """
        Stop the task as a user does (``method path``), then wait until ``job`` is cancelled.

        Figure ``cancel_s``: seconds from sending the request to the first cancel call in the
        fake cloud's ledger (both ``time.time()`` on this machine). Once the DAG run ended,
        :meth:`run` adds ``cancel_calls`` (cancel calls that took effect: a watcher and the
        custodian may both send one) and ``custodian_in`` (the processes whose log says the
        custodian cancelled this run's job).
        """
        self.action_logged(method, path, **({"json": body} if body is not None else {}))
        sent_at = self.sent_at
        # The custodian's periodic sweep (a deleted DAG run) comes within its interval.
        cancelled_at = self.wait(lambda: self.view.cancelled_at(job), 60, "the job cancelled")
        self.figures["cancel_s"] = round(cancelled_at - sent_at, 1)

    def custodian_logged(self) -> list[str]:
        """The processes whose log has the custodian's "cancelled" line for this case's DAG run."""
        return [
            name
            for name in CUSTODIAN_PROCESSES
            if any(
                CUSTODIAN_CANCELLED in line and self.run_id in line
                for line in self.cluster.process_log(name).read_text(errors="replace").splitlines()
            )
        ]

    def _clear_while_checkpointed(self) -> None:
        job = self.checkpointed()
        cleared_at = self.clear()
        self.reconnect(job, 2, cleared_at)

    def _clear_after_crash(self) -> None:
        job = self.crashed()
        cleared_at = self.clear()
        self.reconnect(job, 2, cleared_at)

    def _checkpointed_mark_failed(self) -> None:
        job = self.checkpointed()
        self.user_stop(job, "PATCH", self.ti_path(), {"new_state": "failed"})

    def _checkpointed_dag_run_failed(self) -> None:
        job = self.checkpointed()
        self.user_stop(job, "PATCH", self.run_path(), {"state": "failed"})

    def _checkpointed_dag_run_deleted(self) -> None:
        """
        Delete the DAG run of a checkpointed task; the custodian's periodic sweep cancels the job.

        Airflow 3.3.2 deletes a DAG run only in a "mutable" state (queued, success, failed): a
        running one is refused with 409 (UI and REST). So the run is set ``queued`` first (that
        changes no task instance and calls no listener hook). Its DAG (shape ``_deletable``, this
        case's alone) is paused before, and the case waits for a scheduler heartbeat: a scheduler
        that starts the queued run again while it is deleted dies (``StaleDataError`` on the
        ``dag_run`` UPDATE, exit code 1); the scheduler leaves the runs of a paused DAG alone.
        """
        job = self.checkpointed()
        self.action_logged("PATCH", f"/dags/{self.dag_id}", json={"is_paused": True})
        self.cluster.wait_for_heartbeat("scheduler", datetime.now(timezone.utc), timeout=60)
        self.action_logged("PATCH", self.run_path(), json={"state": "queued"})
        self.user_stop(job, "DELETE", self.run_path())

    def _crash_mark_failed(self) -> None:
        job = self.crashed()
        self.user_stop(job, "PATCH", self.ti_path(), {"new_state": "failed"})

    def _clear_after_success(self) -> None:
        """
        The job finishes, the task and then its DAG run succeed, and the user clears the task.

        The clear waits for the DAG run's end, as a user who sees the run finished does: a clear
        sent in the second between the task's success and the scheduler marking the run
        successful races that scheduler pass on Airflow 3.3.2 — the clear reads the run as
        ``running`` and leaves its state alone, the scheduler then commits ``success``, and the
        cleared task instance (state None) is never scheduled (seen twice in CI, sqlite and
        PostgreSQL alike).
        """
        first = self.job()
        self.wait_polling(first, 1)
        self.view.finish(first)
        self.wait_ti({"success"}, 60)
        self.wait(
            lambda: self.cluster.dag_run(self.dag_id, self.run_id)["state"] == "success",
            60,
            "the DAG run's success",
            step=0.5,
        )
        cleared_at = self.clear()
        try:
            second = self.wait(self._or_ended(lambda: self.jobs()[1:], -1), 90, "job 2")[0]
            self.figures["resubmitted_s"] = round(self.wait_polling(second, 2) - cleared_at, 1)
        except TaskEnded as ended:  # adopted the old result instead: the test counts one generation
            self.figures["diverted"] = str(ended)
        self.finish_all()

    def _clear_spec_changed(self) -> None:
        first = self.job()
        self.wait_polling(first, 1)
        self.set_spec("v2")
        cleared_at = self.clear()

        def submitted_uncancelled() -> str | None:
            if len(self.jobs()) > 1 and not self.view.cancelled(first):
                return "a second job was submitted while the first still ran"
            return None

        try:
            cancelled = self._or_ended(lambda: self.view.cancelled(first), -1, submitted_uncancelled)
            self.wait(cancelled, 120, "the first job cancelled")
            self.figures["cancel_s"] = round(time.monotonic() - cleared_at, 1)
            second = self.wait(self._or_ended(lambda: self.jobs()[1:], -1), 90, "job 2")[0]
            self.figures["resubmitted_s"] = round(self.wait_polling(second, 2) - cleared_at, 1)
        except (Diverted, TaskEnded) as error:
            self.figures["diverted"] = str(error)
        self.figures["hand_over_in_try"] = self.tries_logging(HAND_OVER)
        self.figures["superseded_in_try"] = self.tries_logging(SUPERSEDED)
        self.finish_all()
        self.figures["specs"] = [job.spec for job in self.jobs()]

    def _drop_spec(self) -> None:
        with contextlib.suppress(httpx.HTTPStatusError):  # 404: the case ended before it set it
            self.action_logged("DELETE", f"/variables/{SPEC_VARIABLE.format(tag=self.tag)}")

    def _clear_wiped_store(self) -> None:
        job = self.checkpointed()
        self.figures["store_before"] = sorted(self.store_entries())
        self.figures["ledger_variables_before"] = len(self.ledger_variables())
        self.cluster.task_state_store_clear(self.dag_id, self.run_id, TASK)
        self.figures["store_after_delete"] = sorted(self.store_entries())
        cleared_at = self.clear()
        self.reconnect(job, 2, cleared_at)

    def _ledger_left(self) -> list[str]:
        """
        This run's ledger Variables, once gone (bounded wait: a watcher deletes its entry just
        after the cancel call, the custodian just after marking the record).
        """
        with contextlib.suppress(TimeoutError):
            self.wait(lambda: not self.ledger_variables(), 15, "the run's ledger Variables gone", step=1.0)
        return self.ledger_variables()

    def store_entries(self) -> dict[str, Any]:
        return self.cluster.task_state_store_entries(self.dag_id, self.run_id, TASK)

    def wait_trigger_polling(self, job: Job) -> None:
        """
        Wait until the task is deferred and its trigger reads ``job``'s status.

        A TI is ``deferred`` a moment before the triggerer runs its trigger: a user's action in
        between reaches no trigger (nothing runs its ``on_kill``), so the case waits for a read.
        """
        self.wait_ti({"deferred"}, 90)
        deferred_at = time.time()  # the worker's reads came before the TI was deferred
        polled = self._or_ended(lambda: any(r.at > deferred_at for r in self.view.reads(job)), -1)
        self.wait(polled, 60, "a status read by the trigger")

    def _deferred_clear(self) -> None:
        job = self.job()
        self.wait_trigger_polling(job)
        cleared_at = self.clear()
        self.reconnect(job, 2, cleared_at)

    def _deferred_mark_failed(self) -> None:
        job = self.job()
        self.wait_trigger_polling(job)
        self.user_stop(job, "PATCH", self.ti_path(), {"new_state": "failed"})

    def _deferred_triggerer_restart(self) -> None:
        """
        Restart the triggerer while it polls the job: the new triggerer runs the trigger again.

        The campaign runs this case alone among those that defer (``exclusive`` on the
        triggerer). Figures: ``triggerer_exit_code``, ``triggerer_stopped_s`` (SIGTERM to exit),
        ``triggerer_ready_s`` (SIGTERM to the new one's first heartbeat), ``reconnect_s`` (SIGTERM
        to the new trigger's first status read, on the fake cloud's clock).
        """
        job = self.job()
        self.wait_trigger_polling(job)
        sigterm_at = time.time()
        restart = self.cluster.restart("triggerer")
        self.figures["triggerer_exit_code"] = restart.exit_code
        self.figures["triggerer_stopped_s"] = restart.stopped_s
        self.figures["triggerer_ready_s"] = restart.ready_s
        if restart.leftovers:
            self.figures["triggerer_leftovers"] = len(restart.leftovers)
        exited_at = sigterm_at + restart.stopped_s
        try:
            read = self.wait(
                self._or_ended(
                    lambda: next((r for r in self.view.reads(job) if r.at > exited_at), None),
                    -1,
                    self._second_job,
                ),
                120,
                "a status read by the new triggerer",
            )
            self.figures["reconnect_s"] = round(read.at - sigterm_at, 1)
        except (Diverted, TaskEnded) as error:
            self.figures["diverted"] = str(error)
        self.finish_all()

    def _execution_timeout(self) -> None:
        job = self.job()
        self.wait(lambda: self.view.cancelled(job), 60, "the job cancelled at the timeout")

    def _three_disruptions(self) -> None:
        job = self.job()
        self.wait_polling(job, 1)
        for execution, sig in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM), start=2):
            self._disrupt(sig, job, executions=execution)
        self.view.finish(job)

    def _mapped_sigterm_all(self) -> None:
        jobs = {i: self.job(map_index=i) for i in MAP_INDEXES}
        for i, job in jobs.items():
            self.wait_polling(job, 1, map_index=i)
        processes = [self.processes(i) for i in MAP_INDEXES]
        fault_at = time.monotonic()
        for process in processes:
            process.signal_supervisor(signal.SIGTERM)
        self.figures["signalled_within_ms"] = round((time.monotonic() - fault_at) * 1000, 1)
        recovery: dict[int, float | str] = {}
        for i in MAP_INDEXES:
            try:
                recovery[i] = round(self.wait_polling(jobs[i], 2, map_index=i) - fault_at, 1)
            except TaskEnded as ended:  # the outcome shows it; the test asserts on the outcome
                recovery[i] = str(ended)
        self.figures["recovery_s"] = recovery
        for job in jobs.values():
            if self.view.active(job):
                self.view.finish(job)

    def _before_lost_submit_response(self) -> None:
        # The case runs alone in its fault domain, so the next submit call there is this task's.
        self.view.lose_submit_response()

    def _lost_submit_response(self) -> None:
        try:
            self.job()  # created by the call whose answer was lost: the fault is used up
        except BaseException:
            self.view.clear_faults()
            raise
        # Whichever job the task polls: a blindly re-sent submit would have created a second one,
        # which the test then counts (rather than this case timing out on the first one).
        self.wait(
            self._or_ended(lambda: any(self.view.reads(job) for job in self.jobs()), -1),
            90,
            "a status read of one of its jobs",
        )
        self.figures["lost_responses"] = self.view.lost_responses(self.label())
        for job in self.jobs():
            if self.view.active(job):
                self.view.finish(job)

    def _disrupt(self, sig: int, job: Job, *, executions: int) -> None:
        processes = self.processes()
        fault_at = time.monotonic()
        if sig == signal.SIGKILL:
            processes.kill_both()
        else:
            processes.signal_supervisor(sig)
        recovered = self.wait_polling(job, executions, timeout=120)
        self.figures.setdefault("recovery_s", []).append(round(recovered - fault_at, 1))
