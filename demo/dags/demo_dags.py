"""
The demo's DAGs: one Databricks run, one AWS Batch job and one EMR Serverless job run, waited for
side by side; once with the stock provider operators, once with the resumable ones
(``demo_stock``, ``demo_resumable``: ``make demo``). ``demo_all_stock`` and ``demo_all_resumable``
(``make demo ALL=1``) do the same with every operator, twelve jobs at once, with the same
arguments for the stock and the resumable class.

Everything that names the remote resources comes from the DAG run's conf, which the demo fills in
after it provisioned them in moto; every job carries the DAG run's ``run_name`` (names may hold
only letters, digits and hyphens: SageMaker's rule) so that the demo finds it in the fakes' ledgers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.batch import BatchOperator
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrContainerOperator,
    EmrServerlessStartJobOperator,
)
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
)
from airflow.providers.amazon.aws.operators.step_function import StepFunctionStartExecutionOperator
from airflow.providers.databricks.operators.databricks import (
    DatabricksNotebookOperator,
    DatabricksRunNowOperator,
    DatabricksSubmitRunOperator,
)
from airflow.sdk import DAG

from airflow_resumable.providers.amazon import (
    ResumableBatchOperator,
    ResumableEcsRunTaskOperator,
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
    ResumableGlueJobOperator,
    ResumableSageMakerProcessingOperator,
    ResumableSageMakerTrainingOperator,
    ResumableStepFunctionStartExecutionOperator,
)
from airflow_resumable.providers.databricks import (
    ResumableDatabricksNotebookOperator,
    ResumableDatabricksRunNowOperator,
    ResumableDatabricksSubmitRunOperator,
)

CONF = "{{{{ dag_run.conf['{}'] }}}}"
NAME = CONF.format("run_name")
ROLE_ARN = "arn:aws:iam::123456789012:role/airflow-resumable-demo"
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=2)}

DATABRICKS: dict[str, Any] = {
    "task_id": "databricks_run",
    "json": {
        "run_name": NAME,
        "tasks": [
            {
                "task_key": "etl",
                "existing_cluster_id": "0000-000000-demo",
                "notebook_task": {"notebook_path": "/Shared/nightly_etl"},
            }
        ],
    },
    "polling_period_seconds": 1,
}
BATCH: dict[str, Any] = {
    "task_id": "batch_job",
    "job_name": f"{NAME}-batch",
    "job_queue": CONF.format("job_queue"),
    "job_definition": CONF.format("job_definition"),
    "poll_interval": 1,
}
EMR_SERVERLESS: dict[str, Any] = {
    "task_id": "emr_serverless_job",
    "name": f"{NAME}-emr",
    "application_id": CONF.format("application_id"),
    "execution_role_arn": ROLE_ARN,
    "job_driver": {"sparkSubmit": {"entryPoint": "s3://demo/etl.py"}},
    "waiter_delay": 1,
    "waiter_max_attempts": 600,  # the stock default (25) would end a long job on its own
}

with DAG("demo_stock", schedule=None, catchup=False, tags=["demo"]):
    DatabricksSubmitRunOperator(**DATABRICKS, **RETRIES)
    BatchOperator(**BATCH, **RETRIES)
    EmrServerlessStartJobOperator(**EMR_SERVERLESS, **RETRIES)

with DAG("demo_resumable", schedule=None, catchup=False, tags=["demo"]):
    resumable: dict[str, Any] = {"resume_delay": timedelta(seconds=5), **RETRIES}
    ResumableDatabricksSubmitRunOperator(**DATABRICKS, **resumable)
    ResumableBatchOperator(**BATCH, **resumable)
    ResumableEmrServerlessStartJobOperator(**EMR_SERVERLESS, **resumable)


def _without_task_id(arguments: dict[str, Any]) -> dict[str, Any]:
    """The three-task DAGs' arguments, reused by ``make demo ALL=1`` (which names tasks itself)."""
    return {name: value for name, value in arguments.items() if name != "task_id"}


_SAGEMAKER_RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}
_TRAINING_INPUT = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": CONF.format("sagemaker_input_uri")}}

