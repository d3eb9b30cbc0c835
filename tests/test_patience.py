"""Patience with the clouds: the visibility window and throttling, on the toy service."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from tenacity import wait_none

from airflow_resumable import _patience
from airflow_resumable.exceptions import JobNotFoundError, ThrottledError
from airflow_resumable.record import RECORD_KEY, JobRecord
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.state import InMemoryTaskStateStore, make_context
from airflow_resumable.testing.toy import ToyJobOperator, ToyJobService, ToyTaggedJobOperator, toy_service

FAST = RetryPolicy(attempts=2, wait=wait_none())


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedules are the real ones' shape; the waits themselves are not what is tested."""
    monkeypatch.setattr(_patience, "VISIBILITY_WAIT", wait_none())
    monkeypatch.setattr(_patience, "THROTTLE_WAIT", wait_none())


def service(*, deduplicates: bool = True) -> ToyJobService:
    svc = toy_service(f"patience-{uuid.uuid4().hex[:6]}", deduplicates=deduplicates)
    svc.complete_after_polls = 1
    return svc


def operator(svc: ToyJobService, cls: type[ToyJobOperator] = ToyJobOperator, **kwargs: Any) -> ToyJobOperator:
    kwargs.setdefault("command", "echo hi")
    kwargs.setdefault("cloud_retry", FAST)
    return cls(
        task_id=f"t{uuid.uuid4().hex[:4]}",
        service=svc.name,
        poll_interval=0,
        state_store_retry=FAST,
        **kwargs,
    )


def hidden_for(svc: ToyJobService, call: str, reads: int) -> mock._patch[Any]:
    """The first ``reads`` calls of ``svc.<call>`` act as an eventually consistent service would."""
    real = getattr(svc, call)
    seen = {"n": 0}

    def lagging(*args: Any) -> Any:
        seen["n"] += 1
        if seen["n"] <= reads:
            if call == "status":
                raise JobNotFoundError(f"toy: {args[0]} not visible yet")
            return None
        return real(*args)

    return mock.patch.object(svc, call, lagging)


class TestWindow:
    def test_argument_wins(self) -> None:
        assert _patience.visibility_window("batch", 60.0, 5) == 5.0

    @pytest.mark.parametrize(
        ("configured", "expected"),
        [("", 60.0), ("30", 30.0), ('{"batch": 120}', 120.0), ('{"glue": 5}', 60.0), ("0", 0.0)],
    )
    def test_configuration(self, monkeypatch: pytest.MonkeyPatch, configured: str, expected: float) -> None:
        monkeypatch.setenv("AIRFLOW__RESUMABLE__VISIBILITY_WINDOW_SECONDS", configured)
        assert _patience.visibility_window("batch", 60.0, None) == expected

    @pytest.mark.parametrize("configured", ["soon", '{"batch": "x"}', "-1", "true", "[1]"])
    def test_bad_configuration_is_refused(self, monkeypatch: pytest.MonkeyPatch, configured: str) -> None:
        monkeypatch.setenv("AIRFLOW__RESUMABLE__VISIBILITY_WINDOW_SECONDS", configured)
        with pytest.raises(ValueError, match="visibility_window_seconds"):
            _patience.visibility_window("batch", 60.0, None)

    def test_negative_argument_is_refused(self) -> None:
        with pytest.raises(ValueError, match="visibility_window"):
            _patience.visibility_window("batch", 60.0, -1)

    def test_age_is_never_more_than_the_truth(self) -> None:
        stamp = (datetime.now(tz=timezone.utc) - timedelta(seconds=10)).isoformat(timespec="seconds")
        age = _patience.conservative_age(stamp)
        assert age is not None and 8.9 <= age <= 10.1

    @pytest.mark.parametrize("stamp", [None, "", "yesterday"])
    def test_unknown_age_is_old(self, stamp: str | None) -> None:
        assert _patience.conservative_age(stamp) is None
        assert not _patience.is_young(stamp, 3600)

    def test_young_and_old(self) -> None:
        now = _patience.now_stamp()
        assert _patience.is_young(now, 60)
        assert not _patience.is_young(now, 0)
        old = (datetime.now(tz=timezone.utc) - timedelta(seconds=120)).isoformat(timespec="seconds")
        assert not _patience.is_young(old, 60)

    def test_a_stamp_far_in_the_future_is_not_waited_for(self) -> None:
        """A skewed or bogus created_at must not keep a try waiting past its window."""
        future = (datetime.now(tz=timezone.utc) + timedelta(days=1)).isoformat(timespec="seconds")
        assert not _patience.is_young(future, 60)
        near = (datetime.now(tz=timezone.utc) + timedelta(seconds=5)).isoformat(timespec="seconds")
        assert _patience.is_young(near, 60)

    def test_operator_takes_the_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW__RESUMABLE__VISIBILITY_WINDOW_SECONDS", '{"ToyJobOperator": 7}')
        assert operator(service()).visibility_window == 7.0
        assert operator(service(), visibility_window=3).visibility_window == 3.0


