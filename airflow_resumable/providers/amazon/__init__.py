"""
Resumable AWS operators: ``BatchOperator``, ``EmrServerlessStartJobOperator``,
``EmrContainerOperator`` and ``EmrAddStepsOperator`` that keep their job through worker
shutdowns, crashes and retries, and never submit it twice.

Needs ``apache-airflow-providers-amazon`` (the ``amazon`` extra).
"""

from __future__ import annotations

from airflow_resumable.providers.amazon.batch import ResumableBatchOperator
from airflow_resumable.providers.amazon.emr import (
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
)

__all__ = [
    "ResumableBatchOperator",
    "ResumableEmrAddStepsOperator",
    "ResumableEmrContainerOperator",
    "ResumableEmrServerlessStartJobOperator",
]
