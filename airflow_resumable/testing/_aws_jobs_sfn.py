"""
Job kinds for sfn (none yet): see :mod:`airflow_resumable.testing._aws_jobs`.

Private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_jobs import JobKind

__all__ = ["SFN_KINDS"]

SFN_KINDS: tuple[JobKind, ...] = ()
