"""ResumableRedshiftDataOperator: the contract kit against moto with the Redshift Data kind; stock parity."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar
from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator
from airflow.providers.amazon.aws.triggers.redshift_data import RedshiftDataTrigger
from airflow.sdk.exceptions import TaskDeferred

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, JobNotFoundError
from airflow_resumable.providers.amazon.redshift_data import (
    ResumableRedshiftDataOperator,
    ResumableRedshiftDataTrigger,
    cancel_redshift_statement_by_recipe,
)
from airflow_resumable.record import RECORD_KEY
from airflow_resumable.testing.aws import MotoJobDriver, aws_client
from airflow_resumable.testing.contract import ResumableOperatorContract, ScenarioProbe
from airflow_resumable.testing.state import FakeTaskInstance, InMemoryJobLedger, InMemoryTaskStateStore
from tests.providers.amazon.helpers import (
    FAST,
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
from airflow_resumable.testing import _aws_jobs_redshift_data  # noqa: F401  # isort: skip

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing.aws import MotoServer

#: Every statement state: (active, succeeded).
STATES = {
    "SUBMITTED": (True, False),
    "PICKED": (True, False),
    "STARTED": (True, False),
    "FINISHED": (False, True),
    "FAILED": (False, False),
    "ABORTED": (False, False),
}
SESSION = "5f1e7c3a-0b6d-4a4e-9f1e-2d3c4b5a6978"


def context() -> Any:
    """A minimal task context, typed as the operator's hooks take Airflow's ``Context``."""
    return _context()


def task_context(store: InMemoryTaskStateStore | None = None, **options: Any) -> Any:
    """The helpers' task context (a ``ti`` that records XComs), typed as Airflow's ``Context``."""
    return _task_context(store, **options)


class RedshiftDataDriver(MotoJobDriver):
    """The kit's driver over the Redshift Data kind."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "redshift-data")
        self.server = server

    def execute(self, sql: str = "SELECT 1") -> str:
        """A statement run outside the operator."""
        client = aws_client(self.server.url, "redshift-data")
        return str(client.execute_statement(Sql=sql, Database="dev", ClusterIdentifier="analytics")["Id"])


@pytest.fixture
def cloud(moto: MotoServer) -> RedshiftDataDriver:
    """A reset controller."""
    return RedshiftDataDriver(moto)


def kwargs(marker: str = "v1", **extra: Any) -> dict[str, Any]:
    """The operator's own arguments; ``marker`` is part of the templated SQL."""
    return {
        "sql": f"INSERT INTO daily SELECT * FROM events WHERE day = '{marker}'",
        "database": "dev",
        "cluster_identifier": "analytics",
        "db_user": "airflow",
        "poll_interval": 0.001,
        **extra,
    }


class TestResumableRedshiftDataOperatorContract(ResumableOperatorContract):
    """The resumable contract; the spec marker is part of the templated SQL."""

    operator_class = ResumableRedshiftDataOperator
    deferrable_kwargs: ClassVar[dict[str, Any] | None] = {"deferrable": True, "poll_interval": 0.05}

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(spec_marker)

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """The stock execute returns the list of statement ids; no link, no session without a session."""
        return {"return_value": [external_id]}


