"""
Job kinds for ecs (none yet): see :mod:`airflow_resumable.testing._aws_jobs`.

Private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_jobs import JobKind

__all__ = ["ECS_KINDS"]

ECS_KINDS: tuple[JobKind, ...] = ()
