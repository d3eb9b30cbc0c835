"""ResumableAthenaOperator: the contract kit against moto with the Athena job kind, and stock parity."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar
from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.athena import AthenaOperator
from airflow.providers.amazon.aws.triggers.athena import AthenaTrigger
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError
from airflow_resumable.providers.amazon.athena import ResumableAthenaOperator, ResumableAthenaTrigger
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing.aws import MotoJobDriver, aws_client, aws_connection_env
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from tests.providers.amazon.helpers import (
    FAST,
    XComParity,
    first_event,
    rebuilt_trigger,
    record,
    run_task,
    submit_requests,
    xcoms,
)
from tests.providers.amazon.helpers import context as _context
from tests.providers.amazon.helpers import task_context as _task_context

# The kind registers itself (register_job_kind) when imported, as a maintainer's conftest would.
from airflow_resumable.testing import _aws_jobs_athena  # noqa: F401  # isort: skip

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing.aws import MotoServer

#: The stock XComs: the query execution id and the Query Results link.
ATHENA_XCOMS = frozenset({"return_value", "_athena_query_results", "_link_AthenaQueryResultsLink"})
#: Every query state: (active, succeeded).
STATES = {
    "QUEUED": (True, False),
    "RUNNING": (True, False),
    "SUCCEEDED": (False, True),
    "FAILED": (False, False),
    "CANCELLED": (False, False),
}


def context() -> Any:
    """A minimal task context, typed as the operator's hooks take Airflow's ``Context``."""
    return _context()


def task_context(store: InMemoryTaskStateStore | None = None, **options: Any) -> Any:
    """The helpers' task context (a ``ti`` that records XComs), typed as Airflow's ``Context``."""
    return _task_context(store, **options)


class AthenaDriver(MotoJobDriver):
    """The kit's driver over the Athena kind."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "athena")
        self.server = server


@pytest.fixture
def cloud(moto: MotoServer) -> AthenaDriver:
    """A reset controller."""
    return AthenaDriver(moto)


