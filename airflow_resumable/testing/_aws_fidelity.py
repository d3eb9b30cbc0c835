"""
What the moto controller reproduces of each AWS service, and the public source that says so.

Private: registered at import (``_aws_jobs`` imports it); ``docs/fidelity.md`` renders the entries.
Where a reference is silent the controller takes the unkind reading, and says which.
"""

from __future__ import annotations

from airflow_resumable.testing.realism import Fidelity, register_fidelity

__all__: list[str] = []

_LAG_UNDOCUMENTED = (
    "The API reference promises no read-after-write consistency and documents no lag; the fake "
    "takes the unkind reading, and a status read during the lag does not move the job."
)
_NO_EXPIRY = (
    "The reference states no retention for this answer; with realism.retention the fake forgets a "
    "finished job that long after it ended (not found: expired, for the operator)."
)
_THROTTLING = (
    "calls past throttle_burst at throttle_rate a second per service answer HTTP 400 "
    "ThrottlingException; nothing is carried out"
)


def _service(service: str, **behaviours: tuple[str, str, str, str]) -> None:
    register_fidelity(
        *(
            Fidelity(service, behaviour, status, how, source, note)  # type: ignore[arg-type]
            for behaviour, (status, how, source, note) in behaviours.items()
        )
    )


_service(
    "AWS Batch",
    visibility_lag=(
        "reproduced",
        "for visibility_lag seconds a new job is left out of DescribeJobs (no error) and of ListJobs",
        "https://github.com/apache/airflow/pull/38998",
        "The stock hook retries exactly this ('a delay in AWS to register job information'); Netflix/"
        "metaflow#543 met empty describe_jobs answers right after launch. The reference documents no lag.",
    ),
    throttling=(
        "reproduced",
        "calls past throttle_burst at throttle_rate a second answer HTTP 429 TooManyRequestsException;"
        " nothing is carried out",
        "https://docs.aws.amazon.com/batch/latest/APIReference/CommonErrors.html",
        "The common errors also name ThrottlingException (400); botocore retries both as throttling.",
    ),
    pagination=(
        "reproduced",
        "ListJobs pages with maxResults (1 to 1000, 1000 when not given) and an opaque nextToken; moto "
        "answers in one page, the controller pages",
        "https://docs.aws.amazon.com/batch/latest/APIReference/API_ListJobs.html",
        "",
    ),
    expiry=(
        "not documented",
        "a finished job leaves DescribeJobs and ListJobs after realism.retention",
        "",
        _NO_EXPIRY,
    ),
    not_found=(
        "reproduced",
        "DescribeJobs leaves an unknown or expired id out of jobs, without an error",
        "https://docs.aws.amazon.com/batch/latest/APIReference/API_DescribeJobs.html",
        "",
    ),
    token_window=(
        "not documented",
        "SubmitJob takes no client token: the operator tags the job and looks it up by the tag (find_job)",
        "https://docs.aws.amazon.com/batch/latest/APIReference/API_SubmitJob.html",
        "",
    ),
)

_service(
    "Amazon EMR steps",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds DescribeStep answers InvalidRequestException for a new step and "
        "ListSteps leaves it out",
        "https://docs.aws.amazon.com/emr/latest/APIReference/API_DescribeStep.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/emr/latest/APIReference/CommonErrors.html",
        "",
    ),
    pagination=(
        "reproduced",
        "ListSteps pages 50 steps at a time with an opaque Marker (no page-size argument)",
        "https://docs.aws.amazon.com/emr/latest/APIReference/API_ListSteps.html",
        "",
    ),
    expiry=(
        "not documented",
        "a finished step leaves DescribeStep and ListSteps after realism.retention",
        "",
        _NO_EXPIRY,
    ),
    not_found=(
        "reproduced",
        "DescribeStep of an unknown step answers HTTP 400 InvalidRequestException",
        "https://docs.aws.amazon.com/emr/latest/APIReference/API_DescribeStep.html",
        "",
    ),
    token_window=(
        "not documented",
        "AddJobFlowSteps takes no client token: the operator marks the step names and looks them up",
        "https://docs.aws.amazon.com/emr/latest/APIReference/API_AddJobFlowSteps.html",
        "",
    ),
)

_service(
    "EMR Serverless",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds GetJobRun answers HTTP 404 ResourceNotFoundException for a new run",
        "https://docs.aws.amazon.com/emr-serverless/latest/APIReference/API_GetJobRun.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/emr-serverless/latest/APIReference/CommonErrors.html",
        "",
    ),
    pagination=(
        "not reproduced",
        "no list call: the operators never list job runs (the client token finds the run)",
        "https://docs.aws.amazon.com/emr-serverless/latest/APIReference/API_ListJobRuns.html",
        "",
    ),
    expiry=("not documented", "a finished run answers not found after realism.retention", "", _NO_EXPIRY),
    not_found=(
        "reproduced",
        "GetJobRun of an unknown run answers HTTP 404 ResourceNotFoundException",
        "https://docs.aws.amazon.com/emr-serverless/latest/APIReference/API_GetJobRun.html",
        "",
    ),
    token_window=(
        "not documented",
        "a clientToken returns its run for as long as the run is known, 409 ConflictException with "
        "another request; forgotten when the run expires",
        "https://docs.aws.amazon.com/emr-serverless/latest/APIReference/API_StartJobRun.html",
        "The reference asks for a unique token and states no window.",
    ),
)

