"""Both Databricks operators called directly against the fake Jobs API: tokens, adoption, errors, XComs."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
import requests
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.operators.databricks import (
    DatabricksJobRunLink,
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from airflow.sdk.exceptions import AirflowException
from tenacity import RetryError, Retrying, stop_after_attempt

from airflow_resumable.exceptions import JobFailedError, JobNotFoundError
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.providers.databricks import (
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)
from airflow_resumable.record import RECORD_KEY, JobRecord, TaskIdentity, seal_record
from airflow_resumable.testing.databricks import FakeDatabricks, databricks_connection_env
from airflow_resumable.testing.state import InMemoryTaskStateStore
from tests.providers.databricks.helpers import (
    CLOUD_RETRY,
    HOOK_RETRY_ARGS,
    finish_on_status_call,
    task_context,
)

A_DAY_AGO = (datetime.now(tz=timezone.utc) - timedelta(days=1)).isoformat(timespec="seconds")

if TYPE_CHECKING:
    from collections.abc import Iterator

NOTEBOOK = {"notebook_path": "/Shared/etl"}
FAST: dict[str, Any] = {
    "polling_period_seconds": 0,
    "databricks_retry_args": HOOK_RETRY_ARGS,
    "cloud_retry": CLOUD_RETRY,
    "state_store_retry": CLOUD_RETRY,
}


def submit_run(**kwargs: Any) -> ResumableDatabricksSubmitRunOperator:
    return ResumableDatabricksSubmitRunOperator(
        task_id="job", **{"run_name": "etl", "notebook_task": NOTEBOOK, **FAST, **kwargs}
    )


def run_now(**kwargs: Any) -> ResumableDatabricksRunNowOperator:
    return ResumableDatabricksRunNowOperator(task_id="job", **{"job_name": "nightly", **FAST, **kwargs})


def record_of(context: dict[str, Any]) -> dict[str, Any]:
    return dict(context["task_state_store"].get(RECORD_KEY))


def submitted_tokens(fake: FakeDatabricks) -> list[str]:
    """The idempotency_token of every submission request the fake received, replays included."""
    return [
        e.body.get("idempotency_token") for e in fake.ledger() if e.endpoint in ("runs/submit", "run-now")
    ]


@pytest.fixture
def job(fake: FakeDatabricks) -> int:
    """A job called "nightly" for run-now."""
    return fake.create_job("nightly", {"tasks": [{"task_key": "etl", "notebook_task": NOTEBOOK}]})


class TestDropIn:
    """The class swap: same base class, arguments, keys, XCom keys and links as the stock operators."""

    @pytest.mark.parametrize(
        ("ours", "stock", "key"),
        [
            (ResumableDatabricksSubmitRunOperator, DatabricksSubmitRunOperator, "databricks_run_id"),
            (ResumableDatabricksRunNowOperator, DatabricksRunNowOperator, "databricks_run_now_id"),
        ],
    )
    def test_class_shape(self, ours: type, stock: type, key: str) -> None:
        """Our mixin precedes the stock class in the MRO; stock key, links and template fields are kept."""
        mro = ours.__mro__
        assert mro.index(ResumableJobMixin) < mro.index(stock)
        assert ours.external_id_key == stock.external_id_key == key
        assert ours.submission_is_idempotent is True and ours.service_name == "Databricks"
        assert ours.template_fields == stock.template_fields
        assert [type(link) for link in ours.operator_extra_links] == [DatabricksJobRunLink]
        for name in ("on_kill", "poll_until_complete", "execute_resumable"):
            assert getattr(ours, name) is not getattr(stock, name)

    @pytest.mark.parametrize(
        ("ours", "stock", "required"),
        [
            (ResumableDatabricksSubmitRunOperator, DatabricksSubmitRunOperator, {"notebook_task": NOTEBOOK}),
            (ResumableDatabricksRunNowOperator, DatabricksRunNowOperator, {"job_id": 1}),
        ],
    )
    def test_takes_every_stock_argument(self, ours: type, stock: type, required: dict[str, Any]) -> None:
        """Every argument of the stock constructor is accepted, plus the resumable ones."""
        stock_args = {
            name: param.default
            for name, param in inspect.signature(stock.__init__).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in required
        }
        resumable = {"max_resumes": 1, "resume_delay": 0, "cancel_on_user_stop": False}
        op = ours(task_id="t", **required, **stock_args, **resumable)
        assert op.max_resumes == 1 and op.cancel_on_user_stop is False

    def test_polling_period_paces_the_resumable_poll(self) -> None:
        """polling_period_seconds is the mixin's poll interval."""
        op = submit_run(polling_period_seconds=7)
        assert op.resumable_poll_interval == 7.0


