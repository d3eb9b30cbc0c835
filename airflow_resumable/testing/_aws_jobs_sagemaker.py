"""
Job kinds for sagemaker (none yet): see :mod:`airflow_resumable.testing._aws_jobs`.

Private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_jobs import JobKind

__all__ = ["SAGEMAKER_KINDS"]

SAGEMAKER_KINDS: tuple[JobKind, ...] = ()
