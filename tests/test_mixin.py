"""The mixin's engine on the toy service, without Airflow processes: retries, writes, results, metrics."""

from __future__ import annotations

import json
import uuid
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time.comms import ErrorResponse
from tenacity import wait_none

from airflow_resumable.exceptions import JobFailedError, ResumableError, StateStoreUnavailableError
from airflow_resumable.record import RECORD_KEY, JobRecord
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.state import InMemoryTaskStateStore, make_context
from airflow_resumable.testing.toy import ToyJobOperator, ToyJobService, ToyTaggedJobOperator, toy_service

FAST = RetryPolicy(attempts=3, wait=wait_none())


def service(*, deduplicates: bool = True, complete_after_polls: int | None = 1) -> ToyJobService:
    svc = toy_service(f"unit-{uuid.uuid4().hex[:6]}", deduplicates=deduplicates)
    svc.complete_after_polls = complete_after_polls
    return svc


def operator(
    svc: ToyJobService, cls: type[ToyJobOperator] = ToyJobOperator, **kwargs: object
) -> ToyJobOperator:
    kwargs.setdefault("command", "echo hi")
    return cls(
        task_id=f"t{uuid.uuid4().hex[:4]}",
        service=svc.name,
        poll_interval=0,
        cloud_retry=FAST,
        state_store_retry=FAST,
        **kwargs,  # type: ignore[arg-type]
    )


class TestSubmitProtocol:
    def test_intent_is_written_before_the_cloud_call(self) -> None:
        """The intent record exists in the store when submit_job runs, with the token it passes."""
        svc, store = service(), InMemoryTaskStateStore()
        op = operator(svc)
        seen: list[dict[str, object]] = []
        real_submit = svc.submit

        def spy(command: str, token: str | None) -> str:
            seen.append(store.get(RECORD_KEY))
            return real_submit(command, token)

        with mock.patch.object(svc, "submit", spy):
            op.execute(make_context(store))
        assert seen[0]["phase"] == "intent" and seen[0]["external_id"] is None
        assert seen[0]["token"] == op.submission_token == svc.jobs[svc.submissions[0]].token

    def test_unwritable_store_means_no_submission(self) -> None:
        """If the intent cannot be written, nothing is submitted and the error says so."""
        svc, store = service(), InMemoryTaskStateStore(fail_writes=10)
        with pytest.raises(StateStoreUnavailableError, match="nothing was submitted"):
            operator(svc).execute(make_context(store))
        assert svc.submissions == []

    def test_store_write_retried_then_succeeds(self) -> None:
        """Two failed writes of the intent are retried; one job, success."""
        svc, store = service(), InMemoryTaskStateStore(fail_writes=2)
        result = operator(svc).execute(make_context(store))
        assert result["job_id"] == svc.submissions[0] and len(svc.submissions) == 1

    def test_store_write_refused_for_good_is_not_retried(self) -> None:
        """A 404 (the state was cleared under the try) is final: one write attempt, no submission."""
        svc = service()

        class ClearedStore(InMemoryTaskStateStore):
            def set(self, key: str, value: object, *, retention: object = None) -> None:
                self.writes.append(key)
                detail = {"status_code": 404, "message": "Task instance not found"}
                raise AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail=detail))

        store = ClearedStore()
        with pytest.raises(StateStoreUnavailableError, match=r"404.*nothing was submitted"):
            operator(svc).execute(make_context(store))
        assert store.writes == [RECORD_KEY] and svc.submissions == []

    def test_record_holds_no_spec(self) -> None:
        """The stored record has ids, a token and a hash, never the command (it may hold secrets)."""
        svc, store = service(), InMemoryTaskStateStore()
        operator(svc, command="curl -H 'Authorization: hunter2'").execute(make_context(store))
        assert "hunter2" not in json.dumps(store.values)
        assert store.get(RECORD_KEY)["fingerprint"].startswith("sha256:")

    def test_bare_id_is_mirrored_for_the_stock_operator(self) -> None:
        """The job id is also stored under external_id_key, so swapping back to the stock class works."""
        svc, store = service(), InMemoryTaskStateStore()
        op = operator(svc)
        op.execute(make_context(store))
        assert store.get(op.external_id_key) == svc.submissions[0]


