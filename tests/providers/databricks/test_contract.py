"""The contract kit, run on both Databricks operators against the fake Jobs API over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_resumable.providers.databricks import (
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)
from airflow_resumable.testing.contract import (
    ResumableOperatorContract,
    ScenarioProbe,
    SimulatedWorkerCrash,
    finish_on_first_poll,
)
from tests.providers.databricks.helpers import HOOK_RETRY_ARGS, FakeDatabricksDriver

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_resumable.testing.airflow_env import DagRunOutcome
    from airflow_resumable.testing.databricks import FakeDatabricks

_FAST = {"polling_period_seconds": 0.01, "databricks_retry_args": HOOK_RETRY_ARGS}


def _xcoms(outcome: DagRunOutcome) -> dict[str, Any]:
    """The XComs the task instance "job" left in the metadata database, by key."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.key, XComModel.value).where(
                XComModel.dag_id == outcome.dag_id,
                XComModel.run_id == outcome.run_id,
                XComModel.task_id == "job",
            )
        ).all()
    return {row.key: XComModel.deserialize_value(row) for row in rows}


class XComParity:
    """The stock XComs and the "See Databricks Job Run" link, in a real run, on every path."""

    #: The hook's tenacity arguments cannot reach a trigger (as in stock): the trigger's own retries.
    deferrable_kwargs = {"deferrable": True, "databricks_retry_args": None, "polling_period_seconds": 0.05}

    def stock_xcoms(self, cloud: Any, external_id: JsonValue, deferred: bool = False) -> dict[str, Any]:
        """
        The kit's declaration: run_id, run_page_url and its link (the stock execute returns None);
        deferred, the stock operator pushes the run's job_id too.
        """
        run = cloud.fake.get_run(int(str(external_id)))
        url = run["run_page_url"]
        pushed = {"run_id": external_id, "run_page_url": url, "_link_DatabricksJobRunLink": url}
        return {**pushed, "job_id": run["job_id"]} if deferred else pushed

    if TYPE_CHECKING:

        def _run(self, cloud: Any, probe: ScenarioProbe, **overrides: Any) -> DagRunOutcome: ...

    def test_xcoms_and_link_after_a_fresh_run(self, cloud: FakeDatabricksDriver) -> None:
        """run_id, run_page_url and the link XCom the UI reads, after one try."""
        outcome = self._run(cloud, ScenarioProbe(cloud, finish_on_first_poll()))
        run_id = cloud.submitted_ids()[0]
        url = cloud.fake.get_run(int(str(run_id)))["run_page_url"]
        xcoms = _xcoms(outcome)
        assert xcoms["run_id"] == run_id and xcoms["run_page_url"] == url
        assert xcoms["_link_DatabricksJobRunLink"] == url
        assert "return_value" not in xcoms  # the stock execute returns None

    def test_xcoms_after_adopting_a_succeeded_run(self, cloud: FakeDatabricksDriver) -> None:
        """The retry that adopts the succeeded run pushes them again (a new try clears XComs)."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=True)
            raise SimulatedWorkerCrash("worker died just as the run finished")

        outcome = self._run(cloud, ScenarioProbe(cloud, on_poll))
        assert outcome.task("job").try_number == 2
        xcoms = _xcoms(outcome)
        assert xcoms["run_id"] == cloud.submitted_ids()[0]
        assert xcoms["_link_DatabricksJobRunLink"] == xcoms["run_page_url"]


class TestResumableDatabricksSubmitRunOperatorContract(XComParity, ResumableOperatorContract):
    """runs/submit with our idempotency token; the spec marker is the templated run_name."""

    operator_class = ResumableDatabricksSubmitRunOperator

    @pytest.fixture
    def cloud(self, fake: FakeDatabricks) -> FakeDatabricksDriver:
        return FakeDatabricksDriver(fake)

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {"run_name": spec_marker, "notebook_task": {"notebook_path": "/Shared/etl"}, **_FAST}


class TestResumableDatabricksRunNowOperatorContract(XComParity, ResumableOperatorContract):
    """run-now of one job with our idempotency token; the spec marker is a templated job parameter."""

    operator_class = ResumableDatabricksRunNowOperator

    @pytest.fixture
    def cloud(self, fake: FakeDatabricks) -> FakeDatabricksDriver:
        fake.create_job("nightly", {"tasks": [{"task_key": "etl", "notebook_task": {"notebook_path": "/x"}}]})
        return FakeDatabricksDriver(fake, submit_endpoint="run-now")

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {"job_name": "nightly", "job_parameters": {"marker": spec_marker}, **_FAST}
