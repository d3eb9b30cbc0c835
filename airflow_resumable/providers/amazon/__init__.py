"""
Resumable AWS operators: ``AthenaOperator``, ``BatchOperator``, ``EcsRunTaskOperator``, the EMR
operators, ``GlueJobOperator``, ``RedshiftDataOperator``, the SageMaker operators and
``StepFunctionStartExecutionOperator`` that keep their job through worker shutdowns, crashes and
retries, and never submit it twice.

Needs ``apache-airflow-providers-amazon`` (the ``amazon`` extra).
"""

from __future__ import annotations

from airflow_resumable.providers.amazon.athena import ResumableAthenaOperator
from airflow_resumable.providers.amazon.batch import ResumableBatchOperator
from airflow_resumable.providers.amazon.ecs import ResumableEcsRunTaskOperator
from airflow_resumable.providers.amazon.emr import (
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
)
from airflow_resumable.providers.amazon.glue import ResumableGlueJobOperator
from airflow_resumable.providers.amazon.redshift_data import ResumableRedshiftDataOperator
from airflow_resumable.providers.amazon.sagemaker import (
    ResumableSageMakerProcessingOperator,
    ResumableSageMakerTrainingOperator,
)
from airflow_resumable.providers.amazon.step_function import ResumableStepFunctionStartExecutionOperator

__all__ = [
    "ResumableAthenaOperator",
    "ResumableBatchOperator",
    "ResumableEcsRunTaskOperator",
    "ResumableEmrAddStepsOperator",
    "ResumableEmrContainerOperator",
    "ResumableEmrServerlessStartJobOperator",
    "ResumableGlueJobOperator",
    "ResumableRedshiftDataOperator",
    "ResumableSageMakerProcessingOperator",
    "ResumableSageMakerTrainingOperator",
    "ResumableStepFunctionStartExecutionOperator",
]
