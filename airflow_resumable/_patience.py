"""
Patience with a service as it really behaves: eventual consistency and throttling.

- **Visibility window.** Right after a submit, a service may answer "not found" for the new job
  for a while (AWS Batch: apache/airflow#38998, Netflix/metaflow#543). A job younger than its
  operator's window that cannot be found is *not yet visible*: the call is tried again inside
  the try. Older than the window, not found means expired or deleted.
- **Throttling.** A throttled request was refused, not carried out; waiting it out with
  exponential backoff and full jitter (the AWS Architecture Blog's "Exponential Backoff And
  Jitter") never creates a job and never needs a new try.

The window per operator: the operator argument ``visibility_window``, else ``[resumable]
visibility_window_seconds`` (a number, or a JSON object by the operator's ``visibility_key``),
else the operator's ``default_visibility_window``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import tenacity

from airflow_resumable._config import setting

__all__ = [
    "THROTTLE_WAIT",
    "VISIBILITY_WAIT",
    "conservative_age",
    "is_young",
    "now_stamp",
    "visibility_window",
]

#: Between tries of a throttled call: full jitter, 0.5 s doubling up to 30 s.
THROTTLE_WAIT = tenacity.wait_random_exponential(multiplier=0.5, max=30)
#: Between looks for a job that is not visible yet: 0.25 s doubling up to 5 s.
VISIBILITY_WAIT = tenacity.wait_exponential(multiplier=0.25, min=0.25, max=5)


def visibility_window(key: str, class_default: float, argument: float | None) -> float:
    """
    The window of one operator, in seconds.

    :param key: the operator's ``visibility_key`` (``batch``, ``databricks``, ...).
    :param class_default: the operator's documented default.
    :param argument: the operator argument (None: not given).
    :raises ValueError: the ``[resumable]`` option is neither a number nor a JSON object of numbers,
        or a window is negative.
    """
    if argument is not None:
        return _checked(float(argument), "visibility_window")
    configured = str(setting("visibility_window_seconds") or "").strip()
    if not configured:
        return class_default
    try:
        value = json.loads(configured)
    except ValueError as err:
        raise ValueError(
            f"[resumable] visibility_window_seconds must be a number or a JSON object, got {configured!r}"
        ) from err
    if isinstance(value, dict):
        chosen = value.get(key)
        if chosen is None:
            return class_default
        value = chosen
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"[resumable] visibility_window_seconds: {value!r} is not a number of seconds")
    return _checked(float(value), "[resumable] visibility_window_seconds")


def _checked(seconds: float, what: str) -> float:
    if seconds < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {seconds}")
    return seconds


def now_stamp() -> str:
    """Now, in the form a record's ``created_at`` takes (ISO-8601 UTC, whole seconds)."""
    return datetime.now(tz=timezone.utc).isoformat(timespec="seconds")


def conservative_age(stamp: str | None) -> float | None:
    """
    Seconds since ``stamp``, never more than the truth: the stamp is cut to whole seconds, so one
    second is taken off. None when there is no stamp or it cannot be read (an age unknown).
    """
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(tz=timezone.utc) - then).total_seconds() - 1.0


def is_young(stamp: str | None, window: float) -> bool:
    """
    Whether a job submitted at ``stamp`` may still be invisible to its service.

    An unknown age (a stock operator's bare id, a 0.1.0 record) counts as old: the job was
    submitted by an earlier try at least a retry delay ago. So does a stamp more than a window in
    the future (a skewed clock): waiting for it to pass could outlast the try.
    """
    age = conservative_age(stamp)
    return age is not None and window > 0 and -window <= age < window
