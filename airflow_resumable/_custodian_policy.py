"""
The custodian's limits: when to try a failed cancel again, when to give up, what a recipe may ask.

**Purpose:** a cancel that fails must be tried again, but not for ever and not in a tight loop; and
a cancel recipe is read from a value a component stored, so its arguments must be bounded before a
cloud call is made with them. Everything here is a pure function of its arguments (or of the
``[resumable]`` configuration, read once by :meth:`CustodianLimits.from_config`), tested row by row.

**How it works:**

- :func:`next_attempt_delay`: seconds to wait after ``failures`` failed cancels of one job: 5 s,
  doubling, capped at 300 s (tenacity's ``wait_exponential``, which also survives a huge count).
- :func:`should_give_up`: give up once ``give_up_after`` seconds passed since the *first* failure,
  measured on the wall clock (the time is stored with the ledger entry and must survive a scheduler
  restart). A first-failure time in the future, or not a finite number (an edited value), counts
  as *now*: an edit can postpone the give-up by one window at most, never make it instant or never.
- :func:`require_connection`: a recipe's connection id must name a connection. ``None`` or ``""``
  would make the AWS hooks fall back to the component's ambient credentials (the scheduler's or API
  server's own IAM role), which no task was ever given: :class:`RecipeRefusedError` instead.
- :class:`CustodianLimits`: the three ``[resumable] custodian_*`` options, clamped to sane ranges.

**What it does not do:** it keeps no state and makes no call; the custodian stores the failure
count and the first failure's time, and :mod:`airflow_resumable._cancel_lanes` runs the calls.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tenacity

from airflow_resumable.exceptions import RecipeRefusedError

__all__ = [
    "BACKOFF",
    "FIRST_RETRY_DELAY",
    "MAX_CALL_TIMEOUT",
    "MAX_PARALLEL_CANCELS",
    "MAX_RETRY_DELAY",
    "MIN_CALL_TIMEOUT",
    "CustodianLimits",
    "clamp_call_timeout",
    "next_attempt_delay",
    "require_connection",
    "should_give_up",
]

#: Seconds before the second attempt of a failed cancel; each later failure doubles it.
FIRST_RETRY_DELAY = 5.0
#: The longest wait between two attempts of one cancel.
MAX_RETRY_DELAY = 300.0
#: The backoff between attempts of one cancel (no jitter: one custodian per deployment).
BACKOFF = tenacity.wait_exponential(multiplier=FIRST_RETRY_DELAY, max=MAX_RETRY_DELAY)
#: Bounds of ``custodian_call_timeout_seconds``: below 1 s no cloud answers, above 10 min a hung
#: call holds a thread for longer than any user waits for a cancel.
MIN_CALL_TIMEOUT = 1.0
MAX_CALL_TIMEOUT = 600.0
#: Upper bound of ``custodian_parallel_cancels`` (each cancel in flight is a thread).
MAX_PARALLEL_CANCELS = 64


def next_attempt_delay(failures: int, wait: tenacity.wait.wait_base = BACKOFF) -> float:
    """
    Seconds to wait before the next attempt of a cancel that failed ``failures`` times in a row.

    ``0`` failures (or fewer): no wait. Then 5, 10, 20, 40, 80, 160, 300, 300, ... seconds.

    :param failures: failed attempts so far.
    :param wait: the tenacity strategy (:data:`BACKOFF`); attempt ``n`` is the ``n``-th failure.
    """
    if failures <= 0:
        return 0.0
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = failures
    return float(wait(state))


def should_give_up(first_failure_at: float, now: float, give_up_after: float) -> bool:
    """
    True once ``give_up_after`` seconds have passed since the first failed attempt.

    :param first_failure_at: wall-clock time (epoch seconds) of the first failure, as stored. A
        value after ``now`` or not finite is taken as ``now`` (an edited or corrupted value).
    :param now: the current wall-clock time (epoch seconds).
    :param give_up_after: ``custodian_give_up_seconds``; ``0`` or less gives up at the first failure.
    """
    if give_up_after <= 0:
        return True
    first = first_failure_at if math.isfinite(first_failure_at) and first_failure_at <= now else now
    return now - first >= give_up_after


def require_connection(conn_id: object, *, argument: str, canceller: str) -> str:
    """
    The recipe's connection id, or :class:`RecipeRefusedError` if it names none.

    Call it before any hook or client is built: a hook given ``None`` uses ambient credentials.

    :param conn_id: the recipe's value (``aws_conn_id``, ``databricks_conn_id``).
    :param argument: the argument's name, for the message.
    :param canceller: the canceller's registered name, for the message.
    :raises RecipeRefusedError: ``conn_id`` is not a non-blank string.
    """
    if isinstance(conn_id, str) and conn_id.strip():
        return conn_id
    raise RecipeRefusedError(
        f"The custodian's canceller {canceller!r} refuses a recipe whose {argument} is {conn_id!r}: "
        "it would run with this component's own credentials, which no task was given. Give the "
        f"operator an Airflow connection ({argument}=...) and stop this job by hand."
    )


@dataclass(frozen=True)
class CustodianLimits:
    """
    The custodian's bounds, from ``[resumable]`` (see :mod:`airflow_resumable._config`).

    :param call_timeout: deadline of one cloud call, seconds (``custodian_call_timeout_seconds``).
    :param parallel: cancels at once over all connections (``custodian_parallel_cancels``).
    :param give_up_after: seconds from the first failure to giving up (``custodian_give_up_seconds``).
    """

    call_timeout: float = 30.0
    parallel: int = 8
    give_up_after: float = 3600.0

    @classmethod
    def from_config(cls) -> CustodianLimits:
        """The configured limits, each clamped to its range (a typo must not unbound the custodian)."""
        from airflow_resumable._config import setting

        return cls(
            call_timeout=clamp_call_timeout(setting("custodian_call_timeout_seconds")),
            parallel=min(max(int(setting("custodian_parallel_cancels")), 1), MAX_PARALLEL_CANCELS),
            give_up_after=max(float(setting("custodian_give_up_seconds")), 0.0),
        )


def clamp_call_timeout(seconds: float) -> float:
    """``seconds`` within [:data:`MIN_CALL_TIMEOUT`, :data:`MAX_CALL_TIMEOUT`] (not finite: the maximum)."""
    if not math.isfinite(seconds):
        return MAX_CALL_TIMEOUT
    return min(max(float(seconds), MIN_CALL_TIMEOUT), MAX_CALL_TIMEOUT)