class TestNotVisibleYet:
    def test_a_young_job_is_waited_for_not_resubmitted(self) -> None:
        svc, store = service(), InMemoryTaskStateStore()
        op = operator(svc)
        with hidden_for(svc, "status", reads=4):
            op.execute(make_context(store))
        assert len(svc.submissions) == 1
        assert store.get(RECORD_KEY)["phase"] == "completed"

    def test_an_old_job_that_is_not_found_is_expired(self) -> None:
        svc, store = service(), InMemoryTaskStateStore()
        with hidden_for(svc, "status", reads=1), pytest.raises(JobNotFoundError):
            operator(svc, visibility_window=0).execute(make_context(store))

    def test_a_reconnect_to_a_young_job_waits_for_it(self) -> None:
        """The decision asks about a recorded job the service does not show yet: reconnect, no new job."""
        svc, store = service(), InMemoryTaskStateStore()
        context = make_context(store)
        _submitted_record(svc, store, context)
        with hidden_for(svc, "status", reads=3):
            operator(svc).execute(context)
        assert len(svc.submissions) == 1
        assert store.get(RECORD_KEY)["generation"] == 1

    def test_a_reconnect_to_an_old_missing_job_submits_the_next_generation(self) -> None:
        svc, store = service(), InMemoryTaskStateStore()
        context = make_context(store)
        record = JobRecord.from_json(_submitted_record(svc, store, context))
        old = (datetime.now(tz=timezone.utc) - timedelta(seconds=120)).isoformat(timespec="seconds")
        store.set(RECORD_KEY, {**record.to_json(), "created_at": old})  # type: ignore[dict-item]
        svc.expire(str(record.external_id))
        operator(svc).execute(context)
        assert len(svc.submissions) == 2

    def test_lookup_after_a_lost_response_keeps_looking(self) -> None:
        """No dedup, a lost submit response, the job not listed at once: found, not resubmitted."""
        svc, store = service(deduplicates=False), InMemoryTaskStateStore()
        svc.lose_next_response("submit")
        with hidden_for(svc, "find_by_tag", reads=3):
            operator(svc, ToyTaggedJobOperator).execute(make_context(store))
        assert len(svc.submissions) == 1

    def test_lookup_gives_up_once_the_window_passed(self) -> None:
        """A lost response whose job never shows: after the window the same token is sent again."""
        svc, store = service(deduplicates=False), InMemoryTaskStateStore()
        svc.lose_next_response("submit")
        looks = []
        with mock.patch.object(svc, "find_by_tag", side_effect=lambda token: looks.append(token)):
            operator(svc, ToyTaggedJobOperator, visibility_window=0).execute(make_context(store))
        assert len(looks) == 1 and len(svc.submissions) == 2


class TestThrottling:
    def test_throttled_status_reads_do_not_count_as_attempts(self) -> None:
        svc, store = service(), InMemoryTaskStateStore()
        svc.throttle_next("status", times=6)  # three times cloud_retry's attempts
        operator(svc).execute(make_context(store))
        assert len(svc.submissions) == 1

    def test_a_throttled_submit_is_sent_again_without_dedup_or_lookup(self) -> None:
        """Refused, not carried out: sending it again cannot make a second job."""
        svc, store = service(deduplicates=False), InMemoryTaskStateStore()
        svc.throttle_next("submit", times=3)
        operator(svc).execute(make_context(store))
        assert len(svc.submissions) == 1

    def test_cloud_call_waits_out_throttling_for_a_providers_own_call(self) -> None:
        """``cloud_call`` (public, 0.5.0): a read behind a result, throttled past cloud_retry's attempts."""
        answers: list[Any] = [ThrottledError("slow down")] * 6 + ["rows"]

        def read_rows(statement_id: str) -> str:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return f"{answer} of {statement_id}"

        assert operator(service()).cloud_call(read_rows, "s-1", what="read_rows") == "rows of s-1"
        assert answers == []

    def test_patience_runs_out(self) -> None:
        svc, store = service(), InMemoryTaskStateStore()
        svc.throttle_next("status", times=10**6)
        with pytest.raises(ThrottledError):
            operator(svc, throttle_patience=0.2).execute(make_context(store))

    def test_a_throttled_submit_is_not_an_ambiguous_one(self) -> None:
        """Only a lost response makes the retry look the job up first."""
        svc, store = service(deduplicates=False), InMemoryTaskStateStore()
        svc.throttle_next("submit", times=2)
        looks = []
        with mock.patch.object(svc, "find_by_tag", side_effect=lambda token: looks.append(token)):
            operator(svc, ToyTaggedJobOperator).execute(make_context(store))
        assert looks == [] and len(svc.submissions) == 1


def _submitted_record(svc: ToyJobService, store: InMemoryTaskStateStore, context: Any) -> Any:
    with (
        mock.patch.object(svc, "status", side_effect=RuntimeError("worker died")),
        pytest.raises(RuntimeError),
    ):
        operator(svc, cancel_on_failure=False).execute(context)
    return store.get(RECORD_KEY)
