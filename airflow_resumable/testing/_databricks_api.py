"""
The Jobs API endpoints of the fake Databricks: what each call reads and changes.

Private. :class:`JobsApi` is a mixin of :class:`._databricks_state.FakeDatabricksState`, which owns
the data, the lock and the ledger and calls :meth:`JobsApi.dispatch` under its lock for every API
call that passes the realism's rate limit and the injected faults. Each ``_api_<endpoint>`` method
answers one endpoint; ``dispatch`` finds it by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing._databricks_realism import JOBS_LIST_PAGE, RUNS_LIST_PAGE
from airflow_resumable.testing._databricks_runs import advance, cancel, render_job, render_run, repair
from airflow_resumable.testing._databricks_wire import (
    MAX_TASK_KEY_LENGTH,
    MAX_TOKEN_LENGTH,
    FakeDatabricksError,
    bool_param,
    check_notebook_task,
    int_param,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_resumable.testing._databricks_realism import RealismGate
    from airflow_resumable.testing._databricks_runs import Clock, Job, Run

__all__ = ["JobsApi", "Result"]

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
_GET_ENDPOINTS = frozenset({"runs/get", "runs/get-output", "runs/list", "jobs/get", "jobs/list"})


@dataclass
class Result:
    """What one endpoint answers: the JSON body, the run it was about, whether it created it."""

    payload: dict[str, Any]
    run_id: int | None = None
    created: bool = False


class JobsApi:
    """
    The endpoints, over the data that :class:`FakeDatabricksState` owns (declared here for typing).

    Every method runs under the state's lock.
    """

    base_url: str
    _ids: Iterator[int]
    _jobs: dict[int, Job]
    _runs: dict[int, Run]
    _tokens: dict[tuple[Any, ...], int]
    _gate: RealismGate

    def create_job(self, name: str, settings: dict[str, Any] | None = None) -> int:
        raise NotImplementedError

    def _clock(self) -> Clock:
        raise NotImplementedError

    def _create_run(
        self,
        run_type: str,
        job_id: int,
        run_name: str,
        params: dict[str, Any],
        tasks: list[dict[str, Any]],
        token_key: tuple[Any, ...] | None,
    ) -> Run:
        raise NotImplementedError

    def _forget(self, run: Run) -> None:
        raise NotImplementedError

    def _gone(self, run: Run) -> bool:
        raise NotImplementedError

    def _readable(self, run: Run) -> bool:
        raise NotImplementedError

    def _api_run(self, run_id: int) -> Run:
        raise NotImplementedError

    def _job(self, job_id: int) -> Job:
        raise NotImplementedError

    def dispatch(self, method: str, version: str, endpoint: str, params: dict[str, Any]) -> Result:
        """
        Answer one call to ``endpoint`` (canonical, e.g. ``"runs/get"``) of API ``version``.

        :raises FakeDatabricksError: 404 ``ENDPOINT_NOT_FOUND`` for an unknown endpoint, version or
            method; whatever the endpoint refuses.
        """
        handler = getattr(self, "_api_" + endpoint.replace("/", "_").replace("-", "_"), None)
        expected = "GET" if endpoint in _GET_ENDPOINTS else "POST"
        if version not in ("2.1", "2.2") or handler is None or method != expected:
            raise FakeDatabricksError(404, f"No API found for '{method} /{endpoint}'", "ENDPOINT_NOT_FOUND")
        if endpoint in ("jobs/list", "runs/list"):
            # API 2.1 answers has_more on both lists; 2.2 dropped it from jobs/list (the stock
            # hook follows next_page_token only, apache/airflow issue 59189).
            result: Result = handler(params, has_more=version == "2.1" or endpoint == "runs/list")
            return result
        result = handler(params)
        return result

    def _api_runs_submit(self, params: dict[str, Any]) -> Result:
        token_key = self._check_token(params, ("runs/submit",))
        replayed = self._replay(token_key)
        if replayed is not None:
            return Result({"run_id": replayed}, replayed)
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
            check_notebook_task(task.get("notebook_task") if isinstance(task, dict) else None)
        run = self._create_run("SUBMIT_RUN", next(self._ids), run_name, params, tasks, token_key)
        return Result({"run_id": run.run_id}, run.run_id, created=True)

    def _api_run_now(self, params: dict[str, Any]) -> Result:
        job = self._job(int_param(params, "job_id"))
        token_key = self._check_token(params, ("run-now", job.job_id))
        replayed = self._replay(token_key)
        if replayed is not None:
            return Result({"run_id": replayed, "number_in_job": replayed}, replayed)
        tasks = job.settings.get("tasks") or [{"task_key": "task"}]
        run = self._create_run("JOB_RUN", job.job_id, job.settings["name"], params, tasks, token_key)
        return Result({"run_id": run.run_id, "number_in_job": run.run_id}, run.run_id, created=True)

    def _api_runs_get(self, params: dict[str, Any]) -> Result:
        run_id = int_param(params, "run_id")
        run = self._api_run(run_id)
        advance(run, self._clock(), observe=True)
        history = bool_param(params.get("include_history"))
        task_run_id = None if run_id == run.run_id else run_id
        return Result(render_run(run, task_run_id, self.base_url, history=history), run_id)

    def _api_runs_get_output(self, params: dict[str, Any]) -> Result:
        run_id = int_param(params, "run_id")
        run = self._api_run(run_id)
        advance(run, self._clock(), observe=False)
        if run_id == run.run_id:
            raise FakeDatabricksError(
                400,
                "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead.",
            )
        output: dict[str, Any] = {"metadata": render_run(run, run_id, self.base_url)}
        if run.terminal and run.result_state == "SUCCESS":
            output["notebook_output"] = {"result": run.notebook_result or "", "truncated": False}
            output["logs"], output["logs_truncated"] = f"fake logs of run {run_id}\n", False
        elif run.terminal:
            output["error"] = run.error or run.state_message or f"Run {run_id} {run.result_state}"
            output["error_trace"] = f"Traceback (most recent call last):\nFakeError: {output['error']}"
        return Result(output, run_id)

    def _api_runs_cancel(self, params: dict[str, Any]) -> Result:
        run = self._api_run(int_param(params, "run_id"))
        cancel(run, self._clock())
        return Result({}, run.run_id)

    def _api_runs_cancel_all(self, params: dict[str, Any]) -> Result:
        # Server-side: it reaches every live run of the job, seen by readers yet or not.
        job_id = int_param(params, "job_id")
        for run in self._runs.values():
            if run.job_id == job_id and not self._gone(run):
                cancel(run, self._clock())
        return Result({})

    def _api_runs_repair(self, params: dict[str, Any]) -> Result:
        run = self._api_run(int_param(params, "run_id"))
        return Result({"repair_id": repair(run, self._clock(), next(self._ids))}, run.run_id)

    def _api_runs_list(self, params: dict[str, Any], *, has_more: bool) -> Result:
        limit = self._gate.page_limit(RUNS_LIST_PAGE, _optional_int(params, "limit"))
        runs = [r for r in reversed(self._runs.values()) if self._readable(r)]
        if params.get("job_id") not in (None, ""):
            job_id = int_param(params, "job_id")
            runs = [r for r in runs if r.job_id == job_id]
        for run in runs:
            advance(run, self._clock(), observe=False)
        if bool_param(params.get("active_only")):
            runs = [r for r in runs if not r.terminal]
        if bool_param(params.get("completed_only")):
            runs = [r for r in runs if r.terminal]
        page, paging = _page(runs, params, limit, has_more=has_more)
        rendered = [render_run(r, None, self.base_url) for r in page]
        return Result({**({"runs": rendered} if rendered else {}), **paging})

    def _api_jobs_get(self, params: dict[str, Any]) -> Result:
        job = self._job(int_param(params, "job_id"))
        return Result(render_job(job, expand_tasks=True))

    def _api_jobs_list(self, params: dict[str, Any], *, has_more: bool) -> Result:
        limit = self._gate.page_limit(JOBS_LIST_PAGE, _optional_int(params, "limit"))
        name = str(params.get("name") or "").lower()
        jobs = [j for j in self._jobs.values() if not name or j.settings["name"].lower() == name]
        page, paging = _page(jobs, params, limit, has_more=has_more)
        expand = bool_param(params.get("expand_tasks"))
        rendered = [render_job(job, expand_tasks=expand) for job in page]
        return Result({**({"jobs": rendered} if rendered else {}), **paging})

    def _api_jobs_create(self, params: dict[str, Any]) -> Result:
        settings = {k: v for k, v in params.items() if k not in ("access_control_list", "name")}
        return Result({"job_id": self.create_job(str(params.get("name") or "Untitled"), settings)})

    def _api_jobs_reset(self, params: dict[str, Any]) -> Result:
        job = self._job(int_param(params, "job_id"))
        new_settings = copy.deepcopy(params.get("new_settings") or {})
        job.settings = {**new_settings, "name": new_settings.get("name") or job.settings["name"]}
        return Result({})

    def _api_jobs_update(self, params: dict[str, Any]) -> Result:
        job = self._job(int_param(params, "job_id"))
        job.settings.update(copy.deepcopy(params.get("new_settings") or {}))
        return Result({})

    def _check_token(self, params: dict[str, Any], scope: tuple[Any, ...]) -> tuple[Any, ...] | None:
        token = params.get("idempotency_token")
        if token is None or token == "":
            return None
        if len(str(token)) > MAX_TOKEN_LENGTH:
            raise FakeDatabricksError(
                400, f"idempotency_token must be at most {MAX_TOKEN_LENGTH} characters, got {len(str(token))}"
            )
        return (*scope, str(token))

    def _replay(self, token_key: tuple[Any, ...] | None) -> int | None:
        """The run a token already started, visible to readers or not; None once its history expired."""
        run_id = None if token_key is None else self._tokens.get(token_key)
        if run_id is None:
            return None
        if self._gone(self._runs[run_id]):
            self._forget(self._runs[run_id])
            return None
        return run_id


def _optional_int(params: dict[str, Any], name: str) -> int | None:
    return None if params.get(name) in (None, "") else int_param(params, name)


def _page(
    items: list[Any], params: dict[str, Any], limit: int, *, has_more: bool
) -> tuple[list[Any], dict[str, Any]]:
    """
    One page of ``items`` from ``page_token`` (or the deprecated ``offset``), and its paging fields.

    Page tokens are offsets written as strings: opaque to clients, and, like offset paging, an
    item created between two calls shifts the next page.
    """
    offset = int_param(params, "page_token", default=int_param(params, "offset", default=0))
    if offset < 0:
        raise FakeDatabricksError(400, f"offset must be >= 0, got {offset}")
    page = items[offset : offset + limit]
    more = offset + limit < len(items)
    paging: dict[str, Any] = {}
    if more:
        paging["next_page_token"] = str(offset + limit)
    if offset > 0:
        paging["prev_page_token"] = str(max(0, offset - limit))
    if has_more:
        paging["has_more"] = more
    return page, paging
