"""
How unkind the fake Databricks is: the :class:`~airflow_resumable.testing.realism.Realism` of one
fake at run time, and the public sources that say the Jobs service behaves so.

Private. :class:`RealismGate` answers the questions the state asks on every API call (may this
call pass, can a reader see this run yet, has its history expired, how big is a page); the
:data:`FIDELITY` entries are declared at import, so the docs' fidelity page
(``docs/fidelity.md``) renders them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from airflow_resumable.testing._databricks_wire import FakeDatabricksError
from airflow_resumable.testing.realism import Fidelity, Realism, TokenBucket, register_fidelity

if TYPE_CHECKING:
    from airflow_resumable.testing._databricks_runs import Run

__all__ = ["FIDELITY", "JOBS_LIST_PAGE", "RUNS_LIST_PAGE", "SERVICE", "PageRule", "RealismGate"]

SERVICE = "Databricks Jobs"
_API = "https://docs.databricks.com/api/workspace/jobs"
_SDK = "https://github.com/databricks/databricks-sdk-py/blob/main/databricks/sdk/errors"


class PageRule:
    """
    The documented page size of one list endpoint: ``limit`` defaults to ``default``, may not
    exceed ``maximum`` (400 ``INVALID_PARAMETER_VALUE`` if it does), and ``0`` means the maximum.
    """

    def __init__(self, endpoint: str, default: int, maximum: int) -> None:
        self.endpoint, self.default, self.maximum = endpoint, default, maximum

    def limit(self, requested: int | None, page_size: int | None) -> int:
        """The page size for a request's ``limit``, capped by the realism's ``page_size``."""
        limit = self.default if requested is None else requested
        if limit == 0:
            limit = self.maximum
        if not 1 <= limit <= self.maximum:
            raise FakeDatabricksError(
                400, f"{self.endpoint}: limit must be between 1 and {self.maximum}, got {limit}"
            )
        return limit if page_size is None else min(limit, page_size)


#: runs/list: "greater than 0 and less than 25. The default value is 20. If a request specifies a
#: limit of 0, the service instead uses the maximum limit" (the listruns reference). 25 itself is
#: accepted, as clients send it.
RUNS_LIST_PAGE = PageRule("runs/list", default=20, maximum=25)
#: jobs/list: "greater than 0 and less or equal to 100. The default value is 20" (jobs/list).
JOBS_LIST_PAGE = PageRule("jobs/list", default=20, maximum=100)

FIDELITY = (
    Fidelity(
        SERVICE,
        "visibility_lag",
        "not documented",
        "for visibility_lag seconds after creation a run answers runs/get, runs/get-output, "
        "runs/cancel and runs/repair as an unknown run does, and runs/list omits it; an "
        "idempotency-token replay still returns its run_id",
        f"{_API}/getrun",
        "The reference promises no read-after-write consistency and documents no lag; the fake "
        "takes the unkind reading. Token replay ignores visibility: the submit reference says a "
        "request with the token of an existing run returns that run's id.",
    ),
    Fidelity(
        SERVICE,
        "throttling",
        "reproduced",
        "every Jobs API call (submits and reads share one per-workspace bucket) past "
        "throttle_burst calls at throttle_rate/s answers 429 REQUEST_LIMIT_EXCEEDED with an "
        "integer Retry-After header; nothing is carried out",
        "https://docs.databricks.com/aws/en/resources/limits",
        "The limits page lists per-endpoint rates per workspace (one bucket here: unkinder). "
        f"Retry-After in whole seconds is what the platform sends ({_SDK}/customizer.py); "
        "DatabricksHook retries 429 by its own exponential policy and ignores the header.",
    ),
    Fidelity(
        SERVICE,
        "pagination",
        "reproduced",
        "runs/list pages newest first, limit 20 by default and at most 25 (0: 25); jobs/list 20 "
        "and at most 100; offset or page_token, next_page_token/prev_page_token, has_more "
        "(jobs/list drops has_more in API 2.2, as the stock hook notes for apache/airflow issue 59189); "
        "realism.page_size caps every page",
        f"{_API}/listruns",
        f"jobs/list: {_API}/list. Tokens are offsets, so a run created between two pages shifts "
        "the next page, as offset paging does.",
    ),
    Fidelity(
        SERVICE,
        "expiry",
        "reproduced",
        "retention seconds after a run ended it answers as an unknown run and runs/list omits "
        "it (the service keeps 60 days; retention=None keeps runs for ever)",
        f"{_API}/getrunoutput",
        "'Runs are automatically removed after 60 days.' expire_run drops one run at once.",
    ),
    Fidelity(
        SERVICE,
        "not_found",
        "reproduced",
        "an unknown, expired or not-yet-visible run answers 400 INVALID_PARAMETER_VALUE 'Run <id> "
        "does not exist.' with missing_run_status=400, as the service does; the default stays "
        "404 RESOURCE_DOES_NOT_EXIST (the fake's contract since 0.1)",
        f"{_SDK}/overrides.py",
        "The SDK, generated from the OpenAPI specs, maps runs/get's 400 INVALID_PARAMETER_VALUE "
        "'Run <id> does not exist' to ResourceDoesNotExist; the get-output reference answers 400 "
        "for an invalid run_id.",
    ),
    Fidelity(
        SERVICE,
        "token_window",
        "reproduced",
        "an idempotency_token (at most 64 characters) returns its run's id for as long as the run "
        "is in the history, however long ago it was sent; once the history expires the token is "
        "forgotten and a resubmission creates a new run",
        f"{_API}/submit#idempotency_token",
        "No time window is documented. After expiry the reference is silent (a deleted run's "
        "token answers an error); the fake forgets it, the unkind choice for a blind resubmit.",
    ),
)
register_fidelity(*FIDELITY)


class RealismGate:
    """
    The realism of one fake Databricks, switchable at run time (:meth:`set`).

    Thread-safe for what it holds: the token bucket has its own lock; the state calls the rest
    under its lock. Times are ``time.monotonic()``.

    :param realism: the realism to start with.
    """

    def __init__(self, realism: Realism) -> None:
        self.realism = realism
        self._bucket: TokenBucket | None = None
        self.set(realism)

    def set(self, realism: Realism) -> None:
        """Switch to ``realism``; the rate limit starts with a full bucket."""
        self.realism = realism
        rate = realism.throttle_rate
        self._bucket = None if rate is None else TokenBucket(rate, realism.throttle_burst)

    def throttle(self) -> FakeDatabricksError | None:
        """The 429 for a call that may not pass now, or None when it may (a token was taken)."""
        wait = 0.0 if self._bucket is None else self._bucket.take()
        if wait <= 0.0:
            return None
        return FakeDatabricksError(
            429,
            "The request was rejected due to a rate limit. Try again later.",
            "REQUEST_LIMIT_EXCEEDED",
            retry_after=wait,
        )

    def visible(self, run: Run) -> bool:
        """A reader can see the run: ``visibility_lag`` seconds have passed since its creation."""
        return time.monotonic() - run.created_at >= self.realism.visibility_lag

    def expired(self, run: Run) -> bool:
        """The run ended more than ``retention`` seconds ago."""
        retention = self.realism.retention
        if retention is None or run.ended_at is None:
            return False
        return time.monotonic() - run.ended_at >= retention

    def page_limit(self, rule: PageRule, requested: int | None) -> int:
        """The page size of one list call (see :class:`PageRule`)."""
        return rule.limit(requested, self.realism.page_size)