class TestFreshSubmit:
    """A first try: one run, our token, the stock XComs."""

    def test_submit_run_sends_our_token(self, fake: FakeDatabricks) -> None:
        """runs/submit carries the record's submission token as idempotency_token; XComs as stock."""
        context = task_context()
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator):
            assert submit_run().execute(context) is None
        record = record_of(context)
        assert submitted_tokens(fake) == [record["token"]]
        run_id = fake.submissions()[0].run_id
        assert record["external_id"] == run_id and record["phase"] == "completed"
        assert context["ti"].xcoms == {"run_id": run_id, "run_page_url": fake.get_run(run_id)["run_page_url"]}

    def test_run_now_sends_our_token(self, fake: FakeDatabricks, job: int) -> None:
        """run-now resolves job_name, carries our token, and records the run under the run-now key."""
        context = task_context()
        with finish_on_status_call(fake, ResumableDatabricksRunNowOperator):
            run_now(job_parameters={"day": "1"}).execute(context)
        (entry,) = fake.submissions()
        assert entry.body["job_id"] == job and entry.body["job_parameters"] == {"day": "1"}
        assert entry.body["idempotency_token"] == record_of(context)["token"]
        assert context["task_state_store"].get("databricks_run_now_id") == entry.run_id

    def test_spec_is_not_stored(self, fake: FakeDatabricks) -> None:
        """Only ids, tokens and hashes reach the task state store, never the notebook path."""
        context = task_context()
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator):
            submit_run(run_name="secret-name").execute(context)
        stored = str(context["task_state_store"].values)
        assert "secret-name" not in stored and "/Shared/etl" not in stored

    def test_on_kill_does_not_cancel(self, fake: FakeDatabricks) -> None:
        """on_kill (SIGTERM) only records the stop: no runs/cancel from the signal handler."""
        op = submit_run()
        op.run_id = 1234
        op.on_kill()
        assert fake.ledger() == []


class TestUserToken:
    """A user's idempotency_token is a namespace, not a fixed token (apache/airflow#64828)."""

    def test_retry_after_failed_run_gets_a_new_run(self, fake: FakeDatabricks) -> None:
        """With a fixed user token, the retry after a failed run still creates a new run."""
        store = InMemoryTaskStateStore()
        first = task_context(store, try_number=1)
        with (
            finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator, result="FAILED"),
            pytest.raises(JobFailedError),
        ):
            submit_run(idempotency_token="nightly-etl").execute(first)
        second = task_context(store, try_number=2)
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator, call=2):
            submit_run(idempotency_token="nightly-etl").execute(second)
        runs = [entry.run_id for entry in fake.submissions()]
        tokens = submitted_tokens(fake)
        assert len(runs) == 2 and runs[0] != runs[1]
        assert len(set(tokens)) == 2 and "nightly-etl" not in tokens
        assert all(token.startswith("nightly-etl-") and len(token) <= 64 for token in tokens)
        assert record_of(second)["generation"] == 2

    def test_stock_operator_gets_the_old_failed_run_back(self, fake: FakeDatabricks) -> None:
        """The stock behaviour we fix: the retry's fixed token returns the failed run, no new run."""
        fake.set_lifecycle("clock", run_duration=0, final_result="FAILED")
        store = InMemoryTaskStateStore()
        stock = {"notebook_task": NOTEBOOK, "idempotency_token": "nightly-etl", "polling_period_seconds": 0}
        for try_number in (1, 2):
            op = DatabricksSubmitRunOperator(task_id="job", databricks_retry_args=HOOK_RETRY_ARGS, **stock)
            with pytest.raises(AirflowException):
                op.execute(task_context(store, try_number=try_number))
        assert len(fake.submissions()) == 1
        assert len(fake.calls("runs/submit")) == 2


