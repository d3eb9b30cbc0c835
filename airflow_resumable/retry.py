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

__all__ = ["DEFAULT_CLOUD_RETRY", "DEFAULT_STATE_STORE_RETRY", "RetryPolicy"]

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
