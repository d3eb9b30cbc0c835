"""Every row of the attempt-start decision table, on the pure decision function."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from airflow_resumable._decision import Backend, decide
from airflow_resumable.exceptions import CorruptRecordError, JobNotFoundError, ResumableError
from airflow_resumable.record import JobRecord, TaskIdentity

IDENTITY = TaskIdentity("dag", "run", "task")


def backend(
    statuses: dict[Any, str] | None = None,
    *,
    fingerprint: str | None = "sha256:a",
    idempotent: bool = True,
    found: Any = None,
    find_job: bool = True,
) -> Backend:
    statuses = statuses or {}

    def get_status(job_id: Any) -> str:
        if job_id not in statuses:
            raise JobNotFoundError(job_id)
        return statuses[job_id]

    return Backend(
        identity=IDENTITY,
        external_id_key="job_id",
        fingerprint=fingerprint,
        submission_is_idempotent=idempotent,
        get_status=get_status,
        is_active=lambda s: s == "RUNNING",
        is_succeeded=lambda s: s == "SUCCEEDED",
        find_job=(lambda token: found) if find_job else None,
        is_valid_external_id=lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
    )


def stored(external_id: Any = None, *, phase: str = "submitted", generation: int = 1, fp: str = "sha256:a"):
    record = JobRecord.new_intent(IDENTITY, generation=generation, fingerprint=fp)
    if external_id is not None:
        record = record.evolve(external_id=external_id, phase=phase)
    return record, record.to_json()


class TestFreshSubmit:
    def test_nothing_stored_submits_generation_one(self) -> None:
        """No record and no id: submit, generation 1."""
        decision = decide(None, None, backend())
        assert (decision.action, decision.reason, decision.record.generation) == ("submit", "fresh", 1)
        assert decision.record.phase == "intent" and decision.record.external_id is None


class TestCrashBeforePersist:
    def test_idempotent_service_reuses_the_token(self) -> None:
        """Intent without id, deduplicating service: resubmit with the very same token."""
        record, value = stored()
        decision = decide(value, None, backend())
        assert decision.action == "submit" and decision.reason == "intent_retry"
        assert decision.record.token == record.token

    def test_find_job_recovers_the_job(self) -> None:
        """Intent without id, no deduplication: find_job(token) finds the job, which is reconnected."""
        record, value = stored()
        decision = decide(value, None, backend({"j1": "RUNNING"}, idempotent=False, found="j1"))
        assert decision.action == "reconnect" and decision.reason == "token_reconnect"
        assert decision.record.external_id == "j1" and decision.record.token == record.token

    def test_find_job_finds_nothing_so_the_same_token_is_used(self) -> None:
        """Nothing carries the token: the job was never created, so submit with the same token."""
        record, value = stored()
        decision = decide(value, None, backend(idempotent=False, found=None))
        assert decision.action == "submit" and decision.record.token == record.token

    def test_without_dedup_or_lookup_it_refuses(self) -> None:
        """No deduplication and no find_job: refuse rather than risk a duplicate."""
        _, value = stored()
        with pytest.raises(ResumableError, match="Refusing to submit a possible duplicate"):
            decide(value, None, backend(idempotent=False, find_job=False))


class TestReconnect:
    def test_active_job_is_reconnected(self) -> None:
        """A recorded id whose job is active: reconnect, same generation, no submission."""
        record, value = stored("j1")
        decision = decide(value, "j1", backend({"j1": "RUNNING"}))
        assert (decision.action, decision.reason) == ("reconnect", "reconnect")
        assert decision.record == record


class TestAdoptSucceeded:
    def test_succeeded_job_returns_its_result(self) -> None:
        """A recorded id whose job succeeded: return the result without polling or submitting."""
        _, value = stored("j1")
        decision = decide(value, "j1", backend({"j1": "SUCCEEDED"}))
        assert (decision.action, decision.reason) == ("return_result", "already_succeeded")


class TestResubmitAfterFailure:
    @pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "TIMEDOUT"])
    def test_terminal_failure_starts_the_next_generation(self, status: str) -> None:
        """A failed or cancelled job: next generation, fresh token."""
        record, value = stored("j1")
        decision = decide(value, "j1", backend({"j1": status}))
        assert (decision.action, decision.reason) == ("submit", "prior_failed")
        assert decision.record.generation == 2 and decision.record.token != record.token

    def test_job_unknown_to_the_service_starts_the_next_generation(self) -> None:
        """An expired or deleted job: next generation."""
        _, value = stored("gone")
        decision = decide(value, "gone", backend({}))
        assert (decision.reason, decision.record.generation) == ("prior_not_found", 2)

    def test_a_completed_run_of_the_task_is_not_returned_again(self) -> None:
        """The task already returned this job's result: a cleared task runs a fresh job."""
        _, value = stored("j1", phase="completed")
        decision = decide(value, "j1", backend({"j1": "SUCCEEDED"}))
        assert (decision.action, decision.reason) == ("submit", "prior_completed")

    def test_a_job_we_cancelled_is_not_adopted(self) -> None:
        """A job cancelled by a user's stop is not reconnected to."""
        _, value = stored("j1", phase="cancelled")
        assert decide(value, "j1", backend({"j1": "RUNNING"})).reason == "prior_cancelled"