class TestStockIdAdoption:
    """Ids the stock operators stored are adopted after the class swap."""

    def test_active_stock_run_is_reconnected(self, fake: FakeDatabricks) -> None:
        """A running run under databricks_run_id is polled, not resubmitted, and becomes ours."""
        run_id = fake.state.handle_api("POST", "2.2/jobs/runs/submit", {"notebook_task": NOTEBOOK})[1][
            "run_id"
        ]
        store = InMemoryTaskStateStore()
        store.set("databricks_run_id", run_id)
        context = task_context(store, try_number=2)
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator, call=2) as calls:
            submit_run().execute(context)
        assert len(fake.submissions()) == 1 and set(calls) == {run_id}
        assert record_of(context)["external_id"] == run_id
        assert context["ti"].xcoms["run_id"] == run_id

    def test_succeeded_stock_run_is_adopted_without_polling(self, fake: FakeDatabricks, job: int) -> None:
        """A succeeded run under databricks_run_now_id returns at once, with the XComs pushed."""
        run_id = fake.state.handle_api("POST", "2.2/jobs/run-now", {"job_id": job})[1]["run_id"]
        fake.finish_run(run_id)
        store = InMemoryTaskStateStore()
        store.set("databricks_run_now_id", run_id)
        context = task_context(store, try_number=2)
        run_now().execute(context)
        assert len(fake.submissions()) == 1
        assert {e.endpoint for e in fake.ledger()[1:]} == {"runs/get"}
        assert context["ti"].xcoms["run_id"] == run_id and "run_page_url" in context["ti"].xcoms


class TestTransientErrors:
    """429 and 5xx are retried with back-off; a lost response never becomes a second run."""

    def test_throttled_submit_is_retried_by_the_hook(self, fake: FakeDatabricks) -> None:
        """Two 429 answers, then success: one run, three identical requests."""
        fake.inject_fault("runs/submit", 429, count=2)
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator):
            submit_run().execute(task_context())
        assert len(fake.submissions()) == 1
        assert len(set(submitted_tokens(fake))) == 1 and len(submitted_tokens(fake)) == 3

    def test_5xx_beyond_the_hook_retries_is_retried_by_us(self, fake: FakeDatabricks) -> None:
        """Three 503s exhaust the hook's retries; cloud_retry tries again with the same token."""
        fake.inject_fault("runs/submit", 503, count=3)
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator):
            submit_run().execute(task_context())
        assert len(fake.submissions()) == 1 and len(submitted_tokens(fake)) == 4
        assert len(set(submitted_tokens(fake))) == 1

    def test_lost_responses_create_one_run(self, fake: FakeDatabricks, job: int) -> None:
        """run-now carried out three times but every answer lost: still exactly one run."""
        fake.inject_fault("run-now", 500, count=3, after_handling=True)
        context = task_context()
        with finish_on_status_call(fake, ResumableDatabricksRunNowOperator):
            run_now().execute(context)
        assert len(fake.submissions()) == 1 and len(fake.calls("run-now")) == 4
        assert record_of(context)["external_id"] == fake.submissions()[0].run_id

    def test_status_errors_while_polling_are_retried(self, fake: FakeDatabricks) -> None:
        """runs/get answering 503 three times while polling does not fail the try."""
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator, call=2):
            fake.inject_fault("runs/get", 503, count=3)
            submit_run().execute(task_context())
        assert len(fake.submissions()) == 1

    def test_client_error_is_not_retried(self, fake: FakeDatabricks) -> None:
        """A 403 fails at once: one request, no retry of ours."""
        fake.inject_fault("runs/submit", 403)
        with pytest.raises(DatabricksApiError):
            submit_run().execute(task_context())
        assert len(fake.calls("runs/submit")) == 1

    @pytest.mark.parametrize(
        ("error", "transient"),
        [
            (DatabricksApiError("x", http_status_code=429), True),
            (DatabricksApiError("x", http_status_code=502), True),
            (DatabricksApiError("x", http_status_code=400), False),
            (requests.ConnectionError("reset"), True),
            (requests.Timeout("slow"), True),
            (AirflowException("Job ID for job name nightly can not be found"), False),
            (ConnectionResetError("reset"), True),
        ],
    )
    def test_classification(self, error: BaseException, transient: bool) -> None:
        """is_transient_error answers True for throttling, 5xx and connection errors only."""
        assert submit_run().is_transient_error(error) is transient

    @pytest.mark.parametrize("last", [503, 429, "connection refused"])
    def test_hook_giving_up_is_transient(self, last: int | str) -> None:
        """The hook's AirflowException after its own retries is transient: its last error was."""
        if isinstance(last, int):
            response = requests.Response()
            response.status_code = last
            error: Exception = requests.HTTPError(response=response)
        else:
            error = requests.ConnectionError(last)

        def fail() -> None:
            raise error

        with pytest.raises(RetryError) as gave_up:
            Retrying(stop=stop_after_attempt(1))(fail)
        try:
            raise AirflowException("API requests to Databricks failed 3 times. Giving up.") from gave_up.value
        except AirflowException as wrapped:
            assert submit_run().is_transient_error(wrapped)


