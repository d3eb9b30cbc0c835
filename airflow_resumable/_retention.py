"""
How long a record stays in ``task_state_store``: for good while its job may run, then a while.

Airflow 3.3 gives each row an ``expires_at`` (indexed: ``idx_task_state_store_expires_at``),
computed when the row is written from the ``retention`` the writer passes to
``task_state_store.set(key, value, retention=...)``: a ``timedelta``, ``NEVER_EXPIRE``, or None for
``[state_store] default_retention_days`` (30 days unless configured). ``airflow state-store clean``
deletes the rows whose ``expires_at`` has passed; nothing else does.

A record is written with:

- ``NEVER_EXPIRE`` while its phase says the job may still run (``intent``, ``submitted``,
  ``interrupted``): the record is what lets a retry reconnect instead of submitting a second job,
  so no clean-up may ever delete it. (Before 0.3.0 it took Airflow's default: with the default 30
  days, a record not rewritten for a month could be cleaned while its job ran on.)
- ``[resumable] record_retention_days`` (default 30) once the job ended (``completed``,
  ``cancelled``): the record still shows on the "Resumable jobs" page and still answers a clear
  that re-runs the task with the same spec, then ``airflow state-store clean`` removes it;
  ``0`` keeps ended records for good.

Every rewrite computes the expiry again, so a record that goes back to an active phase (a clear
with a changed spec) never expires again.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk.execution_time.context import NEVER_EXPIRE

from airflow_resumable._config import setting

__all__ = ["ENDED", "NEVER_EXPIRE", "expires_at_for", "record_retention"]

#: Phases in which the record's job has ended; every other phase (or an unknown one) may still run.
ENDED: frozenset[str] = frozenset(("completed", "cancelled"))


def record_retention(phase: str) -> timedelta:
    """
    The ``retention`` to write a record of ``phase`` with.

    :return: ``NEVER_EXPIRE`` for a job that may still run, or when
        ``[resumable] record_retention_days`` is 0; else that many days.
    :raises ValueError: ``record_retention_days`` is negative.
    """
    if phase not in ENDED:
        return NEVER_EXPIRE
    days = int(setting("record_retention_days"))
    if days < 0:
        raise ValueError(f"[resumable] record_retention_days must be >= 0, got {days}; 0 keeps records")
    return NEVER_EXPIRE if days == 0 else timedelta(days=days)


def expires_at_for(phase: str, now: datetime) -> datetime | None:
    """
    The ``expires_at`` a record of ``phase`` written at ``now`` gets (None: never), for writers that
    update the row themselves instead of going through the task's accessor.
    """
    retention = record_retention(phase)
    return None if retention is NEVER_EXPIRE else now + retention
