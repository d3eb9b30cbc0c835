"""
The DAGs of the chaos suite (``system_tests/chaos``): every resumable operator, in several shapes.

For each operator ``<op>``:

- ``chaos_<op>``: one task ``job``, ``retries=1``, ``resume_delay=5s``, ``max_resumes=3``;
- ``chaos_<op>_held``: the same, but a checkpoint (``resume_delay``) or a failed try
  (``retry_delay``) waits 10 minutes: the next execution starts when the test clears the task,
  never on its own a few seconds earlier or later than the clear;
- ``chaos_<op>_deletable``: ``chaos_<op>_held`` for the one case that pauses its DAG to delete a
  DAG run (``checkpointed_dag_run_deleted``), so that no other case's DAG is paused;
- ``chaos_<op>_timeout``: the same with ``execution_timeout=8s`` and ``retries=0``;
- ``chaos_<op>_mapped``: ``.partial(...).expand_kwargs(...)`` over three jobs (map indexes 0-2);
- ``chaos_<op>_sdk_retries``: like ``chaos_<op>``, but the client library retries too, as in most
  deployments: AWS operators use the connection ``aws_sdk_retries`` (botocore, 3 attempts per
  call), the Databricks ones let the hook try each call 3 times;
- ``chaos_<op>_deferrable``: ``chaos_<op>`` with ``deferrable=True``, the wait handed to the
  triggerer (Databricks: the hook's retries as a limit and a delay, the trigger cannot take
  tenacity objects; EMR Serverless and EMR steps: ``waiter_max_attempts=600``, as their stock
  triggers give up after 25 and 60 status calls);
- ``chaos_<op>_worker_<kind>`` (CeleryExecutor, ``chaos/test_chaos_celery.py``): ``chaos_<op>``
  on the Celery queue named after the DAG, which one worker of its own serves, so a case can
  shut that worker down without touching another case's tasks. ``_worker_warm_bridged`` also
  has a ``bystander``: a plain task that waits for the test to release it (the file
  ``dag_run.conf['bystander']``) and leaves a ``<file>.signalled`` marker if anything signals it.

Everything that tells one test's jobs from another's comes from the DAG run's conf: ``tag``
(part of every job's name, so the suite finds its jobs in the fake cloud's ledger) and the cloud
resources the suite provisioned (a Databricks job for run-now, the Batch queue, the EMR cluster,
the EMR Serverless application, the EMR on EKS virtual cluster).

Every job spec also carries a part read from the Variable ``chaos_spec_<tag>`` (``v1`` while it
is not set), in a field that goes into the submitted spec but not into the job's name: a test
changes the spec of a task it is about to clear by setting that Variable. Databricks submit-run:
the notebook's ``base_parameters``; run-now: ``notebook_params``; Batch: ``parameters``; EMR
Serverless and EMR on EKS: the entry point's arguments; EMR steps: ``HadoopJarStep.Args``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator
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
TAG = CONF.format("tag")
#: The part of every job spec a test may change: the Variable ``chaos_spec_<tag>``, else ``v1``.
SPEC = "{{ var.value.get('chaos_spec_' ~ dag_run.conf['tag'], 'v1') }}"
ROLE_ARN = "arn:aws:iam::123456789012:role/airflow-resumable-job"
MAP_INDEXES = 3

#: What every chaos task shares: a bounded, quick retry of transient cloud errors (4 attempts,
#: 0.5 s apart), a 5 s resume delay (the safe minimum on Airflow 3.3.2) and 3 resumes in a row.
RESUMABLE: dict[str, Any] = {
    "cloud_retry": RetryPolicy(attempts=4, wait=wait_fixed(0.5)),
    "resume_delay": timedelta(seconds=5),
    "max_resumes": 3,
}
DATABRICKS: dict[str, Any] = {
    "polling_period_seconds": 1,
    "databricks_retry_args": {"stop": stop_after_attempt(2), "wait": wait_fixed(0.2)},
}
#: Shape ``_deferrable`` of the Databricks operators (instead of ``DATABRICKS``): the trigger gets
#: the hook's retry arguments, which must be serializable (tenacity objects are not), so the
#: retries are given as a limit and a delay instead.
DATABRICKS_DEFERRABLE: dict[str, Any] = {
    "polling_period_seconds": 1,
    "databricks_retry_limit": 2,
    "databricks_retry_delay": 1,
}
#: Shape ``_deferrable`` of the AWS operators (on top of their shared arguments): the stock EMR
#: Serverless and EMR steps triggers give up after ``waiter_max_attempts`` status calls (25 and
#: 60 by default, at 1 s apart here); a held job may wait longer.
AWS_DEFERRABLE: dict[str, dict[str, Any]] = {
    "batch": {},
    "emr_serverless": {"waiter_max_attempts": 600},
    "emr_containers": {},
    "emr_steps": {"waiter_max_attempts": 600},
    "ecs": {},
    "glue": {"waiter_delay": 1, "waiter_max_attempts": 600},
    "sagemaker_training": {"max_attempts": 600},
    "sagemaker_processing": {"max_attempts": 600},
    "step_function": {"waiter_max_attempts": 600},
}
#: Shape ``_sdk_retries``: the client library's own retries on (the cluster defines the connection).
SDK_RETRIES: dict[str, dict[str, Any]] = {
    "databricks": {"databricks_retry_args": {"stop": stop_after_attempt(3), "wait": wait_fixed(0.2)}},
    "aws": {"aws_conn_id": "aws_sdk_retries"},
}
#: Shape ``_held``: the next execution waits for the test's clear (which resets both delays).
HELD = timedelta(minutes=10)


def _submit_run(suffix: str) -> dict[str, Any]:
    task: dict[str, Any] = {"task_key": "etl", "existing_cluster_id": "0000-000000-fake"}
    task["notebook_task"] = {"notebook_path": "/Shared/etl", "base_parameters": {"spec": SPEC}}
    return {"json": {"run_name": f"chaos-{TAG}{suffix}", "tasks": [task]}}


def _run_now(suffix: str) -> dict[str, Any]:
    return {
        "json": {"job_id": CONF.format("job_id"), "notebook_params": {"tag": f"{TAG}{suffix}", "spec": SPEC}}
    }


def _notebook(suffix: str) -> dict[str, Any]:
    # databricks_task_key (the run_name) is not templated: the label is a notebook parameter.
    return {
        "notebook_path": "/Shared/etl",
        "source": "WORKSPACE",
        "existing_cluster_id": "0000-000000-fake",
        "notebook_params": {"tag": f"chaos-{TAG}{suffix}", "spec": SPEC},
    }


def _batch(suffix: str) -> dict[str, Any]:
    return {"job_name": f"chaos-{TAG}{suffix}", "parameters": {"spec": SPEC}}


def _emr_serverless(suffix: str) -> dict[str, Any]:
    driver = {"sparkSubmit": {"entryPoint": "s3://bucket/etl.py", "entryPointArguments": [SPEC]}}
    return {"name": f"chaos-{TAG}{suffix}", "job_driver": driver}


def _emr_containers(suffix: str) -> dict[str, Any]:
    driver = {"sparkSubmitJobDriver": {"entryPoint": "s3://bucket/etl.py", "entryPointArguments": [SPEC]}}
    return {"name": f"chaos-{TAG}{suffix}", "job_driver": driver}


def _emr_steps(suffix: str) -> dict[str, Any]:
    jar = {"Jar": "command-runner.jar", "Args": ["spark-submit", "s3://bucket/etl.py", SPEC]}
    step = {"Name": f"chaos-{TAG}{suffix}", "ActionOnFailure": "CONTINUE", "HadoopJarStep": jar}
    return {"steps": [step]}


def _ecs(suffix: str) -> dict[str, Any]:
    # RunTask names nothing: the label is the task group; the spec the container's command
    container = {"name": "main", "command": ["echo", SPEC]}
    return {"group": f"chaos-{TAG}{suffix}", "overrides": {"containerOverrides": [container]}}


def _glue(suffix: str) -> dict[str, Any]:
    # one Glue job per label, created by the operator on first use (stock get_or_create_glue_job)
    return {"job_name": f"chaos-{TAG}{suffix}", "script_args": {"--spec": SPEC}}


def _sagemaker_training(suffix: str) -> dict[str, Any]:
    source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": CONF.format("sagemaker_input_uri")}}
    algorithm = {"TrainingImage": CONF.format("sagemaker_image_uri"), "TrainingInputMode": "File"}
    return {
        "config": {
            "TrainingJobName": f"chaos-{TAG}{suffix}",
            "AlgorithmSpecification": algorithm,
            "RoleArn": ROLE_ARN,
            "HyperParameters": {"spec": SPEC},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": source}],
            "OutputDataConfig": {"S3OutputPath": CONF.format("sagemaker_output_uri")},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        }
    }


def _sagemaker_processing(suffix: str) -> dict[str, Any]:
    cluster = {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 10}
    return {
        "config": {
            "ProcessingJobName": f"chaos-{TAG}{suffix}",
            "ProcessingResources": {"ClusterConfig": cluster},
            "AppSpecification": {"ImageUri": CONF.format("sagemaker_image_uri")},
            "Environment": {"SPEC": SPEC},
            "RoleArn": ROLE_ARN,
        }
    }


def _step_function(suffix: str) -> dict[str, Any]:
    return {"name": f"chaos-{TAG}{suffix}", "state_machine_input": {"spec": SPEC}}


#: operator key -> (class, arguments shared by every task, arguments that name one job).
OPERATORS: dict[str, tuple[Any, dict[str, Any], Any]] = {
    "databricks_submit_run": (ResumableDatabricksSubmitRunOperator, DATABRICKS, _submit_run),
    "databricks_run_now": (ResumableDatabricksRunNowOperator, DATABRICKS, _run_now),
    "databricks_notebook": (ResumableDatabricksNotebookOperator, DATABRICKS, _notebook),
    "batch": (
        ResumableBatchOperator,
        {"job_queue": CONF.format("job_queue"), "job_definition": CONF.format("job_definition")}
        | {"poll_interval": 1},
        _batch,
    ),
    "emr_serverless": (
        ResumableEmrServerlessStartJobOperator,
        {"application_id": CONF.format("application_id"), "execution_role_arn": ROLE_ARN}
        | {"waiter_delay": 1},
        _emr_serverless,
    ),
    "emr_containers": (
        ResumableEmrContainerOperator,
        {"virtual_cluster_id": CONF.format("virtual_cluster_id"), "execution_role_arn": ROLE_ARN}
        | {"release_label": "emr-6.15.0-latest", "poll_interval": 1},
        _emr_containers,
    ),
    "emr_steps": (
        ResumableEmrAddStepsOperator,
        {"job_flow_id": CONF.format("job_flow_id"), "wait_for_completion": True, "waiter_delay": 1},
        _emr_steps,
    ),
    "ecs": (
        ResumableEcsRunTaskOperator,
        {"cluster": CONF.format("cluster"), "task_definition": CONF.format("task_definition")}
        | {"launch_type": "FARGATE", "waiter_delay": 1},
        _ecs,
    ),
    "glue": (
        ResumableGlueJobOperator,
        {"script_location": "s3://bucket/etl.py", "iam_role_arn": ROLE_ARN, "concurrent_run_limit": 10}
        | {"job_poll_interval": 1},
        _glue,
    ),
    "sagemaker_training": (ResumableSageMakerTrainingOperator, {"check_interval": 1}, _sagemaker_training),
    "sagemaker_processing": (
        ResumableSageMakerProcessingOperator,
        {"check_interval": 1},
        _sagemaker_processing,
    ),
    "step_function": (
        ResumableStepFunctionStartExecutionOperator,
        {"state_machine_arn": CONF.format("state_machine_arn"), "waiter_delay": 1},
        _step_function,
    ),
}

for key, (operator_class, shared, named) in OPERATORS.items():
    tags = ["airflow_resumable", "chaos"]
    with DAG(f"chaos_{key}", schedule=None, catchup=False, tags=tags):
        operator_class(
            task_id="job", retries=1, retry_delay=timedelta(seconds=1), **RESUMABLE, **shared, **named("")
        )
    for held in ("_held", "_deletable"):
        with DAG(f"chaos_{key}{held}", schedule=None, catchup=False, tags=tags):
            operator_class(
                task_id="job",
                retries=1,
                retry_delay=HELD,
                **(RESUMABLE | {"resume_delay": HELD}),
                **shared,
                **named(""),
            )
    with DAG(f"chaos_{key}_deferrable", schedule=None, catchup=False, tags=tags):
        deferrable = DATABRICKS_DEFERRABLE if key.startswith("databricks") else shared | AWS_DEFERRABLE[key]
        operator_class(
            task_id="job",
            retries=1,
            retry_delay=timedelta(seconds=1),
            deferrable=True,
            **RESUMABLE,
            **deferrable,
            **named(""),
        )
    with DAG(f"chaos_{key}_timeout", schedule=None, catchup=False, tags=tags):
        timeout = timedelta(seconds=8)
        operator_class(
            task_id="job", retries=0, execution_timeout=timeout, **RESUMABLE, **shared, **named("")
        )
    with DAG(f"chaos_{key}_mapped", schedule=None, catchup=False, tags=tags):
        operator_class.partial(
            task_id="job", retries=1, retry_delay=timedelta(seconds=1), **RESUMABLE, **shared
        ).expand_kwargs([named(f"-{index}") for index in range(MAP_INDEXES)])
    with DAG(f"chaos_{key}_sdk_retries", schedule=None, catchup=False, tags=tags):
        sdk_retries = SDK_RETRIES["databricks" if key.startswith("databricks") else "aws"]
        operator_class(
            task_id="job",
            retries=1,
            retry_delay=timedelta(seconds=1),
            **RESUMABLE,
            **(shared | sdk_retries),
            **named(""),
        )


class Bystander(BaseOperator):
    """
    A task of no resumable operator: it runs until the test creates ``release_file``.

    Its ``on_kill`` (what Airflow runs on a SIGTERM) leaves ``<release_file>.signalled``: a warm
    shutdown bridge must let such a task finish, never signal it.
    """

    template_fields = ("release_file",)

    def __init__(self, *, release_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release_file = release_file

    def execute(self, context: Any) -> None:
        released = Path(self.release_file)
        while not released.exists():
            time.sleep(0.2)

    def on_kill(self) -> None:
        Path(f"{self.release_file}.signalled").write_text("SIGTERM")


#: The Celery worker shapes: the queue of each is its DAG id, served by a worker of its own.
WORKER_SHAPES = ("_worker_warm_bridged", "_worker_warm_plain", "_worker_cold", "_worker_crash")
CELERY_OPERATORS = tuple(OPERATORS)
for key in CELERY_OPERATORS:
    operator_class, shared, named = OPERATORS[key]
    for shape in WORKER_SHAPES:
        dag_id = f"chaos_{key}{shape}"
        with DAG(dag_id, schedule=None, catchup=False, tags=["airflow_resumable", "chaos", "celery"]):
            operator_class(
                task_id="job",
                queue=dag_id,
                retries=1,
                retry_delay=timedelta(seconds=1),
                **RESUMABLE,
                **shared,
                **named(""),
            )
            if shape == "_worker_warm_bridged":
                Bystander(task_id="bystander", queue=dag_id, release_file=CONF.format("bystander"))

#: Every DAG id of this file, for the cluster fixture to wait for.
CHAOS_DAG_IDS = frozenset(
    f"chaos_{key}{shape}"
    for key in OPERATORS
    for shape in ("", "_held", "_deletable", "_timeout", "_mapped", "_sdk_retries", "_deferrable")
) | frozenset(f"chaos_{key}{shape}" for key in CELERY_OPERATORS for shape in WORKER_SHAPES)