class TestExpiredRun:
    """A recorded run whose history expired: the next try starts a fresh generation."""

    @staticmethod
    def _recorded(run_id: int) -> InMemoryTaskStateStore:
        store = InMemoryTaskStateStore()
        identity = TaskIdentity("dag", "manual__1", "job")
        record = JobRecord.new_intent(identity, generation=1, fingerprint=None)
        # Submitted a day ago: a run that old which the service does not know has expired (a young
        # one may only not be visible yet, and is waited for).
        submitted = record.evolve(external_id=run_id, phase="submitted", created_at=A_DAY_AGO)
        store.set(RECORD_KEY, seal_record(identity, submitted))
        store.set("databricks_run_id", run_id)
        return store

    @pytest.fixture(params=[404, 400], ids=["404", "400-does-not-exist"])
    def fake(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[FakeDatabricks]:
        """A fake that answers 404, or 400 INVALID_PARAMETER_VALUE, for a run it does not know."""
        with FakeDatabricks(missing_run_status=request.param) as server:
            for key, value in databricks_connection_env(server.url).items():
                monkeypatch.setenv(key, value)
            yield server

    def test_expired_run_starts_generation_two(self, fake: FakeDatabricks) -> None:
        """runs/get says "does not exist": JobNotFoundError, then one fresh submission."""
        old = fake.state.handle_api("POST", "2.2/jobs/runs/submit", {"notebook_task": NOTEBOOK})[1]["run_id"]
        fake.expire_run(old)
        context = task_context(self._recorded(old), try_number=2)
        with finish_on_status_call(fake, ResumableDatabricksSubmitRunOperator, call=2):
            submit_run().execute(context)
        record = record_of(context)
        assert record["generation"] == 2 and record["external_id"] != old
        assert len(fake.submissions()) == 2

    def test_get_job_status_raises_job_not_found(self, fake: FakeDatabricks) -> None:
        """The status hook turns the service's "does not exist" into JobNotFoundError."""
        with pytest.raises(JobNotFoundError, match="Databricks run 999999"):
            submit_run().get_job_status(999999, task_context())


class TestFailure:
    """A run that ends without success."""

    def test_failure_message_carries_the_run_and_task_errors(self, fake: FakeDatabricks) -> None:
        """JobFailedError names the run, its state, its message, its failed task's error and its page."""
        context = task_context()
        with (
            finish_on_status_call(
                fake, ResumableDatabricksSubmitRunOperator, result="FAILED", message="boom"
            ),
            pytest.raises(JobFailedError) as failed,
        ):
            submit_run().execute(context)
        run_id = fake.submissions()[0].run_id
        text = str(failed.value)
        assert f"Databricks job {run_id}" in text and "TERMINATED:FAILED" in text
        assert "boom" in text and "task etl (run" in text
        assert fake.get_run(run_id)["run_page_url"] in text
        assert record_of(context)["phase"] == "submitted"

    def test_endpoint_not_found_is_not_an_expired_run(self, fake: FakeDatabricks) -> None:
        """A 404 ENDPOINT_NOT_FOUND (wrong host or path) is an error, not "start over"."""
        fake.inject_fault("runs/get", 404, error_code="ENDPOINT_NOT_FOUND", message="No API found")
        with pytest.raises(DatabricksApiError):
            submit_run().get_job_status(1, task_context())


class TestWaitForTermination:
    """wait_for_termination=False ends the try once the run exists, as in stock."""

    def test_returns_without_waiting_and_never_cancels(self, fake: FakeDatabricks) -> None:
        """The run keeps running, the XComs are pushed, the record is completed."""
        context = task_context()
        submit_run(wait_for_termination=False).execute(context)
        run_id = fake.submissions()[0].run_id
        assert fake.get_run(run_id)["state"]["life_cycle_state"] in ("PENDING", "RUNNING")
        assert fake.cancels() == [] and context["ti"].xcoms["run_id"] == run_id
        assert record_of(context)["phase"] == "completed"


class TestCancelPreviousRuns:
    """cancel_previous_runs must never cancel the run our own earlier try created."""

    def test_fresh_submission_cancels_previous_runs(self, fake: FakeDatabricks, job: int) -> None:
        """A new intent cancels the job's active runs once, before run-now."""
        with finish_on_status_call(fake, ResumableDatabricksRunNowOperator):
            run_now(cancel_previous_runs=True).execute(task_context())
        assert [e.endpoint for e in fake.ledger()[:3]] == ["jobs/list", "runs/cancel-all", "run-now"]

    def test_resubmitted_intent_does_not_cancel_its_own_run(self, fake: FakeDatabricks, job: int) -> None:
        """An intent left without id by a crashed try is resubmitted without cancel-all."""
        store = InMemoryTaskStateStore()
        identity = TaskIdentity("dag", "manual__1", "job")
        intent = JobRecord.new_intent(identity, generation=1, fingerprint=None)
        store.set(RECORD_KEY, seal_record(identity, intent))
        created = fake.state.handle_api(
            "POST", "2.2/jobs/run-now", {"job_id": job, "idempotency_token": intent.token}
        )[1]["run_id"]
        context = task_context(store, try_number=2)
        with finish_on_status_call(fake, ResumableDatabricksRunNowOperator):
            run_now(cancel_previous_runs=True).execute(context)
        assert fake.calls("runs/cancel-all") == [] and fake.cancels() == []
        assert len(fake.submissions()) == 1 and record_of(context)["external_id"] == created


class TestRepair:
    """run-now's repair_run: a failed run is repaired once and waited for again."""

    def test_failed_run_is_repaired_and_succeeds(self, fake: FakeDatabricks, job: int) -> None:
        """The first end is FAILED; the repair re-runs it; the try succeeds on the same run."""
        context = task_context()
        with (
            finish_on_status_call(fake, ResumableDatabricksRunNowOperator, call=1, result="FAILED"),
            finish_on_status_call(fake, ResumableDatabricksRunNowOperator, call=2),
        ):
            run_now(repair_run=True).execute(context)
        (run,) = fake.runs()
        assert len(run["repair_history"]) == 2 and run["state"]["result_state"] == "SUCCESS"
        assert record_of(context)["phase"] == "completed"

    def test_repair_reason_must_match(self, fake: FakeDatabricks, job: int) -> None:
        """With repair reasons given, a failure that matches none is not repaired."""
        op = run_now(repair_run=True, databricks_repair_reason_new_settings={"quota": {}})
        with (
            finish_on_status_call(fake, ResumableDatabricksRunNowOperator, result="FAILED", message="OOM"),
            pytest.raises(JobFailedError, match="OOM"),
        ):
            op.execute(task_context())
        assert fake.calls("runs/repair") == []

    def test_run_under_repair_is_reconnected(self, fake: FakeDatabricks, job: int) -> None:
        """A retry that finds its failed run under repair reconnects instead of resubmitting."""
        context = task_context()
        with (
            finish_on_status_call(fake, ResumableDatabricksRunNowOperator, result="FAILED"),
            pytest.raises(JobFailedError),
        ):
            run_now().execute(context)
        run_id = fake.submissions()[0].run_id
        fake.repair_run(run_id)
        retry = task_context(context["task_state_store"], try_number=2)
        with finish_on_status_call(fake, ResumableDatabricksRunNowOperator, call=2):
            run_now().execute(retry)
        assert len(fake.submissions()) == 1 and record_of(retry)["external_id"] == run_id
