"""
The state machine and the Flask app behind :mod:`airflow_resumable.testing.databricks`.

Private: import the public names from :mod:`airflow_resumable.testing.databricks`. Everything the
fake knows lives in one :class:`FakeDatabricksState`, guarded by one lock; the Flask app is a thin
adapter that turns HTTP requests into :meth:`FakeDatabricksState.handle_api` calls (``/api/...``)
or control calls (``/fake/...``); :func:`main` is the process mode.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from werkzeug.serving import BaseWSGIServer

__all__ = [
    "FakeDatabricksError",
    "FakeDatabricksState",
    "LedgerEntry",
    "canonical_endpoint",
    "create_app",
    "main",
    "serve",
]

log = logging.getLogger(__name__)

LIFE_CYCLE_STATES = frozenset(
    {"PENDING", "QUEUED", "RUNNING", "TERMINATING", "TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
    | {"BLOCKED", "WAITING_FOR_RETRY"}
)
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
RESULT_STATES = frozenset(
    {"SUCCESS", "SUCCESS_WITH_FAILURES", "FAILED", "TIMEDOUT", "CANCELED", "EXCLUDED", "DISABLED"}
    | {"MAXIMUM_CONCURRENT_RUNS_REACHED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED"}
)
LIFECYCLES = ("manual", "clock")
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# runs/get ``status.state`` (the "v2" lifecycle of API 2.2) for each ``state.life_cycle_state``.
_STATUS_STATE = {"SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED", "WAITING_FOR_RETRY": "WAITING"}
# ``status.termination_details`` (code, type) for each result state; anything else is a client error.
_TERMINATION = {
    "SUCCESS": ("SUCCESS", "SUCCESS"),
    "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS"),
    "CANCELED": ("USER_CANCELED", "SUCCESS"),
    "EXCLUDED": ("SKIPPED", "SUCCESS"),
    "MAXIMUM_CONCURRENT_RUNS_REACHED": ("MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR"),
}
# Top-level fields of the single-task ("legacy") runs/submit format that make up its one task.
_LEGACY_TASK_FIELDS = (
    "notebook_task",
    "spark_jar_task",
    "spark_python_task",
    "spark_submit_task",
    "pipeline_task",
    "python_wheel_task",
    "dbt_task",
    "sql_task",
    "run_job_task",
)
_LEGACY_CLUSTER_FIELDS = ("new_cluster", "existing_cluster_id", "libraries", "environment_key")
MAX_TOKEN_LENGTH = 64
MAX_TASK_KEY_LENGTH = 100
_NOTEBOOK_SOURCES = ("WORKSPACE", "GIT")
_GET_ENDPOINTS = frozenset({"runs/get", "runs/get-output", "runs/list", "jobs/get", "jobs/list"})


class FakeDatabricksError(Exception):
    """
    A Databricks-shaped error: HTTP ``status`` plus ``{"error_code": ..., "message": ...}``.

    :param status: HTTP status code.
    :param message: human-readable message.
    :param error_code: Databricks error code; derived from ``status`` when None.
    """

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(f"{status} {error_code or ERROR_CODES.get(status, 'UNKNOWN')}: {message}")
        self.status = status
        self.message = message
        self.error_code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "")

    def body(self) -> dict[str, str]:
        """The JSON body Databricks sends with this error."""
        return {"error_code": self.error_code, "message": self.message}


@dataclass(frozen=True)
class LedgerEntry:
    """
    One API call the fake answered, in arrival order.

    :param endpoint: canonical endpoint, e.g. ``"runs/submit"``, ``"run-now"``, ``"jobs/list"``.
    :param method: HTTP method.
    :param body: the request's JSON body; for GET its query parameters (strings) plus any JSON body.
        Nothing is redacted.
    :param status: the HTTP status the client saw (an injected fault's status included).
    :param run_id: the run the call was about or created, when there is one.
    :param timestamp: ``time.time()`` when the call arrived.
    :param injected: the status came from :meth:`FakeDatabricksState.inject_fault`.
    :param handled: the fake processed the request (False for a fault injected before handling).
    :param created: the call created a new run (an idempotent replay does not).
    """

    endpoint: str
    method: str
    body: dict[str, Any]
    status: int
    run_id: int | None
    timestamp: float
    injected: bool = False
    handled: bool = True
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        """This entry as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        """
        Rebuild an entry from :meth:`to_dict` output.

        :param data: the dict.
        """
        return cls(**data)


def canonical_endpoint(name: str) -> str:
    """
    Normalise ``"/api/2.2/jobs/runs/get"``, ``"jobs/runs/get"`` or ``"runs/get"`` to ``"runs/get"``.

    Jobs endpoints keep their ``jobs/`` prefix (``"jobs/list"``); run-now is ``"run-now"``.

    :param name: an endpoint name or API path.
    """
    parts = [p for p in name.strip().split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[1:]
    if parts and parts[0][:1].isdigit():
        parts = parts[1:]
    path = "/".join(parts)
    if path.startswith("jobs/runs/") or path == "jobs/run-now":
        path = path[len("jobs/") :]
    return path


@dataclass
class _Fault:
    status: int
    remaining: int
    after_handling: bool
    error: FakeDatabricksError


@dataclass
class _Job:
    job_id: int
    settings: dict[str, Any]
    created_time: int


@dataclass
class _Run:
    run_id: int
    job_id: int
    run_type: str
    run_name: str
    request: dict[str, Any]
    tasks: list[tuple[int, dict[str, Any]]]
    clock_start: float
    start_time: int
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    end_time: int = 0
    polls: int = 0
    pinned: bool = False
    expired: bool = False
    user_cancelled: bool = False
    token_key: tuple[Any, ...] | None = None
    notebook_result: str | None = None
    error: str | None = None
    repairs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Result:
    payload: dict[str, Any]
    run_id: int | None = None
    created: bool = False


def _now_ms() -> int:
    return int(time.time() * 1000)


def _int_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name)
    if (value is None or value == "") and default is not None:
        return default
    if value is None or value == "":
        raise FakeDatabricksError(400, f"Missing required field: {name}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FakeDatabricksError(400, f"Invalid value for {name}: {value!r}") from None


def _bool_param(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _check_notebook_task(notebook_task: Any) -> None:
    """A ``notebook_task`` needs a ``notebook_path``; ``source`` is ``WORKSPACE`` or ``GIT`` if given."""
    if notebook_task is None:
        return
    if not isinstance(notebook_task, dict):
        raise FakeDatabricksError(400, "notebook_task must be an object")
    path = notebook_task.get("notebook_path")
    if not isinstance(path, str) or not path:
        raise FakeDatabricksError(400, "Missing required field: notebook_task.notebook_path")
    source = notebook_task.get("source")
    if source not in (None, "", *_NOTEBOOK_SOURCES):
        raise FakeDatabricksError(400, f"Invalid notebook_task.source {source!r}: expected WORKSPACE or GIT")
    parameters = notebook_task.get("base_parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise FakeDatabricksError(400, "notebook_task.base_parameters must be an object")


class FakeDatabricksState:
    """
    Everything the fake Databricks knows: jobs, runs, idempotency tokens, faults and the ledger.

    Thread-safe: one re-entrant lock guards every read and write. See
    :mod:`airflow_resumable.testing.databricks` for the lifecycle contract.

    :param lifecycle: ``"manual"`` or ``"clock"``.
    :param run_duration: seconds from creation to termination in clock mode.
    :param final_result: result state of a run the clock terminates.
    :param pending_polls: how many runs/get calls see a new run ``PENDING`` before it is ``RUNNING``.
    :param missing_run_status: HTTP status for an unknown or expired run: 404 answers
        ``RESOURCE_DOES_NOT_EXIST``; 400 answers ``INVALID_PARAMETER_VALUE`` (as some workspaces do).
    """

    def __init__(
        self,
        lifecycle: str = "manual",
        *,
        run_duration: float = 1.0,
        final_result: str = "SUCCESS",
        pending_polls: int = 1,
        missing_run_status: int = 404,
    ) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self.base_url = "http://127.0.0.1"
        self.pending_polls = pending_polls
        self.missing_run_status = missing_run_status
        self.lifecycle, self.run_duration, self.final_result = "manual", float(run_duration), "SUCCESS"
        self.set_lifecycle(lifecycle, final_result=final_result)
        self.reset()

    # ----------------------------------------------------------------------------------- control
    def reset(self) -> None:
        """Forget every job, run, token, fault and ledger entry (ids keep counting up)."""
        with self._lock:
            self._jobs: dict[int, _Job] = {}
            self._runs: dict[int, _Run] = {}
            self._task_parent: dict[int, int] = {}
            self._tokens: dict[tuple[Any, ...], int] = {}
            self._faults: dict[str, list[_Fault]] = {}
            self._stalls: dict[str, list[float]] = {}
            self._ledger: list[LedgerEntry] = []

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
            job = _Job(next(self._ids), {**copy.deepcopy(settings or {}), "name": name}, _now_ms())
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
            self._terminate(run, "TERMINATED", result_state, state_message)
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
            run = self._control_run(run_id)
            run.life_cycle_state, run.result_state = life_cycle_state, result_state
            run.state_message, run.pinned = state_message, True
            run.end_time = _now_ms() if life_cycle_state in TERMINAL_STATES else 0

    def expire_run(self, run_id: int) -> None:
        """
        Drop a run from the run history: the API answers ``missing_run_status`` for it from now on.

        Its idempotency token is forgotten too, so a resubmission with that token creates a new run.

        :param run_id: the run.
        """
        with self._lock:
            run = self._control_run(run_id)
            run.expired = True
            if run.token_key is not None:
                self._tokens.pop(run.token_key, None)

    def repair_run(self, run_id: int) -> int:
        """
        Start a repair of a terminated run (as runs/repair would): it is ``RUNNING`` again.

        :param run_id: the run.
        :return: the repair id.
        """
        with self._lock:
            return self._repair(self._control_run(run_id))

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
        :param error_code: Databricks error code; derived from ``status`` when None.
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
        The run as runs/get renders it (expired runs included); does not count as a poll.

        :param run_id: a run id or a task run id.
        """
        with self._lock:
            run = self._control_run(run_id)
            self._advance(run, observe=False)
            return self._render(run, None if run_id == run.run_id else run_id, history=True)

    def runs(self) -> list[dict[str, Any]]:
        """Every run (expired ones included) as runs/get renders it, oldest first."""
        with self._lock:
            return [self.get_run(run_id) for run_id in self._runs]

    # ------------------------------------------------------------------------------------ the API
    def handle_api(
        self, method: str, path: str, params: dict[str, Any], *, authorized: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """
        Answer one Jobs API call and record it in the ledger.

        :param method: HTTP method.
        :param path: the path after ``/api/``, e.g. ``"2.2/jobs/runs/get"``.
        :param params: the JSON body, or the query parameters (plus any JSON body) for GET.
        :param authorized: the request carried an ``Authorization`` header.
        :return: HTTP status and JSON body.
        """
        version = path.split("/", 1)[0]
        endpoint = canonical_endpoint(path)
        with self._lock:
            fault = self._take_fault(endpoint)
            result: _Result | None = None
            if fault is not None and not fault.after_handling:
                status, payload = fault.status, fault.error.body()
            else:
                try:
                    if not authorized:
                        raise FakeDatabricksError(
                            401, "Credential was not sent or was of an unsupported type"
                        )
                    result = self._dispatch(method, version, endpoint, params)
                    status, payload = 200, result.payload
                except FakeDatabricksError as exc:
                    status, payload = exc.status, exc.body()
                except Exception as exc:  # a bug in the fake: answer like Databricks, keep the trace
                    log.exception("fake Databricks failed on %s %s", method, path)
                    status, payload = 500, FakeDatabricksError(500, repr(exc)).body()
                if fault is not None:
                    status, payload = fault.status, fault.error.body()
            run_id = result.run_id if result and result.run_id else _maybe_int(params.get("run_id"))
            self._ledger.append(
                LedgerEntry(
                    endpoint=endpoint,
                    method=method,
                    body=copy.deepcopy(params),
                    status=status,
                    run_id=run_id,
                    timestamp=time.time(),
                    injected=fault is not None,
                    handled=fault is None or fault.after_handling,
                    created=bool(result and result.created),
                )
            )
            log.debug("fake databricks %s %s -> %s", method, endpoint, status)
            stalls = self._stalls.get(endpoint)
            stall = stalls.pop(0) if stalls else 0.0
        if stall:
            time.sleep(stall)  # the service is slow to answer; the request was already carried out
        return status, payload

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

    def _dispatch(self, method: str, version: str, endpoint: str, params: dict[str, Any]) -> _Result:
        handler = getattr(self, "_api_" + endpoint.replace("/", "_").replace("-", "_"), None)
        expected = "GET" if endpoint in _GET_ENDPOINTS else "POST"
        if version not in ("2.1", "2.2") or handler is None or method != expected:
            raise FakeDatabricksError(404, f"No API found for '{method} /{endpoint}'", "ENDPOINT_NOT_FOUND")
        if endpoint == "jobs/list":
            return self._api_jobs_list(params, legacy_has_more=version == "2.1")
        result: _Result = handler(params)
        return result

    def _api_runs_submit(self, params: dict[str, Any]) -> _Result:
        token_key = self._check_token(params, ("runs/submit",))
        if token_key in self._tokens:
            return _Result({"run_id": self._tokens[token_key]}, self._tokens[token_key])
        tasks = params.get("tasks")
        if tasks is not None and not isinstance(tasks, list):
            raise FakeDatabricksError(400, "tasks must be an array")
        run_name = str(params.get("run_name") or "Untitled")
        if tasks is None:
            if not any(key in params for key in _LEGACY_TASK_FIELDS):
                raise FakeDatabricksError(400, "Missing required field: tasks")
            fields = _LEGACY_TASK_FIELDS + _LEGACY_CLUSTER_FIELDS
            # The one task of the single-task format is keyed by the run name, cut to the task key's
            # length: the stock DatabricksNotebookOperator finds its task run by that key.
            key = run_name[:MAX_TASK_KEY_LENGTH]
            tasks = [{"task_key": key, **{field: params[field] for field in fields if field in params}}]
        for task in tasks:
            _check_notebook_task(task.get("notebook_task") if isinstance(task, dict) else None)
        run = self._create_run("SUBMIT_RUN", next(self._ids), run_name, params, tasks, token_key)
        return _Result({"run_id": run.run_id}, run.run_id, created=True)

    def _api_run_now(self, params: dict[str, Any]) -> _Result:
        job = self._job(_int_param(params, "job_id"))
        token_key = self._check_token(params, ("run-now", job.job_id))
        if token_key in self._tokens:
            run_id = self._tokens[token_key]
            return _Result({"run_id": run_id, "number_in_job": run_id}, run_id)
        tasks = job.settings.get("tasks") or [{"task_key": "task"}]
        run = self._create_run("JOB_RUN", job.job_id, job.settings["name"], params, tasks, token_key)
        return _Result({"run_id": run.run_id, "number_in_job": run.run_id}, run.run_id, created=True)

    def _api_runs_get(self, params: dict[str, Any]) -> _Result:
        run_id = _int_param(params, "run_id")
        run = self._api_run(run_id)
        self._advance(run, observe=True)
        history = _bool_param(params.get("include_history"))
        return _Result(self._render(run, None if run_id == run.run_id else run_id, history=history), run_id)

    def _api_runs_get_output(self, params: dict[str, Any]) -> _Result:
        run_id = _int_param(params, "run_id")
        run = self._api_run(run_id)
        self._advance(run, observe=False)
        if run_id == run.run_id:
            raise FakeDatabricksError(
                400,
                "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead.",
            )
        output: dict[str, Any] = {"metadata": self._render(run, run_id)}
        if run.life_cycle_state in TERMINAL_STATES and run.result_state == "SUCCESS":
            output["notebook_output"] = {"result": run.notebook_result or "", "truncated": False}
            output["logs"], output["logs_truncated"] = f"fake logs of run {run_id}\n", False
        elif run.life_cycle_state in TERMINAL_STATES:
            output["error"] = run.error or run.state_message or f"Run {run_id} {run.result_state}"
            output["error_trace"] = f"Traceback (most recent call last):\nFakeError: {output['error']}"
        return _Result(output, run_id)

    def _api_runs_cancel(self, params: dict[str, Any]) -> _Result:
        run = self._api_run(_int_param(params, "run_id"))
        self._cancel(run)
        return _Result({}, run.run_id)

    def _api_runs_cancel_all(self, params: dict[str, Any]) -> _Result:
        job_id = _int_param(params, "job_id")
        for run in self._runs.values():
            if run.job_id == job_id and not run.expired:
                self._cancel(run)
        return _Result({})

    def _api_runs_repair(self, params: dict[str, Any]) -> _Result:
        run = self._api_run(_int_param(params, "run_id"))
        return _Result({"repair_id": self._repair(run)}, run.run_id)

    def _api_runs_list(self, params: dict[str, Any]) -> _Result:
        runs = [r for r in reversed(self._runs.values()) if not r.expired]
        if params.get("job_id") not in (None, ""):
            job_id = _int_param(params, "job_id")
            runs = [r for r in runs if r.job_id == job_id]
        for run in runs:
            self._advance(run, observe=False)
        if _bool_param(params.get("active_only")):
            runs = [r for r in runs if r.life_cycle_state not in TERMINAL_STATES]
        if _bool_param(params.get("completed_only")):
            runs = [r for r in runs if r.life_cycle_state in TERMINAL_STATES]
        rendered = [self._render(r, None) for r in runs]
        return _Result({"runs": rendered} if rendered else {})

    def _api_jobs_get(self, params: dict[str, Any]) -> _Result:
        job = self._job(_int_param(params, "job_id"))
        return _Result(self._render_job(job, expand_tasks=True))

    def _api_jobs_list(self, params: dict[str, Any], *, legacy_has_more: bool = False) -> _Result:
        limit = _int_param(params, "limit", default=20)
        if not 1 <= limit <= 100:
            raise FakeDatabricksError(400, f"limit must be between 1 and 100, got {limit}")
        offset = _int_param(params, "page_token", default=_int_param(params, "offset", default=0))
        name = str(params.get("name") or "").lower()
        jobs = [j for j in self._jobs.values() if not name or j.settings["name"].lower() == name]
        page = jobs[offset : offset + limit]
        payload: dict[str, Any] = {}
        if page:
            expand = _bool_param(params.get("expand_tasks"))
            payload["jobs"] = [self._render_job(job, expand_tasks=expand) for job in page]
        if offset + limit < len(jobs):
            payload["next_page_token"] = str(offset + limit)
        if legacy_has_more:
            payload["has_more"] = offset + limit < len(jobs)
        return _Result(payload)

    def _api_jobs_create(self, params: dict[str, Any]) -> _Result:
        settings = {k: v for k, v in params.items() if k not in ("access_control_list", "name")}
        return _Result({"job_id": self.create_job(str(params.get("name") or "Untitled"), settings)})

    def _api_jobs_reset(self, params: dict[str, Any]) -> _Result:
        job = self._job(_int_param(params, "job_id"))
        new_settings = copy.deepcopy(params.get("new_settings") or {})
        job.settings = {**new_settings, "name": new_settings.get("name") or job.settings["name"]}
        return _Result({})

    def _api_jobs_update(self, params: dict[str, Any]) -> _Result:
        job = self._job(_int_param(params, "job_id"))
        job.settings.update(copy.deepcopy(params.get("new_settings") or {}))
        return _Result({})

    # ---------------------------------------------------------------------------------- internals
    def _check_token(self, params: dict[str, Any], scope: tuple[Any, ...]) -> tuple[Any, ...] | None:
        token = params.get("idempotency_token")
        if token is None or token == "":
            return None
        if len(str(token)) > MAX_TOKEN_LENGTH:
            raise FakeDatabricksError(
                400, f"idempotency_token must be at most {MAX_TOKEN_LENGTH} characters, got {len(str(token))}"
            )
        return (*scope, str(token))

    def _create_run(
        self,
        run_type: str,
        job_id: int,
        run_name: str,
        params: dict[str, Any],
        tasks: list[dict[str, Any]],
        token_key: tuple[Any, ...] | None,
    ) -> _Run:
        keys = [task.get("task_key") if isinstance(task, dict) else None for task in tasks]
        if not tasks or not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
            raise FakeDatabricksError(400, "Every task needs a unique, non-empty task_key")
        run = _Run(
            run_id=next(self._ids),
            job_id=job_id,
            run_type=run_type,
            run_name=run_name,
            request=copy.deepcopy(params),
            tasks=[(next(self._ids), copy.deepcopy(task)) for task in tasks],
            clock_start=time.monotonic(),
            start_time=_now_ms(),
            token_key=token_key,
        )
        self._runs[run.run_id] = run
        self._task_parent.update({task_run_id: run.run_id for task_run_id, _ in run.tasks})
        if token_key is not None:
            self._tokens[token_key] = run.run_id
        return run

    def _control_run(self, run_id: int) -> _Run:
        parent = self._task_parent.get(int(run_id), int(run_id))
        if parent not in self._runs:
            raise FakeDatabricksError(404, f"Run {run_id} does not exist.")
        return self._runs[parent]

    def _api_run(self, run_id: int) -> _Run:
        run = self._runs.get(self._task_parent.get(run_id, run_id))
        if run is None or run.expired:
            raise FakeDatabricksError(self.missing_run_status, f"Run {run_id} does not exist.")
        return run

    def _job(self, job_id: int) -> _Job:
        if job_id not in self._jobs:
            raise FakeDatabricksError(400, f"Job {job_id} does not exist.")
        return self._jobs[job_id]

    def _advance(self, run: _Run, *, observe: bool) -> None:
        if run.pinned or run.life_cycle_state in TERMINAL_STATES:
            return
        run.polls += 1 if observe else 0
        if self.lifecycle == "clock" and time.monotonic() - run.clock_start >= self.run_duration:
            message = "" if self.final_result == "SUCCESS" else f"Run {self.final_result} (fake clock)"
            self._terminate(run, "TERMINATED", self.final_result, message)
        elif run.life_cycle_state == "PENDING" and run.polls > self.pending_polls:
            run.life_cycle_state = "RUNNING"

    def _terminate(self, run: _Run, life_cycle_state: str, result_state: str, message: str) -> None:
        if result_state not in RESULT_STATES:
            raise FakeDatabricksError(400, f"Unknown result state {result_state!r}")
        run.life_cycle_state, run.result_state, run.state_message = life_cycle_state, result_state, message
        run.end_time, run.pinned = _now_ms(), True

    def _cancel(self, run: _Run) -> None:
        self._advance(run, observe=False)
        if run.life_cycle_state not in TERMINAL_STATES:
            self._terminate(run, "TERMINATED", "CANCELED", "Run cancelled.")
            run.user_cancelled = True

    def _repair(self, run: _Run) -> int:
        self._advance(run, observe=False)
        if run.life_cycle_state not in TERMINAL_STATES:
            raise FakeDatabricksError(400, f"Run {run.run_id} is still active and cannot be repaired.")
        repair_id = next(self._ids)
        run.repairs.append({"type": "REPAIR", "id": repair_id, "start_time": _now_ms(), "end_time": 0})
        run.life_cycle_state, run.result_state, run.state_message = "RUNNING", None, ""
        run.end_time, run.pinned, run.clock_start = 0, False, time.monotonic()
        return repair_id

    def _state(self, run: _Run) -> tuple[dict[str, Any], dict[str, Any]]:
        state: dict[str, Any] = {
            "life_cycle_state": run.life_cycle_state,
            "state_message": run.state_message,
            "user_cancelled_or_timedout": run.user_cancelled or run.result_state == "TIMEDOUT",
        }
        status: dict[str, Any] = {"state": _STATUS_STATE.get(run.life_cycle_state, run.life_cycle_state)}
        if run.result_state is not None:
            state["result_state"] = run.result_state
        if run.life_cycle_state in TERMINAL_STATES:
            code, kind = _TERMINATION.get(run.result_state or "", ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"))
            if run.life_cycle_state == "INTERNAL_ERROR":
                code, kind = "INTERNAL_ERROR", "INTERNAL_ERROR"
            elif run.life_cycle_state == "SKIPPED":
                code, kind = "SKIPPED", "SUCCESS"
            status["termination_details"] = {"code": code, "type": kind, "message": run.state_message}
        return state, status

    def _render(self, run: _Run, task_run_id: int | None, *, history: bool = False) -> dict[str, Any]:
        state, status = self._state(run)
        times = {"start_time": run.start_time, "end_time": run.end_time}
        duration = (run.end_time or _now_ms()) - run.start_time
        durations = {"setup_duration": 0, "execution_duration": duration, "cleanup_duration": 0}

        def url(run_id: int) -> str:
            return f"{self.base_url}/?o=1234567890#job/{run.job_id}/run/{run_id}"

        tasks = [
            {
                **spec,
                "run_id": tid,
                "task_key": spec["task_key"],
                "state": dict(state),
                "status": dict(status),
                "attempt_number": len(run.repairs),
                "run_page_url": url(tid),
                **times,
                **durations,
            }
            for tid, spec in run.tasks
            if task_run_id in (None, tid)
        ]
        rendered = {
            "job_id": run.job_id,
            "run_id": task_run_id or run.run_id,
            "number_in_job": task_run_id or run.run_id,
            "original_attempt_run_id": task_run_id or run.run_id,
            "creator_user_name": "fake-user@example.com",
            "run_name": tasks[0]["task_key"] if task_run_id else run.run_name,
            "run_type": run.run_type,
            "run_page_url": url(task_run_id or run.run_id),
            "state": state,
            "status": status,
            "tasks": tasks,
            "trigger": "ONE_TIME",
            "format": "MULTI_TASK",
            "attempt_number": 0,
            "run_duration": duration,
            **times,
            **durations,
        }
        if history:
            original = {
                "type": "ORIGINAL",
                "state": state,
                "task_run_ids": [t for t, _ in run.tasks],
                **times,
            }
            rendered["repair_history"] = [original, *copy.deepcopy(run.repairs)]
        return rendered

    @staticmethod
    def _render_job(job: _Job, *, expand_tasks: bool) -> dict[str, Any]:
        settings = copy.deepcopy(job.settings)
        if not expand_tasks:
            settings.pop("tasks", None)
            settings.pop("job_clusters", None)
        return {
            "job_id": job.job_id,
            "creator_user_name": "fake-user@example.com",
            "run_as_user_name": "fake-user@example.com",
            "created_time": job.created_time,
            "settings": settings,
        }


def _maybe_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def create_app(state: FakeDatabricksState) -> Flask:
    """
    The Flask app serving ``state``: the Jobs API under ``/api/`` and control calls under ``/fake/``.

    :param state: the fake's state; shared with whoever controls it in-process.
    """
    app = Flask("fake_databricks")

    def reply(status: int, payload: Any) -> Response:
        return Response(json.dumps(payload), status=status, mimetype="application/json")

    def body() -> dict[str, Any]:
        # Databricks reads the body as JSON whatever its Content-Type.
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        data = request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise FakeDatabricksError(
                400, "Malformed request: the body is not a JSON object", "MALFORMED_REQUEST"
            )
        return data

    @app.errorhandler(FakeDatabricksError)
    def on_error(exc: FakeDatabricksError) -> Response:
        return reply(exc.status, exc.body())

    @app.errorhandler(TypeError)
    def on_bad_arguments(exc: TypeError) -> Response:
        # A control call with unknown or missing arguments (``state.finish_run(**body)``).
        return reply(400, FakeDatabricksError(400, str(exc)).body())

    @app.route("/api/<path:path>", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    def api(path: str) -> Response:
        params = {**request.args.to_dict(), **body()} if request.method == "GET" else body()
        authorized = bool(request.headers.get("Authorization"))
        return reply(*state.handle_api(request.method, path, params, authorized=authorized))

    @app.get("/fake/health")
    def health() -> Response:
        return reply(200, {"status": "ok"})

    @app.post("/fake/runs/<int:run_id>/<action>")
    def run_action(run_id: int, action: str) -> Response:
        args = body()
        if action == "finish":
            state.finish_run(run_id, **args)
        elif action == "state":
            state.set_run_state(run_id, **args)
        elif action == "expire":
            state.expire_run(run_id)
        elif action == "repair":
            return reply(200, {"repair_id": state.repair_run(run_id)})
        else:
            raise FakeDatabricksError(404, f"Unknown run action {action!r}", "ENDPOINT_NOT_FOUND")
        return reply(200, {})

    @app.get("/fake/runs")
    def runs() -> Response:
        return reply(200, {"runs": state.runs()})

    @app.get("/fake/runs/<int:run_id>")
    def get_run(run_id: int) -> Response:
        return reply(200, state.get_run(run_id))

    @app.route("/fake/faults", methods=["POST", "DELETE"])
    def faults() -> Response:
        if request.method == "DELETE":
            state.clear_faults()
        else:
            state.inject_fault(**body())
        return reply(200, {})

    @app.post("/fake/stalls")
    def stalls() -> Response:
        state.stall_responses(**body())
        return reply(200, {})

    @app.post("/fake/lifecycle")
    def lifecycle() -> Response:
        state.set_lifecycle(**body())
        return reply(200, {})

    @app.post("/fake/jobs")
    def jobs() -> Response:
        return reply(200, {"job_id": state.create_job(**body())})

    @app.get("/fake/ledger")
    def ledger() -> Response:
        return reply(200, {"entries": [entry.to_dict() for entry in state.ledger()]})

    @app.post("/fake/reset")
    def reset() -> Response:
        state.reset()
        return reply(200, {})

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("fake databricks: %s %s", self.requestline, code)


def serve(state: FakeDatabricksState, port: int) -> BaseWSGIServer:
    """
    Bind ``127.0.0.1:port`` (0: a free port) for ``state``; it accepts connections on return.

    :param state: the fake's state; its ``base_url`` is set to the bound url.
    :param port: the port.
    :return: the server; call ``serve_forever()`` to answer requests.
    """
    server = make_server("127.0.0.1", port, create_app(state), threaded=True, request_handler=_QuietHandler)
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """
    Serve the fake until SIGTERM or SIGINT; print ``READY <url>`` once it accepts connections.

    :param argv: command-line arguments; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(prog="python -m airflow_resumable.testing.databricks")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--lifecycle", choices=("manual", "clock"), default="manual")
    parser.add_argument("--run-duration", type=float, default=1.0, help="seconds per run in clock mode")
    parser.add_argument("--final-result", default="SUCCESS", help="result of clock-terminated runs")
    parser.add_argument("--pending-polls", type=int, default=1)
    parser.add_argument("--missing-run-status", type=int, choices=(400, 404), default=404)
    parser.add_argument("--ready-file", help="also write the url to this file once ready")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = FakeDatabricksState(
        args.lifecycle,
        run_duration=args.run_duration,
        final_result=args.final_result,
        pending_polls=args.pending_polls,
        missing_run_status=args.missing_run_status,
    )
    server = serve(state, args.port)  # listening from here on: make_server binds and listens

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(state.base_url)
        tmp.replace(args.ready_file)
    sys.stdout.write(f"READY {state.base_url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    except SystemExit:
        log.info("fake Databricks at %s stopping", state.base_url)
    finally:
        server.server_close()
    return 0
