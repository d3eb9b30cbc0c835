"""RetryPolicy: bounded retries of transient errors only."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
from airflow.sdk.execution_time.comms import ErrorResponse
from tenacity import wait_none

from airflow_resumable.retry import RetryPolicy, is_transient_state_store_error


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_transient_errors_are_retried_until_success() -> None:
    """A call that fails twice with a retryable error succeeds on the third attempt."""
    flaky = Flaky(2, ConnectionError("reset"))
    assert (
        RetryPolicy(attempts=3, wait=wait_none()).call(flaky, is_retryable=lambda _: True, what="x") == "ok"
    )
    assert flaky.calls == 3


def test_retries_are_bounded_and_the_last_error_surfaces() -> None:
    """After the last attempt the original exception is raised, not a tenacity wrapper."""
    flaky = Flaky(5, ConnectionError("reset"))
    with pytest.raises(ConnectionError, match="reset"):
        RetryPolicy(attempts=3, wait=wait_none()).call(flaky, is_retryable=lambda _: True, what="x")
    assert flaky.calls == 3


def test_permanent_errors_are_not_retried() -> None:
    """An error the predicate rejects fails at once."""
    flaky = Flaky(1, ValueError("bad spec"))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=5, wait=wait_none()).call(
            flaky, is_retryable=lambda e: isinstance(e, ConnectionError), what="x"
        )
    assert flaky.calls == 1


def test_attempts_must_be_positive() -> None:
    """A policy with zero attempts is refused when built."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def _server_answer(status: int | None) -> AirflowRuntimeError:
    return AirflowRuntimeError(
        ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": status, "message": "x"})
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_server_answer(500), True),
        (_server_answer(503), True),
        (_server_answer(429), True),
        (_server_answer(408), True),
        (_server_answer(None), True),  # the supervisor could not reach the server at all
        (ConnectionError("reset"), True),
        (_server_answer(404), False),  # the task instance's state was cleared
        (_server_answer(409), False),
        (_server_answer(400), False),
    ],
)
def test_state_store_errors_retried_only_when_the_server_may_answer_otherwise(
    error: BaseException, transient: bool
) -> None:
    assert is_transient_state_store_error(error) is transient