class TestSpecChange:
    def test_changed_fingerprint_is_not_adopted(self) -> None:
        """The spec changed: do not reconnect to the running old job; next generation."""
        _, value = stored("j1", fp="sha256:old")
        decision = decide(value, "j1", backend({"j1": "RUNNING"}, fingerprint="sha256:new"))
        assert (decision.action, decision.reason, decision.record.generation) == ("submit", "spec_changed", 2)
        assert decision.record.fingerprint == "sha256:new"

    def test_running_old_job_is_named_for_cancelling(self) -> None:
        """The old generation's job still runs: the decision names it, so it is cancelled first."""
        _, value = stored("j1", fp="sha256:old")
        decision = decide(value, "j1", backend({"j1": "RUNNING"}, fingerprint="sha256:new"))
        assert decision.supersedes == "j1"
        assert "after cancelling job 'j1'" in decision.detail

    @pytest.mark.parametrize("status", ["FAILED", "SUCCEEDED"])
    def test_ended_old_job_is_left_alone(self, status: str) -> None:
        """An old job that already ended needs no cancel."""
        _, value = stored("j1", fp="sha256:old")
        decision = decide(value, "j1", backend({"j1": status}, fingerprint="sha256:new"))
        assert decision.reason == "spec_changed" and decision.supersedes is None

    def test_old_job_unknown_to_the_service_is_left_alone(self) -> None:
        """An old job the service no longer knows needs no cancel."""
        _, value = stored("j1", fp="sha256:old")
        decision = decide(value, "j1", backend({}, fingerprint="sha256:new"))
        assert decision.supersedes is None and "unknown to the service" in decision.detail

    def test_old_intent_is_looked_up_by_its_token(self) -> None:
        """An old intent without id: find_job(token) finds its running job, which is superseded."""
        _, value = stored(fp="sha256:old")
        found = backend({"j9": "RUNNING"}, idempotent=False, found="j9", fingerprint="sha256:new")
        assert decide(value, None, found).supersedes == "j9"

    def test_detection_off_when_fingerprint_is_none(self) -> None:
        """job_fingerprint returning None turns detection off."""
        _, value = stored("j1", fp="sha256:old")
        assert decide(value, "j1", backend({"j1": "RUNNING"}, fingerprint=None)).action == "reconnect"


class TestStockIdAdoption:
    def test_bare_id_from_the_stock_operator_is_adopted(self) -> None:
        """An id under external_id_key and no record: adopt it and reconnect."""
        decision = decide(None, 77, backend({77: "RUNNING"}))
        assert (decision.action, decision.reason) == ("reconnect", "stock_id_reconnect")
        assert decision.record.external_id == 77

    def test_newer_bare_id_wins_over_an_older_record(self) -> None:
        """The stock operator submitted after our record (class swapped back): adopt its newer id."""
        _, value = stored("old")
        decision = decide(value, "new", backend({"old": "FAILED", "new": "SUCCEEDED"}))
        assert (decision.action, decision.record.external_id) == ("return_result", "new")
        assert decision.record.generation == 2