def kwargs(marker: str = "v1", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments; ``marker`` is part of the templated query."""
    return {
        "query": f"SELECT * FROM events WHERE day = '{marker}'",
        "database": "analytics",
        "output_location": "s3://athena-results/airflow/",
        "sleep_time": 0.001,
        **extra,
    }


class TestResumableAthenaOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is part of the templated query."""

    operator_class = ResumableAthenaOperator
    expected_xcom_keys = ATHENA_XCOMS
    deferrable_kwargs: ClassVar[dict[str, Any] | None] = {
        "deferrable": True,
        "sleep_time": 0.05,
        "max_polling_attempts": 1000,
    }

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(spec_marker)

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """The stock execute returns the query execution id and persists the Query Results link."""
        return {
            "return_value": external_id,
            "_athena_query_results": mock.ANY,
            "_link_AthenaQueryResultsLink": mock.ANY,
        }


class TestStockParity:
    """The same request, return value and XComs as the stock operator."""

    def test_same_xcoms_and_request_as_the_stock_operator(self, cloud: AthenaDriver) -> None:
        """Stock and resumable runs push the same keys and send the same request but the token."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = run_task(AthenaOperator, **kwargs())
        ours = run_task(ResumableAthenaOperator, **kwargs())
        assert stock.task("job").state == ours.task("job").state == "success"
        assert set(xcoms(stock)) == set(xcoms(ours)) == ATHENA_XCOMS
        first, second = submit_requests(cloud.server, "StartQueryExecution")
        first.pop("ClientRequestToken")  # botocore makes one up for every stock call
        assert second.pop("ClientRequestToken") == record(ours)["token"]
        assert first == second
        assert first["QueryExecutionContext"] == {"Database": "analytics", "Catalog": "AwsDataCatalog"}
        assert first["ResultConfiguration"] == {"OutputLocation": "s3://athena-results/airflow/"}
        assert xcoms(ours)["return_value"] == cloud.submitted_ids()[1]


class TestStates:
    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, state: str, expected: tuple[bool, bool]) -> None:
        """Only SUCCEEDED succeeds; QUEUED and RUNNING are active."""
        op = ResumableAthenaOperator(task_id="q", **kwargs())
        assert (op.is_job_active(state), op.is_job_succeeded(state)) == expected

    def test_unknown_state_is_waited_on(self) -> None:
        """A state Athena may add later is active, never resubmitted."""
        assert ResumableAthenaOperator(task_id="q", **kwargs()).is_job_active("PAUSED")

    def test_expired_query_is_not_found(self, cloud: AthenaDriver) -> None:
        """A query past Athena's history raises JobNotFoundError (InvalidRequestException)."""
        query_id = aws_client(cloud.server.url, "athena").start_query_execution(QueryString="SELECT 1")[
            "QueryExecutionId"
        ]
        cloud.expire(query_id)
        with pytest.raises(JobNotFoundError, match=query_id):
            ResumableAthenaOperator(task_id="q", **kwargs()).get_job_status(query_id, context())

    def test_failure_reason_in_the_error(self, cloud: AthenaDriver) -> None:
        """A failed query fails the try with Athena's StateChangeReason."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: Any, index: int) -> None:
            cloud.server.finish(str(external_id), succeeded=False, reason="TABLE_NOT_FOUND: events")

        outcome = run_task(ResumableAthenaOperator, ScenarioProbe(cloud, on_poll), retries=0, **kwargs())
        assert outcome.task("job").state == "failed"
        op = ResumableAthenaOperator(task_id="q", **kwargs())
        query_id = str(cloud.submitted_ids()[0])
        assert op.get_job_status(query_id, context()) == "FAILED"
        error = JobFailedError(
            op.service_name, query_id, "FAILED", op.describe_failure(query_id, "FAILED", context())
        )
        assert "TABLE_NOT_FOUND: events" in str(error)


class TestInvalidSpec:
    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"query": ""}, "query"),
            ({"query": None}, "query"),
            ({"workgroup": " "}, "workgroup"),
            ({"output_location": "/tmp/results"}, "output_location"),
            ({"query_execution_context": ["Database"]}, "query_execution_context"),
            ({"result_configuration": "s3://x/"}, "result_configuration"),
        ],
    )
    def test_invalid_argument(self, cloud: AthenaDriver, override: dict[str, Any], argument: str) -> None:
        """Bad input is refused before any AWS call, naming the argument."""
        op = ResumableAthenaOperator(task_id="q", **{**kwargs(), **override})
        with pytest.raises(InvalidJobSpecError, match=argument):
            op.job_request()
        assert cloud.server.ledger() == []


class TestCancel:
    @pytest.mark.parametrize("conn_id", [None, "", "no_such_connection"])
    def test_recipe_without_a_usable_connection_is_refused(self, conn_id: str | None) -> None:
        """No connection, or one that does not exist: refused, never the component's own credentials."""
        from airflow_resumable.exceptions import RecipeRefusedError
        from airflow_resumable.providers.amazon.athena import cancel_athena_query_by_recipe

        with pytest.raises(RecipeRefusedError, match=r"aws_conn_id|no_such_connection"):
            cancel_athena_query_by_recipe("q-1", aws_conn_id=conn_id)

    def test_canceller_client_has_the_custodian_deadline(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Each custodian call is bounded by custodian_call_timeout_seconds (12 s: 2 s + 4 s, 2 attempts)."""
        from airflow_resumable.providers.amazon.athena import custodian_client

        monkeypatch.setenv("AIRFLOW__RESUMABLE__CUSTODIAN_CALL_TIMEOUT_SECONDS", "12")
        for key, value in aws_connection_env("http://127.0.0.1:9", "aws_custodian").items():
            monkeypatch.setenv(key, value)
        client = custodian_client("athena", "aws_custodian", None, canceller="aws_athena_query")
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (2.0, 4.0)
        assert client.meta.config.retries == {"total_max_attempts": 2, "mode": "standard"}

    def test_recipe_stops_the_query(self, cloud: AthenaDriver) -> None:
        """The custodian's canceller stops an active query through the recipe's connection."""
        from airflow_resumable.providers.amazon.athena import cancel_athena_query_by_recipe

        query_id = aws_client(cloud.server.url, "athena").start_query_execution(
            QueryString="SELECT 1", ClientRequestToken="x" * 32
        )["QueryExecutionId"]
        recipe = ResumableAthenaOperator(task_id="q", **kwargs()).cancel_recipe(context())
        assert recipe is not None
        name, args = recipe
        assert name == "aws_athena_query"
        cancel_athena_query_by_recipe(query_id, **args)  # type: ignore[arg-type]  # JSON args of the recipe
        assert cloud.server.job(query_id)["state"] == "CANCELLED"
        assert cloud.cancelled_ids() == [query_id]


# --------------------------------------------------------------------------- deferrable
def _deferrable(**extra: Any) -> ResumableAthenaOperator:
    """A deferrable operator with fast retries and a fast trigger."""
    return ResumableAthenaOperator(
        task_id="job", deferrable=True, **{**kwargs(), **FAST, "max_polling_attempts": 1000, **extra}
    )


def _defer(op: Any, context: dict[str, Any]) -> Any:
    """Run ``execute`` until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete" and deferred.value.timeout is None
    return deferred.value.trigger


class TestDeferrable:
    """deferrable=True: the id recorded first, our trigger (the stock one with an on_kill), every way back."""

    def test_id_is_recorded_before_deferring(self, cloud: AthenaDriver) -> None:
        """At TaskDeferred the record holds the query; the trigger extends the stock AthenaTrigger."""
        context = task_context()
        trigger = _defer(_deferrable(), context)
        (query_id,) = cloud.submitted_ids()
        store = context["task_state_store"]
        assert store.get(RECORD_KEY)["phase"] == "submitted"
        assert store.get("athena_query_execution_id") == query_id
        assert type(trigger) is ResumableAthenaTrigger and isinstance(trigger, AthenaTrigger)
        classpath, arguments = trigger.serialize()
        assert classpath == "airflow_resumable.providers.amazon.athena.ResumableAthenaTrigger"
        assert arguments["query_execution_id"] == query_id and arguments["ledger_key"]
        assert rebuilt_trigger(trigger).serialize() == (classpath, arguments)

    def test_execute_complete_finishes(self, cloud: AthenaDriver) -> None:
        """The trigger fires once the query succeeded; execute_complete returns its id, record completed."""
        context = task_context()
        trigger = _defer(_deferrable(), context)
        (query_id,) = cloud.submitted_ids()
        cloud.finish(query_id, succeeded=True)
        event = first_event(trigger)
        assert event == {"status": "success", "value": query_id}
        resumed = task_context(context["task_state_store"], xcoms=context["ti"].xcoms)
        assert _deferrable().execute_complete(resumed, event) == query_id
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"

    def test_failure_event_fails_with_the_reason(self, cloud: AthenaDriver) -> None:
        """A failed query: execute_complete raises JobFailedError with Athena's StateChangeReason."""
        store = InMemoryTaskStateStore()
        trigger = _defer(_deferrable(), task_context(store))
        cloud.server.finish(str(cloud.submitted_ids()[0]), succeeded=False, reason="SYNTAX_ERROR: line 1")
        event = first_event(trigger)
        assert event["status"] == "error"
        with pytest.raises(JobFailedError, match="SYNTAX_ERROR"):
            _deferrable().execute_complete(task_context(store), event)

    @pytest.mark.parametrize(("server_state", "stopped"), [("failed", True), (None, False)])
    def test_on_kill_stops_only_after_a_user_stop(
        self, cloud: AthenaDriver, server_state: str | None, stopped: bool
    ) -> None:
        """Marked failed: StopQueryExecution; cleared (no state yet): the query is left running."""
        trigger = rebuilt_trigger(_defer(_deferrable(), task_context()))
        trigger.task_instance = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state)
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=InMemoryJobLedger()):
            asyncio.run(trigger.on_kill())
        query_id = str(cloud.submitted_ids()[0])
        assert cloud.cancelled_ids() == ([query_id] if stopped else [])
        assert (cloud.server.job(query_id)["state"] == "CANCELLED") is stopped

    def test_real_deferred_run(self, cloud: AthenaDriver) -> None:
        """Through dag.test(): the task defers, the trigger sees the query end; stock XComs, one query."""
        cloud.server.set_lifecycle("clock", run_duration=0.2, reads_per_state=1)
        arguments = {**kwargs(), "deferrable": True, "sleep_time": 0.05, "max_polling_attempts": 1000}
        stock = run_task(AthenaOperator, retries=0, **arguments)
        ours = run_task(ResumableAthenaOperator, retries=0, **arguments)
        assert stock.task("job").state == ours.task("job").state == "success"
        stock_query, our_query = cloud.submitted_ids()
        assert record(ours)["phase"] == "completed" and record(ours)["external_id"] == our_query
        assert set(xcoms(stock)) == set(xcoms(ours)) == ATHENA_XCOMS
        assert (xcoms(stock)["return_value"], xcoms(ours)["return_value"]) == (stock_query, our_query)
