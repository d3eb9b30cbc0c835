"""
The contract kit, from the installed wheel with ``[amazon,databricks,testing]``, on one of our
operators; and the fake AWS answering one job.

What a provider maintainer does in their own suite: subclass the kit, hand it a fake cloud. Only
public names of ``airflow_resumable.testing`` are used; nothing from the checkout's ``tests/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from tenacity import stop_after_attempt, wait_fixed

from airflow_resumable.providers.databricks import ResumableDatabricksSubmitRunOperator
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client, provision_batch
from airflow_resumable.testing.contract import ResumableOperatorContract
from airflow_resumable.testing.databricks import (
    FakeDatabricks,
    FakeDatabricksDriver,
    databricks_connection_env,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDatabricks]:
    """An in-process fake Jobs API in manual mode, ``databricks_default`` pointing at it."""
    with FakeDatabricks() as server:
        for key, value in databricks_connection_env(server.url).items():
            monkeypatch.setenv(key, value)
        yield server


class TestInstalledSubmitRunContract(ResumableOperatorContract):
    """runs/submit with our idempotency token; the spec marker is the templated run_name."""

    operator_class = ResumableDatabricksSubmitRunOperator

    @pytest.fixture
    def cloud(self, fake: FakeDatabricks) -> FakeDatabricksDriver:
        return FakeDatabricksDriver(fake)

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return {
            "run_name": spec_marker,
            "notebook_task": {"notebook_path": "/Shared/etl"},
            "polling_period_seconds": 0.01,
            # the hook's own retries, 10 ms apart (its default waits are whole seconds)
            "databricks_retry_args": {"stop": stop_after_attempt(3), "wait": wait_fixed(0.01)},
        }

    def stock_xcoms(self, cloud: Any, external_id: Any, deferred: bool = False) -> dict[str, Any]:
        """What the stock operator leaves: run_id, run_page_url and its link (it returns None)."""
        run = cloud.fake.get_run(int(str(external_id)))
        url = run["run_page_url"]
        pushed = {"run_id": external_id, "run_page_url": url, "_link_DatabricksJobRunLink": url}
        return {**pushed, "job_id": run["job_id"]} if deferred else pushed


class TestInstalledFakeAws:
    """The fake AWS of ``[testing]``: moto in server mode behind the lifecycle controller."""

    def test_a_batch_job_runs_and_finishes_under_control(self) -> None:
        """A submitted Batch job is seen by the controller and ends when the driver says so."""
        with MotoServer() as server:
            server.set_lifecycle("manual")
            resources = provision_batch(server.url)
            batch = aws_client(server.url, "batch")
            job_id = batch.submit_job(
                jobName="wheel-check", jobQueue=resources.job_queue, jobDefinition=resources.job_definition
            )["jobId"]
            driver = MotoJobDriver(server, "batch")
            assert driver.submitted_ids() == [job_id]
            driver.finish(job_id, succeeded=True)
            assert batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"] == "SUCCEEDED"
