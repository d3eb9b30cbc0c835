"""
Bounded retries of cloud calls and task-state-store writes, built on tenacity.

A :class:`RetryPolicy` is a small value object; operators take one per kind of call
(``cloud_retry=``, ``state_store_retry=``). Tests pass ``RetryPolicy(attempts=3, wait=wait_none())``
so they never sleep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

if TYPE_CHECKING:
    from collections.abc import Callable

    from tenacity.wait import wait_base

__all__ = [
    "DEFAULT_CLOUD_RETRY",
    "DEFAULT_STATE_STORE_RETRY",
    "RetryPolicy",
    "is_transient_state_store_error",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """
    How often and how patiently to retry one kind of call.

    :param attempts: total attempts, the first included (``1`` means no retry).
    :param wait: a tenacity wait strategy between attempts.
    """

    attempts: int = 5
    wait: wait_base = field(default_factory=lambda: tenacity.wait_exponential_jitter(initial=1, max=30))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        is_retryable: Callable[[BaseException], bool],
        what: str,
        **kwargs: Any,
    ) -> T:
        """
        Call ``fn(*args, **kwargs)``; retry while ``is_retryable(error)`` and attempts remain.

        The last error is re-raised unchanged, so callers see the cloud's own exception.
        """
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self.wait,
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "Retrying %s after attempt %d failed: %r",
                what,
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
        )
        return retrying(fn, *args, **kwargs)


#: Cloud calls: 5 attempts, exponential back-off with jitter from 1 s up to 30 s.
DEFAULT_CLOUD_RETRY = RetryPolicy()
#: State-store writes go to Airflow's own API server; a short, bounded retry.
DEFAULT_STATE_STORE_RETRY = RetryPolicy(attempts=4, wait=tenacity.wait_exponential(multiplier=0.5, max=5))


#: HTTP answers of the API server that a state-store call may wait out; any other 4xx is final.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


def is_transient_state_store_error(error: BaseException) -> bool:
    """
    Whether a task-state-store call that raised ``error`` is worth sending again.

    The task gets the API server's answer through the supervisor as an ``AirflowRuntimeError``
    whose ``error.detail["status_code"]`` is the HTTP status. A 4xx other than 408/425/429 is the
    server's final word (404: the task instance's state is gone, e.g. after a clear); everything
    else (5xx, throttling, no answer, a lost connection) may pass.
    """
    detail = getattr(getattr(error, "error", None), "detail", None)
    status = detail.get("status_code") if isinstance(detail, dict) else None
    if isinstance(status, int) and 400 <= status < 500:
        return status in _RETRYABLE_CLIENT_ERRORS
    return True
