"""
Resumable AWS operators: ``BatchOperator``, ``EmrServerlessStartJobOperator``,
``EmrContainerOperator`` and ``EmrAddStepsOperator`` that keep their job through worker
shutdowns, crashes and retries, and never submit it twice.

Needs ``apache-airflow-providers-amazon`` (the ``amazon`` extra).
"""

from __future__ import annotations

from airflow_resumable.providers.amazon.batch import ResumableBatchOperator
from airflow_resumable.providers.amazon.ecs import ResumableEcsRunTaskOperator
from airflow_resumable.providers.amazon.emr import (
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
)
from airflow_resumable.providers.amazon.glue import ResumableGlueJobOperator
from airflow_resumable.providers.amazon.sagemaker import (
    ResumableSageMakerProcessingOperator,
    ResumableSageMakerTrainingOperator,
)
from airflow_resumable.providers.amazon.step_function import ResumableStepFunctionStartExecutionOperator

__all__ = [
    "ResumableBatchOperator",
    "ResumableEcsRunTaskOperator",
    "ResumableEmrAddStepsOperator",
    "ResumableEmrContainerOperator",
    "ResumableEmrServerlessStartJobOperator",
    "ResumableGlueJobOperator",
    "ResumableSageMakerProcessingOperator",
    "ResumableSageMakerTrainingOperator",
    "ResumableStepFunctionStartExecutionOperator",
]