class TestCorruptRecord:
    def test_unreadable_record_with_a_valid_id_adopts_the_id(self) -> None:
        """A damaged record next to a valid id: the id is judged and reconnected."""
        decision = decide({"schema": "x"}, "j1", backend({"j1": "RUNNING"}))
        assert decision.reason == "unreadable_record_reconnect"

    def test_unreadable_record_without_id_fails_without_retry(self) -> None:
        """A damaged record and nothing to recover: a non-retryable error that names the key."""
        with pytest.raises(CorruptRecordError, match=r"airflow_resumable\.job"):
            decide("garbage", None, backend())

    def test_foreign_value_under_the_id_key_is_reported(self) -> None:
        """A value that cannot be an id of this service is reported, never submitted around."""
        with pytest.raises(CorruptRecordError, match="not a valid job id"):
            decide(None, {"nested": True}, backend())


class TestWipedStateStore:
    """A clear deleted the task state store (apache/airflow#72100): the ledger's copy decides."""

    @staticmethod
    def with_ledger(kept: JobRecord | None, **kwargs: Any) -> Backend:
        return dataclasses.replace(backend(**kwargs), read_ledger=lambda: kept)

    def test_active_job_in_the_ledger_is_reconnected(self) -> None:
        """Nothing in the store, the ledger names a running job: reconnect, no second job."""
        record, _ = stored("j1")
        decision = decide(None, None, self.with_ledger(record, statuses={"j1": "RUNNING"}))
        assert (decision.action, decision.reason) == ("reconnect", "ledger_reconnect")
        assert decision.record.token == record.token

    def test_succeeded_job_in_the_ledger_returns_its_result(self) -> None:
        """The job ended well while nobody watched: its result, no poll, no submit."""
        record, _ = stored("j1")
        decision = decide(None, None, self.with_ledger(record, statuses={"j1": "SUCCEEDED"}))
        assert decision.reason == "ledger_already_succeeded"

    def test_failed_job_in_the_ledger_starts_the_next_generation(self) -> None:
        """The kept job failed: the next generation is submitted."""
        record, _ = stored("j1", generation=3)
        decision = decide(None, None, self.with_ledger(record, statuses={"j1": "FAILED"}))
        assert (decision.action, decision.record.generation) == ("submit", 4)

    def test_intent_in_the_ledger_reuses_its_token(self) -> None:
        """The kept record is an intent: the same token is re-sent (the service deduplicates)."""
        record, _ = stored()
        decision = decide(None, None, self.with_ledger(record))
        assert (decision.reason, decision.record.token) == ("ledger_intent_retry", record.token)

    def test_changed_spec_in_the_ledger_supersedes_the_old_job(self) -> None:
        """The kept job runs an old spec: cancel it, then submit the new one."""
        record, _ = stored("j1", fp="sha256:old")
        decision = decide(None, None, self.with_ledger(record, statuses={"j1": "RUNNING"}))
        assert (decision.reason, decision.supersedes) == ("spec_changed", "j1")
        assert "the ledger kept the record" in decision.detail

    def test_empty_ledger_is_a_fresh_submit(self) -> None:
        """Nothing anywhere: a first submission."""
        assert decide(None, None, self.with_ledger(None)).reason == "fresh"

    def test_ledger_is_not_read_when_the_store_has_a_record(self) -> None:
        """The store is the source of truth; the ledger is only the fallback."""

        def unreadable() -> JobRecord | None:
            raise AssertionError("the ledger must not be read")

        _, value = stored("j1")
        with_record = dataclasses.replace(backend({"j1": "RUNNING"}), read_ledger=unreadable)
        assert decide(value, None, with_record).reason == "reconnect"


