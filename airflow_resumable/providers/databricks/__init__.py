"""
Resumable Databricks operators: ``DatabricksSubmitRunOperator``, ``DatabricksRunNowOperator`` and
``DatabricksNotebookOperator`` that keep their run through worker shutdowns, crashes and retries.

Needs ``apache-airflow-providers-databricks`` (the ``databricks`` extra).
"""

from __future__ import annotations

from airflow_resumable.providers.databricks.notebook import ResumableDatabricksNotebookOperator
from airflow_resumable.providers.databricks.operators import (
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)

__all__ = [
    "ResumableDatabricksNotebookOperator",
    "ResumableDatabricksRunNowOperator",
    "ResumableDatabricksSubmitRunOperator",
]