_service(
    "EMR on EKS",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds DescribeJobRun answers HTTP 400 ResourceNotFoundException for a new run",
        "https://docs.aws.amazon.com/emr-on-eks/latest/APIReference/API_DescribeJobRun.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/emr-on-eks/latest/APIReference/CommonErrors.html",
        "",
    ),
    pagination=(
        "not reproduced",
        "no list call: the operators never list job runs (the client token finds the run)",
        "https://docs.aws.amazon.com/emr-on-eks/latest/APIReference/API_ListJobRuns.html",
        "",
    ),
    expiry=("not documented", "a finished run answers not found after realism.retention", "", _NO_EXPIRY),
    not_found=(
        "reproduced",
        "DescribeJobRun of an unknown run answers HTTP 400 ResourceNotFoundException",
        "https://docs.aws.amazon.com/emr-on-eks/latest/APIReference/API_DescribeJobRun.html",
        "",
    ),
    token_window=(
        "not documented",
        "a clientToken returns its run for as long as the run is known, 400 ValidationException with "
        "another request; forgotten when the run expires",
        "https://docs.aws.amazon.com/emr-on-eks/latest/APIReference/API_StartJobRun.html",
        "The reference states no window.",
    ),
)

_service(
    "Amazon ECS",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds DescribeTasks reports a new task under failures with reason MISSING "
        "and ListTasks leaves it out",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/CommonErrors.html",
        "",
    ),
    pagination=(
        "reproduced",
        "ListTasks pages with maxResults (1 to 100, 100 when not given) and an opaque nextToken",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html",
        "",
    ),
    expiry=(
        "reproduced",
        "a stopped task leaves DescribeTasks and ListTasks after realism.retention",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html",
        "The reference: stopped tasks appear in the results for at least one hour.",
    ),
    not_found=(
        "reproduced",
        "DescribeTasks of an unknown task answers 200 with failures [{reason: MISSING}]",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html",
        "",
    ),
    token_window=(
        "not documented",
        "a clientToken returns its task within the cluster for as long as the task is known",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html",
        "The reference asks for a unique token of up to 64 characters and states no window.",
    ),
)

_service(
    "AWS Glue",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds GetJobRun answers EntityNotFoundException for a new run and "
        "GetJobRuns leaves it out",
        "https://docs.aws.amazon.com/glue/latest/webapi/API_GetJobRun.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/glue/latest/webapi/CommonErrors.html",
        "",
    ),
    pagination=(
        "reproduced",
        "GetJobRuns pages newest first with MaxResults (1 to 200) and an opaque NextToken",
        "https://docs.aws.amazon.com/glue/latest/webapi/API_GetJobRuns.html",
        "",
    ),
    expiry=("not documented", "a finished run answers not found after realism.retention", "", _NO_EXPIRY),
    not_found=(
        "reproduced",
        "GetJobRun of an unknown run answers HTTP 400 EntityNotFoundException",
        "https://docs.aws.amazon.com/glue/latest/webapi/API_GetJobRun.html",
        "",
    ),
    token_window=(
        "not documented",
        "StartJobRun takes no client token: the operator passes the token as a run argument and looks "
        "the run up by it (find_job)",
        "https://docs.aws.amazon.com/glue/latest/webapi/API_StartJobRun.html",
        "",
    ),
)

for _noun, _describe in (("training", "DescribeTrainingJob"), ("processing", "DescribeProcessingJob")):
    _service(
        f"SageMaker {_noun}",
        visibility_lag=(
            "not documented",
            f"for visibility_lag seconds {_describe} answers ValidationException 'Requested resource "
            f"not found' for a new job",
            f"https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_{_describe}.html",
            _LAG_UNDOCUMENTED,
        ),
        throttling=(
            "reproduced",
            _THROTTLING,
            "https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html",
            "",
        ),
        pagination=(
            "not reproduced",
            "no list call: the operators find a job by its name, which carries the token",
            "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ListTrainingJobs.html",
            "",
        ),
        expiry=("not documented", "a finished job answers not found after realism.retention", "", _NO_EXPIRY),
        not_found=(
            "reproduced",
            f"{_describe} of an unknown job answers HTTP 400 ValidationException",
            f"https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_{_describe}.html",
            "The reference names ResourceNotFound; the service and moto answer ValidationException "
            "'Requested resource not found'; the operators take ResourceNotFound, and a "
            "ValidationException only when it says 'not found': the service answers ValidationException "
            "for any input that fails a constraint, as the contract kit's lookalike does for a job that "
            "exists.",
        ),
        token_window=(
            "reproduced",
            "a job name is unique per account and Region: a second create of the name answers "
            "ResourceInUse while the job is known",
            "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html",
            "",
        ),
    )

_service(
    "Step Functions",
    visibility_lag=(
        "not documented",
        "for visibility_lag seconds DescribeExecution answers ExecutionDoesNotExist for a new execution",
        "https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html",
        _LAG_UNDOCUMENTED,
    ),
    throttling=(
        "reproduced",
        _THROTTLING,
        "https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html",
        "",
    ),
    pagination=(
        "not reproduced",
        "no list call: the execution name carries the token",
        "https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html",
        "",
    ),
    expiry=(
        "reproduced",
        "a closed execution answers ExecutionDoesNotExist after realism.retention",
        "https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html",
        "The service keeps a closed execution's name for 90 days.",
    ),
    not_found=(
        "reproduced",
        "DescribeExecution of an unknown ARN answers HTTP 400 ExecutionDoesNotExist",
        "https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html",
        "",
    ),
    token_window=(
        "reproduced",
        "StartExecution with the name and input of a running execution returns it; once it closed, or "
        "with another input, ExecutionAlreadyExists",
        "https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html",
        "",
    ),
)
