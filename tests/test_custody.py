"""The one table of task state x user action, and the stop meanings every watcher derives from it."""

from __future__ import annotations

import pytest

from airflow_resumable._custody import (
    ACTIONS,
    STATES,
    TABLE,
    WATCHED_STATES,
    Effect,
    StopMeaning,
    Watcher,
    stop_meaning,
    watcher_now,
    watcher_of,
)


class TestTable:
    def test_every_state_has_an_effect_for_every_action(self) -> None:
        """No cell of the table is left undecided."""
        for row in TABLE:
            assert set(row.effects) == set(ACTIONS), row.state

    def test_a_clear_never_cancels_an_unchanged_job(self) -> None:
        """Whatever the task state, a clear with the same spec reconnects or starts fresh."""
        assert {row.effects["clear"] for row in TABLE} <= {Effect.RECONNECT, Effect.FRESH}

    def test_restarts_never_touch_the_job(self) -> None:
        """A scheduler, API server or triggerer restart cancels nothing."""
        assert all(row.effects["restart"] in (Effect.KEPT, Effect.NOTHING) for row in TABLE)

    def test_a_watched_job_is_cancelled_by_a_users_stop(self) -> None:
        """Where a worker or the triggerer watches the job, mark failed and a failed run cancel it."""
        watched = [row for row in TABLE if row.watcher in (Watcher.WORKER, Watcher.TRIGGERER)]
        assert [row.state for row in watched] == ["running", "deferred"]
        for row in watched:
            assert row.effects["mark_failed"] is row.effects["dag_run_failed"] is Effect.CANCEL

    def test_a_users_stop_reaches_the_job_in_every_state_with_an_active_job(self) -> None:
        """No state leaves a stopped task's job running: its watcher or the custodian cancels it."""
        active = [row for row in TABLE if row.watcher is not Watcher.NONE_NEEDED]
        assert [row.state for row in active] == ["running", "deferred", "up_for_reschedule", "up_for_retry"]
        for row in active:
            assert {row.effects["mark_failed"], row.effects["dag_run_failed"]} <= {
                Effect.CANCEL,
                Effect.CANCEL_BY_CUSTODIAN,
            }
        custodian = {row.state for row in TABLE if Effect.CANCEL_BY_CUSTODIAN in row.effects.values()}
        assert custodian == {state for state in STATES if watcher_of(state) is Watcher.CUSTODIAN}

    def test_unknown_state_is_reported(self) -> None:
        """Asking for a state the table does not know names the known ones."""
        with pytest.raises(KeyError, match="running"):
            watcher_of("checkpointed")


class TestStopMeaning:
    @pytest.mark.parametrize("state", [None, "scheduled", "queued", "restarting", "up_for_retry", "deferred"])
    def test_a_state_of_a_next_try_is_a_hand_over(self, state: str | None) -> None:
        """The task instance will run again: the job is left to that try."""
        assert stop_meaning(state) is StopMeaning.HAND_OVER

    @pytest.mark.parametrize("state", ["failed", "success", "skipped", "upstream_failed", "removed"])
    def test_a_finished_state_is_a_user_stop(self, state: str) -> None:
        """The task instance is finished: the job is no longer wanted."""
        assert stop_meaning(state) is StopMeaning.USER_STOP

    def test_running_is_a_worker_shutdown(self) -> None:
        """The server still holds the try: the worker, not the task, is going away."""
        assert stop_meaning("running") is StopMeaning.WORKER_SHUTDOWN

    def test_a_task_instance_the_server_forgot_is_a_user_stop(self) -> None:
        """Its DAG run was deleted."""
        assert stop_meaning(None, found=False) is StopMeaning.USER_STOP


def test_docs_page_renders_the_table() -> None:
    """docs/stopping.md shows the table through its directive, one row per state."""
    from tests.test_docs_examples import DOCS, load_hooks

    hooks = load_hooks()
    page = (DOCS / "stopping.md").read_text()
    assert "resumable_custody_table" in {d.name for d in hooks.find_directives(page)}
    rendered = hooks.custody_table_markdown().splitlines()
    assert len(rendered) == 2 + len(TABLE)
    assert all(f"`{state}`" in "\n".join(rendered) for state in STATES)


class TestWatcherNow:
    """``watcher_now``: who polls a job right now, as the "Resumable jobs" page shows it."""

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            ("running", Watcher.WORKER),
            ("deferred", Watcher.TRIGGERER),
            ("up_for_reschedule", Watcher.CUSTODIAN),
            ("up_for_retry", Watcher.CUSTODIAN),
            ("failed", Watcher.NOBODY),
            ("success", Watcher.NOBODY),
            ("skipped", Watcher.NOBODY),
            ("queued", Watcher.NOBODY),
            (None, Watcher.NOBODY),
        ],
    )
    def test_a_job_that_may_run_follows_the_table(self, state: str | None, expected: Watcher) -> None:
        """An active job's watcher is the table's for the task state; finished or unknown: nobody."""
        assert watcher_now(state) is expected

    def test_a_gone_task_instance_leaves_nobody(self) -> None:
        """A deleted DAG run's job has no watcher, whatever state was last seen."""
        assert watcher_now("running", found=False) is Watcher.NOBODY

    def test_an_ended_job_needs_nobody(self) -> None:
        """A completed or cancelled job needs no watcher in any state."""
        assert watcher_now("running", job_may_be_active=False) is Watcher.NONE_NEEDED

    def test_watched_states_come_from_the_table(self) -> None:
        """Only the worker's and the trigger's rows count as watched."""
        assert frozenset({"running", "deferred"}) == WATCHED_STATES
