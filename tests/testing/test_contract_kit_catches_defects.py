"""The contract kit fails operators that break the contract (a kit that cannot fail proves nothing)."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import BaseOperator
from airflow.sdk import ResumableJobMixin as CoreResumableJobMixin

from airflow_resumable.exceptions import JobNotFoundError, TransientCloudError
from airflow_resumable.record import fingerprint_of
from airflow_resumable.testing.contract import ResumableOperatorContract
from airflow_resumable.testing.toy import (
    ToyDriver,
    ToyJobOperator,
    ToyRequestError,
    ToyTaggedJobOperator,
    toy_service,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from pydantic import JsonValue


class CoreMixinToyOperator(ToyTaggedJobOperator):
    """The toy operator driven by Airflow's core mixin: the stock providers' behaviour."""

    def execute(self, context: Context) -> Any:
        return CoreResumableJobMixin.execute_resumable(self, context)


class _CoreMixinKit(ResumableOperatorContract):
    operator_class = CoreMixinToyOperator
    # The core mixin has no visibility window; these tests are about its other defects.
    realism = ResumableOperatorContract.realism.evolve(visibility_lag=0.0)

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {"service": cloud.service.name, "command": f"echo {spec_marker}", "poll_interval": 0.001}


@pytest.fixture
def driver() -> ToyDriver:
    return ToyDriver(toy_service(f"core-{uuid.uuid4().hex[:6]}", deduplicates=False))


def test_kit_catches_duplicate_after_crash_before_persist(driver: ToyDriver) -> None:
    """The core mixin submits a second job after a crash between submit and persist; the kit sees it."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_crash_between_submit_and_persist(driver)
    assert len(driver.submitted_ids()) == 2


def test_kit_catches_reconnect_result_quirk(driver: ToyDriver) -> None:
    """The core mixin returns poll_until_complete's None on reconnect; the kit requires get_job_result."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_reconnect_after_worker_crash(driver)
    assert len(driver.submitted_ids()) == 1


def test_kit_catches_spec_change_adoption(driver: ToyDriver) -> None:
    """The core mixin reconnects to a job whose spec the user changed; the kit sees it."""
    with pytest.raises(AssertionError):
        _CoreMixinKit().test_spec_change_is_not_adopted(driver)
    assert len(driver.submitted_ids()) == 1


class NewestJobFinder(ToyTaggedJobOperator):
    """Defect: ``find_job`` returns the newest job, whatever token it carries."""

    def find_job(self, token: str, context: Context) -> JsonValue:
        jobs = list(self._svc.jobs)
        return jobs[-1] if jobs else None


class PseudoStateReporter(ToyTaggedJobOperator):
    """Defect: a forgotten job is reported as a ``NOT_FOUND`` status instead of JobNotFoundError."""

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        try:
            return super().get_job_status(external_id, context)
        except JobNotFoundError:
            return "NOT_FOUND"


class ThrottleIntolerant(ToyTaggedJobOperator):
    """Defect: no error is transient nor throttling, so one throttled submit fails the try."""

    def __init__(self, **kwargs: Any) -> None:
        # A short window: the next try does not look for the never-created job for a minute.
        super().__init__(visibility_window=1, **kwargs)

    def is_throttling_error(self, error: BaseException) -> bool:
        return False

    def is_transient_error(self, error: BaseException) -> bool:
        return False


class OwnPollLoop(ToyTaggedJobOperator):
    """Defect: waits on the service directly (a stock waiter kept), bypassing ``get_job_status``."""

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        while self._svc.jobs[str(external_id)].state in ("PENDING", "RUNNING"):
            threading.Event().wait(0.05)


class StockLikeOperator(BaseOperator):
    """A stock operator that waits for its job in ``execute``."""

    def execute(self, context: Context) -> Any:
        threading.Event().wait(60)


class StockFirst(StockLikeOperator, ToyTaggedJobOperator):
    """Defect: the stock class first in the bases, so its ``execute`` wins."""


def _toy_kit(operator: type, *, stall_timeout: float = 10.0) -> ResumableOperatorContract:
    class Kit(ResumableOperatorContract):
        operator_class = operator

        def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
            return {"service": cloud.service.name, "command": f"echo {spec_marker}", "poll_interval": 0.001}

    Kit.stall_timeout = stall_timeout
    return Kit()


@pytest.fixture
def tagged() -> ToyDriver:
    return ToyDriver(toy_service(f"defect-{uuid.uuid4().hex[:6]}", deduplicates=False))


def test_kit_catches_find_job_that_ignores_the_token(tagged: ToyDriver) -> None:
    """A find_job that returns the newest namesake adopts another intent's job; the kit says so."""
    with pytest.raises(AssertionError, match="must return only a job that carries the token"):
        _toy_kit(NewestJobFinder).test_find_job_ignores_a_namesake_with_another_token(tagged)