class TestStockParity:
    """The same request, return value and XComs as the stock operator."""

    def test_same_result_and_request_as_the_stock_operator(self, cloud: RedshiftDataDriver) -> None:
        """Stock and resumable runs return the statement ids and send the same request but the token."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = run_task(RedshiftDataOperator, **kwargs())
        ours = run_task(ResumableRedshiftDataOperator, **kwargs())
        assert stock.task("job").state == ours.task("job").state == "success"
        stock_id, our_id = cloud.submitted_ids()
        assert (xcoms(stock), xcoms(ours)) == ({"return_value": [stock_id]}, {"return_value": [our_id]})
        first, second = submit_requests(cloud.server, "ExecuteStatement")
        first.pop("ClientToken", None)  # botocore makes one up for every stock call
        assert second.pop("ClientToken") == record(ours)["token"]
        assert first == second

    def test_return_sql_result_returns_the_results(self, cloud: RedshiftDataDriver) -> None:
        """return_sql_result: the GetStatementResult answers, as the stock operator returns them."""
        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        stock = run_task(RedshiftDataOperator, **kwargs(return_sql_result=True))
        ours = run_task(ResumableRedshiftDataOperator, **kwargs(return_sql_result=True))
        (stock_result,), (our_result,) = xcoms(stock)["return_value"], xcoms(ours)["return_value"]
        assert stock_result["Records"] == our_result["Records"] != []
        assert set(stock_result) == set(our_result)

    def test_session_id_is_pushed(self, cloud: RedshiftDataDriver) -> None:
        """A statement answered with a SessionId pushes the stock session_id XCom."""
        op = ResumableRedshiftDataOperator(task_id="job", **kwargs(session_keep_alive_seconds=60))
        ctx = task_context()
        client = mock.Mock()
        client.execute_statement.return_value = {"Id": "stmt-1", "SessionId": SESSION}
        with mock.patch.object(type(op), "hook", mock.PropertyMock(return_value=mock.Mock(conn=client))):
            op.submission_token = "ar-" + "0" * 40
            assert op.submit_job(ctx) == "stmt-1"
        assert ctx["ti"].xcoms["session_id"] == SESSION
        assert client.execute_statement.call_args.kwargs["ClientToken"] == "ar-" + "0" * 40

    def test_a_list_of_sql_is_one_batch(self) -> None:
        """A list of SQL goes to BatchExecuteStatement with the token (moto lacks it: a mock client)."""
        op = ResumableRedshiftDataOperator(task_id="job", **kwargs(sql=["SELECT 1", "SELECT 2"]))
        client = mock.Mock()
        client.batch_execute_statement.return_value = {"Id": "batch-1"}
        client.describe_statement.return_value = {
            "Id": "batch-1",
            "Status": "FINISHED",
            "SubStatements": [{"Id": "batch-1:1"}, {"Id": "batch-1:2"}],
        }
        with mock.patch.object(type(op), "hook", mock.PropertyMock(return_value=mock.Mock(conn=client))):
            op.submission_token = "ar-" + "1" * 40
            assert op.submit_job(task_context()) == "batch-1"
            assert op.get_job_result("batch-1", context()) == ["batch-1:1", "batch-1:2"]
        call = client.batch_execute_statement.call_args.kwargs
        assert call["Sqls"] == ["SELECT 1", "SELECT 2"] and call["ClientToken"] == "ar-" + "1" * 40


class TestStates:
    @pytest.mark.parametrize(("state", "expected"), STATES.items())
    def test_state(self, state: str, expected: tuple[bool, bool]) -> None:
        """Only FINISHED succeeds; SUBMITTED, PICKED and STARTED are active."""
        op = ResumableRedshiftDataOperator(task_id="q", **kwargs())
        assert (op.is_job_active(state), op.is_job_succeeded(state)) == expected

    def test_expired_statement_is_not_found(self, cloud: RedshiftDataDriver) -> None:
        """The stock NOT_FOUND pseudo-state becomes JobNotFoundError."""
        statement_id = cloud.execute()
        cloud.expire(statement_id)
        with pytest.raises(JobNotFoundError, match=statement_id):
            ResumableRedshiftDataOperator(task_id="q", **kwargs()).get_job_status(statement_id, context())

    def test_failure_reason_in_the_error(self, cloud: RedshiftDataDriver) -> None:
        """A failed statement fails the try with the statement's Error."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: Any, index: int) -> None:
            cloud.server.finish(str(external_id), succeeded=False, reason='relation "daily" does not exist')

        outcome = run_task(
            ResumableRedshiftDataOperator, ScenarioProbe(cloud, on_poll), retries=0, **kwargs()
        )
        assert outcome.task("job").state == "failed"
        op = ResumableRedshiftDataOperator(task_id="q", **kwargs())
        statement_id = str(cloud.submitted_ids()[0])
        assert op.get_job_status(statement_id, context()) == "FAILED"
        assert op.describe_failure(statement_id, "FAILED", context()) == 'relation "daily" does not exist'


class TestInvalidSpec:
    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"sql": ""}, "sql"),
            ({"sql": []}, "sql"),
            ({"sql": ["SELECT 1", " "]}, "sql"),
            ({"workgroup_name": "wg"}, "exactly one"),
            ({"cluster_identifier": None}, "exactly one"),
            ({"cluster_identifier": None, "session_id": "not-a-uuid"}, "session_id"),
            ({"session_keep_alive_seconds": 86401}, "session_keep_alive_seconds"),
            ({"database": " "}, "database"),
            ({"parameters": {"name": "day"}}, "parameters"),
        ],
    )
    def test_invalid_argument(
        self, cloud: RedshiftDataDriver, override: dict[str, Any], argument: str
    ) -> None:
        """Bad input is refused before any AWS call, naming the argument."""
        op = ResumableRedshiftDataOperator(task_id="q", **{**kwargs(), **override})
        with pytest.raises(InvalidJobSpecError, match=argument):
            op.job_request()
        assert cloud.server.ledger() == []


