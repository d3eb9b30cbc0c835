"""
The DAGs of ``benchmarks/chaos_benchmark.py``: each provider operator twice, stock and resumable.

``bench_<op>_stock`` and ``bench_<op>_resumable`` have one task ``job`` with the same arguments;
the resumable one only swaps the class and adds its own arguments (a 5 s resume delay, bounded
transient-error retries). ``bench_<op>_stock_deferrable`` and ``bench_<op>_resumable_deferrable``
are the same with ``deferrable=True`` (``benchmarks/worker_slots.py``). Everything that names a
run's job and resources comes from the DAG run's conf (``label`` and the resources the benchmark
created for that run), so that every cloud call can be attributed to one task.
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
from tenacity import stop_after_attempt, wait_fixed

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
from airflow_resumable.retry import RetryPolicy

CONF = "{{{{ dag_run.conf['{}'] }}}}"
LABEL = CONF.format("label")
ROLE_ARN = "arn:aws:iam::123456789012:role/airflow-resumable-job"
SPARK_JAR = {"Jar": "command-runner.jar", "Args": ["spark-submit", "s3://bucket/etl.py"]}

#: Arguments of every task, stock or resumable: retries cover the faults the benchmark injects.
COMMON: dict[str, Any] = {"task_id": "job", "retries": 3, "retry_delay": timedelta(seconds=1)}
#: What the resumable operators add: resume 5 s after a worker shutdown; quick transient retries.
RESUMABLE: dict[str, Any] = {
    "resume_delay": timedelta(seconds=5),
    "cloud_retry": RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
}
_NOTEBOOK_TASK = {
    "task_key": "etl",
    "existing_cluster_id": "0000-000000-fake",
    "notebook_task": {"notebook_path": "/Shared/etl"},
}
_DATABRICKS: dict[str, Any] = {
    "polling_period_seconds": 1,
    "databricks_retry_args": {"stop": stop_after_attempt(2), "wait": wait_fixed(0.2)},
}

#: The SageMaker jobs: one instance, the run's own bucket (the stock training operator checks
#: that its S3 input exists), ``print_log=False`` so that both variants poll every ``check_interval``
#: (with ``print_log`` the stock training operator describes the job at most every 30 s).
_SAGEMAKER: dict[str, Any] = {"check_interval": 1, "max_attempts": 600, "print_log": False}
_SAGEMAKER_RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}
_TRAINING_INPUT = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": CONF.format("sagemaker_input_uri")}}

#: operator key -> (stock class, resumable class, arguments).
OPERATORS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "databricks_submit_run": (
        DatabricksSubmitRunOperator,
        ResumableDatabricksSubmitRunOperator,
        {"json": {"run_name": LABEL, "tasks": [_NOTEBOOK_TASK]}, **_DATABRICKS},
    ),
    "databricks_run_now": (
        DatabricksRunNowOperator,
        ResumableDatabricksRunNowOperator,
        {"json": {"job_id": CONF.format("job_id"), "notebook_params": {"label": LABEL}}, **_DATABRICKS},
    ),
    "batch": (
        BatchOperator,
        ResumableBatchOperator,
        {
            "job_name": LABEL,
            "job_queue": CONF.format("job_queue"),
            "job_definition": CONF.format("job_definition"),
            "poll_interval": 1,
        },
    ),
    "emr_serverless": (
        EmrServerlessStartJobOperator,
        ResumableEmrServerlessStartJobOperator,
        {
            "application_id": CONF.format("application_id"),
            "execution_role_arn": ROLE_ARN,
            "job_driver": {"sparkSubmit": {"entryPoint": "s3://bucket/etl.py"}},
            "name": LABEL,
            "waiter_delay": 1,
            "waiter_max_attempts": 600,
        },
    ),
    "emr_containers": (
        EmrContainerOperator,
        ResumableEmrContainerOperator,
        {
            "name": LABEL,
            "virtual_cluster_id": CONF.format("virtual_cluster_id"),
            "execution_role_arn": ROLE_ARN,
            "release_label": "emr-6.15.0-latest",
            "job_driver": {"sparkSubmitJobDriver": {"entryPoint": "s3://bucket/etl.py"}},
            "poll_interval": 1,
        },
    ),
    "emr_steps": (
        EmrAddStepsOperator,
        ResumableEmrAddStepsOperator,
        {
            "job_flow_id": CONF.format("job_flow_id"),
            "steps": [{"Name": LABEL, "ActionOnFailure": "CONTINUE", "HadoopJarStep": SPARK_JAR}],
            "wait_for_completion": True,
            "waiter_delay": 1,
            "waiter_max_attempts": 600,
        },
    ),
    "databricks_notebook": (
        DatabricksNotebookOperator,
        ResumableDatabricksNotebookOperator,
        {
            # The run name is the operator's fixed databricks_task_key: the label is a parameter.
            "notebook_path": "/Shared/etl",
            "source": "WORKSPACE",
            "existing_cluster_id": "0000-000000-fake",
            "notebook_params": {"label": LABEL},
            **_DATABRICKS,
        },
    ),
    "glue": (
        GlueJobOperator,
        ResumableGlueJobOperator,
        {
            # The run's own Glue job, provisioned by the benchmark (it exists: nothing is created).
            "job_name": LABEL,
            "script_location": "s3://bucket/etl.py",
            "iam_role_arn": ROLE_ARN,
            "job_poll_interval": 1,
            "waiter_delay": 1,
            "waiter_max_attempts": 600,
        },
    ),
    "step_function": (
        # The stock operator returns once the execution started (it waits only when deferrable);
        # the resumable one waits by default (wait_for_completion=True).
        StepFunctionStartExecutionOperator,
        ResumableStepFunctionStartExecutionOperator,
        {
            "state_machine_arn": CONF.format("state_machine_arn"),
            "name": LABEL,
            "state_machine_input": {"label": LABEL},
            "waiter_delay": 1,
            "waiter_max_attempts": 600,
        },
    ),
    "ecs": (
        EcsRunTaskOperator,
        ResumableEcsRunTaskOperator,
        {
            # RunTask names nothing: the label is the task group. FARGATE: no placement in moto.
            "cluster": CONF.format("ecs_cluster"),
            "task_definition": CONF.format("ecs_task_definition"),
            "launch_type": "FARGATE",
            "group": LABEL,
            "overrides": {"containerOverrides": [{"name": "main", "command": ["etl"]}]},
            "waiter_delay": 1,
        },
    ),
    "sagemaker_training": (
        SageMakerTrainingOperator,
        ResumableSageMakerTrainingOperator,
        {
            "config": {
                "TrainingJobName": LABEL,
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
            **_SAGEMAKER,
        },
    ),
    "sagemaker_processing": (
        SageMakerProcessingOperator,
        ResumableSageMakerProcessingOperator,
        {
            "config": {
                "ProcessingJobName": LABEL,
                "ProcessingResources": {"ClusterConfig": _SAGEMAKER_RESOURCES},
                "AppSpecification": {"ImageUri": CONF.format("sagemaker_image_uri")},
                "RoleArn": ROLE_ARN,
            },
            **_SAGEMAKER,
        },
    ),
}

#: What the deferrable shapes change: the trigger polls (the stock Databricks trigger takes plain
#: retry numbers, not tenacity objects, across its serialisation boundary).
DEFERRABLE: dict[str, Any] = {"deferrable": True}
_DEFERRABLE_DATABRICKS: dict[str, Any] = {"databricks_retry_args": None, "databricks_retry_limit": 2}

for key, (stock_class, resumable_class, arguments) in OPERATORS.items():
    with DAG(f"bench_{key}_stock", schedule=None, catchup=False, tags=["benchmark"]):
        stock_class(**COMMON, **arguments)
    with DAG(f"bench_{key}_resumable", schedule=None, catchup=False, tags=["benchmark"]):
        resumable_class(**COMMON, **RESUMABLE, **arguments)
    deferrable = DEFERRABLE | (_DEFERRABLE_DATABRICKS if key.startswith("databricks") else {})
    with DAG(f"bench_{key}_stock_deferrable", schedule=None, catchup=False, tags=["benchmark"]):
        stock_class(**COMMON, **(arguments | deferrable))
    with DAG(f"bench_{key}_resumable_deferrable", schedule=None, catchup=False, tags=["benchmark"]):
        resumable_class(**COMMON, **RESUMABLE, **(arguments | deferrable))
