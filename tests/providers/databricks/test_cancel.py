"""The custodian's Databricks canceller: a connection is required, retries and timeouts are bounded."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow.providers.databricks.hooks.databricks_base import BaseDatabricksHook

from airflow_resumable.exceptions import RecipeRefusedError
from airflow_resumable.providers.databricks._base import cancel_run_by_recipe

if TYPE_CHECKING:
    from airflow_resumable.testing.databricks import FakeDatabricks

CALL_TIMEOUT = "AIRFLOW__RESUMABLE__CUSTODIAN_CALL_TIMEOUT_SECONDS"


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[DatabricksHook]:
    """The hooks whose cancel_run was called (the call itself still reaches the fake)."""
    seen: list[DatabricksHook] = []
    real = DatabricksHook.cancel_run

    def recording(self: DatabricksHook, run_id: int) -> None:
        seen.append(self)
        real(self, run_id)

    monkeypatch.setattr(DatabricksHook, "cancel_run", recording)
    return seen


@pytest.fixture
def no_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a Databricks hook is built."""

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Databricks hook was built for a refused recipe")

    monkeypatch.setattr(BaseDatabricksHook, "__init__", tripwire)


def live_run(fake: FakeDatabricks) -> int:
    """A run the fake keeps RUNNING until cancelled."""
    job_id = fake.create_job("orphan")
    return int(DatabricksHook("databricks_default").run_now({"job_id": job_id}))


class TestNoAmbientConnection:
    @pytest.mark.usefixtures("no_hook")
    @pytest.mark.parametrize("conn_id", [None, "", " "], ids=["none", "empty", "blank"])
    def test_a_recipe_without_a_connection_is_refused_before_any_hook(self, conn_id: str | None) -> None:
        """databricks_conn_id None or empty raises RecipeRefusedError; no hook is built."""
        with pytest.raises(RecipeRefusedError, match="databricks_conn_id"):
            cancel_run_by_recipe(123, databricks_conn_id=conn_id)

    @pytest.mark.usefixtures("no_hook")
    def test_a_recipe_that_names_no_connection_is_refused(self) -> None:
        """A recipe without the databricks_conn_id key is refused the same way."""
        with pytest.raises(RecipeRefusedError):
            cancel_run_by_recipe(123)

    @pytest.mark.usefixtures("no_hook")
    @pytest.mark.parametrize(
        ("retry_limit", "retry_delay"),
        [("3", 1.0), (True, 1.0), (3, "1"), (3, float("nan")), (3, float("inf")), (None, 1.0)],
    )
    def test_retry_arguments_that_are_no_numbers_are_refused(
        self, retry_limit: Any, retry_delay: Any
    ) -> None:
        """A forged retry argument of the wrong type is refused before a hook is built."""
        with pytest.raises(RecipeRefusedError, match="retry_limit"):
            cancel_run_by_recipe(
                123, databricks_conn_id="databricks_default", retry_limit=retry_limit, retry_delay=retry_delay
            )


class TestBoundedRetries:
    @pytest.mark.parametrize(
        ("retry_limit", "retry_delay", "expected"),
        [
            (10**9, 86400.0, (3, 5.0)),
            (2, 0.5, (2, 0.5)),
            (0, -10.0, (1, 0.0)),
            (-5, 3, (1, 3.0)),
        ],
        ids=["huge", "within", "zero-and-negative", "negative-limit"],
    )
    def test_the_hook_gets_bounded_retries_and_timeout(
        self,
        fake: FakeDatabricks,
        hooks: list[DatabricksHook],
        retry_limit: int,
        retry_delay: float,
        expected: tuple[int, float],
    ) -> None:
        """Whatever the recipe says, at most 3 attempts, a first wait of 5 s, and a request timeout."""
        run_id = live_run(fake)
        cancel_run_by_recipe(
            run_id, databricks_conn_id="databricks_default", retry_limit=retry_limit, retry_delay=retry_delay
        )
        (hook,) = hooks
        assert (hook.retry_limit, hook.retry_delay) == expected
        assert hook.timeout_seconds == 30 // expected[0]
        assert hook.token_timeout_seconds <= hook.timeout_seconds
        assert [entry.run_id for entry in fake.cancels()] == [run_id]

    def test_the_request_timeout_follows_the_option(
        self, fake: FakeDatabricks, hooks: list[DatabricksHook], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """custodian_call_timeout_seconds is shared among the attempts, at least 1 s each."""
        monkeypatch.setenv(CALL_TIMEOUT, "2")
        cancel_run_by_recipe(live_run(fake), databricks_conn_id="databricks_default")
        (hook,) = hooks
        assert (hook.retry_limit, hook.timeout_seconds) == (3, 1)

    def test_a_hung_workspace_fails_the_cancel_within_the_deadline(
        self, fake: FakeDatabricks, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With runs/cancel answering after 30 s, the canceller gives up after its bounded attempts."""
        monkeypatch.setenv(CALL_TIMEOUT, "2")
        run_id = live_run(fake)
        fake.stall_responses("runs/cancel", 30.0, count=3)
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timed out|timeout|retries"):
            cancel_run_by_recipe(run_id, databricks_conn_id="databricks_default", retry_limit=10**6)
        # 3 requests of 1 s and the hook's waits of 1 s and 2 s; unbounded: 10**6 requests of 180 s
        assert time.monotonic() - started < 20.0