def test_kit_catches_a_pseudo_state_for_an_expired_job(tagged: ToyDriver) -> None:
    """A NOT_FOUND status instead of JobNotFoundError fails the expiry scenario with what it saw."""
    with pytest.raises(AssertionError, match="returned 'NOT_FOUND'"):
        _toy_kit(PseudoStateReporter).test_expired_job_raises_job_not_found(tagged)


def test_kit_catches_a_throttle_that_burns_a_retry(tagged: ToyDriver) -> None:
    """An is_transient_error that does not know throttling costs a retry; the kit sees it."""
    with pytest.raises(AssertionError, match="burned a retry"):
        _toy_kit(ThrottleIntolerant).test_throttled_submit_costs_no_retry(tagged)


def test_kit_ends_a_poll_loop_that_bypasses_the_hooks(tagged: ToyDriver) -> None:
    """A poll loop outside get_job_status is reported as stalled instead of hanging to the timeout."""
    with pytest.raises(AssertionError, match="stalled: no status call went through get_job_status"):
        _toy_kit(OwnPollLoop, stall_timeout=1.0).test_fresh_submit(tagged)
    states = {tagged.service.jobs[str(i)].state for i in tagged.submitted_ids()}
    assert states == {"FAILED"}, "the kit ends every job of a stalled scenario"


def test_kit_refuses_the_stock_class_first_in_the_bases(tagged: ToyDriver) -> None:
    """With the stock class first, the kit fails before running anything, naming the method."""
    with pytest.raises(AssertionError, match=r"StockFirst.execute comes from .*StockLikeOperator"):
        _toy_kit(StockFirst).test_fresh_submit(tagged)
    assert tagged.submitted_ids() == []


def test_kit_failures_show_their_values(driver: ToyDriver) -> None:
    """The kit is assertion-rewritten (the package's pytest plugin): a failure shows the values."""
    with pytest.raises(AssertionError) as failure:
        _CoreMixinKit().test_crash_between_submit_and_persist(driver)
    assert "2 == 1" in str(failure.value)


class YoungJobTakenForExpired(ToyTaggedJobOperator):
    """Defect: no visibility window, so a young job's not-found reads as an expired job."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(visibility_window=0, **kwargs)


class GivesUpOnThrottling(ToyTaggedJobOperator):
    """Defect: a throttled call is neither waited out nor retried: the try fails."""

    def is_throttling_error(self, error: BaseException) -> bool:
        return False

    def is_transient_error(self, error: BaseException) -> bool:
        return False


class FirstPageOnly(ToyTaggedJobOperator):
    """Defect: ``find_job`` reads only the first page of the listing."""

    def find_job(self, token: str, context: Context) -> JsonValue:
        page, _next = self._svc.list_jobs()
        return next((job.job_id for job in page if job.token == token), None)


class KindDriver(ToyDriver):
    """A driver whose fake answers at once: it has no ``set_realism``."""

    set_realism = None  # type: ignore[assignment]


def test_kit_catches_a_young_job_taken_for_expired(tagged: ToyDriver) -> None:
    """An operator without a visibility window resubmits a job that is only young; the kit says so."""
    with pytest.raises(AssertionError, match="a job not visible yet"):
        _toy_kit(YoungJobTakenForExpired).test_young_job_invisible(tagged)
    assert len(tagged.submitted_ids()) == 2


def test_kit_catches_giving_up_on_throttling(tagged: ToyDriver) -> None:
    """An operator that fails on a throttled status read spends a try; the kit says so."""
    with pytest.raises(AssertionError, match="throttled status reads cost a try"):
        _toy_kit(GivesUpOnThrottling).test_throttled_status_reads(tagged)
    assert tagged.service.throttled > 0


def test_kit_catches_a_lookup_of_the_first_page_only(tagged: ToyDriver) -> None:
    """A find_job that reads one page misses its job behind a namesake and submits a duplicate."""
    with pytest.raises(AssertionError, match="find_job must read every page"):
        _toy_kit(FirstPageOnly).test_lookup_past_first_page(tagged)
    assert len(tagged.submitted_ids()) == 4


def test_kit_reports_a_fake_that_answers_at_once() -> None:
    """A driver without set_realism fails each realism scenario in one line."""
    kind = KindDriver(toy_service(f"kind-{uuid.uuid4().hex[:6]}", deduplicates=False))
    expected = "KindDriver answers at once: kinder than the cloud it stands for; give it set_realism(...)"
    kit = _toy_kit(ToyTaggedJobOperator)
    scenarios = [
        kit.test_young_job_invisible,
        kit.test_throttled_status_reads,
        kit.test_lookup_past_first_page,
        lambda cloud: kit.test_proof_crash_before_persist(cloud, 1.0),
    ]
    for scenario in scenarios:
        with pytest.raises(pytest.fail.Exception) as failure:
            scenario(kind)
        assert str(failure.value) == expected
    assert kind.submitted_ids() == []


def test_kit_catches_a_lost_response_that_makes_two_jobs(tagged: ToyDriver) -> None:
    """A service whose answer was lost, with no lookup by token: a duplicate under lag; the kit sees it."""
    with pytest.raises(AssertionError, match="jobs created"):
        _toy_kit(NoPatienceForLookups).test_proof_lost_submit_response(tagged, 1.0)
    assert len(tagged.submitted_ids()) >= 2


class NoPatienceForLookups(ToyTaggedJobOperator):
    """Defect: after a lost answer, one look for the job (which is not listed yet), then a resubmit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(visibility_window=0, **kwargs)

    def is_transient_error(self, error: BaseException) -> bool:
        return isinstance(error, TransientCloudError)


