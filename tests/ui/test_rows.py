"""One row of the "Resumable jobs" page: watcher, checkpoints, age, "needs attention"; no database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_resumable._custody import Watcher
from airflow_resumable.record import JobRecord, TaskIdentity
from airflow_resumable.ui._page import PageView, render_page
from airflow_resumable.ui._query import JobFilter
from airflow_resumable.ui._rows import StoredRecord, job_row

IDENTITY = TaskIdentity("etl", "manual__1", "submit_run")
NOW = datetime(2026, 11, 25, 21, 10, tzinfo=timezone.utc)


def stored(state: str | None, *, found: bool = True, **changes: Any) -> StoredRecord:
    record = JobRecord.new_intent(IDENTITY, generation=2, fingerprint=None)
    record = record.evolve(**{"external_id": 123, "phase": "submitted", **changes})
    record = record.evolve(created_at=(NOW - timedelta(minutes=5)).isoformat())
    return StoredRecord("etl", "manual__1", "submit_run", -1, json.dumps(record.to_json()), NOW, found, state)


class TestWatcherAndAttention:
    def test_a_polled_job_needs_nothing(self) -> None:
        """A running task's job is watched by its worker and needs no attention."""
        row = job_row(stored("running"), NOW)
        assert (row.watcher, row.watched_by, row.attention) == (Watcher.WORKER, "worker", ())

    def test_a_completed_job_needs_no_watcher(self) -> None:
        """A completed record needs nobody, whatever the task's state."""
        row = job_row(stored("success", phase="completed"), NOW)
        assert (row.watcher, row.attention) == (Watcher.NONE_NEEDED, ())

    @pytest.mark.parametrize("state", ["failed", "success", "skipped"])
    def test_a_finished_task_with_an_active_job_is_an_orphan_risk(self, state: str) -> None:
        """An active job whose task finished is watched by nobody: flagged."""
        row = job_row(stored(state), NOW)
        assert row.watcher is Watcher.NOBODY
        assert row.attention == (f"the job may still run but its task is {state}",)

    def test_a_waiting_task_is_flagged_as_unpolled(self) -> None:
        """Between a checkpoint and the resumed try nobody polls the job; the custodian listens."""
        row = job_row(stored("up_for_reschedule"), NOW)
        assert row.watched_by == "nobody (custodian listens)" and "waits" in row.attention[0]

    def test_a_deleted_run_leaves_the_job_unwatched(self) -> None:
        """A task instance that is gone shows as gone, its job flagged."""
        row = job_row(stored("running", found=False), NOW)
        assert (row.ti_state, row.watcher) == ("gone", Watcher.NOBODY) and row.attention

    def test_a_failed_cancel_is_flagged_even_after_completion(self) -> None:
        """A cancel failure stays a reason to look, whatever the phase."""
        failure = {"at": "x", "external_id": 99, "reason": "superseded: the job spec changed", "error": "E"}
        row = job_row(stored("success", phase="completed", cancel_failed=failure), NOW)
        assert row.attention == ("cancel failed (superseded: the job spec changed)",)

    def test_an_unclassified_stop_is_flagged(self) -> None:
        """A checkpoint taken on an unanswered stop is flagged while the job may run."""
        interruption = {"at": "2026-11-25T21:03:12.408+00:00", "signal": "SIGTERM", "kind": "unknown"}
        row = job_row(stored("running", phase="interrupted", resumes=1, interruption=interruption), NOW)
        assert row.attention == (
            "unclassified stop: if a user stopped the task, the job may be left running",
        )
        assert (row.checkpoints, row.last_checkpoint_signal) == (1, "SIGTERM")

    def test_an_unreadable_record_is_flagged_not_raised(self) -> None:
        """A foreign value under the record key becomes a flagged row, not an error page."""
        row = job_row(StoredRecord("etl", "r", "t", -1, '{"job_id": 1}', NOW, True, "running"), NOW)
        assert row.phase == "unreadable" and "not written by airflow_resumable" in row.attention[0]


class TestAgeAndPage:
    def test_age_is_counted_from_the_intent(self) -> None:
        """Age runs from ``created_at`` (the submission), not from the last write."""
        assert job_row(stored("running"), NOW).age_seconds == 300

    def test_values_are_escaped_in_the_html(self) -> None:
        """A hostile DAG id cannot inject markup into the page."""
        hostile = StoredRecord("<script>x</script>", "r", "t", -1, "{}", NOW, True, "running")
        view = PageView([job_row(hostile, NOW)], [], JobFilter(), [], 1, 1, 1, 50, 0.01, "/resumable/jobs")
        html = render_page(view)
        assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