class TestUntrustedRecord:
    """A record whose seal does not verify is not believed (docs/security.md)."""

    @staticmethod
    def distrusting(statuses: dict[Any, str]) -> Backend:
        return dataclasses.replace(backend(statuses), distrust_record=lambda value: "forged")

    def test_a_forged_record_without_a_stock_id_fails_once_with_instructions(self) -> None:
        """A forged record naming a foreign job: never adopted, never a blind submit."""
        _, value = stored("victim")
        with pytest.raises(CorruptRecordError, match="seal does not verify"):
            decide(value, None, self.distrusting({"victim": "RUNNING"}))

    def test_an_unsealed_record_with_the_mirrored_id_reconnects(self) -> None:
        """0.2.0's records (unsealed) reconnect through the id mirrored under the stock key."""
        _, value = stored("j1")
        decision = decide(value, "j1", self.distrusting({"j1": "RUNNING"}))
        assert decision.action == "reconnect" and decision.reason == "unreadable_record_reconnect"


class TestStoppedByUser:
    """Mark failed, then clear before the custodian's cancel landed: the stop still holds."""

    def test_the_stopped_job_is_cancelled_and_a_fresh_one_submitted(self) -> None:
        """stop_requested on a running job: next generation, after cancelling the old job."""
        record, _ = stored("j1")
        value = record.evolve(stop_requested={"at": 1.0, "by": "custodian"}).to_json()
        decision = decide(value, None, backend({"j1": "RUNNING"}))
        assert (decision.action, decision.reason, decision.supersedes) == ("submit", "prior_stopped", "j1")
        assert decision.record.generation == 2

    def test_an_ended_stopped_job_is_not_cancelled_again(self) -> None:
        """stop_requested on a job that already ended: fresh, nothing to cancel."""
        record, _ = stored("j1")
        value = record.evolve(stop_requested={"at": 1.0}).to_json()
        decision = decide(value, None, backend({"j1": "CANCELLED"}))
        assert decision.reason == "prior_stopped" and decision.supersedes is None


class TestPatience:
    """The decision hands a job's age to the patient calls, and only where the age is known."""

    def patient(self, **kwargs: Any) -> tuple[Backend, list[tuple[str, Any, Any]]]:
        calls: list[tuple[str, Any, Any]] = []
        plain = backend(**kwargs)

        def await_status(job_id: Any, born: Any) -> str:
            calls.append(("status", job_id, born))
            return plain.get_status(job_id)

        def await_find(token: str, born: Any) -> Any:
            calls.append(("find", token, born))
            assert plain.find_job is not None
            return plain.find_job(token)

        return dataclasses.replace(plain, await_status=await_status, await_find=await_find), calls

    def test_a_recorded_job_is_judged_with_its_age(self) -> None:
        record, value = stored("j1")
        patient, calls = self.patient(statuses={"j1": "RUNNING"})
        assert decide(value, None, patient).reason == "reconnect"
        assert calls == [("status", "j1", record.created_at)]

    def test_an_intent_is_looked_up_with_its_age(self) -> None:
        record, value = stored()
        patient, calls = self.patient(statuses={"j1": "RUNNING"}, idempotent=False, found="j1")
        assert decide(value, None, patient).reason == "token_reconnect"
        assert calls == [("find", record.token, record.created_at), ("status", "j1", record.created_at)]

    def test_a_stock_id_has_no_known_age(self) -> None:
        """The stock operator's bare id: asked once, plainly; not found means gone."""
        patient, calls = self.patient()
        assert decide(None, "j9", patient).reason == "prior_not_found"
        assert calls == []

    def test_a_record_without_created_at_is_asked_plainly(self) -> None:
        """0.1.0 records carry no age: the plain call, as before."""
        _, value = stored("j1")
        patient, calls = self.patient(statuses={"j1": "RUNNING"})
        old = {**value, "created_at": None}  # type: ignore[dict-item]
        assert decide(old, None, patient).reason == "reconnect"
        assert calls == []