# --------------------------------------------------------------------------------------------
# Each defect a new maintainer made (issue 20), failing in seconds with a one-line cause.


class TokenNotSent(ToyJobOperator):
    """Defect: declares idempotent submission but never sends the token."""

    def submit_job(self, context: Context) -> JsonValue:
        return self._svc.submit(self.command, None)


class FingerprintIgnoresTheCommand(ToyJobOperator):
    """Defect: the fingerprint hashes a constant, not the templated command."""

    def job_fingerprint(self, context: Context) -> str | None:
        return fingerprint_of({"command": "echo"})


class StockWithOnKill(StockLikeOperator):
    """A stock operator whose ``on_kill`` cancels the job (as most stock AWS operators do)."""

    def on_kill(self) -> None:
        raise AssertionError("the stock on_kill must never run")


class ExecuteReExported(ToyTaggedJobOperator, StockWithOnKill):
    """Defect: the stock ``execute`` re-exported in the resumable class."""

    execute = StockLikeOperator.execute


class OnKillReExported(ToyTaggedJobOperator, StockWithOnKill):
    """Defect: the stock ``on_kill`` re-exported (it cancels on every SIGTERM)."""

    on_kill = StockWithOnKill.on_kill


class ExecuteCallsStock(ToyTaggedJobOperator, StockWithOnKill):
    """Defect: a wrapper that calls the stock ``execute`` (the resumable one never runs)."""

    def execute(self, context: Context) -> Any:
        return StockLikeOperator.execute(self, context)


class OnKillCallsStock(ToyTaggedJobOperator, StockWithOnKill):
    """Defect: ``on_kill`` records the stop, then calls the stock one, which cancels."""

    def on_kill(self) -> None:
        super().on_kill()
        StockWithOnKill.on_kill(self)


class StockWaiterKept(ToyTaggedJobOperator):
    """Defect: polls with a botocore waiter (as the stock operator does) instead of the mixin."""

    def poll_until_complete(self, external_id: JsonValue, context: Context) -> None:
        from botocore.waiter import SingleWaiterConfig, Waiter

        config = {
            "delay": 0,
            "maxAttempts": 1000,
            "operation": "DescribeJob",
            "acceptors": [
                {"state": "success", "matcher": "path", "argument": "state", "expected": "SUCCEEDED"}
            ],
        }
        job = self._svc.jobs[str(external_id)]
        Waiter("JobComplete", SingleWaiterConfig(config), lambda **_: {"state": job.state}).wait()


class HangsBeforeSubmit(ToyTaggedJobOperator):
    """Defect: waits for something of its own before the engine runs (never reaches submit_job)."""

    def execute(self, context: Context) -> Any:
        threading.Event().wait(60)
        return super().execute(context)


class ReadsTheWrongField(ToyTaggedJobOperator):
    """Defect: reads a field that says RUNNING whatever the job's state."""

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        super().get_job_status(external_id, context)
        return "RUNNING"


class AnyRefusalIsNotFound(ToyTaggedJobOperator):
    """Defect: every refusal of a status read is taken for a forgotten job (the issue's Athena case)."""

    def get_job_status(self, external_id: JsonValue, context: Context) -> str:
        try:
            return super().get_job_status(external_id, context)
        except ToyRequestError as err:
            raise JobNotFoundError(f"toy job {external_id!r} is gone") from err


