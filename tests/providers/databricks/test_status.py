"""Databricks run states as status strings, and what each one means to the resume decision."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_resumable.providers.databricks._status import (
    failure_message,
    is_active,
    is_succeeded,
    run_status,
    trigger_waits,
)

ACTIVE = ["QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"]
RESULTS = [
    "SUCCESS",
    "FAILED",
    "TIMEDOUT",
    "CANCELED",
    "MAXIMUM_CONCURRENT_RUNS_REACHED",
    "EXCLUDED",
    "SUCCESS_WITH_FAILURES",
    "UPSTREAM_FAILED",
    "UPSTREAM_CANCELED",
    "DISABLED",
]


def _run(life: str | None, result: str | None = None, **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"state_message": ""}
    if life is not None:
        state["life_cycle_state"] = life
    if result is not None:
        state["result_state"] = result
    return {"run_id": 1, "state": state, **extra}


class TestLifeCycleStates:
    """``state.life_cycle_state`` alone."""

    @pytest.mark.parametrize("life", ACTIVE)
    def test_active_life_cycle_states_are_active(self, life: str) -> None:
        """Every non-terminal life cycle state keeps the run active (reconnect, keep polling)."""
        status = run_status(_run(life))
        assert status == f"{life}:"
        assert is_active(status) and not is_succeeded(status)

    @pytest.mark.parametrize("life", ["SKIPPED", "INTERNAL_ERROR"])
    def test_terminal_life_cycle_states_without_success_fail(self, life: str) -> None:
        """SKIPPED and INTERNAL_ERROR end the run without success."""
        status = run_status(_run(life))
        assert not is_active(status) and not is_succeeded(status)

    def test_unknown_life_cycle_state_counts_as_active(self) -> None:
        """A state Databricks adds later is never taken for the end of the run (no resubmit)."""
        status = run_status(_run("HIBERNATING"))
        assert status == "HIBERNATING:"
        assert is_active(status)


class TestResultStates:
    """``TERMINATED`` with each ``result_state``."""

    @pytest.mark.parametrize("result", RESULTS)
    def test_only_success_succeeds(self, result: str) -> None:
        """TERMINATED:SUCCESS is the one success; every other result fails the try, as in stock."""
        status = run_status(_run("TERMINATED", result))
        assert status == f"TERMINATED:{result}"
        assert not is_active(status)
        assert is_succeeded(status) is (result == "SUCCESS")

    @pytest.mark.parametrize("result", RESULTS)
    def test_result_of_an_active_run_does_not_end_it(self, result: str) -> None:
        """A result state next to an active life cycle (a retrying task) keeps the run active."""
        assert is_active(run_status(_run("WAITING_FOR_RETRY", result)))


class TestApi22Status:
    """The ``status`` object of API 2.2, alone or next to ``state``."""

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            ("QUEUED", "QUEUED:"),
            ("PENDING", "PENDING:"),
            ("RUNNING", "RUNNING:"),
            ("TERMINATING", "TERMINATING:"),
            ("BLOCKED", "BLOCKED:"),
            ("WAITING", "WAITING_FOR_RETRY:"),
        ],
    )
    def test_status_state_alone(self, state: str, expected: str) -> None:
        """Without ``state``, ``status.state`` gives the life cycle (WAITING is WAITING_FOR_RETRY)."""
        status = run_status({"status": {"state": state}})
        assert status == expected and is_active(status)

    @pytest.mark.parametrize(
        ("code", "kind", "expected"),
        [
            ("SUCCESS", "SUCCESS", "TERMINATED:SUCCESS"),
            ("SUCCESS_WITH_FAILURES", "SUCCESS", "TERMINATED:SUCCESS_WITH_FAILURES"),
            ("USER_CANCELED", "SUCCESS", "TERMINATED:CANCELED"),
            ("MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR", "TERMINATED:MAXIMUM_CONCURRENT_RUNS_REACHED"),
            ("RUN_EXECUTION_ERROR", "CLIENT_ERROR", "TERMINATED:FAILED"),
            ("DRIVER_ERROR", "CLOUD_FAILURE", "TERMINATED:FAILED"),
            ("INTERNAL_ERROR", "INTERNAL_ERROR", "INTERNAL_ERROR:FAILED"),
        ],
    )
    def test_termination_details_alone(self, code: str, kind: str, expected: str) -> None:
        """Without ``state``, the termination code gives the result; only SUCCESS succeeds."""
        details = {"code": code, "type": kind, "message": "why"}
        status = run_status({"status": {"state": "TERMINATED", "termination_details": details}})
        assert status == expected
        assert not is_active(status)
        assert is_succeeded(status) is (code == "SUCCESS")

    def test_state_wins_over_status(self) -> None:
        """When both are present and agree on the end, ``state`` gives the result (as the stock hook)."""
        run = _run("TERMINATED", "TIMEDOUT", status={"state": "TERMINATED"})
        assert run_status(run) == "TERMINATED:TIMEDOUT"

    def test_no_state_at_all_is_unknown_and_active(self) -> None:
        """A response without any state is not taken for a finished run."""
        assert is_active(run_status({"run_id": 1}))


class TestRepair:
    """A terminated run that a repair made active again."""

    def test_status_state_active_after_terminated_state(self) -> None:
        """``state`` still TERMINATED/FAILED but ``status`` RUNNING: a repair is in progress."""
        status = run_status(_run("TERMINATED", "FAILED", status={"state": "RUNNING"}))
        assert status == "REPAIRING:FAILED"
        assert is_active(status) and not is_succeeded(status)

    def test_running_task_in_a_terminated_run(self) -> None:
        """A task running again inside a terminated run means a repair is re-running it."""
        tasks = [{"task_key": "a", "state": {"life_cycle_state": "RUNNING"}}]
        assert is_active(run_status(_run("TERMINATED", "FAILED", tasks=tasks)))

    def test_active_last_repair_in_history(self) -> None:
        """The last repair_history entry still running keeps the run active."""
        history = [
            {"type": "ORIGINAL", "state": {"life_cycle_state": "TERMINATED"}},
            {"type": "REPAIR", "state": {"life_cycle_state": "RUNNING"}},
        ]
        assert run_status(_run("TERMINATED", "FAILED", repair_history=history)) == "REPAIRING:FAILED"

    def test_never_started_tasks_do_not_reactivate_a_failed_run(self) -> None:
        """PENDING or BLOCKED tasks of a failed run are left-overs, not a repair."""
        tasks = [{"task_key": "a", "state": {"life_cycle_state": "BLOCKED"}}]
        assert run_status(_run("TERMINATED", "UPSTREAM_FAILED", tasks=tasks)) == "TERMINATED:UPSTREAM_FAILED"

    def test_repair_behind_a_terminated_state_is_not_deferred(self) -> None:
        """The stock trigger reads only state.life_cycle_state: it would fire at once, so we poll."""
        assert not trigger_waits(run_status(_run("TERMINATED", "FAILED", status={"state": "RUNNING"})))
        assert trigger_waits(run_status(_run("RUNNING")))
        assert not trigger_waits(run_status(_run("HIBERNATING")))

    def test_finished_repair_is_terminal_again(self) -> None:
        """Once the repair ended, the run's own result counts."""
        history = [
            {"type": "ORIGINAL", "state": {"life_cycle_state": "TERMINATED"}},
            {"type": "REPAIR", "state": {"life_cycle_state": "TERMINATED"}},
        ]
        assert is_succeeded(run_status(_run("TERMINATED", "SUCCESS", repair_history=history)))


class TestFailureMessage:
    """What the run says about its failure."""

    def test_state_message(self) -> None:
        """``state.state_message`` comes first."""
        run = {"state": {"life_cycle_state": "TERMINATED", "state_message": "Notebook raised"}}
        assert failure_message(run) == "Notebook raised"

    def test_termination_message_when_no_state_message(self) -> None:
        """The API 2.2 termination message fills in an empty state message."""
        run = {"state": {"state_message": ""}, "status": {"termination_details": {"message": "OOM"}}}
        assert failure_message(run) == "OOM"