class TestTransientErrors:
    def test_transient_submit_error_is_retried_with_the_same_token(self) -> None:
        """A deduplicating service: a lost submit response is retried with the same token, one job."""
        svc = service()
        svc.lose_next_response("submit")
        operator(svc).execute(make_context())
        assert len(svc.submissions) == 1

    def test_lost_response_without_dedup_is_found_by_token(self) -> None:
        """No deduplication: after a lost response the job is found by its tag, not submitted again."""
        svc = service(deduplicates=False)
        svc.lose_next_response("submit")
        operator(svc, ToyTaggedJobOperator).execute(make_context())
        assert len(svc.submissions) == 1

    def test_status_errors_are_retried(self) -> None:
        """Two failing status calls are retried within the policy."""
        svc = service()
        svc.fail_next("status", 2)
        assert operator(svc).execute(make_context())["job_id"] == svc.submissions[0]


class TestResults:
    def test_failed_job_raises_with_service_id_and_state(self) -> None:
        """A job that ends FAILED raises JobFailedError naming the service, the id and the state."""
        svc = service(complete_after_polls=None)
        op = operator(svc)

        def fail_on_poll(external_id: object, context: object) -> str:
            svc.finish(str(external_id), succeeded=False)
            return "FAILED"

        with mock.patch.object(op, "get_job_status", fail_on_poll), pytest.raises(JobFailedError) as err:
            op.execute(make_context())
        assert "Toy job" in str(err.value) and "'FAILED'" in str(err.value)

    def test_status_reads_bounded_as_the_stock_waiter(self) -> None:
        """max_status_reads ends the wait on a job still active; the job keeps running and is recorded."""
        svc, store = service(complete_after_polls=None), InMemoryTaskStateStore()
        op = operator(svc, cancel_on_failure=False)
        with (
            mock.patch.object(op, "max_status_reads", return_value=(3, "waiter_max_attempts")),
            pytest.raises(ResumableError, match=r"after 3 status reads \(waiter_max_attempts=3"),
        ):
            op.execute(make_context(store))
        (job_id,) = svc.submissions
        assert svc.polls[job_id] == 3 and svc.status(job_id) == "RUNNING"
        assert JobRecord.from_json(store.get(RECORD_KEY)).external_id == job_id

    def test_completed_record_after_success(self) -> None:
        """After returning the result the record is marked completed."""
        svc, store = service(), InMemoryTaskStateStore()
        operator(svc).execute(make_context(store))
        assert JobRecord.from_json(store.get(RECORD_KEY)).phase == "completed"

    def test_non_durable_keeps_no_record(self) -> None:
        """durable=False submits and waits without touching the store."""
        svc, store = service(), InMemoryTaskStateStore()
        result = operator(svc, durable=False).execute(make_context(store))
        assert store.values == {} and result["job_id"] == svc.submissions[0]

    def test_missing_store_still_runs(self) -> None:
        """Without task_state_store in the context the job still runs (recovery off, with a warning)."""
        svc = service()
        context = make_context()
        del context["task_state_store"]
        assert operator(svc).execute(context)["job_id"] == svc.submissions[0]

    def test_empty_context_still_runs(self) -> None:
        """``execute({})`` (no ti, no store), as the stock operators allow in unit tests, runs the job."""
        svc = service()
        assert operator(svc).execute({})["job_id"] == svc.submissions[0]


class TestCancelAndMetrics:
    def test_cancel_job_hook_cancels_the_remote_job(self) -> None:
        """cancel_job asks the service to cancel; the job ends CANCELLED."""
        svc = service(complete_after_polls=None)
        job_id = svc.submit("x", None)
        operator(svc).cancel_job(job_id, make_context())
        assert svc.cancels == [job_id] and svc.jobs[job_id].state == "CANCELLED"

    def test_each_decision_is_a_metric(self) -> None:
        """The decision increments airflow_resumable.decision.<reason>."""
        svc = service()
        with mock.patch("airflow_resumable.mixin.Stats.incr") as incr:
            operator(svc).execute(make_context())
        names = [call.args[0] for call in incr.call_args_list]
        assert "airflow_resumable.decision.fresh" in names