class NeverEnds(ToyDriver):
    """A fake that does not end a job when told (a job kind whose write_state does nothing)."""

    def finish(self, external_id: JsonValue, *, succeeded: bool) -> None:
        pass


class ReturnsTheOutputLocation(ToyTaggedJobOperator):
    """Defect: returns the job's output instead of what the stock operator returns."""

    def get_job_result(self, external_id: JsonValue, context: Context) -> Any:
        return f"s3://bucket/output/{external_id}"


class LeavesAdoptOut(ToyTaggedJobOperator):
    """Defect: a required hook left out (raises the mixin's NotImplementedError)."""

    def get_job_result(self, external_id: JsonValue, context: Context) -> Any:
        raise NotImplementedError("LeavesAdoptOut must implement adopt_job(external_id, context)")


class CancellerOnlyInProcess(ToyTaggedJobOperator):
    """Defect: its canceller is registered with register_canceller only (the custodian never sees it)."""

    def cancel_recipe(self, context: Context) -> Any:
        return ("toy_job_in_process_only", {"service": self.service})


def _declared_kit(operator: type, *, stall_timeout: float = 10.0) -> ResumableOperatorContract:
    """:func:`_toy_kit` with the toy's stock XComs declared."""

    class Kit(type(_toy_kit(operator, stall_timeout=stall_timeout))):  # type: ignore[misc]
        def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
            command = cloud.service.jobs[str(external_id)].command
            return {"return_value": {"job_id": external_id, "output": f"ran {command}"}}

    return Kit()


@pytest.fixture
def deduplicating() -> ToyDriver:
    return ToyDriver(toy_service(f"dedup-{uuid.uuid4().hex[:6]}", deduplicates=True))


def test_kit_names_a_token_not_sent(deduplicating: ToyDriver) -> None:
    """Idempotent by declaration, no token on the wire: the kit says so, not "2 == 1" or find_job."""
    with pytest.raises(AssertionError, match=r"declares submission_is_idempotent = True, yet the submit"):
        _toy_kit(TokenNotSent).test_crash_between_submit_and_persist(deduplicating)
    assert len(deduplicating.submitted_ids()) == 2


def test_kit_names_the_field_the_fingerprint_ignores(deduplicating: ToyDriver) -> None:
    """The kit changes each templated field in turn and names the one the fingerprint missed."""
    with pytest.raises(
        AssertionError, match=r"ignores the templated field\(s\) 'command' \('echo kit-marker'"
    ):
        _toy_kit(FingerprintIgnoresTheCommand).test_fingerprint_covers_every_templated_field(deduplicating)
    assert deduplicating.submitted_ids() == []


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (ExecuteReExported, r"ExecuteReExported.execute is StockLikeOperator.execute re-exported"),
        (OnKillReExported, r"OnKillReExported.on_kill is StockWithOnKill.on_kill re-exported"),
    ],
)
def test_kit_refuses_a_re_exported_stock_method(tagged: ToyDriver, operator: type, expected: str) -> None:
    """``execute = Stock.execute`` in the resumable class is refused before anything runs."""
    with pytest.raises(AssertionError, match=expected):
        _toy_kit(operator).test_fresh_submit(tagged)
    assert tagged.submitted_ids() == []


def test_kit_names_a_wrapper_that_calls_the_stock_execute(tagged: ToyDriver) -> None:
    """The stock execute, called from a wrapper, ends the try at once and is named with its caller."""
    with pytest.raises(
        AssertionError, match=r"called the stock StockLikeOperator.execute \(from ExecuteCallsStock.execute\)"
    ):
        _toy_kit(ExecuteCallsStock).test_fresh_submit(tagged)
    assert tagged.submitted_ids() == []


def test_kit_names_an_on_kill_that_calls_the_stock_one(tagged: ToyDriver) -> None:
    """A worker's SIGTERM reaches the stock on_kill through a wrapper: named, not a cancelled job."""
    with pytest.raises(
        AssertionError, match=r"called the stock StockWithOnKill.on_kill \(from OnKillCallsStock"
    ):
        _toy_kit(OnKillCallsStock).test_worker_shutdown_is_a_checkpoint(tagged)


def test_kit_names_a_stock_waiter_kept(tagged: ToyDriver) -> None:
    """A botocore waiter inside poll_until_complete is named, with the waiter, at its first wait."""
    with pytest.raises(
        AssertionError, match=r"waited with the botocore waiter 'JobComplete' inside poll_until"
    ):
        _toy_kit(StockWaiterKept).test_fresh_submit(tagged)


