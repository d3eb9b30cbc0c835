"""
Everything the fake Databricks knows: its jobs, runs, idempotency tokens, faults, ledger and realism.

Private: import the public names from :mod:`airflow_resumable.testing.databricks`. One
:class:`FakeDatabricksState` guarded by one lock holds it all; the test's control calls change it
directly, and :meth:`FakeDatabricksState.handle_request` answers one API call: the realism's rate
limit first, then any injected fault, then the endpoint (:mod:`._databricks_api`). No Flask here:
:mod:`._databricks_app` adapts HTTP to these calls.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_resumable.testing._databricks_api import JobsApi, Result
from airflow_resumable.testing._databricks_realism import RealismGate
from airflow_resumable.testing._databricks_runs import (
    Clock,
    Job,
    Run,
    advance,
    now_ms,
    render_run,
    repair,
    terminate,
)
from airflow_resumable.testing._databricks_wire import (
    LIFE_CYCLE_STATES,
    RESULT_STATES,
    ApiReply,
    FakeDatabricksError,
    LedgerEntry,
    canonical_endpoint,
    maybe_int,
)
from airflow_resumable.testing.realism import Realism

__all__ = ["LIFECYCLES", "FakeDatabricksState"]

log = logging.getLogger(__name__)

LIFECYCLES = ("manual", "clock")


@dataclass
class _Fault:
    status: int
    remaining: int
    after_handling: bool
    error: FakeDatabricksError


class FakeDatabricksState(JobsApi):
    """
    Everything the fake Databricks knows: jobs, runs, idempotency tokens, faults, the ledger and
    the realism.

    Thread-safe: one re-entrant lock guards every read and write. See
    :mod:`airflow_resumable.testing.databricks` for the lifecycle contract.

    :param lifecycle: ``"manual"`` or ``"clock"``.
    :param run_duration: seconds from creation to termination in clock mode.
    :param final_result: result state of a run the clock terminates.
    :param pending_polls: how many runs/get calls see a new run ``PENDING`` before it is ``RUNNING``.
    :param missing_run_status: HTTP status for an unknown, expired or not-yet-visible run: 404
        answers ``RESOURCE_DOES_NOT_EXIST``; 400 answers ``INVALID_PARAMETER_VALUE`` (as the
        service does).
    :param realism: visibility lag, throttling, page size and retention; documented page sizes only
        by default.
    """

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "SUCCESS",
        pending_polls: int = 1,
        missing_run_status: int = 404,
        realism: Realism | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self.base_url = "http://127.0.0.1"
        self.pending_polls = pending_polls
        self.missing_run_status = missing_run_status
        self._gate = RealismGate(realism or Realism.documented())
        self.lifecycle, self.run_duration, self.final_result = "manual", float(run_duration), "SUCCESS"
        self.set_lifecycle(lifecycle, final_result=final_result)
        self.reset()

    # ----------------------------------------------------------------------------------- control
    @property
    def realism(self) -> Realism:
        """The realism in force."""
        return self._gate.realism

    def set_realism(self, realism: Realism) -> None:
        """
        Switch the realism from now on; runs already created keep their creation and end times.

        :param realism: the new realism; its rate limit starts with a full bucket.
        """
        with self._lock:
            self._gate.set(realism)

    def reset(self) -> None:
        """Forget every job, run, token, fault and ledger entry (ids keep counting up; realism stays)."""
        with self._lock:
            self._jobs: dict[int, Job] = {}
            self._runs: dict[int, Run] = {}
            self._task_parent: dict[int, int] = {}
            self._tokens: dict[tuple[Any, ...], int] = {}
            self._faults: dict[str, list[_Fault]] = {}
            self._stalls: dict[str, list[float]] = {}
            self._ledger: list[LedgerEntry] = []
            self._gate.set(self._gate.realism)

    def set_lifecycle(
        self, lifecycle: str, *, run_duration: float | None = None, final_result: str | None = None
    ) -> None:
        """
        Switch between ``"manual"`` and ``"clock"``; the clock counts from each run's creation.

        :param lifecycle: ``"manual"`` or ``"clock"``.
        :param run_duration: new clock duration in seconds; unchanged when None.
        :param final_result: new result of clock-terminated runs; unchanged when None.
        """
        if lifecycle not in LIFECYCLES:
            raise FakeDatabricksError(400, f"lifecycle must be one of {LIFECYCLES}, not {lifecycle!r}")
        if final_result is not None and final_result not in RESULT_STATES:
            raise FakeDatabricksError(400, f"Unknown result state {final_result!r}")
        with self._lock:
            self.lifecycle = lifecycle
            self.run_duration = self.run_duration if run_duration is None else float(run_duration)
            self.final_result = final_result or self.final_result

    def create_job(self, name: str, settings: dict[str, Any] | None = None) -> int:
        """
        Create a job (as jobs/create would) and return its ``job_id``.

        :param name: the job name jobs/list filters on.
        :param settings: further job settings, e.g. ``{"tasks": [...]}``.
        """
        with self._lock:
            job = Job(next(self._ids), {**copy.deepcopy(settings or {}), "name": name}, now_ms())
            self._jobs[job.job_id] = job
            return job.job_id

    def finish_run(
        self,
        run_id: int,
        result_state: str = "SUCCESS",
        state_message: str = "",
        *,
        notebook_result: str | None = None,
        error: str | None = None,
    ) -> None:
        """
        Terminate a run with ``result_state`` (``TERMINATED``), whatever its state.

        :param run_id: the run.
        :param result_state: e.g. ``"SUCCESS"``, ``"FAILED"``, ``"TIMEDOUT"``.
        :param state_message: the run's ``state.state_message``.
        :param notebook_result: ``notebook_output.result`` that runs/get-output returns.
        :param error: ``error`` that runs/get-output returns for a failed run.
        """
        with self._lock:
            run = self._control_run(run_id)
            terminate(run, "TERMINATED", result_state, state_message)
            run.notebook_result, run.error = notebook_result, error

    def set_run_state(
        self, run_id: int, life_cycle_state: str, result_state: str | None = None, state_message: str = ""
    ) -> None:
        """
        Put a run in any state; the clock and the first polls stop moving it afterwards.

        :param run_id: the run.
        :param life_cycle_state: one of Databricks' nine life cycle states.
        :param result_state: the result state, or None for none.
        :param state_message: the run's ``state.state_message``.
        """
        if life_cycle_state not in LIFE_CYCLE_STATES:
            raise FakeDatabricksError(400, f"Unknown life cycle state {life_cycle_state!r}")
        if result_state is not None and result_state not in RESULT_STATES:
            raise FakeDatabricksError(400, f"Unknown result state {result_state!r}")
        with self._lock:
            self._control_run(run_id).pin(life_cycle_state, result_state, state_message)

    def expire_run(self, run_id: int) -> None:
        """
        Drop a run from the run history: the API answers ``missing_run_status`` for it from now on.

        Its idempotency token is forgotten too, so a resubmission with that token creates a new run.

        :param run_id: the run.
        """
        with self._lock:
            self._forget(self._control_run(run_id))

    def repair_run(self, run_id: int) -> int:
        """
        Start a repair of a terminated run (as runs/repair would): it is ``RUNNING`` again.

        :param run_id: the run.
        :return: the repair id.
        """
        with self._lock:
            return repair(self._control_run(run_id), self._clock(), next(self._ids))

    def inject_fault(
        self,
        endpoint: str,
        status: int,
        count: int = 1,
        *,
        after_handling: bool = False,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """
        Make the next ``count`` calls to ``endpoint`` answer HTTP ``status`` with a Databricks error.

        :param endpoint: e.g. ``"runs/submit"``, ``"runs/get"``, ``"run-now"``, or ``"*"`` for any.
        :param status: HTTP status, 400-599.
        :param count: how many calls; -1 for every call until :meth:`clear_faults`.
        :param after_handling: process the request anyway (a run is created) and lose the response.
        :param error_code: Databricks error code; derived from ``status`` when None; ``""`` for a
            gateway's body without one, ``{"error": message}``.
        :param message: error message; a generic one when None.
        """
        if not 400 <= status <= 599 or count == 0 or count < -1:
            raise FakeDatabricksError(400, f"Bad fault: status={status} count={count}")
        key = "*" if endpoint == "*" else canonical_endpoint(endpoint)
        error = FakeDatabricksError(status, message or f"Injected fault ({status}) on {key}", error_code)
        with self._lock:
            self._faults.setdefault(key, []).append(_Fault(status, count, after_handling, error))

    def clear_faults(self) -> None:
        """Remove every pending injected fault and stall."""
        with self._lock:
            self._faults.clear()
            self._stalls.clear()

    def stall_responses(self, endpoint: str, seconds: float, count: int = 1) -> None:
        """
        Carry out the next ``count`` calls to ``endpoint`` at once but answer only ``seconds`` later.

        The window a worker crash between "the service accepted the job" and "the task stored its
        id" needs: the run exists while the client still waits for its id.
        """
        if seconds <= 0 or count < 1:
            raise FakeDatabricksError(400, f"Bad stall: seconds={seconds} count={count}")
        with self._lock:
            self._stalls.setdefault(canonical_endpoint(endpoint), []).extend([seconds] * count)

    def ledger(self) -> list[LedgerEntry]:
        """Every API call so far, oldest first."""
        with self._lock:
            return list(self._ledger)

    def get_run(self, run_id: int) -> dict[str, Any]:
        """
        The run as runs/get renders it, whatever the API would answer (expired, not yet visible);
        does not count as a poll.

        :param run_id: a run id or a task run id.
        """
        with self._lock:
            run = self._control_run(run_id)
            advance(run, self._clock(), observe=False)
            return render_run(run, None if run_id == run.run_id else run_id, self.base_url, history=True)

    def runs(self) -> list[dict[str, Any]]:
        """Every run (expired ones included) as runs/get renders it, oldest first."""
        with self._lock:
            return [self.get_run(run_id) for run_id in self._runs]

    # ------------------------------------------------------------------------------------ the API
    def handle_api(
        self, method: str, path: str, params: dict[str, Any], *, authorized: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """:meth:`handle_request` without the reply's headers."""
        reply = self.handle_request(method, path, params, authorized=authorized)
        return reply.status, reply.payload

    def handle_request(
        self, method: str, path: str, params: dict[str, Any], *, authorized: bool = True
    ) -> ApiReply:
        """
        Answer one Jobs API call and record it in the ledger.

        A throttled call (the realism's rate limit) is refused before anything else: it takes no
        injected fault and changes nothing.

        :param method: HTTP method.
        :param path: the path after ``/api/``, e.g. ``"2.2/jobs/runs/get"``.
        :param params: the JSON body, or the query parameters (plus any JSON body) for GET.
        :param authorized: the request carried an ``Authorization`` header.
        :return: HTTP status, JSON body and headers.
        """
        version = path.split("/", 1)[0]
        endpoint = canonical_endpoint(path)
        with self._lock:
            throttled = self._gate.throttle()
            fault = None if throttled else self._take_fault(endpoint)
            result: Result | None = None
            if throttled is not None:
                reply = throttled.reply()
            elif fault is not None and not fault.after_handling:
                reply = fault.error.reply()
            else:
                reply, result = self._carry_out(method, version, endpoint, params, authorized=authorized)
                if fault is not None:
                    reply = fault.error.reply()
            run_id = result.run_id if result and result.run_id else maybe_int(params.get("run_id"))
            self._ledger.append(
                LedgerEntry(
                    endpoint=endpoint,
                    method=method,
                    body=copy.deepcopy(params),
                    status=reply.status,
                    run_id=run_id,
                    timestamp=time.time(),
                    injected=fault is not None,
                    handled=throttled is None and (fault is None or fault.after_handling),
                    created=bool(result and result.created),
                    throttled=throttled is not None,
                )
            )
            log.debug("fake databricks %s %s -> %s", method, endpoint, reply.status)
            stalls = self._stalls.get(endpoint)
            stall = stalls.pop(0) if stalls and throttled is None else 0.0
        if stall:
            time.sleep(stall)  # the service is slow to answer; the request was already carried out
        return reply

    def _carry_out(
        self, method: str, version: str, endpoint: str, params: dict[str, Any], *, authorized: bool
    ) -> tuple[ApiReply, Result | None]:
        try:
            if not authorized:
                raise FakeDatabricksError(401, "Credential was not sent or was of an unsupported type")
            result = self.dispatch(method, version, endpoint, params)
            return ApiReply(200, result.payload), result
        except FakeDatabricksError as exc:
            return exc.reply(), None
        except Exception as exc:  # a bug in the fake: answer like Databricks, keep the trace
            log.exception("fake Databricks failed on %s %s", method, endpoint)
            return FakeDatabricksError(500, repr(exc)).reply(), None

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for key in (endpoint, "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                if fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        queue.pop(0)
                return fault
        return None

    # ---------------------------------------------------------------------------------- internals
    def _clock(self) -> Clock:
        return Clock(self.lifecycle, self.run_duration, self.final_result, self.pending_polls)

    def _create_run(
        self,
        run_type: str,
        job_id: int,
        run_name: str,
        params: dict[str, Any],
        tasks: list[dict[str, Any]],
        token_key: tuple[Any, ...] | None,
    ) -> Run:
        keys = [task.get("task_key") if isinstance(task, dict) else None for task in tasks]
        if not tasks or not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
            raise FakeDatabricksError(400, "Every task needs a unique, non-empty task_key")
        run = Run(
            run_id=next(self._ids),
            job_id=job_id,
            run_type=run_type,
            run_name=run_name,
            request=copy.deepcopy(params),
            tasks=[(next(self._ids), copy.deepcopy(task)) for task in tasks],
            clock_start=time.monotonic(),
            start_time=now_ms(),
            token_key=token_key,
        )
        self._runs[run.run_id] = run
        self._task_parent.update({task_run_id: run.run_id for task_run_id, _ in run.tasks})
        if token_key is not None:
            self._tokens[token_key] = run.run_id
        return run

    def _forget(self, run: Run) -> None:
        run.expired = True
        if run.token_key is not None:
            self._tokens.pop(run.token_key, None)

    def _gone(self, run: Run) -> bool:
        """Out of the run history: expired by :meth:`expire_run` or by the realism's retention."""
        advance(run, self._clock(), observe=False)  # a clock run may have ended unobserved
        return run.expired or self._gate.expired(run)

    def _readable(self, run: Run) -> bool:
        return not self._gone(run) and self._gate.visible(run)

    def _control_run(self, run_id: int) -> Run:
        parent = self._task_parent.get(int(run_id), int(run_id))
        if parent not in self._runs:
            raise FakeDatabricksError(404, f"Run {run_id} does not exist.")
        return self._runs[parent]

    def _api_run(self, run_id: int) -> Run:
        """The run a call names; unknown, expired and not-yet-visible runs all answer alike."""
        run = self._runs.get(self._task_parent.get(run_id, run_id))
        if run is None or not self._readable(run):
            raise FakeDatabricksError(self.missing_run_status, f"Run {run_id} does not exist.")
        return run

    def _job(self, job_id: int) -> Job:
        if job_id not in self._jobs:
            raise FakeDatabricksError(400, f"Job {job_id} does not exist.")
        return self._jobs[job_id]
