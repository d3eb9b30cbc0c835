"""The fake Databricks Jobs API, driven by the real ``DatabricksHook`` and stock operators over HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests
from airflow.exceptions import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.providers.databricks.operators.databricks import (
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.databricks.operators import ResumableDatabricksSubmitRunOperator
from airflow_resumable.testing.databricks import (
    FakeDatabricks,
    FakeDatabricksClient,
    FakeDatabricksControl,
    FakeDatabricksDriver,
    FakeDatabricksError,
    FakeDatabricksProcess,
    databricks_connection_env,
)
from airflow_resumable.testing.realism import BEHAVIOURS, Realism, fidelity_rows

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# The hook's default wait is exponential with multiplier 1: retry_delay=0.01 still sleeps 1 s, then 2 s.
RETRY_ARGS: dict[str, Any] = {"stop": stop_after_attempt(3), "wait": wait_fixed(0.01)}
NOTEBOOK_RUN: dict[str, Any] = {"run_name": "nightly", "notebook_task": {"notebook_path": "/Shared/etl"}}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDatabricks]:
    """An in-process fake in manual mode, with ``databricks_default`` pointing at it."""
    with FakeDatabricks() as server:
        for key, value in databricks_connection_env(server.url).items():
            monkeypatch.setenv(key, value)
        yield server


@pytest.fixture
def hook(fake: FakeDatabricks) -> DatabricksHook:
    """The real hook, retrying three times 10 ms apart."""
    return DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)


def _state(hook: DatabricksHook, run_id: int) -> tuple[str, str]:
    state = hook.get_run_state(run_id)
    return state.life_cycle_state, state.result_state


class TestConnection:
    """How Airflow's connection reaches the fake."""

    def test_connection_env_gives_the_hook_an_http_url(self, fake: FakeDatabricks) -> None:
        """The env var sets host, port and schema so the hook calls plain http on the fake's port."""
        url = DatabricksHook()._endpoint_url("api/2.2/jobs/runs/get")
        assert url == f"{fake.url}/api/2.2/jobs/runs/get"

    def test_connection_env_rejects_a_url_without_port(self) -> None:
        """A url without a port cannot be expressed as a Databricks connection."""
        with pytest.raises(ValueError, match="HOST:PORT"):
            databricks_connection_env("http://127.0.0.1")

    def test_request_without_token_is_unauthenticated(self, fake: FakeDatabricks) -> None:
        """The fake answers 401 to a request that carries no credentials."""
        status, body = fake.state.handle_api("GET", "2.2/jobs/list", {}, authorized=False)
        assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")