def test_kit_ends_a_try_that_never_reaches_submit(tagged: ToyDriver) -> None:
    """The stall watch starts at execute: a try stuck before any job ends after stall_timeout."""
    with pytest.raises(AssertionError, match=r"entered execute and reached neither submit_job nor a status"):
        _toy_kit(HangsBeforeSubmit, stall_timeout=1.0).test_fresh_submit(tagged)
    assert tagged.submitted_ids() == []


def test_kit_tells_an_operator_that_reads_wrong(tagged: ToyDriver) -> None:
    """The fake shows the job ended; the operator reads otherwise: the kit blames the operator."""
    with pytest.raises(
        AssertionError, match=r"the operator reads it wrong, not the fake: the fake shows 'SUCCEEDED', but"
    ):
        _toy_kit(ReadsTheWrongField).test_fresh_submit(tagged)


def test_kit_names_a_refusal_taken_for_not_found(tagged: ToyDriver) -> None:
    """A status read refused for another cause, taken for a forgotten job: named before any count."""
    with pytest.raises(
        AssertionError,
        match=r"not-found mistaken: AnyRefusalIsNotFound.get_job_status\('.*'\) raised JobNotFoundError "
        r"on ToyRequestError 'toy service: status refused: the request is invalid'",
    ):
        _toy_kit(AnyRefusalIsNotFound).test_an_error_like_not_found_is_not_taken_for_it(tagged)


def test_kit_passes_a_refusal_left_to_the_retry(tagged: ToyDriver) -> None:
    """The same refusal raised as it is: try 1 fails, try 2 reconnects to the one job."""
    _toy_kit(ToyTaggedJobOperator).test_an_error_like_not_found_is_not_taken_for_it(tagged)
    assert len(tagged.submitted_ids()) == 1 and tagged.service.refused_calls == {"status": 0}


def test_kit_tells_a_fake_that_answers_wrong() -> None:
    """The operator reads what the fake shows, and the fake never ended the job: the kit blames the fake."""
    stuck = NeverEnds(toy_service(f"stuck-{uuid.uuid4().hex[:6]}", deduplicates=False))
    with pytest.raises(
        AssertionError, match=r"the fake answers wrong, not the operator: the fake itself shows"
    ):
        _toy_kit(ToyTaggedJobOperator).test_fresh_submit(stuck)


def test_kit_compares_the_result_with_the_stock_one(tagged: ToyDriver) -> None:
    """A result other than the stock one (an output location for the id) fails on the fresh path."""
    with pytest.raises(
        AssertionError,
        match=r"fresh path: ReturnsTheOutputLocation leaves other XComs .* 'return_value' is 's3://",
    ):
        _declared_kit(ReturnsTheOutputLocation).test_fresh_submit(tagged)


def test_kit_requires_the_stock_xcoms_declared(tagged: ToyDriver) -> None:
    """Without a declaration the kit cannot compare: it says what to declare."""
    with pytest.raises(AssertionError, match=r"does not declare stock_xcoms\(cloud, external_id\)"):
        _toy_kit(ToyTaggedJobOperator).test_stock_xcoms_are_declared(tagged)
    _declared_kit(ToyTaggedJobOperator).test_stock_xcoms_are_declared(tagged)


def test_kit_names_a_required_hook_left_out(tagged: ToyDriver) -> None:
    """A NotImplementedError from a hook is the reported cause, not "'failed' == 'success'"."""
    with pytest.raises(
        AssertionError,
        match=r"LeavesAdoptOut leaves a required hook out: LeavesAdoptOut must implement adopt_job",
    ):
        _toy_kit(LeavesAdoptOut).test_fresh_submit(tagged)


def test_kit_skips_adoption_when_the_stock_stores_no_id(tagged: ToyDriver) -> None:
    """A stock operator that stores no id has nothing to adopt: skipped with the reason, not passed."""
    with pytest.raises(
        pytest.skip.Exception, match=r"stores no job id .*'A stock operator that stores no id'"
    ):
        _toy_kit(ToyTaggedJobOperator).test_adopts_stock_operator_id(tagged)
    assert tagged.submitted_ids() == []


def test_kit_proves_the_canceller_from_a_fresh_process(tagged: ToyDriver) -> None:
    """A canceller registered in the test process only is not the custodian's: the kit says so."""
    from airflow_resumable.custodian import register_canceller

    register_canceller("toy_job_in_process_only", "airflow_resumable.testing.toy:cancel_toy_job_by_recipe")
    with pytest.raises(
        AssertionError, match=r"'toy_job_in_process_only' is registered only in this test process"
    ):
        _toy_kit(CancellerOnlyInProcess).test_custodian_cancels_with_the_ledgers_recipe(tagged)
