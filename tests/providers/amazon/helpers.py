"""Helpers for the AWS operator tests: one-task DAG runs, XComs, contexts and shared scenarios."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tenacity import wait_none

from airflow_resumable.record import RECORD_KEY
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.airflow_env import read_task_state, run_dag
from airflow_resumable.testing.aws import aws_connection_env
from airflow_resumable.testing.contract import ScenarioProbe, SimulatedWorkerCrash, finish_on_first_poll
from airflow_resumable.testing.state import (
    FakeTaskInstance,
    InMemoryTaskStateStore,
    XComTaskInstance,
    make_context,
)

if TYPE_CHECKING:
    import pytest
    from pydantic import JsonValue

    from airflow_resumable.testing.airflow_env import DagRunOutcome
    from airflow_resumable.testing.aws import MotoJobDriver, MotoServer

#: Our retries of transient errors, without waiting.
FAST: dict[str, Any] = {
    "cloud_retry": RetryPolicy(attempts=3, wait=wait_none()),
    "state_store_retry": RetryPolicy(attempts=1, wait=wait_none()),
    "resume_delay": timedelta(0),
}


def run_task(
    operator_class: type, probe: ScenarioProbe | None = None, *, retries: int = 1, **kwargs: Any
) -> DagRunOutcome:
    """
    Run a one-task DAG (task id ``job``) through ``dag.test()``, with the probe installed if given.

    Our operators get :data:`FAST` retries; a stock operator gets only ``kwargs``.
    """
    from airflow.sdk import DAG

    from airflow_resumable.mixin import ResumableJobMixin

    extra = FAST if issubclass(operator_class, ResumableJobMixin) else {}
    with DAG(f"aws_{operator_class.__name__}_{uuid.uuid4().hex[:8]}", schedule=None) as dag:
        operator_class(
            task_id="job",
            retries=retries,
            retry_delay=timedelta(0),
            execution_timeout=timedelta(seconds=60),
            **{**extra, **kwargs},
        )
    if probe is None:
        return run_dag(dag)
    with probe.install(operator_class):
        return run_dag(dag)


def xcoms(outcome: DagRunOutcome) -> dict[str, Any]:
    """The XComs task ``job`` left in the metadata database, by key."""
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


def record(outcome: DagRunOutcome) -> dict[str, Any]:
    """Our record of task ``job``."""
    return dict(read_task_state(outcome.dag_id, outcome.run_id, "job", RECORD_KEY) or {})


def context() -> dict[str, Any]:
    """A minimal task context for calling an operator's hooks directly."""
    return make_context(InMemoryTaskStateStore())


def task_context(
    store: InMemoryTaskStateStore | None = None,
    *,
    try_number: int = 1,
    max_tries: int = 1,
    xcoms: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    :func:`make_context` for task ``job`` (in-memory store and ledger), with a ``ti`` that records XComs.

    :param xcoms: the XComs already pushed in this try (a resume after a deferral keeps them).
    """
    built = make_context(store, task_id="job", try_number=try_number, max_tries=max_tries)
    plain: FakeTaskInstance = built["ti"]
    built["ti"] = XComTaskInstance(
        plain.dag_id,
        plain.run_id,
        plain.task_id,
        try_number=try_number,
        max_tries=max_tries,
        xcoms=xcoms if xcoms is not None else {},
    )
    return built


def crash_while_polling_on_first_try(finish: bool = True) -> Any:
    """A poll hook: try 1 dies at its first poll, try 2 ends the job (success)."""

    def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
        if try_number == 1:
            raise SimulatedWorkerCrash("worker died while polling")
        if finish:
            probe.cloud.finish(external_id, succeeded=True)

    return on_poll


def allow_botocore_retries(monkeypatch: pytest.MonkeyPatch, moto: MotoServer, attempts: int = 3) -> None:
    """Point ``aws_default`` at the controller with botocore retries on (standard mode, ``attempts``)."""
    for key, value in aws_connection_env(moto.url, max_attempts=attempts).items():
        monkeypatch.setenv(key, value)


def submit_requests(moto: MotoServer, operation: str) -> list[dict[str, Any]]:
    """The request bodies of every call of ``operation``, oldest first."""
    return [json.loads(json.dumps(entry.request)) for entry in moto.calls(operation)]


class XComParity:
    """The stock operator's XComs on the fresh path and on the adopt-succeeded path."""

    #: XCom keys the stock operator pushes for this job (links and return value).
    expected_xcom_keys: frozenset[str] = frozenset()

    def stock_xcoms(self, cloud: Any, external_id: JsonValue) -> dict[str, Any]:
        """The kit's declaration: the job id as return value, and every stock key (links: any URL)."""
        from unittest import mock

        declared: dict[str, Any] = {key: mock.ANY for key in self.expected_xcom_keys}
        if "return_value" in declared:
            declared["return_value"] = external_id
        return declared

    if TYPE_CHECKING:

        def _run(self, cloud: Any, probe: ScenarioProbe, **overrides: Any) -> DagRunOutcome: ...

    def test_xcoms_after_a_fresh_run(self, cloud: MotoJobDriver) -> None:
        """Every stock XCom, and the job id as return value, after one try."""
        outcome = self._run(cloud, ScenarioProbe(cloud, finish_on_first_poll()))
        pushed = xcoms(outcome)
        assert set(pushed) == self.expected_xcom_keys
        assert pushed["return_value"] == cloud.submitted_ids()[0]

    def test_xcoms_after_adopting_a_succeeded_job(self, cloud: MotoJobDriver) -> None:
        """The retry that adopts the succeeded job pushes the same XComs (a new try clears them)."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: JsonValue, index: int) -> None:
            probe.cloud.finish(external_id, succeeded=True)
            raise SimulatedWorkerCrash("worker died just as the job finished")

        outcome = self._run(cloud, ScenarioProbe(cloud, on_poll))
        assert outcome.task("job").try_number == 2
        pushed = xcoms(outcome)
        assert set(pushed) == self.expected_xcom_keys
        assert pushed["return_value"] == cloud.submitted_ids()[0]


def rebuilt_trigger(trigger: Any) -> Any:
    """The trigger as the triggerer makes it: from ``serialize()``."""
    import importlib

    classpath, arguments = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**arguments)


def first_event(trigger: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Run the real trigger (aiobotocore against moto), rebuilt from ``serialize()``, to its first event."""
    import asyncio

    async def first() -> dict[str, Any]:
        async for event in rebuilt_trigger(trigger).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))
