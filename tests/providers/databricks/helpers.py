"""Helpers for the Databricks operator tests: fast retries, a task context (the driver is public)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock

from tenacity import stop_after_attempt, wait_fixed, wait_none

from airflow_resumable.ledger import LEDGER_CONTEXT_KEY
from airflow_resumable.retry import RetryPolicy
from airflow_resumable.testing.databricks import FakeDatabricksDriver as FakeDatabricksDriver
from airflow_resumable.testing.state import (
    InMemoryJobLedger,
    InMemoryTaskStateStore,
    XComTaskInstance,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import JsonValue

    from airflow_resumable.testing.databricks import FakeDatabricks

#: The hook retries three times, 10 ms apart (its default waits are whole seconds).
HOOK_RETRY_ARGS: dict[str, Any] = {"stop": stop_after_attempt(3), "wait": wait_fixed(0.01)}
#: Our own retries of transient errors, without waiting.
CLOUD_RETRY = RetryPolicy(attempts=3, wait=wait_none())


def task_context(
    store: InMemoryTaskStateStore | None = None, *, try_number: int = 1, max_tries: int = 1
) -> dict[str, Any]:
    """A task context for calling ``execute`` directly: a recording ``ti``, an in-memory store and ledger."""
    ti = XComTaskInstance("dag", "manual__1", "job", try_number=try_number, max_tries=max_tries)
    return {
        "ti": ti,
        "task_state_store": store if store is not None else InMemoryTaskStateStore(),
        LEDGER_CONTEXT_KEY: InMemoryJobLedger(),
    }


@contextmanager
def finish_on_status_call(
    fake: FakeDatabricks, operator_class: type, call: int = 1, result: str = "SUCCESS", message: str = ""
) -> Iterator[list[JsonValue]]:
    """
    End the polled run at the ``call``-th ``get_job_status`` of ``operator_class`` (1-based).

    Yields the list of run ids passed to ``get_job_status``, in order.
    """
    original = operator_class.get_job_status
    calls: list[JsonValue] = []

    def counting(op: Any, external_id: JsonValue, context: Any) -> str:
        calls.append(external_id)
        if len(calls) == call:
            fake.finish_run(int(str(external_id)), result, message)
        return str(original(op, external_id, context))

    with mock.patch.object(operator_class, "get_job_status", counting):
        yield calls


@contextmanager
def finish_when_the_trigger_waits(fake: FakeDatabricks, result: str = "SUCCESS") -> Iterator[None]:
    """
    Keep the run RUNNING until the deferred trigger starts waiting, then end it.

    A clock lifecycle can end a run before the operator's first status read on a loaded machine,
    and the task then (rightly) finishes without deferring; this makes the deferral certain.
    """
    from airflow_resumable.providers.databricks.triggers import ResumableDatabricksExecutionTrigger

    fake.set_lifecycle("manual")
    wait_for_run = ResumableDatabricksExecutionTrigger.run

    def end_run_then_wait(trigger: ResumableDatabricksExecutionTrigger) -> Any:
        fake.finish_run(int(trigger.run_id), result)
        return wait_for_run(trigger)

    with mock.patch.object(ResumableDatabricksExecutionTrigger, "run", end_run_then_wait):
        yield