#: ``make demo ALL=1``: task id -> (stock class, resumable class, arguments), every operator.
TASKS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "databricks_run": (
        DatabricksSubmitRunOperator,
        ResumableDatabricksSubmitRunOperator,
        _without_task_id(DATABRICKS),
    ),
    "databricks_run_now": (
        DatabricksRunNowOperator,
        ResumableDatabricksRunNowOperator,
        {
            "job_id": CONF.format("databricks_job_id"),
            "notebook_params": {"run_name": NAME},
            "polling_period_seconds": 1,
        },
    ),
    "databricks_notebook": (
        DatabricksNotebookOperator,
        ResumableDatabricksNotebookOperator,
        {
            "notebook_path": "/Shared/daily_report",
            "source": "WORKSPACE",
            "existing_cluster_id": "0000-000000-demo",
            "notebook_params": {"run_name": NAME},  # the run's name is the operator's task key
            "polling_period_seconds": 1,
        },
    ),
    "batch_job": (BatchOperator, ResumableBatchOperator, _without_task_id(BATCH)),
    "emr_serverless_job": (
        EmrServerlessStartJobOperator,
        ResumableEmrServerlessStartJobOperator,
        _without_task_id(EMR_SERVERLESS),
    ),
    "emr_containers_job": (
        EmrContainerOperator,
        ResumableEmrContainerOperator,
        {
            "name": f"{NAME}-eks",
            "virtual_cluster_id": CONF.format("virtual_cluster_id"),
            "execution_role_arn": ROLE_ARN,
            "release_label": "emr-6.15.0-latest",
            "job_driver": {"sparkSubmitJobDriver": {"entryPoint": "s3://demo/etl.py"}},
            "poll_interval": 1,
        },
    ),
    "emr_step": (
        EmrAddStepsOperator,
        ResumableEmrAddStepsOperator,
        {
            "job_flow_id": CONF.format("job_flow_id"),
            "steps": [
                {
                    "Name": f"{NAME}-step",
                    "ActionOnFailure": "CONTINUE",
                    "HadoopJarStep": {
                        "Jar": "command-runner.jar",
                        "Args": ["spark-submit", "s3://demo/etl.py"],
                    },
                }
            ],
            "wait_for_completion": True,
            "waiter_delay": 1,
            "waiter_max_attempts": 600,  # the stock default (60) would end a long step on its own
        },
    ),
    "glue_job": (
        GlueJobOperator,
        ResumableGlueJobOperator,
        {
            "job_name": CONF.format("glue_job"),
            "script_args": {"--run-name": NAME},
            "iam_role_arn": ROLE_ARN,
            "job_poll_interval": 1,
        },
    ),
    "step_function": (
        # The stock operator returns once the execution started; the resumable one waits for it.
        StepFunctionStartExecutionOperator,
        ResumableStepFunctionStartExecutionOperator,
        {
            "state_machine_arn": CONF.format("state_machine_arn"),
            "name": f"{NAME}-sfn",
            "state_machine_input": {"run_name": NAME},
            "waiter_delay": 1,
            "waiter_max_attempts": 600,  # bounds the resumable wait as the stock waiter (0.5.0): 30
        },
    ),
    "ecs_task": (
        EcsRunTaskOperator,
        ResumableEcsRunTaskOperator,
        {
            "cluster": CONF.format("ecs_cluster"),
            "task_definition": CONF.format("ecs_task_definition"),
            "overrides": {},
            "launch_type": "FARGATE",
            "group": f"{NAME}-ecs",  # RunTask names nothing; the task group carries the name
            "waiter_delay": 1,
        },
    ),
    "sagemaker_training": (
        SageMakerTrainingOperator,
        ResumableSageMakerTrainingOperator,
        {
            "config": {
                "TrainingJobName": f"{NAME}-train",
                "AlgorithmSpecification": {
                    "TrainingImage": CONF.format("sagemaker_image_uri"),
                    "TrainingInputMode": "File",
                },
                "RoleArn": ROLE_ARN,
                "InputDataConfig": [{"ChannelName": "train", "DataSource": _TRAINING_INPUT}],
                "OutputDataConfig": {"S3OutputPath": CONF.format("sagemaker_output_uri")},
                "ResourceConfig": _SAGEMAKER_RESOURCES,
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            },
            "check_interval": 1,
            "print_log": False,  # with it the stock operator polls at most every 30 s
        },
    ),
    "sagemaker_processing": (
        SageMakerProcessingOperator,
        ResumableSageMakerProcessingOperator,
        {
            "config": {
                "ProcessingJobName": f"{NAME}-proc",
                "ProcessingResources": {"ClusterConfig": _SAGEMAKER_RESOURCES},
                "AppSpecification": {"ImageUri": CONF.format("sagemaker_image_uri")},
                "RoleArn": ROLE_ARN,
            },
            "check_interval": 1,
        },
    ),
}

with DAG("demo_all_stock", schedule=None, catchup=False, tags=["demo"]):
    for task_id, (stock_class, _, arguments) in TASKS.items():
        stock_class(task_id=task_id, **arguments, **RETRIES)

with DAG("demo_all_resumable", schedule=None, catchup=False, tags=["demo"]):
    resumable_all: dict[str, Any] = {"resume_delay": timedelta(seconds=5), **RETRIES}
    for task_id, (_, resumable_class, arguments) in TASKS.items():
        resumable_class(task_id=task_id, **arguments, **resumable_all)