class TestSubmit:
    """runs/submit and its idempotency token."""

    def test_submit_run_returns_a_run_id(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A submit creates one run and answers its id."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        assert [entry.run_id for entry in fake.submissions()] == [run_id]
        assert fake.get_run(run_id)["run_name"] == "nightly"

    def test_same_token_returns_the_same_run(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A second submit with the same idempotency token returns the first run and creates none."""
        first = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        second = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        assert first == second
        assert len(fake.submissions()) == 1
        assert len(fake.calls("runs/submit")) == 2

    def test_token_over_64_characters_is_rejected(self, hook: DatabricksHook) -> None:
        """A token longer than 64 characters answers 400 INVALID_PARAMETER_VALUE, not retried."""
        with pytest.raises(DatabricksApiError, match="INVALID_PARAMETER_VALUE") as err:
            hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "x" * 65})
        assert err.value.http_status_code == 400

    def test_submit_without_any_task_is_rejected(self, hook: DatabricksHook) -> None:
        """A submit with neither ``tasks`` nor a single-task field answers 400."""
        with pytest.raises(DatabricksApiError) as err:
            hook.submit_run({"run_name": "empty"})
        assert err.value.http_status_code == 400

    def test_multi_task_submit_lists_every_task(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Each submitted task becomes a task run with its own run id."""
        run_id = hook.submit_run({"run_name": "two", "tasks": [{"task_key": "a"}, {"task_key": "b"}]})
        tasks = hook.get_run_tasks(run_id)
        assert [task["task_key"] for task in tasks] == ["a", "b"]
        assert len({task["run_id"] for task in tasks} | {run_id}) == 3

    def test_stock_submit_operator_submits_through_the_fake(self, fake: FakeDatabricks) -> None:
        """``DatabricksSubmitRunOperator.submit_job`` creates a run and reads its status back."""
        operator = DatabricksSubmitRunOperator(
            task_id="etl", notebook_task=NOTEBOOK_RUN["notebook_task"], databricks_retry_args=RETRY_ARGS
        )
        run_id = operator.submit_job(context={})
        assert operator.get_job_status(run_id, context={}) == "PENDING:"
        fake.expire_run(run_id)
        assert operator.get_job_status(run_id, context={}) == "NOT_FOUND:"


class TestLifecycle:
    """PENDING -> RUNNING -> TERMINATED, manual or on the clock, and explicit states."""

    def test_manual_run_finishes_when_the_test_says(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A manual run is PENDING on the first poll, RUNNING after, TERMINATED once finished."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        assert _state(hook, run_id) == ("PENDING", "")
        assert _state(hook, run_id) == ("RUNNING", "")
        assert _state(hook, run_id) == ("RUNNING", "")
        fake.finish_run(run_id, "SUCCESS")
        assert _state(hook, run_id) == ("TERMINATED", "SUCCESS")
        assert hook.get_run_state(run_id).is_successful

    def test_clock_run_terminates_after_its_duration(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """In clock mode a run is TERMINATED with the final result once run_duration has passed."""
        fake.set_lifecycle("clock", run_duration=0.2, final_result="FAILED")
        run_id = hook.submit_run(NOTEBOOK_RUN)
        assert hook.get_run_state(run_id).life_cycle_state == "PENDING"
        deadline = time.monotonic() + 5
        while not (state := hook.get_run_state(run_id)).is_terminal and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (state.life_cycle_state, state.result_state) == ("TERMINATED", "FAILED")

    def test_wait_for_run_state_follows_the_clock(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """``wait_for_run_state`` returns the run once the clock has terminated it."""
        fake.set_lifecycle("clock", run_duration=0.2)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        run = fake.wait_for_run_state(run_id, "TERMINATED", timeout=5)
        assert run["state"]["result_state"] == "SUCCESS"
        assert run["status"]["termination_details"]["code"] == "SUCCESS"

    def test_wait_for_run_state_times_out(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A state that never comes raises TimeoutError after the bounded wait."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(TimeoutError):
            fake.wait_for_run_state(run_id, "TERMINATED", timeout=0.05)

    @pytest.mark.parametrize(
        ("life_cycle_state", "result_state", "terminal"),
        [
            ("QUEUED", None, False),
            ("BLOCKED", None, False),
            ("WAITING_FOR_RETRY", None, False),
            ("TERMINATING", None, False),
            ("INTERNAL_ERROR", "FAILED", True),
            ("SKIPPED", None, True),
            ("TERMINATED", "TIMEDOUT", True),
        ],
    )
    def test_set_run_state_pins_any_state(
        self,
        fake: FakeDatabricks,
        hook: DatabricksHook,
        life_cycle_state: str,
        result_state: str | None,
        terminal: bool,
    ) -> None:
        """Any Databricks life cycle state reaches the hook as a valid RunState and stays put."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.set_run_state(run_id, life_cycle_state, result_state, "set by test")
        for _ in range(3):
            state = hook.get_run_state(run_id)
            assert state == RunState(life_cycle_state, result_state or "", "set by test")
        assert state.is_terminal is terminal

    def test_set_run_state_rejects_unknown_states(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """An unknown life cycle or result state is a test error, not a new state."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(FakeDatabricksError, match="life cycle"):
            fake.set_run_state(run_id, "EXPLODED")
        with pytest.raises(FakeDatabricksError, match="result"):
            fake.finish_run(run_id, "MEH")

    def test_runs_get_carries_the_api_2_2_fields(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """runs/get answers run_page_url, job_id, status.state and termination_details like 2.2."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id, "FAILED", "boom")
        run = hook.get_run(run_id)
        assert run["run_page_url"].endswith(f"#job/{run['job_id']}/run/{run_id}")
        assert hook.get_job_id(run_id) == run["job_id"]
        assert run["status"] == {
            "state": "TERMINATED",
            "termination_details": {"code": "RUN_EXECUTION_ERROR", "type": "CLIENT_ERROR", "message": "boom"},
        }
        assert run["tasks"][0]["state"]["result_state"] == "FAILED"

    def test_async_hook_reads_runs(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """The aiohttp path (GET with a JSON body, used by the deferrable trigger) reads runs too."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id)

        async def read() -> tuple[RunState, dict[str, Any]]:
            async with DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS) as async_hook:
                return await async_hook.a_get_run_state(run_id), await async_hook.a_get_run(run_id)

        state, run = asyncio.run(read())
        assert state.is_successful
        assert run["run_id"] == run_id


class TestCancelExpireRepair:
    """runs/cancel, expired run history and runs/repair."""

    def test_cancel_ends_a_live_run_canceled(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Cancelling a running run terminates it CANCELED with a state message."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        hook.cancel_run(run_id)
        state = hook.get_run_state(run_id)
        assert (state.life_cycle_state, state.result_state) == ("TERMINATED", "CANCELED")
        assert state.state_message
        assert [entry.run_id for entry in fake.cancels()] == [run_id]

    def test_cancel_of_a_terminal_run_is_a_no_op(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Cancelling a finished run answers 200 and leaves its result alone."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id, "SUCCESS")
        hook.cancel_run(run_id)
        assert _state(hook, run_id) == ("TERMINATED", "SUCCESS")

    def test_expired_run_answers_404(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """After expire_run the hook gets a DatabricksApiError with status 404 RESOURCE_DOES_NOT_EXIST."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.expire_run(run_id)
        with pytest.raises(DatabricksApiError, match="RESOURCE_DOES_NOT_EXIST") as err:
            hook.get_run_state(run_id)
        assert err.value.http_status_code == 404
        assert fake.calls("runs/get")[-1].status == 404

    def test_expired_run_frees_its_token(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A resubmission with an expired run's token creates a new run."""
        first = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        fake.expire_run(first)
        assert hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"}) != first

    def test_missing_run_status_can_be_400(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With missing_run_status=400 an unknown run answers 400 INVALID_PARAMETER_VALUE."""
        with FakeDatabricks(missing_run_status=400) as server:
            for key, value in databricks_connection_env(server.url).items():
                monkeypatch.setenv(key, value)
            with pytest.raises(DatabricksApiError, match="INVALID_PARAMETER_VALUE") as err:
                DatabricksHook(retry_args=RETRY_ARGS).get_run_state(424242)
        assert err.value.http_status_code == 400

    def test_repair_restarts_a_failed_run(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """runs/repair puts a failed run back to RUNNING and shows up in the repair history."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id, "FAILED")
        assert hook.get_latest_repair_id(run_id) is None
        repair_id = hook.repair_run({"run_id": run_id, "rerun_all_failed_tasks": True})
        assert _state(hook, run_id) == ("RUNNING", "")
        assert hook.get_latest_repair_id(run_id) == repair_id
        fake.finish_run(run_id)
        assert _state(hook, run_id) == ("TERMINATED", "SUCCESS")

    def test_repair_of_a_live_run_is_rejected(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A run still running cannot be repaired."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(DatabricksApiError) as err:
            hook.repair_run({"run_id": run_id})
        assert err.value.http_status_code == 400


class TestOutput:
    """runs/get-output."""

    def test_output_of_a_failed_task_carries_the_error(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """A failed task run's output has ``error`` and ``error_trace``, as the operators read them."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id, "FAILED", error="ZeroDivisionError: division by zero")
        task_run_id = hook.get_run_tasks(run_id)[0]["run_id"]
        output = hook.get_run_output(task_run_id)
        assert output["error"] == "ZeroDivisionError: division by zero"
        assert output["metadata"]["run_id"] == task_run_id

    def test_output_of_a_successful_notebook(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A successful task run's output has the notebook result and logs, and no error."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.finish_run(run_id, notebook_result="42 rows")
        output = hook.get_run_output(hook.get_run_tasks(run_id)[0]["run_id"])
        assert output["notebook_output"] == {"result": "42 rows", "truncated": False}
        assert "error" not in output and "logs" in output

    def test_output_of_the_parent_run_is_refused(self, hook: DatabricksHook) -> None:
        """Like Databricks, get-output on a multi-task parent run answers 400."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(DatabricksApiError) as err:
            hook.get_run_output(run_id)
        assert err.value.http_status_code == 400


class TestFaults:
    """Injected errors, the hook's retries, and lost responses."""

    @pytest.mark.parametrize("status", [500, 429, 503])
    def test_transient_errors_are_retried(
        self, fake: FakeDatabricks, hook: DatabricksHook, status: int
    ) -> None:
        """Two injected 5xx/429 answers are retried away by the hook, and show in the ledger."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.inject_fault("runs/get", status, count=2)
        assert hook.get_run_state(run_id).life_cycle_state == "PENDING"
        calls = fake.calls("runs/get")
        assert [(c.status, c.injected, c.handled) for c in calls] == [
            (status, True, False),
            (status, True, False),
            (200, False, True),
        ]

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (400, "INVALID_PARAMETER_VALUE"),
            (404, "RESOURCE_DOES_NOT_EXIST"),
            (429, "REQUEST_LIMIT_EXCEEDED"),
            (500, "INTERNAL_ERROR"),
            (503, "TEMPORARILY_UNAVAILABLE"),
        ],
    )
    def test_fault_body_is_databricks_shaped(self, fake: FakeDatabricks, status: int, code: str) -> None:
        """An injected fault answers ``{"error_code", "message"}`` with the code Databricks uses."""
        fake.inject_fault("/api/2.2/jobs/runs/get", status)
        answer, body = fake.state.handle_api("GET", "2.2/jobs/runs/get", {"run_id": "1"})
        assert (answer, body["error_code"], sorted(body)) == (status, code, ["error_code", "message"])

    def test_persistent_fault_exhausts_the_retries(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """count=-1 fails every call until clear_faults; the hook gives up after its retry limit."""
        run_id = hook.submit_run(NOTEBOOK_RUN)
        fake.inject_fault("runs/get", 503, count=-1)
        with pytest.raises(Exception, match="failed 3 times"):
            hook.get_run_state(run_id)
        fake.clear_faults()
        assert hook.get_run_state(run_id).life_cycle_state == "PENDING"

    def test_client_error_is_not_retried(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """An injected 400 reaches the caller after one attempt."""
        fake.inject_fault("runs/submit", 400, error_code="INVALID_PARAMETER_VALUE", message="bad cluster")
        with pytest.raises(DatabricksApiError, match="bad cluster"):
            hook.submit_run(NOTEBOOK_RUN)
        assert len(fake.calls("runs/submit")) == 1
        assert fake.submissions() == []

    def test_lost_response_without_token_creates_two_runs(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """A submit whose response is lost is retried by the hook, which launches a duplicate run."""
        fake.inject_fault("runs/submit", 500, after_handling=True)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        submissions = fake.submissions()
        assert len(submissions) == 2
        assert submissions[0].status == 500 and submissions[0].injected
        assert submissions[1].run_id == run_id
        assert len(fake.runs()) == 2

    def test_lost_response_with_token_creates_one_run(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """With an idempotency token the hook's retry gets the run the lost response had created."""
        fake.inject_fault("runs/submit", 500, after_handling=True)
        run_id = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        assert [entry.run_id for entry in fake.submissions()] == [run_id]
        assert [entry.run_id for entry in fake.calls("runs/submit")] == [run_id, run_id]

    def test_wildcard_fault_hits_any_endpoint(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """A fault on ``"*"`` answers the next call whatever its endpoint."""
        fake.inject_fault("*", 503)
        hook.list_jobs()
        assert [entry.status for entry in fake.calls("jobs/list")] == [503, 200]

    def test_bad_fault_is_refused(self, fake: FakeDatabricks) -> None:
        """A fault must be an HTTP error status with a positive count or -1."""
        with pytest.raises(FakeDatabricksError):
            fake.inject_fault("runs/get", 200)
        with pytest.raises(FakeDatabricksError):
            fake.inject_fault("runs/get", 500, count=0)


class TestJobs:
    """Jobs for run-now: jobs/create, jobs/get, jobs/list and run-now by name."""

    def test_run_now_by_job_name(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """The hook finds a job id by name through jobs/list and run-now starts a job run."""
        job_id = fake.create_job("nightly", {"tasks": [{"task_key": "extract"}, {"task_key": "load"}]})
        fake.create_job("hourly")
        assert hook.find_job_id_by_name("nightly") == job_id
        run_id = hook.run_now({"job_id": job_id})
        run = hook.get_run(run_id)
        assert (run["job_id"], run["run_type"], run["run_name"]) == (job_id, "JOB_RUN", "nightly")
        assert [task["task_key"] for task in run["tasks"]] == ["extract", "load"]
        assert fake.calls("jobs/list")[0].body["name"] == "nightly"

    def test_stock_run_now_operator_resolves_job_name(self, fake: FakeDatabricks) -> None:
        """``DatabricksRunNowOperator(job_name=...)`` resolves the name and starts the job."""
        job_id = fake.create_job("nightly")
        operator = DatabricksRunNowOperator(
            task_id="run_nightly", job_name="nightly", databricks_retry_args=RETRY_ARGS
        )
        run_id = operator.submit_job(context={})
        assert [(entry.run_id, entry.body["job_id"]) for entry in fake.submissions()] == [(run_id, job_id)]

    def test_run_now_token_is_idempotent(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Two run-now calls with one token start one run."""
        job_id = fake.create_job("nightly")
        first = hook.run_now({"job_id": job_id, "idempotency_token": "ti-1"})
        assert hook.run_now({"job_id": job_id, "idempotency_token": "ti-1"}) == first
        assert len(fake.submissions()) == 1

    def test_run_now_of_unknown_job_is_rejected(self, hook: DatabricksHook) -> None:
        """run-now on a job that does not exist answers 400, as Databricks does."""
        with pytest.raises(DatabricksApiError, match="does not exist") as err:
            hook.run_now({"job_id": 999999})
        assert err.value.http_status_code == 400

    def test_jobs_list_pages(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """jobs/list pages with next_page_token, which the hook follows to the end."""
        job_ids = [fake.create_job(f"job-{i}") for i in range(30)]
        assert [job["job_id"] for job in hook.list_jobs(limit=25)] == job_ids
        assert len(fake.calls("jobs/list")) == 2

    def test_jobs_create_and_get(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """jobs/create through the hook makes a job that jobs/get returns with its settings."""
        job_id = hook.create_job({"name": "made", "tasks": [{"task_key": "t"}]})
        status, job = fake.state.handle_api("GET", "2.2/jobs/get", {"job_id": str(job_id)})
        assert status == 200
        assert job["settings"] == {"name": "made", "tasks": [{"task_key": "t"}]}

    def test_api_2_1_paths_are_served(self, fake: FakeDatabricks) -> None:
        """2.1 paths work too; 2.1 jobs/list still carries has_more."""
        fake.create_job("nightly")
        status, body = fake.state.handle_api("GET", "2.1/jobs/list", {"name": "NIGHTLY"})
        assert status == 200
        assert (len(body["jobs"]), body["has_more"]) == (1, False)


class TestLedger:
    """What the ledger records."""

    def test_ledger_records_body_status_and_run(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Each call is recorded with its endpoint, method, full body, status and run id."""
        acl = [{"user_name": "a@example.com", "permission_level": "CAN_VIEW"}]
        run_id = hook.submit_run({**NOTEBOOK_RUN, "access_control_list": acl})
        hook.get_run_state(run_id)
        submit, get = fake.ledger()
        assert (submit.endpoint, submit.method, submit.status, submit.run_id) == (
            "runs/submit",
            "POST",
            200,
            run_id,
        )
        assert submit.body["access_control_list"] == acl and submit.created
        assert (get.endpoint, get.method, get.run_id, get.created) == ("runs/get", "GET", run_id, False)

    def test_unknown_endpoint_answers_endpoint_not_found(self, fake: FakeDatabricks) -> None:
        """Paths the fake does not implement answer 404 ENDPOINT_NOT_FOUND and are still recorded."""
        status, body = fake.state.handle_api("GET", "2.0/clusters/get", {})
        assert (status, body["error_code"]) == (404, "ENDPOINT_NOT_FOUND")
        assert fake.calls("clusters/get")[0].status == 404

    def test_reset_forgets_everything(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """reset() empties runs, jobs, tokens and the ledger."""
        hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        fake.reset()
        assert (fake.runs(), fake.ledger()) == ([], [])
        hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        assert len(fake.submissions()) == 1


class TestHttpControl:
    """FakeDatabricksClient drives a fake over its /fake/ endpoints."""

    def test_client_and_in_process_fake_share_one_interface(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """Code typed against FakeDatabricksControl works with either class, on the same state."""

        def make_job(control: FakeDatabricksControl, name: str) -> int:
            return control.create_job(name)

        job_ids = [make_job(fake, "in-process"), make_job(fake.client, "over-http")]
        assert [job["job_id"] for job in hook.list_jobs()] == job_ids

    def test_client_controls_runs_faults_and_ledger(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """Every control call works over HTTP and matches the in-process state."""
        client = fake.client
        run_id = hook.submit_run(NOTEBOOK_RUN)
        client.set_run_state(run_id, "QUEUED")
        assert client.wait_for_run_state(run_id, "QUEUED", timeout=1)["run_id"] == run_id
        client.inject_fault("runs/get", 503, after_handling=True)
        client.finish_run(run_id, "FAILED", "bad", error="boom")
        assert _state(hook, run_id) == ("TERMINATED", "FAILED")
        assert client.repair_run(run_id) > run_id
        client.set_lifecycle("clock", run_duration=0.0)
        assert (
            client.wait_for_run_state(run_id, "TERMINATED", timeout=1)["state"]["result_state"] == "SUCCESS"
        )
        client.expire_run(run_id)
        with pytest.raises(DatabricksApiError):
            hook.get_run_state(run_id)
        assert client.get_run(run_id)["run_id"] == run_id
        client.inject_fault("runs/get", 500, count=-1)
        client.clear_faults()
        assert client.ledger() == fake.ledger()
        assert [entry.status for entry in client.calls("runs/get")] == [503, 200, 404]
        assert client.runs() == fake.runs()
        client.reset()
        assert fake.runs() == []

    def test_client_raises_databricks_shaped_errors(self, fake: FakeDatabricks) -> None:
        """A control error comes back as FakeDatabricksError with status and error code."""
        with pytest.raises(FakeDatabricksError) as err:
            fake.client.finish_run(424242)
        assert (err.value.status, err.value.error_code) == (404, "RESOURCE_DOES_NOT_EXIST")


class TestProcessMode:
    """The fake as its own process."""

    def test_process_serves_the_hook_and_is_controlled_over_http(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Submit through the hook, finish through the client, read the ledger over HTTP."""
        with FakeDatabricksProcess(log_path=tmp_path / "fake.log") as process:
            for key, value in databricks_connection_env(process.url).items():
                monkeypatch.setenv(key, value)
            hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
            run_id = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
            assert hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"}) == run_id
            process.client.finish_run(run_id, "SUCCESS")
            assert hook.get_run_state(run_id).is_successful
            assert [entry.run_id for entry in process.client.submissions()] == [run_id]
            assert [entry.endpoint for entry in process.client.ledger()] == ["runs/submit"] * 2 + ["runs/get"]
            pid = process.process.pid if process.process else None
        assert process.process is None and pid is not None

    def test_module_prints_ready_and_writes_the_ready_file(self, tmp_path: Path) -> None:
        """``python -m ...databricks`` prints READY <url> and writes the url to --ready-file."""
        ready_file = tmp_path / "ready"
        command = [sys.executable, "-m", "airflow_resumable.testing.databricks", "--port", "0"]
        command += ["--lifecycle", "clock", "--run-duration", "0", "--ready-file", str(ready_file)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline().decode().strip()  # bounded by pytest-timeout
                url = line.removeprefix("READY ")
                assert line.startswith("READY http://127.0.0.1:")
                assert ready_file.read_text() == url
                client = FakeDatabricksClient(url)
                client.create_job("nightly")
                assert json.loads(json.dumps(client.runs())) == []
            finally:
                proc.terminate()
                assert proc.wait(timeout=10) == 0


class TestStalledResponses:
    def test_stalled_submit_creates_the_run_before_answering(self) -> None:
        """A stalled runs/submit has created its run while the client still waits for the answer."""
        import threading

        import requests

        from airflow_resumable.testing.databricks import FakeDatabricks

        spec: dict[str, Any] = {
            "run_name": "s",
            "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": "/x"}}],
        }
        with FakeDatabricks() as fake:
            fake.stall_responses("runs/submit", seconds=2.0)
            answered = threading.Event()

            def submit() -> None:
                url = f"{fake.url}/api/2.2/jobs/runs/submit"
                requests.post(url, json=spec, headers={"Authorization": "Bearer t"}, timeout=10)
                answered.set()

            thread = threading.Thread(target=submit)
            thread.start()
            for _ in range(100):  # bounded: at most 100 short event waits
                if fake.submissions() or answered.wait(0.01):
                    break
            assert fake.submissions(), "the run exists..."
            assert not answered.is_set(), "...while the client still waits"
            thread.join(5)
            assert answered.is_set()


def _realistic_fake(monkeypatch: pytest.MonkeyPatch, realism: Realism, **kwargs: Any) -> FakeDatabricks:
    """A started fake with ``realism``, ``databricks_default`` pointing at it (the caller stops it)."""
    server = FakeDatabricks(realism=realism, **kwargs).start()
    for key, value in databricks_connection_env(server.url).items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture
def realistic(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[FakeDatabricks]:
    """A started fake with the realism the test passes as the indirect parameter."""
    server = _realistic_fake(monkeypatch, request.param)
    try:
        yield server
    finally:
        server.stop()


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded, polling every 20 ms) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met after {timeout}s")
        time.sleep(0.02)


def _list(hook: DatabricksHook, endpoint: str, version: str = "2.2", **params: Any) -> dict[str, Any]:
    answer: dict[str, Any] = hook._do_api_call(("GET", f"{version}/jobs/{endpoint}"), params)
    return answer


def _listed_run_ids(hook: DatabricksHook, **params: Any) -> list[int]:
    return [run["run_id"] for run in _list(hook, "runs/list", **params).get("runs", [])]


def _visible(hook: DatabricksHook, run_id: int) -> bool:
    try:
        hook.get_run_state(run_id)
    except DatabricksApiError:
        return False
    return True


LAG = Realism(visibility_lag=0.3)


class TestVisibilityLag:
    """A new run is missing from reads for ``visibility_lag`` seconds."""

    @pytest.mark.parametrize("realistic", [LAG], indirect=True)
    def test_new_run_is_hidden_from_get_and_list_then_shown(self, realistic: FakeDatabricks) -> None:
        """runs/get answers "does not exist" and runs/list omits the run until the lag has passed."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(DatabricksApiError, match="does not exist") as err:
            hook.get_run_state(run_id)
        assert err.value.http_status_code == 404
        assert run_id not in _listed_run_ids(hook)
        assert realistic.get_run(run_id)["run_id"] == run_id  # the test's own view is never late
        _until(lambda: _visible(hook, run_id))
        assert _listed_run_ids(hook) == [run_id]

    @pytest.mark.parametrize("realistic", [LAG], indirect=True)
    def test_run_now_runs_are_hidden_from_the_jobs_runs_list(self, realistic: FakeDatabricks) -> None:
        """A run-now run is missing from runs/list?job_id=... during the lag, then listed."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        job_id = realistic.create_job("nightly")
        run_id = hook.run_now({"job_id": job_id})
        assert _listed_run_ids(hook, job_id=job_id) == []
        _until(lambda: _listed_run_ids(hook, job_id=job_id) == [run_id])

    def test_hidden_run_answers_exactly_as_an_unknown_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With missing_run_status=400 a hidden run and an unknown run get the same 400 answer."""
        server = _realistic_fake(monkeypatch, Realism(visibility_lag=60.0), missing_run_status=400)
        try:
            run_id = DatabricksHook(retry_args=RETRY_ARGS).submit_run(NOTEBOOK_RUN)
            for endpoint in ("runs/get", "runs/get-output"):
                hidden = server.state.handle_api("GET", f"2.2/jobs/{endpoint}", {"run_id": str(run_id)})
                unknown = server.state.handle_api("GET", f"2.2/jobs/{endpoint}", {"run_id": "999999"})
                assert hidden == (400, _not_found(run_id))
                assert unknown == (400, _not_found(999999))
            cancel = server.state.handle_api("POST", "2.2/jobs/runs/cancel", {"run_id": run_id})
            assert cancel == (400, _not_found(run_id))
        finally:
            server.stop()

    @pytest.mark.parametrize("realistic", [Realism(visibility_lag=60.0)], indirect=True)
    def test_token_replay_during_the_lag_returns_the_same_run(self, realistic: FakeDatabricks) -> None:
        """A submit replayed with its idempotency token while the run is hidden gets the same run_id."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        first = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        assert not _visible(hook, first)
        assert hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"}) == first
        assert [entry.run_id for entry in realistic.submissions()] == [first]


def _not_found(run_id: int) -> dict[str, str]:
    return {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Run {run_id} does not exist."}


class TestThrottling:
    """Calls past the burst at the sustained rate answer 429 REQUEST_LIMIT_EXCEEDED with Retry-After."""

    @pytest.mark.parametrize("realistic", [Realism(throttle_rate=0.5, throttle_burst=3)], indirect=True)
    def test_burst_passes_then_429_with_retry_after(self, realistic: FakeDatabricks) -> None:
        """Three calls pass; the fourth answers 429, a whole-second Retry-After and a Databricks body."""
        url, auth = f"{realistic.url}/api/2.2/jobs/runs/get", {"Authorization": "Bearer t"}
        answers = [requests.get(url, params={"run_id": "1"}, headers=auth, timeout=5) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [404, 404, 404, 429]
        assert answers[-1].headers["Retry-After"] == "2"  # one token at 0.5/s
        assert answers[-1].json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        last = realistic.ledger()[-1]
        assert (last.status, last.throttled, last.handled, last.injected) == (429, True, False, False)

    @pytest.mark.parametrize("realistic", [Realism(throttle_rate=0.5, throttle_burst=1)], indirect=True)
    def test_throttled_submit_creates_nothing_and_takes_no_fault(self, realistic: FakeDatabricks) -> None:
        """A throttled call is refused before the endpoint and before any injected fault."""
        realistic.create_job("nightly")
        url, auth = f"{realistic.url}/api/2.2/jobs/runs/submit", {"Authorization": "Bearer t"}
        assert requests.get(f"{realistic.url}/api/2.2/jobs/list", headers=auth, timeout=5).status_code == 200
        realistic.inject_fault("runs/submit", 500)
        assert requests.post(url, json=NOTEBOOK_RUN, headers=auth, timeout=5).status_code == 429
        assert realistic.submissions() == [] and realistic.runs() == []
        assert realistic.state._take_fault("runs/submit") is not None  # the fault still waits

    @pytest.mark.parametrize("realistic", [Realism(throttle_rate=2.0, throttle_burst=1)], indirect=True)
    def test_hook_retries_a_429_until_the_bucket_refills(self, realistic: FakeDatabricks) -> None:
        """The real hook retries the 429 by its own policy (a 0.6 s wait here) and then gets through."""
        args = {"stop": stop_after_attempt(3), "wait": wait_fixed(0.6)}
        hook = DatabricksHook(retry_limit=3, retry_args=args)
        run_id = hook.submit_run(NOTEBOOK_RUN)  # takes the only token
        assert hook.get_run_state(run_id).life_cycle_state == "PENDING"
        assert [entry.status for entry in realistic.calls("runs/get")] == [429, 200]

    @pytest.mark.parametrize("realistic", [Realism(throttle_rate=0.1, throttle_burst=1)], indirect=True)
    def test_hook_gives_up_and_the_operator_sees_throttling(self, realistic: FakeDatabricks) -> None:
        """Past its retries the hook raises; the resumable operator classifies that as throttling."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        with pytest.raises(AirflowException, match="failed 3 times") as err:
            hook.get_run_state(run_id)
        assert [entry.status for entry in realistic.calls("runs/get")] == [429] * 3
        operator = ResumableDatabricksSubmitRunOperator(task_id="t", json=NOTEBOOK_RUN)
        assert operator.is_throttling_error(err.value)


def _run_ids(runs: list[dict[str, Any]]) -> list[int]:
    return [run["run_id"] for run in runs]


class TestPagination:
    """runs/list and jobs/list page as the service documents, and page_size caps the page."""

    def test_runs_list_pages_at_the_documented_default_of_20(
        self, fake: FakeDatabricks, hook: DatabricksHook
    ) -> None:
        """23 runs: a first page of the 20 newest with next_page_token, then the last 3."""
        created = [hook.submit_run(NOTEBOOK_RUN) for _ in range(23)]
        first = _list(hook, "runs/list")
        assert _run_ids(first["runs"]) == created[::-1][:20]
        assert (first["has_more"], first["next_page_token"]) == (True, "20")
        last = _list(hook, "runs/list", page_token=first["next_page_token"])
        assert _run_ids(last["runs"]) == created[::-1][20:]
        assert last["has_more"] is False and "next_page_token" not in last

    def test_runs_list_limit_is_at_most_25(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """limit=26 answers 400 INVALID_PARAMETER_VALUE; limit=0 means the maximum, 25."""
        created = [hook.submit_run(NOTEBOOK_RUN) for _ in range(26)]
        with pytest.raises(DatabricksApiError, match="INVALID_PARAMETER_VALUE"):
            _list(hook, "runs/list", limit=26)
        assert _run_ids(_list(hook, "runs/list", limit=0)["runs"]) == created[::-1][:25]

    @pytest.mark.parametrize("realistic", [Realism(page_size=2)], indirect=True)
    def test_page_size_caps_pages_followed_by_offset_and_page_token(self, realistic: FakeDatabricks) -> None:
        """With page_size=2, API 2.1 offset paging and 2.2 page_token paging both see all 5 runs."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        created = [hook.submit_run(NOTEBOOK_RUN) for _ in range(5)]
        by_offset: list[int] = []
        for _ in range(10):  # bounded
            page = _list(hook, "runs/list", version="2.1", offset=len(by_offset), limit=25)
            by_offset += _run_ids(page["runs"])
            if not page["has_more"]:
                break
        by_token: list[int] = []
        token: str | None = ""
        for _ in range(10):  # bounded
            page = _list(hook, "runs/list", page_token=token)
            by_token += _run_ids(page["runs"])
            token = page.get("next_page_token")
            if not token:
                break
        assert by_offset == by_token == created[::-1]
        assert len(realistic.calls("runs/list")) == 6

    @pytest.mark.parametrize("realistic", [Realism(page_size=2)], indirect=True)
    def test_hook_list_jobs_follows_every_page(self, realistic: FakeDatabricks) -> None:
        """The stock hook's list_jobs (limit 25) gets 2 jobs a page and follows next_page_token to 5."""
        job_ids = [realistic.create_job(f"job-{n}") for n in range(5)]
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        assert [job["job_id"] for job in hook.list_jobs()] == job_ids
        assert len(realistic.calls("jobs/list")) == 3


class TestRetention:
    """A finished run leaves the history ``retention`` seconds after it ended."""

    @pytest.mark.parametrize("realistic", [Realism(retention=0.3)], indirect=True)
    def test_finished_run_expires_after_retention(self, realistic: FakeDatabricks) -> None:
        """Readable right after it ends, gone from runs/get and runs/list once retention has passed."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        run_id = hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"})
        realistic.finish_run(run_id, "SUCCESS")
        assert hook.get_run_state(run_id).is_successful
        _until(lambda: not _visible(hook, run_id))
        with pytest.raises(DatabricksApiError, match="RESOURCE_DOES_NOT_EXIST"):
            hook.get_run_state(run_id)
        assert _listed_run_ids(hook) == []
        assert hook.submit_run({**NOTEBOOK_RUN, "idempotency_token": "ti-1"}) != run_id

    @pytest.mark.parametrize("realistic", [Realism(retention=0.0)], indirect=True)
    def test_a_live_run_never_expires(self, realistic: FakeDatabricks) -> None:
        """Retention counts from the end of a run: a running run stays, a finished one goes at once."""
        hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        assert _visible(hook, run_id)
        realistic.finish_run(run_id, "FAILED")
        assert not _visible(hook, run_id)

    def test_an_unobserved_clock_run_expires_from_its_end(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A clock run nobody polled expires retention seconds after its clock ran out, not after a read."""
        server = _realistic_fake(monkeypatch, Realism(retention=0.2), lifecycle="clock", run_duration=0.1)
        try:
            hook = DatabricksHook(retry_limit=3, retry_args=RETRY_ARGS)
            run_id = hook.submit_run(NOTEBOOK_RUN)
            _until(lambda: time.monotonic() - server.state._runs[run_id].created_at >= 0.35)
            assert not _visible(hook, run_id)
        finally:
            server.stop()


class TestRealismControl:
    """The realism is chosen per fake and switched at run time, in-process or over HTTP."""

    def test_default_is_documented(self, fake: FakeDatabricks) -> None:
        """A fake without realism= runs Realism.documented()."""
        assert fake.realism == Realism.documented() == fake.client.realism

    def test_realism_switches_over_http(self, fake: FakeDatabricks, hook: DatabricksHook) -> None:
        """set_realism through the client hides a new run; switching back shows it again."""
        fake.client.set_realism(Realism(visibility_lag=60.0, page_size=3))
        assert fake.realism == Realism(visibility_lag=60.0, page_size=3)
        run_id = hook.submit_run(NOTEBOOK_RUN)
        assert not _visible(hook, run_id)
        FakeDatabricksDriver(fake.client).set_realism(Realism.documented())
        assert _visible(hook, run_id)

    def test_bad_realism_is_refused_over_http(self, fake: FakeDatabricks) -> None:
        """Unknown or invalid settings answer 400 and leave the realism alone."""
        for bad in ({"eventual": 1}, {"page_size": 0}):
            with pytest.raises(FakeDatabricksError) as err:
                fake.client._call("POST", "/fake/realism", bad)
            assert err.value.status == 400
        assert fake.realism == Realism.documented()

    def test_process_mode_takes_realism(self, tmp_path: Path) -> None:
        """FakeDatabricksProcess(realism=...) passes it to the process (--realism)."""
        realism = Realism(visibility_lag=1.5, throttle_rate=5.0, throttle_burst=4, page_size=3, retention=9.0)
        with FakeDatabricksProcess(realism=realism, log_path=tmp_path / "fake.log") as process:
            assert process.client.realism == realism

    def test_every_behaviour_names_its_source(self) -> None:
        """The fake declares a Fidelity entry with a public https source for every behaviour."""
        rows = {row.behaviour: row for row in fidelity_rows() if row.service == "Databricks Jobs"}
        assert tuple(rows) == BEHAVIOURS
        assert all(row.source.startswith("https://") for row in rows.values())