class TestCancel:
    @pytest.mark.parametrize("conn_id", [None, "", "no_such_connection"])
    def test_recipe_without_a_usable_connection_is_refused(self, conn_id: str | None) -> None:
        """No connection, or one that does not exist: refused, never the component's own credentials."""
        from airflow_resumable.exceptions import RecipeRefusedError
        from airflow_resumable.providers.amazon.redshift_data import cancel_redshift_statement_by_recipe

        with pytest.raises(RecipeRefusedError, match=r"aws_conn_id|no_such_connection"):
            cancel_redshift_statement_by_recipe("s-1", aws_conn_id=conn_id)

    def test_recipe_cancels_the_statement(self, cloud: RedshiftDataDriver) -> None:
        """The custodian's canceller cancels an active statement through the recipe's connection."""
        statement_id = cloud.execute()
        recipe = ResumableRedshiftDataOperator(task_id="q", **kwargs()).cancel_recipe(context())
        assert recipe is not None
        name, args = recipe
        assert name == "aws_redshift_data_statement"
        cancel_redshift_statement_by_recipe(statement_id, **args)  # type: ignore[arg-type]  # JSON args
        assert cloud.server.job(statement_id)["state"] == "ABORTED"

    def test_cancel_of_an_ended_statement_is_quiet(self, cloud: RedshiftDataDriver) -> None:
        """CancelStatement answers ValidationException for a finished statement: nothing to do."""
        statement_id = cloud.execute()
        cloud.finish(statement_id, succeeded=True)
        ResumableRedshiftDataOperator(task_id="q", **kwargs()).cancel_job(statement_id, context())
        assert cloud.server.job(statement_id)["state"] == "FINISHED"


# --------------------------------------------------------------------------- deferrable
def _deferrable(**extra: Any) -> ResumableRedshiftDataOperator:
    """A deferrable operator with fast retries and a fast trigger."""
    return ResumableRedshiftDataOperator(task_id="job", deferrable=True, **{**kwargs(), **FAST, **extra})


def _defer(op: Any, context: dict[str, Any]) -> Any:
    """Run ``execute`` until it defers; return the trigger."""
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    return deferred.value.trigger


class TestDeferrable:
    """deferrable=True: the id recorded first, our trigger (the stock one, on_kill told), every way back."""

    def test_id_is_recorded_before_deferring(self, cloud: RedshiftDataDriver) -> None:
        """At TaskDeferred the record holds the statement; the trigger extends the stock one."""
        context = task_context()
        trigger = _defer(_deferrable(), context)
        (statement_id,) = cloud.submitted_ids()
        store = context["task_state_store"]
        assert store.get(RECORD_KEY)["phase"] == "submitted"
        assert store.get("redshift_statement_id") == statement_id
        assert type(trigger) is ResumableRedshiftDataTrigger and isinstance(trigger, RedshiftDataTrigger)
        classpath, arguments = trigger.serialize()
        assert classpath == "airflow_resumable.providers.amazon.redshift_data.ResumableRedshiftDataTrigger"
        assert arguments["statement_id"] == statement_id and arguments["cancel_on_kill"] is False
        assert rebuilt_trigger(trigger).serialize() == (classpath, arguments)

    def test_no_deferral_without_wait_for_completion(self, cloud: RedshiftDataDriver) -> None:
        """As in stock: deferrable with wait_for_completion=False returns at once, never cancelled."""
        result = _deferrable(wait_for_completion=False).execute(task_context())
        assert result == cloud.submitted_ids()

    def test_execute_complete_finishes(self, cloud: RedshiftDataDriver) -> None:
        """The trigger fires once the statement finished; execute_complete returns the stock result."""
        context = task_context()
        trigger = _defer(_deferrable(), context)
        (statement_id,) = cloud.submitted_ids()
        cloud.finish(statement_id, succeeded=True)
        event = first_event(trigger)
        assert event == {"status": "success", "statement_id": statement_id}
        resumed = task_context(context["task_state_store"], xcoms=context["ti"].xcoms)
        assert _deferrable().execute_complete(resumed, event) == [statement_id]
        assert resumed["task_state_store"].get(RECORD_KEY)["phase"] == "completed"

    def test_failure_event_fails_with_the_reason(self, cloud: RedshiftDataDriver) -> None:
        """A failed statement: execute_complete raises JobFailedError with the statement's Error."""
        store = InMemoryTaskStateStore()
        trigger = _defer(_deferrable(), task_context(store))
        cloud.server.finish(str(cloud.submitted_ids()[0]), succeeded=False, reason="permission denied")
        event = first_event(trigger)
        assert event["status"] == "error"
        with pytest.raises(JobFailedError, match="permission denied"):
            _deferrable().execute_complete(task_context(store), event)

    @pytest.mark.parametrize(("server_state", "stopped"), [("failed", True), (None, False)])
    def test_on_kill_cancels_only_after_a_user_stop(
        self, cloud: RedshiftDataDriver, server_state: str | None, stopped: bool
    ) -> None:
        """Marked failed: CancelStatement; cleared (no state yet): the statement is left running."""
        trigger = rebuilt_trigger(_defer(_deferrable(), task_context()))
        trigger.task_instance = FakeTaskInstance("dag", "manual__1", "job", server_state=server_state)
        with mock.patch("airflow_resumable.triggers.VariableLedger", return_value=InMemoryJobLedger()):
            asyncio.run(trigger.on_kill())
        statement_id = str(cloud.submitted_ids()[0])
        assert cloud.cancelled_ids() == ([statement_id] if stopped else [])
        assert (cloud.server.job(statement_id)["state"] == "ABORTED") is stopped
